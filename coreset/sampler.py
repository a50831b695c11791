"""Core-set batches for GAN training (Small-GAN): k-center subsets of larger random draws.

Each step, :class:`CoresetSampler` draws ``factor * batch_size`` candidates (latent vectors from
the prior, or training images by index) and keeps the ``batch_size`` of them chosen by greedy
k-center, so a small batch covers what a large one would. Data candidates are compared through
their projected embeddings (computed once, see :func:`make_sampler`).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from coreset_meg.coreset.kcenter import RandomState, check_generator, greedy_k_center_many
from coreset_meg.coreset.projection import GaussianProjection
from coreset_meg.features.embeddings import Embedder, PixelEmbedder, compute_embeddings
from coreset_meg.features.pretrained import make_embedder

__all__ = [
    "CoresetSampler",
    "LatentPrior",
    "Prior",
    "TruncatedPrior",
    "make_prior",
    "make_sampler",
    "truncate",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Prior(Protocol):
    """What the generator's inputs are drawn from: latent vectors today, images later.

    ``shape`` is the shape of one draw; ``draw(n, generator)`` returns ``n`` of them as a float32
    tensor on ``generator.device``, using only that generator's random stream.
    """

    shape: tuple[int, ...]

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


class LatentPrior:
    """Latent vectors: standard normal, or uniform in [-1, 1]; optionally truncated.

    With ``truncation`` (BigGAN's truncation trick), every entry whose magnitude exceeds the
    threshold is drawn again until it is inside (see :func:`truncate`); None or 0: no truncation.

    >>> z = LatentPrior(3, "uniform").draw(5, torch.Generator().manual_seed(0))
    >>> tuple(z.shape), bool(z.abs().max() <= 1)
    ((5, 3), True)
    >>> z = LatentPrior(3, truncation=0.5).draw(100, torch.Generator().manual_seed(0))
    >>> bool(z.abs().max() <= 0.5)
    True
    """

    def __init__(self, latent_dim: int, kind: str = "normal", truncation: float | None = None):
        if kind not in ("normal", "uniform"):
            raise ValueError(f"prior must be 'normal' or 'uniform', got {kind!r}")
        self.shape = (_positive_int(latent_dim, "latent_dim"),)
        self.kind = kind
        self.truncation = _threshold(truncation)

    def _draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        shape = (n, *self.shape)
        if self.kind == "normal":
            return torch.randn(shape, generator=generator, device=generator.device)
        z = torch.rand(shape, generator=generator, device=generator.device)
        return z.mul_(2.0).sub_(1.0)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = self._draw(n, generator)
        if self.truncation is None:
            return z
        return truncate(z, self.truncation, self._draw, generator)

    def __repr__(self) -> str:
        cut = "" if self.truncation is None else f", truncation={self.truncation:g}"
        return f"LatentPrior({self.shape[0]}, {self.kind!r}{cut})"


class TruncatedPrior:
    """Any :class:`Prior` with BigGAN's truncation trick: entries of a draw whose magnitude
    exceeds ``threshold`` are drawn again from ``prior`` until inside (:func:`truncate`)."""

    def __init__(self, prior: Prior, threshold: float):
        if _threshold(threshold) is None:
            raise ValueError(f"truncation threshold must be > 0, got {threshold!r}")
        self.prior, self.threshold = prior, float(threshold)
        self.shape = tuple(prior.shape)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return truncate(self.prior.draw(n, generator), self.threshold, self.prior.draw, generator)

    def __repr__(self) -> str:
        return f"TruncatedPrior({self.prior!r}, {self.threshold:g})"


def truncate(
    z: torch.Tensor,
    threshold: float,
    draw: Callable[[int, torch.Generator], torch.Tensor],
    generator: torch.Generator,
) -> torch.Tensor:
    """BigGAN's truncation trick: redraw every entry of ``z`` with ``|z_i| > threshold`` from
    ``draw(n, generator)`` until all are inside (Brock et al. 2019, section 3.1).

    Vectorised: each round draws fresh rows only for the rows that still have an entry outside
    and replaces those entries. The result follows the prior restricted to the threshold; it is
    seeded by ``generator`` alone. ``z`` is not modified.

    Parameters
    ----------
    z : torch.Tensor of shape (n, *shape)
        Draws of the prior.
    threshold : float
        Largest magnitude kept (> 0). Rounds grow as the prior's mass inside shrinks.
    draw : callable
        ``draw(n, generator)`` -> n fresh draws of the prior (``Prior.draw``).
    generator : torch.Generator
        The only random stream used.

    Returns
    -------
    torch.Tensor of the shape of ``z``, every entry in ``[-threshold, threshold]``
    """
    if not threshold > 0:
        raise ValueError(f"truncation threshold must be > 0, got {threshold!r}")
    z = z.clone()
    outside = z.abs() > threshold
    rows = outside.flatten(1).any(1).nonzero().squeeze(1)  # rows with an entry outside
    while len(rows):
        fresh = draw(len(rows), generator).to(z)  # (r, *shape)
        block = torch.where(outside[rows], fresh, z[rows])
        z[rows] = block
        outside_rows = block.abs() > threshold
        outside[rows] = outside_rows
        rows = rows[outside_rows.flatten(1).any(1)]
    return z


def _threshold(value: float | None) -> float | None:
    """A truncation threshold: None or 0 -> None (off), a positive number -> float."""
    if value is None or (isinstance(value, numbers.Real) and value == 0):
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"truncation must be None, 0 or a positive number, got {value!r}")
    return float(value)


def make_prior(prior: str | Prior, latent_dim: int, truncation: float | None = None) -> Prior:
    """A :class:`Prior` from its name ("normal", "uniform") or an object that already is one;
    ``truncation`` (None or 0: none) truncates it (:class:`TruncatedPrior`)."""
    if isinstance(prior, str):
        return LatentPrior(latent_dim, prior, truncation)
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be 'normal', 'uniform' or a Prior, got {prior!r}")
    threshold = _threshold(truncation)
    return prior if threshold is None else TruncatedPrior(prior, threshold)


# Values (candidates x (dimension + 1)) stacked per batched selection when lookahead is None:
# measured fastest for 2-D data and for 32-d embeddings alike (more spills out of the cache).
_STACK_VALUES = 2**18


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class CoresetSampler:
    """Draw core-set batches of data indices and of prior latent vectors.

    Parameters
    ----------
    data_embeddings : numpy.ndarray of shape (n_samples, p) or None
        Projected embeddings of the training samples, compared by Euclidean distance. ``None``
        makes :meth:`sample_data_indices` draw plain random batches (``n_samples`` is then
        required).
    batch_size : int
        Size of every batch returned.
    latent_dim : int
        Dimension of the latent vectors.
    prior_factor : int, default=4
        Latent candidates per kept vector; 1 means plain prior draws with no selection.
    data_factor : int, default=8
        Data candidates per kept sample; 1 means plain random batches with no selection. At
        most ``n_samples`` candidates are drawn.
    prior : {"normal", "uniform"} or Prior, default="normal"
        Standard normal, uniform in [-1, 1], or any :class:`Prior` (its draws are flattened
        for the k-center selection).
    n_samples : int, optional
        Number of training samples; needed only when ``data_embeddings`` is None (otherwise it
        must equal ``len(data_embeddings)`` if given).
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, default=None
        Seeds everything. The data draws use ``numpy.random.default_rng(random_state)`` itself
        (a ``Generator`` is used as is); the prior uses a numpy generator spawned from it and a
        ``torch.Generator`` seeded from that. Global seeds are never touched.
    device : str or torch.device, default="cpu"
        Device of the latent batches. Selection always runs on the CPU: for the few hundred
        candidates of a training step a CPU loop costs a fraction of a millisecond, while on a
        GPU each of the ``batch_size`` picks would cost several kernel launches (on a shared
        H100 that made selection two thirds of the step). Core-set latents are drawn on the CPU
        and the chosen ones copied to ``device``.
    lookahead : int or None, default=None
        Batches selected at once, with :func:`~coreset_meg.coreset.greedy_k_center_many`: the
        candidates of the next ``lookahead`` batches are drawn in the order single batches would
        draw them, so the batches are exactly those of ``lookahead=1``, at a fraction of the
        selection time (numpy's per-call overhead is paid once per pick for all of them). None sizes
        it per kind of batch so that the stacked candidates hold about 2**18 values, from 1 to 64
        sets: 64 for 2-D data, about 16 for 512 candidates in 32-d (more sets than fit in the
        cache are slower again).
    stratified : bool, default=False
        Keep a stratified, weighted batch instead of the k-center points themselves: the
        k-center picks split the candidates into ``batch_size`` cells (each candidate belongs to
        its nearest pick), one candidate drawn uniformly from each cell is kept, and it is
        weighted by its cell's size over the mean size (:meth:`sample_data_batch`,
        :meth:`sample_prior_batch`; weights average 1). The plain k-center points over-represent
        the candidates' outskirts (the latent box's faces and corners, the tails of each data
        mode); the weighted stratified batch is an unbiased estimate of the whole draw, hence of
        the prior and of the data, and still holds one point of every cell.

    Attributes
    ----------
    n_samples : int
        Number of training samples indices are drawn from.
    selection_seconds : float
        Wall-clock seconds spent in k-center selection so far (data and prior), e.g. to report
        the selection's share of a training step (the host-to-device copy of the chosen
        latents included).
    n_selections : int
        Number of k-center selections run so far.

    References
    ----------
    .. [1] S. Sinha, H. Zhang, A. Goyal, Y. Bengio, H. Larochelle and A. Odena, "Small-GAN:
       Speeding up GAN Training using Core-Sets", ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> emb = np.random.default_rng(0).standard_normal((1000, 32))
    >>> sampler = CoresetSampler(emb, batch_size=64, latent_dim=128, random_state=0)
    >>> sampler.sample_data_indices().shape
    (64,)
    >>> tuple(sampler.sample_prior().shape)
    (64, 128)
    """

    def __init__(
        self,
        data_embeddings: np.ndarray | None,
        *,
        batch_size: int,
        latent_dim: int,
        prior_factor: int = 4,
        data_factor: int = 8,
        prior: str | Prior = "normal",
        n_samples: int | None = None,
        random_state: RandomState = None,
        device: str | torch.device = "cpu",
        lookahead: int | None = None,
        stratified: bool = False,
    ):
        self.stratified = bool(stratified)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        self.prior_factor = _positive_int(prior_factor, "prior_factor")
        self.data_factor = _positive_int(data_factor, "data_factor")
        self.prior = make_prior(prior, self.latent_dim)
        self.device = torch.device(device)
        self.lookahead = None if lookahead is None else _positive_int(lookahead, "lookahead")
        self._data_queue: deque[np.ndarray] = deque()
        self._prior_queue: deque[torch.Tensor] = deque()
        # Weights of the queued batches (stratified batches only), in the same order.
        self._data_weights: deque[np.ndarray] = deque()
        self._prior_weights: deque[torch.Tensor] = deque()

        if data_embeddings is None:
            if n_samples is None:
                raise ValueError("n_samples is required when data_embeddings is None")
            self.n_samples = _positive_int(n_samples, "n_samples")
            self.data_embeddings = None
        else:
            if isinstance(data_embeddings, torch.Tensor):
                data_embeddings = data_embeddings.detach().cpu().numpy()
            emb = np.ascontiguousarray(data_embeddings, dtype=np.float32)
            if emb.ndim != 2 or len(emb) == 0:
                raise ValueError(f"data_embeddings must have shape (n_samples, p), got {emb.shape}")
            if not np.isfinite(emb).all():
                raise ValueError("data_embeddings contains NaN or infinite values")
            if n_samples is not None and n_samples != len(emb):
                raise ValueError(
                    f"n_samples={n_samples} does not match len(data_embeddings)={len(emb)}"
                )
            self.n_samples = len(emb)
            self.data_embeddings = emb
        if self.batch_size > self.n_samples:
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the number of samples {self.n_samples}"
            )

        self._data_rng = check_generator(random_state)
        self._prior_rng = self._data_rng.spawn(1)[0]
        seed = int(self._prior_rng.integers(2**63 - 1))
        self._torch_gen = torch.Generator(device=self.device)
        self._torch_gen.manual_seed(seed)
        # Core-set latents are drawn and selected on the CPU (see ``device`` above).
        self._host_gen = self._torch_gen
        if self.device.type != "cpu":
            self._host_gen = torch.Generator()
            self._host_gen.manual_seed(seed)

        self.selection_seconds = 0.0
        self.n_selections = 0

    def _sets_at_once(self, n_candidates: int, dim: int) -> int:
        """How many selections to stack: ``lookahead``, or (None) about 2**18 values' worth."""
        if self.lookahead is not None:
            return self.lookahead
        return int(np.clip(_STACK_VALUES // (n_candidates * (dim + 1)), 1, 64))

    def _select(self, X: np.ndarray, firsts: list[int]) -> np.ndarray:
        """Greedy k-center of ``batch_size`` rows in each of the stacked sets ``X``, timed."""
        start = time.perf_counter()
        idx = greedy_k_center_many(X, self.batch_size, first=firsts)  # (sets, batch_size)
        self.selection_seconds += time.perf_counter() - start
        self.n_selections += len(X)
        return idx

    def _stratify(
        self, X: np.ndarray, chosen: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stratified picks: the k-center picks ``chosen`` (sets, k) of the stacked candidates
        ``X`` (sets, n, d) are the centres of ``k`` cells (each candidate in the cell of its
        nearest pick, a pick in its own); one member of each cell is drawn uniformly from
        ``rng``. Returns the members' indices (sets, k) and the cells' weights ``size * k / n``
        (sets, k), float32, which average 1."""
        start = time.perf_counter()
        sets, n, _ = X.shape
        k = chosen.shape[1]
        cells = np.empty((sets, n), dtype=np.int64)
        for s in range(sets):  # (n, k) distances, one set at a time (bounded memory)
            centres = X[s, chosen[s]].astype(np.float64)  # (k, d)
            pts = X[s].astype(np.float64)
            d2 = (pts**2).sum(1)[:, None] - 2 * pts @ centres.T + (centres**2).sum(1)[None]
            cells[s] = d2.argmin(1)
            cells[s, chosen[s]] = np.arange(k)  # a pick is in its own cell (ties, duplicates)
        keys = rng.random((sets, n))  # a uniform member of each cell: the largest key
        flat = (cells + k * np.arange(sets)[:, None]).ravel()
        order = np.lexsort((keys.ravel(), flat))  # by cell, then key
        last = np.flatnonzero(np.r_[flat[order][1:] != flat[order][:-1], True])
        members = (order[last] % n).reshape(sets, k)  # cells 0..k-1 of each set, in order
        sizes = np.bincount(flat, minlength=sets * k).reshape(sets, k)
        weights = (sizes * (k / n)).astype(np.float32)
        self.selection_seconds += time.perf_counter() - start
        return members, weights

    def sample_data_indices(self) -> np.ndarray:
        """Indices of one core-set batch of training samples.

        Draws ``min(data_factor * batch_size, n_samples)`` distinct candidates uniformly and keeps
        the ``batch_size`` chosen by greedy k-center on their embeddings. With ``data_factor``
        1, no embeddings, or as many candidates as the batch, the candidates themselves are the
        batch: ``rng.choice(n_samples, batch_size, replace=False)``.

        Returns
        -------
        numpy.ndarray of int64, shape (batch_size,)
            Distinct indices into the training set.
        """
        n_candidates = min(self.data_factor * self.batch_size, self.n_samples)
        if self.data_embeddings is None:
            n_candidates = self.batch_size
        if n_candidates == self.batch_size:
            candidates = self._data_rng.choice(self.n_samples, n_candidates, replace=False)
            return candidates.astype(np.int64, copy=False)
        if not self._data_queue:
            # The draws of `lookahead` single selections, in their order: candidates, then the
            # starting index (what greedy_k_center(..., random_state=rng) would draw).
            candidates, firsts = [], []
            dim = self.data_embeddings.shape[1]
            for _ in range(self._sets_at_once(n_candidates, dim)):
                candidates.append(
                    self._data_rng.choice(self.n_samples, n_candidates, replace=False)
                )
                firsts.append(int(self._data_rng.integers(n_candidates)))
            cand = np.stack(candidates)  # (lookahead, n_candidates)
            chosen = self._select(self.data_embeddings[cand], firsts)  # (lookahead, B)
            if self.stratified:
                emb = self.data_embeddings[cand]
                chosen, weights = self._stratify(emb, chosen, self._data_rng)
                self._data_weights.extend(weights)
            batches = np.take_along_axis(cand, chosen, axis=1).astype(np.int64, copy=False)
            self._data_queue.extend(batches)
        return self._data_queue.popleft()

    def sample_data_batch(self) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`sample_data_indices` and the batch's weights: float32 (batch_size,),
        averaging 1, with ``stratified`` and a selection; None (equal weights) otherwise."""
        idx = self.sample_data_indices()
        return idx, (self._data_weights.popleft() if self._data_weights else None)

    def sample_prior(self) -> torch.Tensor:
        """One core-set batch of latent vectors.

        Draws ``prior_factor * batch_size`` vectors from the prior and keeps the ``batch_size``
        chosen by greedy k-center (``prior_factor`` 1: plain draws, no selection).

        Returns
        -------
        torch.Tensor of shape (batch_size, latent_dim), float32, on ``device``
        """
        if self.prior_factor == 1:
            return self.prior.draw(self.batch_size, self._torch_gen)
        if not self._prior_queue:
            n = self.prior_factor * self.batch_size
            draws, firsts = [], []
            # In the order of single selections' draws:
            dim = int(np.prod(self.prior.shape))
            for _ in range(self._sets_at_once(n, dim)):
                draws.append(self.prior.draw(n, self._host_gen))  # (factor * B, *shape)
                firsts.append(int(self._prior_rng.integers(n)))
            z = torch.stack(draws)  # (lookahead, factor * B, *shape)
            flat = z.reshape(len(draws), n, dim)  # k-center compares flattened draws
            chosen = self._select(flat.numpy(), firsts)  # (lookahead, B)
            if self.stratified:
                chosen, weights = self._stratify(flat.numpy(), chosen, self._prior_rng)
                self._prior_weights.extend(torch.from_numpy(weights).to(self.device).unbind(0))
            chosen = torch.from_numpy(chosen)
            start = time.perf_counter()
            batches = z[torch.arange(len(draws))[:, None], chosen]  # (lookahead, B, *shape)
            if self.device.type != "cpu":
                batches = batches.to(self.device)  # one copy for `lookahead` batches
            self.selection_seconds += time.perf_counter() - start
            self._prior_queue.extend(batches.unbind(0))
        return self._prior_queue.popleft()

    def sample_prior_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`sample_prior` and the batch's weights: float32 (batch_size,) on ``device``,
        averaging 1, with ``stratified`` and a selection; None (equal weights) otherwise."""
        z = self.sample_prior()
        return z, (self._prior_weights.popleft() if self._prior_weights else None)

    def state_dict(self) -> dict:
        """The random streams and the batches already selected but not yet used, so that a
        sampler rebuilt with the same arguments continues exactly (:meth:`load_state_dict`)."""
        state = {
            "data_rng": json.dumps(self._data_rng.bit_generator.state),
            "prior_rng": json.dumps(self._prior_rng.bit_generator.state),
            "torch_gen": self._torch_gen.get_state(),
            "data_queue": [torch.from_numpy(b) for b in self._data_queue],
            "prior_queue": [b.cpu() for b in self._prior_queue],
        }
        if self._host_gen is not self._torch_gen:
            state["host_gen"] = self._host_gen.get_state()
        if self.stratified:
            state["data_weights"] = [torch.from_numpy(w) for w in self._data_weights]
            state["prior_weights"] = [w.cpu() for w in self._prior_weights]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of a sampler built with the same arguments."""
        self._data_rng.bit_generator.state = json.loads(state["data_rng"])
        self._prior_rng.bit_generator.state = json.loads(state["prior_rng"])
        self._torch_gen.set_state(state["torch_gen"])
        if "host_gen" in state:
            self._host_gen.set_state(state["host_gen"])
        self._data_queue = deque(b.numpy() for b in state["data_queue"])
        self._prior_queue = deque(b.to(self.device) for b in state["prior_queue"])
        self._data_weights = deque(w.numpy() for w in state.get("data_weights", []))
        self._prior_weights = deque(w.to(self.device) for w in state.get("prior_weights", []))

    def __repr__(self) -> str:
        emb = "None" if self.data_embeddings is None else f"<{self.data_embeddings.shape}>"
        return (
            f"CoresetSampler({emb}, batch_size={self.batch_size}, latent_dim={self.latent_dim}, "
            f"prior_factor={self.prior_factor}, data_factor={self.data_factor}, "
            f"prior={self.prior!r}, n_samples={self.n_samples}, device={str(self.device)!r}"
            f"{', stratified=True' if self.stratified else ''})"
        )


def make_sampler(
    X: np.ndarray | torch.Tensor,
    *,
    batch_size: int,
    latent_dim: int,
    prior_factor: int = 4,
    data_factor: int = 8,
    embedding: str | os.PathLike[str] | Embedder = "pixels",
    projection_dim: int = 32,
    prior: str | Prior = "normal",
    cache_dir: str | os.PathLike[str] | None = None,
    random_state: RandomState = None,
    device: str | torch.device = "cpu",
    verbose: bool = False,
    stratified: bool = False,
) -> CoresetSampler:
    """Embed and project a training set once, and build its :class:`CoresetSampler`.

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_samples, ...)
        Training samples (images as floats in [-1, 1], (N, C, H, W)).
    batch_size, latent_dim, prior_factor, data_factor, prior
        See :class:`CoresetSampler`.
    embedding : str, path to a TorchScript file, or an Embedder, default="pixels"
        How samples are embedded: a name for :func:`~coreset_meg.features.pretrained.make_embedder`
        ("pixels", "efficientnet-lite0[@SIZE]", "inception[@SIZE]", "torchscript:PATH[@SIZE]",
        "torchvision:ARCH:WEIGHTS[@SIZE]"), a TorchScript file, or any
        :class:`~coreset_meg.features.embeddings.Embedder`; networks run on ``device``. Not used
        (nothing is embedded) when ``data_factor`` is 1.
    projection_dim : int, default=32
        Dimension of the Gaussian random projection of the embeddings.
    cache_dir : str or os.PathLike, optional
        Embedding cache folder (see :func:`~coreset_meg.features.embeddings.compute_embeddings`).
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, default=None
        Seeds the projection and the sampler.
    device : str or torch.device, default="cpu"
        Device of the latent batches and of the TorchScript embedder.
    verbose : bool, default=False
        Progress bar while embedding.
    stratified : bool, default=False
        Stratified, weighted batches (see :class:`CoresetSampler`).

    Returns
    -------
    CoresetSampler
    """
    rng = check_generator(random_state)
    n = len(X)
    if _positive_int(data_factor, "data_factor") == 1:
        return CoresetSampler(
            None,
            batch_size=batch_size,
            latent_dim=latent_dim,
            prior_factor=prior_factor,
            data_factor=1,
            prior=prior,
            n_samples=n,
            random_state=rng,
            device=device,
            stratified=stratified,
        )
    embedder = make_embedder(embedding, device=device)
    emb = compute_embeddings(X, embedder, cache_dir=cache_dir, verbose=verbose)
    projection = GaussianProjection(projection_dim, random_state=rng.spawn(1)[0])
    projected = projection.fit_transform(emb)
    seen = (
        f"their {emb.shape[1]} values"
        if isinstance(embedder, PixelEmbedder)
        else f"embedding {embedder.identity} ({emb.shape[1]}-d)"
    )
    logger.info(
        "core-set sampler: %d samples, %s projected to %d-d", n, seen, projection.n_components_
    )
    return CoresetSampler(
        projected,
        batch_size=batch_size,
        latent_dim=latent_dim,
        prior_factor=prior_factor,
        data_factor=data_factor,
        prior=prior,
        random_state=rng,
        device=device,
        stratified=stratified,
    )
