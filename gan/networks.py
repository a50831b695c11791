"""Networks of the MEG energy GAN: energy ``E(x)``, generator ``G(z)``, statistics ``T(x, z)``.

Two families: MLPs for tabular vectors and convolutional networks for square images with 1 or 3
channels. The energy network has no batch normalisation, so the energy of a sample never depends
on the other samples in its batch (scores are the same in any batch size or order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from coreset_meg.common import distributed

__all__ = [
    "ConvEnergy",
    "CoresetEnergy",
    "ConvGenerator",
    "ConvStatistics",
    "MLPEnergy",
    "MLPGenerator",
    "MLPStatistics",
    "build_networks",
    "image_geometry",
    "orthogonal_weights",
    "SyncedBatchNorm",
    "ViewsEnergy",
    "spectral_normalise",
    "sync_batch_norm",
]


def _mlp(sizes: Sequence[int], slope: float = 0.2) -> nn.Sequential:
    """Linear layers with LeakyReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


def image_geometry(shape: Sequence[int]) -> tuple[int, int]:
    """Number of stride-2 stages and base resolution for a ``(C, H, W)`` image shape.

    The side is halved while it stays even and at least 4 after halving, so 28 -> 14 -> 7
    (2 stages, base 7), 32 -> 16 -> 8 -> 4 (3 stages, base 4), 8 -> 4 (1 stage).

    Raises
    ------
    ValueError
        For non-square images, channel counts other than 1 or 3, or sides the nets cannot halve.
    """
    if len(shape) != 3:
        raise ValueError(f"image shape must be (channels, height, width), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    if c not in (1, 3):
        raise ValueError(f"convolutional nets take 1 or 3 channels, got {c}")
    if h != w:
        raise ValueError(f"convolutional nets take square images, got {h}x{w}")
    stages, side = 0, h
    while side % 2 == 0 and side // 2 >= 4 and stages < 5:
        side //= 2
        stages += 1
    if stages == 0:
        raise ValueError(
            f"image size {h}x{w} is not supported by the convolutional nets: "
            "use an even side of at least 8 (e.g. 28, 32, 64) or the MLP"
        )
    return stages, side


class MLPEnergy(nn.Module):
    """Energy of a vector: ``(B, d) -> (B,)``; low energy = normal."""

    def __init__(self, in_dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.net = _mlp([in_dim] + [hidden] * depth + [1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


class CoresetEnergy(nn.Module):
    """Core-set energy: a mixture energy on core-set centres plus a Gaussian term,

    ``E(x) = -t log sum_j exp(a_j - ||x - c_j||^2 / t) + t log sum_j exp(a_j)
    + g (x - mu)^T P (x - mu)``.

    The centres ``c_j`` are training inputs (a greedy k-center core-set of them), set with
    :meth:`set_centres` before training, as are the mean ``mu``, the precision ``P`` (of a
    shrunk covariance) and the Gaussian's weight ``g``. The density is a product of two experts,
    a Gaussian mixture on the centres and one broad Gaussian: the first rises with the distance
    to the nearest centres, the second with the distance from the data's bulk along its
    directions of little spread, so the energy rises away from the data in every direction (an
    MLP's energy can fall there). MEG training learns the log-weights ``a_j`` (initially 0) and
    the temperature ``t``. The energy is in units of squared distance; with equal weights the
    mixture term is the squared distance to the nearest centre minus at most ``t log k``. A
    centre at zero distance from a sample is left out (a training sample is scored against the
    others, leave one out).

    ``(B, *shape) -> (B,)``; inputs are flattened.
    """

    def __init__(self, in_dim: int, n_centres: int = 1, temperature: float = 1.0):
        super().__init__()
        self.register_buffer("centres", torch.zeros(n_centres, in_dim))
        self.register_buffer("centre_sq", torch.zeros(n_centres))
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("precision_factor", torch.zeros(in_dim, in_dim))  # P = F F^T
        self.log_weight = nn.Parameter(torch.zeros(n_centres))
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())

    @torch.no_grad()
    def set_centres(
        self,
        centres: torch.Tensor,
        temperature: float,
        mean: torch.Tensor | None = None,
        precision: torch.Tensor | None = None,
        gaussian_weight: float = 0.0,
        covariance: torch.Tensor | None = None,
    ) -> None:
        """Use ``centres`` (k, d) with equal weights and temperature ``temperature`` (> 0), and
        the Gaussian term ``gaussian_weight * (x - mean)^T precision (x - mean)`` (none when
        ``precision`` is None or the weight is 0). ``covariance`` instead of ``precision``: its
        pseudo-inverse is the precision (one eigendecomposition fewer)."""
        centres = centres.detach().flatten(1).to(self.centres)
        self.centres = centres.clone()
        self.centre_sq = (centres * centres).sum(1)
        self.log_weight.data = torch.zeros(len(centres), device=centres.device)  # same Parameter
        self.log_temperature.copy_(torch.tensor(float(temperature)).log())
        _set_gaussian(self, centres, mean, precision, gaussian_weight, covariance)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A fresh module has one placeholder centre: take the shapes of the saved core-set.
        device = self.centres.device
        centres = state_dict.get(prefix + "centres")
        if centres is not None and centres.shape != self.centres.shape:
            self.centres = torch.empty_like(centres, device=device)
            self.centre_sq = torch.empty(len(centres), device=device)
            self.log_weight.data = torch.empty(len(centres), device=device)
        factor = state_dict.get(prefix + "precision_factor")
        if factor is not None and factor.shape != self.precision_factor.shape:
            self.precision_factor = torch.empty_like(factor, device=device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().exp())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        d2 = (f * f).sum(1, keepdim=True) - 2.0 * f @ self.centres.T + self.centre_sq
        energy = _mixture_energy(d2, self.log_weight, self.log_temperature)
        if self.precision_factor.shape[1]:
            energy = energy + _gaussian_energy(self, f)
        return energy


@torch.no_grad()
def _set_gaussian(
    net: nn.Module,
    centres: torch.Tensor,
    mean: torch.Tensor | None,
    precision: torch.Tensor | None,
    gaussian_weight: float,
    covariance: torch.Tensor | None = None,
) -> None:
    """Set ``net.mean`` and ``net.precision_factor`` for the Gaussian term
    ``gaussian_weight * (x - mean)^T precision (x - mean)`` on the inputs that ``centres``
    (k, d) lie in (none when ``precision`` and ``covariance`` are None or the weight is 0).
    With ``covariance``, the precision is its pseudo-inverse (as ``scipy.linalg.pinvh`` takes
    it: eigenvalues below ``d * eps`` of the largest count as zero)."""
    d = centres.shape[1]
    if (precision is None and covariance is None) or gaussian_weight == 0:
        net.mean.zero_()
        net.precision_factor = torch.zeros(d, 0, device=centres.device)
        return
    net.mean.copy_(mean.reshape(d))
    # P = V diag(w) V^T = F F^T with F = V diag(sqrt(w)): (x P x) = ||x F||^2.
    if covariance is not None:  # P = V diag(1 / c) V^T from C = V diag(c) V^T
        values, vectors = torch.linalg.eigh(covariance.to(torch.float64))
        cutoff = values.abs().max() * d * torch.finfo(torch.float64).eps
        values = torch.where(values > cutoff, 1.0 / values, torch.zeros_like(values))
    else:
        values, vectors = torch.linalg.eigh(precision.to(torch.float64))
    factor = vectors * (gaussian_weight * values.clamp_min(0.0)).sqrt()
    net.precision_factor = factor.to(centres)


def _gaussian_energy(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    """``(x - mean)^T P (x - mean)`` per row of ``f`` (B, d), ``P = F F^T`` as set above."""
    return ((f - net.mean) @ net.precision_factor).square().sum(1)


def _mixture_energy(
    d2: torch.Tensor, log_weight: torch.Tensor, log_temperature: torch.Tensor
) -> torch.Tensor:
    """``-t log sum_j exp(a_j - d2_j / t) + t log sum_j exp(a_j)`` per row of the squared
    distances ``d2`` (B, k), leaving out a centre at (numerically) zero distance."""
    t = log_temperature.exp()
    logits = log_weight - d2.clamp_min(0.0) / t
    # A centre at (numerically) zero distance is the sample itself: leave it out, so that a
    # training sample is scored against the other centres as a new sample would be (with
    # itself, every training sample would get the same, lowest energy).
    logits = logits.masked_fill(d2 <= 1e-3 * t, float("-inf"))
    return -t * (torch.logsumexp(logits, dim=1) - torch.logsumexp(log_weight, dim=0))


class ViewsEnergy(nn.Module):
    """An anomaly in any view: core-set energies of two column blocks and of both together,
    each read against its own training energies, and the largest.

    For rows ``[u | v]`` (the both view of images: ``u`` the pixels, ``v`` the unit-length
    features, ``split`` = the number of pixels), three mixture energies share the centres and
    their log-weights: ``E_u`` on the first block, ``E_v`` on the second (plus the Gaussian term,
    on that block only) and ``E_uv`` on the whole row, each with its own temperature (a
    fraction of its block's median nearest-neighbour squared distance). Each is turned into a
    tail score, ``s(e) = -log mean_i Phi((c_i - e) / h)``: minus the log of the smoothed share of
    a seeded subsample of training energies ``c_i`` (leave one out) above ``e``, with the
    bandwidth ``h`` of Silverman's rule; it rises smoothly past the largest ``c_i``, so the
    most anomalous samples do not tie. The energy is ``s_uv + max(s_u, s_v)``: the joint view,
    plus the more surprised of the two single views, so that a digit the pixels see as normal
    but the features do not (or the reverse) is still flagged. Chosen on the MNIST validation
    splits among sums and maxima of the three (docs/results/gan-ablation.md): the only one that
    kept every held-out digit within 0.10 AUPRC of the better of pixels and features (worst
    0.087 short, where the joint energy alone fell 0.136 short on digit 1), with the joint
    energy's held-out mean (0.876 against 0.877) and 0.001 above it on one-class.

    Set with :meth:`set_parts` (centres, temperatures, Gaussian term) and then
    :meth:`calibrate`; ``(B, d) -> (B,)``. In training mode the energy is the sum of the three
    (a product of experts, what MEG training can move); calibrate again after training.
    """

    def __init__(self, in_dim: int, split: int, n_centres: int = 1, n_calibration: int = 2):
        super().__init__()
        if not 0 < split < in_dim:
            raise ValueError(f"split must be in 1..{in_dim - 1}, got {split}")
        self.split = int(split)
        self.register_buffer("centres", torch.zeros(n_centres, in_dim))
        self.register_buffer("centre_sq", torch.zeros(2, n_centres))  # per block
        self.register_buffer("mean", torch.zeros(in_dim - split))
        self.register_buffer("precision_factor", torch.zeros(in_dim - split, 0))
        self.register_buffer("calibration", torch.zeros(3, n_calibration))  # sorted, per view
        self.register_buffer("bandwidth", torch.ones(3))
        self.log_weight = nn.Parameter(torch.zeros(n_centres))
        self.log_temperature = nn.Parameter(torch.zeros(3))

    @torch.no_grad()
    def set_parts(
        self,
        centres: torch.Tensor,
        temperatures: Sequence[float],
        mean: torch.Tensor | None = None,
        precision: torch.Tensor | None = None,
        gaussian_weight: float = 0.0,
        covariance: torch.Tensor | None = None,
    ) -> None:
        """Use ``centres`` (k, d) with equal weights, the temperatures of the first block, the
        second and the whole row, and the Gaussian term of the second block (``mean`` and
        ``precision``, or ``covariance``, of that block; none when the weight is 0). Calibrate
        afterwards."""
        centres = centres.detach().flatten(1).to(self.centres)
        s = self.split
        self.centres = centres.clone()
        self.centre_sq = torch.stack([(c * c).sum(1) for c in (centres[:, :s], centres[:, s:])])
        self.log_weight.data = torch.zeros(len(centres), device=centres.device)
        self.log_temperature.copy_(torch.tensor([float(t) for t in temperatures]).log())
        _set_gaussian(self, centres[:, s:], mean, precision, gaussian_weight, covariance)

    @torch.no_grad()
    def calibrate(self, rows: torch.Tensor, chunk: int = 1024) -> None:
        """Read each view's energy against its energies at ``rows`` (training samples, each
        scored leave one out)."""
        energies = torch.cat([self.view_energies(b) for b in rows.flatten(1).split(chunk)], 1)
        self.calibration = energies.sort(dim=1).values
        n = energies.shape[1]
        spread = energies.std(dim=1) if n > 1 else torch.ones(3, device=energies.device)
        self.bandwidth = (1.06 * spread * n ** (-0.2)).clamp_min(1e-12)

    def view_energies(self, x: torch.Tensor) -> torch.Tensor:
        """``(3, B)``: the energies of the first block, the second and the whole row."""
        f = x.flatten(1)
        s = self.split
        d2 = []
        for i, part in enumerate((f[:, :s], f[:, s:])):
            c = self.centres[:, :s] if i == 0 else self.centres[:, s:]
            d2.append((part * part).sum(1, keepdim=True) - 2.0 * part @ c.T + self.centre_sq[i])
        e_u = _mixture_energy(d2[0], self.log_weight, self.log_temperature[0])
        e_v = _mixture_energy(d2[1], self.log_weight, self.log_temperature[1])
        e_uv = _mixture_energy(d2[0] + d2[1], self.log_weight, self.log_temperature[2])
        if self.precision_factor.shape[1]:
            e_v = e_v + _gaussian_energy(self, f[:, s:])
        return torch.stack([e_u, e_v, e_uv])

    def tail_scores(self, energies: torch.Tensor) -> torch.Tensor:
        """``(3, B)``: each view's energies (:meth:`view_energies`) as smoothed tail scores
        against its calibration energies."""
        z = (self.calibration[:, None, :] - energies[:, :, None]) / self.bandwidth[:, None, None]
        return -(torch.special.log_ndtr(z).logsumexp(dim=2) - math.log(z.shape[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.view_energies(x)  # (3, B)
        if self.training:  # MEG trains the three experts' product; the read-out is for scoring
            return e.sum(dim=0)
        tail = self.tail_scores(e)
        return tail[2] + torch.maximum(tail[0], tail[1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A fresh module has placeholder shapes: take those of the saved one.
        for name in ("centres", "centre_sq", "precision_factor", "calibration"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=self.centres.device))
        weight = state_dict.get(prefix + "log_weight")
        if weight is not None and weight.shape != self.log_weight.shape:
            self.log_weight.data = torch.empty_like(weight, device=self.centres.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MLPGenerator(nn.Module):
    """Generator of vectors: ``(B, latent) -> (B, d)``, with batch norm and ReLU."""

    def __init__(self, latent_dim: int, out_dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        size = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(size, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            size = hidden
        layers.append(nn.Linear(size, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPStatistics(nn.Module):
    """Statistics network ``T(x, z)`` of the mutual-information estimator: ``-> (B,)``."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: int = 256, depth: int = 2):
        super().__init__()
        self.net = _mlp([in_dim + latent_dim] + [hidden] * depth + [1])

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.flatten(1), z], dim=1)).squeeze(1)


def _conv_features(channels: int, width: int, stages: int) -> tuple[nn.Sequential, int]:
    """Stride-2 4x4 convolutions (no normalisation); returns the stack and its output channels."""
    layers: list[nn.Module] = []
    c_in, c_out = channels, width
    for _ in range(stages):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c_in, c_out = c_out, c_out * 2
    return nn.Sequential(*layers), c_in


class ConvEnergy(nn.Module):
    """Energy of an image: ``(B, C, H, W) -> (B,)``, strided convolutions then a linear head."""

    def __init__(self, shape: Sequence[int], width: int = 32):
        super().__init__()
        stages, base = image_geometry(shape)
        self.features, c = _conv_features(int(shape[0]), width, stages)
        self.head = nn.Linear(c * base * base, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


class ConvGenerator(nn.Module):
    """DCGAN-like generator: ``(B, latent) -> (B, C, H, W)`` in [-1, 1]."""

    def __init__(self, latent_dim: int, shape: Sequence[int], width: int = 32):
        super().__init__()
        stages, base = image_geometry(shape)
        c = width * 2 ** (stages - 1)
        self.base, self.c0 = base, c
        self.project = nn.Sequential(
            nn.Linear(latent_dim, c * base * base), nn.BatchNorm1d(c * base * base), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for i in range(stages):
            last = i == stages - 1
            c_out = int(shape[0]) if last else c // 2
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        self.blocks = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.c0, self.base, self.base)  # (B, c0, base, base)
        return self.blocks(h)  # (B, C, H, W)


class ConvStatistics(nn.Module):
    """``T(x, z)`` for images: the energy network's conv shape, then an MLP on ``[features, z]``."""

    def __init__(self, shape: Sequence[int], latent_dim: int, width: int = 32, hidden: int = 256):
        super().__init__()
        stages, base = image_geometry(shape)
        self.features, c = _conv_features(int(shape[0]), width, stages)
        self.head = _mlp([c * base * base + latent_dim, hidden, 1])

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(1)
        return self.head(torch.cat([h, z], dim=1)).squeeze(1)


#: Layers whose weights spectral normalisation and orthogonal regularisation act on.
_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)


def _weighted_layers(net: nn.Module):
    return [m for m in net.modules() if isinstance(m, _WEIGHTED)]


def spectral_normalise(net: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectral normalisation of every linear and conv layer of ``net``, in place (Miyato et
    al. 2018; BigGAN uses it in both networks): each weight is divided by an estimate of its
    largest singular value, refined by ``n_power_iterations`` of the power method per forward
    pass in training mode. Uses ``torch.nn.utils.parametrizations.spectral_norm`` (its random
    start vectors come from torch's global stream); returns ``net``."""
    for layer in _weighted_layers(net):
        nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=n_power_iterations)
    return net


def orthogonal_weights(*nets: nn.Module) -> list[torch.Tensor]:
    """The weights BigGAN's orthogonal regularisation acts on: of every linear and conv layer
    of ``nets``, reshaped to ``(out, -1)`` (a transposed convolution's output channels are its
    weight's second axis). Biases, normalisation layers and embeddings are left out; a
    spectrally normalised layer gives its raw weight."""
    weights = []
    for net in nets:
        for layer in _weighted_layers(net):
            if nn.utils.parametrize.is_parametrized(layer, "weight"):
                w = layer.parametrizations.weight.original
            else:
                w = layer.weight
            if isinstance(layer, nn.modules.conv._ConvTransposeNd):
                w = w.transpose(0, 1)
            weights.append(w.flatten(1))  # (out, -1)
    return weights


def build_networks(
    input_shape: Sequence[int],
    latent_dim: int,
    *,
    kind: str = "auto",
    width: int | None = None,
    bounded: bool = False,
    spectral_norm: str = "none",
    views: int | None = None,
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Build ``(E, G, T)`` for inputs of shape ``input_shape`` (without the batch axis).

    Parameters
    ----------
    input_shape : tuple
        ``(d,)`` for vectors or ``(C, H, W)`` for images.
    latent_dim : int
        Size of the generator's input ``z``.
    kind : {"auto", "coreset", "mlp", "conv"}
        "auto" picks convolutions for 3-D shapes and MLPs otherwise. "coreset": a
        :class:`CoresetEnergy` (its centres are set from the data before training) with the
        MLP generator and statistics network.
    width : int, optional
        Hidden units of the MLPs (default 256) or base channels of the conv nets (default 32).
    bounded : bool
        For MLPs: end the generator with ``tanh`` (data scaled to [-1, 1]).
    spectral_norm : {"none", "energy", "generator", "both"}
        Which of ``E`` and ``G`` get :func:`spectral_normalise` (the core-set energy has no
        layer to normalise).
    views : int, optional
        For ``kind="coreset"``: the inputs are two views side by side, the first ``views``
        columns and the rest, and the energy is a :class:`ViewsEnergy` over them.
    """
    if spectral_norm not in ("none", "energy", "generator", "both"):
        raise ValueError(
            f"spectral_norm must be none, energy, generator or both, got {spectral_norm!r}"
        )
    energy, generator, stats = _build(input_shape, latent_dim, kind, width, bounded)
    if views is not None:
        if not isinstance(energy, CoresetEnergy):
            raise ValueError(f"views need the coreset network, got network kind {kind!r}")
        energy = ViewsEnergy(energy.centres.shape[1], views)
    if spectral_norm in ("energy", "both"):
        spectral_normalise(energy)
    if spectral_norm in ("generator", "both"):
        spectral_normalise(generator)
    return energy, generator, stats


def _build(input_shape, latent_dim, kind, width, bounded) -> tuple[nn.Module, nn.Module, nn.Module]:
    shape = tuple(int(s) for s in input_shape)
    if kind == "auto":
        kind = "conv" if len(shape) == 3 else "mlp"
    if kind == "conv":
        image_geometry(shape)  # clear error for unsupported shapes
        w = width or 32
        return (
            ConvEnergy(shape, w),
            ConvGenerator(latent_dim, shape, w),
            ConvStatistics(shape, latent_dim, w),
        )
    if kind not in ("mlp", "coreset"):
        raise ValueError(f"network kind must be 'auto', 'coreset', 'mlp' or 'conv', got {kind!r}")
    d = 1
    for s in shape:
        d *= s
    w = width or 256
    gen = MLPGenerator(latent_dim, d, w)
    if bounded:
        gen.net.append(nn.Tanh())
    if kind == "coreset":
        if len(shape) > 1:
            gen.net.append(nn.Unflatten(1, shape))  # samples shaped like the data
        return CoresetEnergy(d), gen, MLPStatistics(d, latent_dim, w)
    return MLPEnergy(d, w), gen, MLPStatistics(d, latent_dim, w)


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation whose training statistics are those of the batches of all ranks
    together (under torchrun), on any device; alone it is plain batch normalisation.

    ``torch.nn.SyncBatchNorm`` does this on GPUs only. Here the per-channel sums, sums of
    squares and counts of every rank are added by one differentiable all-reduce, so the
    generator of a run with ``N`` processes of batch ``B`` normalises as one process with batch
    ``N * B`` does. Parameters and buffers are those of ``nn.BatchNorm1d``/``2d`` (same state
    dict keys): :func:`sync_batch_norm` swaps it in and a saved state loads into either.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"expected at least 2-D input (batch, channels, ...), got {input.dim()}-D"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or distributed.world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (total / (total - 1).clamp_min(1.0))
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks of a tensor; its gradient is the sum over ranks of theirs."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def sync_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm1d``/``2d`` replaced by a :class:`SyncedBatchNorm`
    holding the same parameters and buffers (in place for children; returns the module)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            synced = SyncedBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats,
            )  # fmt: skip
            synced.load_state_dict(child.state_dict())
            synced.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, synced)
        else:
            sync_batch_norm(child)
    return module
