"""Adapting a pretrained network's last stage to the normal class, with MEG's negatives.

The core-set energy on frozen pretrained features is a kernel density: MEG training cannot move
it. :class:`FeatureAdapter` gives the energy a learned part. The backbone's activations before
its last stage are computed once (the *trunk*, frozen and cached); the last stage and head (the
*tail*) are trained so that the normal class's unit-length features gather around their mean
(a compactness loss, as PANDA does), held near the pretrained weights by an L2 pull (PANDA's
guard against collapse), and, in the MEG version, pushed away from negatives that a generator
draws in the activation space: the generator seeks low energy (activations the tail maps near
the class's mean) while keeping its entropy high (the ``I(x; z)`` estimator), and the tail
learns to tell those from real activations of the class, under MEG's zero-centred gradient
penalty on real data.

The energy trained here is ``||f(a) - m||^2`` for the unit-length feature ``f(a)`` of activation
``a`` and the class's mean feature ``m`` (0 to 4); the detector then scores with its usual
mixture energy in the adapted space.

References
----------
Reiss, Cohen, Bergman, Hoshen. PANDA: Adapting Pretrained Features for Anomaly Detection and
Segmentation. CVPR 2021, arXiv:2010.05903.
Kumar, Ozair, Goyal, Courville, Bengio. Maximum Entropy Generators for Energy-Based Models.
arXiv:1901.08508, 2019.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .losses import jsd_mutual_information
from .networks import MLPGenerator, MLPStatistics

__all__ = ["NEGATIVES", "FeatureAdapter", "ResidualQuadratic", "adapted_features", "fit_residual"]

#: Where the negatives come from: none (compactness and the pull only), a broad Gaussian
#: fitted to the class's activations, or MEG's generator.
NEGATIVES = ("none", "gaussian", "generator")


@torch.no_grad()
def adapted_features(tail: nn.Module, activations: np.ndarray, batch: int = 512) -> np.ndarray:
    """Unit-length features ``tail(a) / ||tail(a)||`` of flat activations, float32 (n, p)."""
    tail.eval()
    out = [
        tail(torch.as_tensor(np.array(activations[i : i + batch], dtype=np.float32)))
        for i in range(0, len(activations), batch)
    ]
    features = torch.cat(out)
    return (features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()


class _GeneratorNegatives:
    """MEG's negatives for the training loops below: an MLP generator of ``d``-vectors and the
    statistics network of its entropy estimate, trained together for low energy and high
    entropy (``I(x; z)``); Adam at 1e-4, betas (0.5, 0.9)."""

    def __init__(self, d: int, latent_dim: int, entropy_weight: float = 1.0):
        self.latent_dim, self.entropy_weight = latent_dim, entropy_weight
        self.gen, self.stats = MLPGenerator(latent_dim, d), MLPStatistics(d, latent_dim)
        players = [*self.gen.parameters(), *self.stats.parameters()]
        self.opt = torch.optim.Adam(players, lr=1e-4, betas=(0.5, 0.9))

    def step(self, energy: Callable[[torch.Tensor], torch.Tensor], frozen: nn.Module, batch: int):
        """One update of the generator against ``energy``; ``frozen`` gets no gradient."""
        frozen.requires_grad_(False)
        z = torch.randn(batch, self.latent_dim)
        g = self.gen(z)
        stats = self.stats
        mi = jsd_mutual_information(stats(g, z), stats(g, z[torch.randperm(batch)]))
        loss = energy(g).mean() - self.entropy_weight * mi
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        frozen.requires_grad_(True)

    @torch.no_grad()
    def sample(self, batch: int) -> torch.Tensor:
        return self.gen(torch.randn(batch, self.latent_dim))  # (batch, d)


class FeatureAdapter:
    """Train a copy of ``tail`` on the normal class's trunk activations.

    Parameters
    ----------
    tail : torch.nn.Module
        Maps flat activations ``(B, d)`` to features ``(B, p)``; copied, never changed.
    negatives : {"generator", "gaussian", "none"}, default="generator"
        See :data:`NEGATIVES`.
    steps : int, default=100
        Updates of the tail (each after one generator update with ``"generator"``).
    batch_size : int, default=64
    learning_rate : float, default=1e-4
        Adam step size of the tail.
    pull : float, default=1e-3
        Weight of ``sum ||theta - theta_0||^2`` over the tail's weights.
    gp_weight : float, default=0.1
        Weight of the zero-centred gradient penalty on real activations (generator only).
    entropy_weight : float, default=1.0
        Weight of the generator's entropy term.
    latent_dim : int, default=64
    random_state : int, default=0

    Attributes
    ----------
    tail_ : torch.nn.Module
        The adapted tail, in eval mode.
    centre_ : torch.Tensor
        The class's mean unit-length feature under the pretrained tail, unit length.
    history_ : list of dict
        ``step``, ``loss`` and the mean energy of the real batch, every 50 steps.
    """

    def __init__(
        self,
        tail: nn.Module,
        *,
        negatives: str = "generator",
        steps: int = 100,
        batch_size: int = 64,
        learning_rate: float = 1e-4,
        pull: float = 1e-3,
        gp_weight: float = 0.1,
        entropy_weight: float = 1.0,
        latent_dim: int = 64,
        random_state: int = 0,
    ):
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
        self.tail = tail
        self.negatives = negatives
        self.steps = steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.pull = pull
        self.gp_weight = gp_weight
        self.entropy_weight = entropy_weight
        self.latent_dim = latent_dim
        self.random_state = random_state

    def _energy(self, tail: nn.Module, a: torch.Tensor) -> torch.Tensor:
        f = tail(a)  # (B, p)
        return (f / f.norm(dim=1, keepdim=True) - self.centre_).square().sum(1)  # (B,), 0..4

    def fit(self, activations: np.ndarray, log: Callable[[str], None] | None = None):
        """Adapt the tail to ``activations`` (n, d) of normal samples; returns ``self``."""
        A = torch.from_numpy(np.ascontiguousarray(activations, dtype=np.float32))
        n, d = A.shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            rng = np.random.default_rng(self.random_state)
            tail = copy.deepcopy(self.tail).train()
            start = [p.detach().clone() for p in tail.parameters()]
            centre = torch.from_numpy(adapted_features(self.tail, activations).mean(0))
            self.centre_ = centre / centre.norm()
            opt = torch.optim.Adam(tail.parameters(), lr=self.learning_rate)
            mean, spread = A.mean(0), A.std(0)
            batch = min(self.batch_size, n)
            if self.negatives == "generator":
                gen = _GeneratorNegatives(d, self.latent_dim, self.entropy_weight)
            self.history_ = []
            for step in range(self.steps):
                x = A[rng.choice(n, batch, replace=False)]  # (B, d)
                if self.negatives == "generator":  # G: low energy, high entropy
                    gen.step(lambda g, tail=tail: self._energy(tail, g), tail, batch)
                x = x.requires_grad_(self.negatives == "generator")
                e_real = self._energy(tail, x)
                loss = e_real.mean()
                if self.negatives == "gaussian":
                    noise = mean + spread * torch.randn(batch, d)
                    loss = loss - self._energy(tail, noise).mean()
                elif self.negatives == "generator":
                    fake = gen.sample(batch)
                    (grad,) = torch.autograd.grad(e_real.sum(), x, create_graph=True)
                    penalty = grad.square().sum(1).mean()
                    loss = loss - self._energy(tail, fake).mean() + self.gp_weight * penalty
                moved = zip(tail.parameters(), start, strict=True)
                loss = loss + self.pull * sum((p - p0).square().sum() for p, p0 in moved)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if (step + 1) % 50 == 0 or step + 1 == self.steps:
                    record = {
                        "step": step + 1,
                        "loss": loss.item(),
                        "energy_real": e_real.mean().item(),
                    }
                    self.history_.append(record)
                    if log is not None:
                        log(f"    {self.negatives} {record}")
        self.tail_ = tail.eval().requires_grad_(False)
        return self

    def transform(self, activations: np.ndarray) -> np.ndarray:
        """Unit-length adapted features of ``activations``, float32 (n, p)."""
        return adapted_features(self.tail_, activations)


class ResidualQuadratic(nn.Module):
    """A low-capacity residual energy on top of a fixed one: a weighted sum of squared
    whitened coordinates on the ``k`` leading principal directions of the data,
    ``r(x) = sum_j softplus(a_j) * ((x - mu) . p_j)^2 / lambda_j / k``, each weight starting
    near 0 (``softplus(-4) = 0.018``). ``(B, d) -> (B,)``."""

    def __init__(self, data: np.ndarray, k: int = 64):
        super().__init__()
        X = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        mean = X.mean(0)
        _, s, vt = torch.linalg.svd(X - mean, full_matrices=False)
        k = min(k, len(s))
        var = (s[:k] ** 2 / max(len(X) - 1, 1)).clamp_min(1e-12)
        self.register_buffer("mean", mean)
        self.register_buffer("projection", vt[:k].T / var.sqrt())  # (d, k): whitened coordinates
        self.log_weight = nn.Parameter(torch.full((k,), -4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) @ self.projection  # (B, k)
        return (nn.functional.softplus(self.log_weight) * z.square()).mean(1)


def fit_residual(
    base: nn.Module,
    data: np.ndarray,
    *,
    negatives: str = "generator",
    steps: int = 200,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    gp_weight: float = 0.1,
    spread: float = 2.0,
    latent_dim: int = 64,
    random_state: int = 0,
) -> ResidualQuadratic:
    """Train a :class:`ResidualQuadratic` ``r`` on ``data`` so that ``base(x) + r(x)`` is low on
    the data and high on negatives: a Gaussian ``spread`` times as broad as the data
    (``"gaussian"``) or samples of a generator trained on ``base + r`` with MEG's entropy term
    (``"generator"``); MEG's zero-centred gradient penalty on real data. ``base`` is fixed."""
    if negatives not in ("gaussian", "generator"):
        raise ValueError(f"negatives must be gaussian or generator, got {negatives!r}")
    X = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    n, d = X.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        rng = np.random.default_rng(random_state)
        residual = ResidualQuadratic(data)
        opt = torch.optim.Adam(residual.parameters(), lr=learning_rate)
        base.requires_grad_(False)
        std = X.std(0)
        batch = min(batch_size, n)
        if negatives == "generator":
            gen = _GeneratorNegatives(d, latent_dim)
        for _ in range(steps):
            if negatives == "generator":  # G: low energy under base + r, high entropy
                gen.step(lambda g: base(g) + residual(g), residual, batch)
                fake = gen.sample(batch)
            else:
                fake = X.mean(0) + spread * std * torch.randn(batch, d)
            x = X[rng.choice(n, batch, replace=False)].requires_grad_(True)
            e_real = residual(x)
            (grad,) = torch.autograd.grad(e_real.sum(), x, create_graph=True)
            loss = e_real.mean() - residual(fake).mean() + gp_weight * grad.square().sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return residual.eval().requires_grad_(False)
