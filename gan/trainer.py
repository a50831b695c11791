"""The MEG trainer: energy updates and generator updates on core-set batches.

One iteration reads as three phases: :meth:`MEGTrainer.energy_step` (``n_energy_steps`` times),
:meth:`MEGTrainer.generator_step`, then the step-end callbacks (snapshots, metrics, checkpoints).
What varies between methods is passed in as small objects, each with a default that is MEG:

- ``prior`` (:class:`coreset_meg.coreset.Prior`): what the generator's inputs are drawn from;
- ``negatives`` (:class:`NegativeSource`): the negative samples of the energy step;
- ``loss_terms`` (:class:`LossTerm`): extra terms added to the energy or generator loss;
- ``augment``: a function applied to real and generated batches before ``E``;
- ``callbacks`` (:class:`Callback`): called at the end of every iteration.

Networks live in :mod:`coreset_meg.gan.networks`, losses in :mod:`coreset_meg.gan.losses`, batch
selection in :mod:`coreset_meg.coreset`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from coreset_meg.common import atomic_path, distributed, progress, write_failure, write_text_atomic
from coreset_meg.coreset import (
    GaussianProjection,
    Prior,
    greedy_k_center,
    make_prior,
    make_sampler,
    truncate,
)
from coreset_meg.features.embeddings import data_digest

from .config import MEGConfig
from .losses import (
    energy_loss,
    generator_loss,
    input_gradient_sq_norm,
    jsd_mutual_information,
    orthogonal_penalty,
)
from .networks import (
    CoresetEnergy,
    ViewsEnergy,
    build_networks,
    orthogonal_weights,
    sync_batch_norm,
)
from .spider import with_input_stage
from .tickets import advaug_terms, diff_augment

__all__ = [
    "Callback",
    "Checkpoints",
    "GeneratorSamples",
    "LossTerm",
    "MEGTrainer",
    "MetricsLog",
    "NegativeSource",
    "OrthogonalRegularisation",
    "Snapshots",
    "StepResult",
    "networks_from_config",
    "resolve_device",
    "seed_from",
]

logger = logging.getLogger(__name__)


def networks_from_config(
    config: MEGConfig,
    input_shape: Sequence[int],
    *,
    views: int | None = None,
    prior_shape: Sequence[int] | None = None,
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(E, G, T)`` as ``config`` describes them for inputs of shape ``input_shape``: the one
    place the trainer and a loaded detector build their networks (fresh weights, drawn from
    torch's global generator; seed or fork it around the call).

    Parameters
    ----------
    config : MEGConfig
        Its ``networks`` group (kind, width, latent size, spectral norm, bounded output).
    input_shape : tuple of int
        One sample as the networks see it, ``(d,)`` or ``(C, H, W)``.
    views : int, optional
        The both view's pixel columns (:class:`~coreset_meg.gan.networks.ViewsEnergy`).
    prior_shape : tuple of int, optional
        The shape of the prior's draws: other than ``(latent_dim,)`` (a friendly prior's images
        or features, Spider GAN), the generator and ``T`` take them through their input stage
        (:func:`~coreset_meg.gan.spider.with_input_stage`).
    """
    net = config.networks
    energy, generator, stats = build_networks(
        tuple(input_shape),
        net.latent_dim,
        kind=net.network,
        width=net.width,
        bounded=config.bounded_output(tuple(input_shape)),
        spectral_norm=net.spectral_norm,
        views=views,
    )
    if prior_shape is not None and tuple(prior_shape) != (net.latent_dim,):
        generator, stats = with_input_stage(
            generator, stats, tuple(prior_shape), net.latent_dim, net.width
        )
    return energy, generator, stats


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    return dev


def seed_from(random_state) -> int:
    """An int seed from None, an int, or a numpy Generator / RandomState (consumed once)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    return int(random_state)


# ----------------------------------------------------------------------------- seams
@dataclass
class StepResult:
    """What one iteration computed (tensors of its last energy step and its generator step)."""

    loss_energy: torch.Tensor
    loss_generator: torch.Tensor
    mutual_information: torch.Tensor
    energy_real: torch.Tensor  # (B,)
    energy_fake: torch.Tensor  # (B,)
    grad_sq_norm: torch.Tensor  # (B,)


@runtime_checkable
class NegativeSource(Protocol):
    """Negative samples for one energy step, given the real batch; no gradient flows back.

    Returns the samples, or ``(samples, weights)`` with per-sample weights (B,) of the energy
    loss's negative term (stratified core-set batches; None: equal)."""

    def __call__(self, trainer: MEGTrainer, x_real: torch.Tensor) -> torch.Tensor: ...


class GeneratorSamples:
    """MEG's negatives: the generator's samples from one (core-set) batch of the prior, its
    latents truncated when ``config.batches.truncation`` is set (:meth:`MEGTrainer.truncate`),
    with the batch's weights when it is stratified (``config.batches.stratified``)."""

    def __call__(self, trainer: MEGTrainer, x_real: torch.Tensor):
        z, weights = prior_batch(trainer.sampler)
        with torch.no_grad():
            x_fake = trainer.generator(trainer.truncate(z))
        return x_fake if weights is None else (x_fake, weights)


def data_batch(sampler) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of one batch of training samples and their weights (None: equal): a stratified
    sampler's ``sample_data_batch()``, else ``sample_data_indices()`` as before."""
    if getattr(sampler, "stratified", False):
        return sampler.sample_data_batch()
    return sampler.sample_data_indices(), None


def prior_batch(sampler) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch of generator inputs and their weights (None: equal): a stratified sampler's
    ``sample_prior_batch()``, else ``sample_prior()`` as before."""
    if getattr(sampler, "stratified", False):
        return sampler.sample_prior_batch()
    return sampler.sample_prior(), None


@runtime_checkable
class LossTerm(Protocol):
    """An extra loss term, added in ``phase`` ("energy" or "generator").

    Called with the trainer and the phase's tensors: ``x_real, x_fake, e_real, e_fake`` in the
    energy step, ``x_gen, z, e_gen`` in the generator step. Returns a scalar tensor.
    """

    phase: str

    def __call__(self, trainer: MEGTrainer, **tensors: torch.Tensor) -> torch.Tensor: ...


class OrthogonalRegularisation:
    """BigGAN's orthogonal regularisation as a loss term: ``beta`` times
    :func:`~coreset_meg.gan.losses.orthogonal_penalty` of the phase's networks (energy phase: ``E``;
    generator phase: ``G`` and ``T``), on their weights reshaped to ``(out, -1)``
    (:func:`~coreset_meg.gan.networks.orthogonal_weights`)."""

    def __init__(self, beta: float, phase: str):
        self.beta, self.phase = float(beta), phase

    def __call__(self, trainer: MEGTrainer, **tensors: torch.Tensor) -> torch.Tensor:
        nets = (
            (trainer.energy_net,)
            if self.phase == "energy"
            else (trainer.generator, trainer.stats_net)
        )
        return self.beta * orthogonal_penalty(orthogonal_weights(*nets))


@runtime_checkable
class Callback(Protocol):
    """Called after every iteration, once ``trainer.step`` counts it."""

    def on_step_end(self, trainer: MEGTrainer, result: StepResult) -> None: ...


class Snapshots:
    """Keep a CPU copy of the averaged energy net at :meth:`MEGTrainer.snapshot_steps`."""

    def on_step_end(self, trainer: MEGTrainer, result: StepResult) -> None:
        if trainer.step in trainer.snapshot_steps():
            state = trainer.energy_avg.state_dict()
            trainer.snapshots.append({k: v.detach().cpu().clone() for k, v in state.items()})


class MetricsLog:
    """Record the metrics every ``log_every`` iterations (and the last); stop on divergence.

    Records go to ``trainer.history``, the debug log, and, with ``path``, a JSON-lines file.
    """

    def __init__(self, path=None):
        self.path = Path(path) if path else None

    def drop_after(self, step: int) -> None:
        """Remove the file's records after ``step`` (a run resumed from that step's checkpoint
        writes them again)."""
        if not self.path or not self.path.exists() or not distributed.is_main():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            write_text_atomic(self.path, "".join(kept))

    def on_step_end(self, trainer: MEGTrainer, result: StepResult) -> None:
        schedule = trainer.config.schedule
        if trainer.step % schedule.log_every and trainer.step != schedule.n_iter:
            return
        values = {
            "loss_energy": result.loss_energy.detach(),
            "loss_generator": result.loss_generator.detach(),
            "mutual_information": result.mutual_information.detach(),
            "energy_real": result.energy_real.detach().mean(),
            "energy_fake": result.energy_fake.detach().mean(),
            "grad_sq_norm": result.grad_sq_norm.detach().mean(),
        }  # under torchrun: the mean over ranks (that of the batches of all ranks together)
        means = distributed.all_reduce_mean(float(v) for v in values.values())
        record = {
            "step": trainer.step,
            **dict(zip(values, means, strict=True)),
            "seconds": round(trainer.seconds, 3),
            "selection_seconds": round(trainer.selection_seconds, 4),
        }
        if not all(math.isfinite(v) for v in record.values()):
            raise FloatingPointError(
                f"training diverged at step {trainer.step} (non-finite loss); "
                "try a smaller learning rate or a larger gradient penalty"
            )
        trainer.history.append(record)
        logger.debug("%s", record)
        if self.path and distributed.is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        trainer.bar.set_postfix(f"E(real) {record['energy_real']:.3g}")


class Checkpoints:
    """Save a checkpoint every ``every`` iterations (0: only the one at the end of ``fit``)."""

    def __init__(self, path, every: int = 0):
        self.path, self.every = Path(path), int(every)

    def on_step_end(self, trainer: MEGTrainer, result: StepResult) -> None:
        if self.every and trainer.step % self.every == 0:
            trainer.save_checkpoint(self.path)


# ----------------------------------------------------------------------------- trainer
class MEGTrainer:
    """Train an MEG energy GAN on an array of samples.

    Parameters
    ----------
    config : MEGConfig
    input_shape : tuple
        Shape of one sample, ``(d,)`` or ``(C, H, W)``.
    device : str
        "auto", "cpu", "cuda", ...
    random_state : int, Generator or None
        Seeds network initialisation and every batch; global RNGs are left untouched.
    verbose : bool
        Progress bar on stderr.
    log_path : path, optional
        Metrics appended as JSON lines every ``config.schedule.log_every`` iterations.
    checkpoint_path : path, optional
        Where :meth:`save_checkpoint` writes (every ``checkpoint_every`` iterations and at the end).
    checkpoint_every : int
        0 = only at the end (when ``checkpoint_path`` is set).
    cache_dir : path, optional
        Cache for data embeddings used by the core-set sampler.
    prior : coreset_meg.coreset.Prior, optional
        What the generator's inputs are drawn from; default ``config.batches.prior`` latents.
    negatives : NegativeSource, optional
        Negative samples of the energy step; default :class:`GeneratorSamples`.
    loss_terms : sequence of LossTerm, optional
        Extra terms of the energy or generator loss.
    augment : callable, optional
        Applied to real and generated batches (and its gradient penalty input) before ``E``;
        default: DiffAugment when ``config.tickets.diffaugment`` is set
        (:mod:`coreset_meg.gan.tickets`).
    callbacks : sequence of Callback, optional
        Called at the end of every iteration, after the built-in :class:`Snapshots`,
        :class:`MetricsLog` and :class:`Checkpoints`.

    Attributes
    ----------
    energy_net, generator, stats_net : nn.Module
    energy_avg : nn.Module
        Exponential moving average of ``energy_net``'s weights (buffers copied).
    generator_avg : nn.Module or None
        With ``config.schedule.generator_ema``: the moving average of ``generator``'s weights
        (buffers copied) that :meth:`sample` draws from (BigGAN); None otherwise.
    snapshots : list of dict
        CPU state dicts of ``energy_avg`` taken at :meth:`snapshot_steps`: the energy alone
        swings from one checkpoint to the next, so scores are averaged over these.
    history : list of dict
        The metric records.
    step : int
        Iterations done so far.
    sampler : coreset_meg.coreset.CoresetSampler
        The batch sampler of the current :meth:`fit` (None before it).
    """

    def __init__(
        self,
        config: MEGConfig,
        input_shape,
        *,
        device="auto",
        random_state=None,
        verbose: bool = False,
        log_path=None,
        checkpoint_path=None,
        checkpoint_every: int = 0,
        cache_dir=None,
        prior: Prior | None = None,
        negatives: NegativeSource | None = None,
        loss_terms: Sequence[LossTerm] = (),
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        callbacks: Sequence[Callback] = (),
        views: int | None = None,
    ):
        self.config = config
        #: Two views side by side (the first ``views`` columns, then the rest): the core-set
        #: energy is a :class:`~coreset_meg.gan.networks.ViewsEnergy` over them.
        self.views = views
        self.input_shape = tuple(int(s) for s in input_shape)
        self.device = resolve_device(device)
        # Under torchrun every rank trains the same networks (rank 0's seed) on its own batches.
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.seed = distributed.broadcast_object(seed_from(random_state))
        self.verbose = verbose
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.cache_dir = cache_dir
        self.prior = make_prior(
            config.batches.prior if prior is None else prior, config.networks.latent_dim
        )
        self.negatives = GeneratorSamples() if negatives is None else negatives
        self.loss_terms = list(loss_terms)
        if config.objective.orthogonal_reg > 0:
            self.loss_terms += [
                OrthogonalRegularisation(config.objective.orthogonal_reg, phase)
                for phase in ("energy", "generator")
            ]
        self.loss_terms += advaug_terms(config, self._rank_seed(5))  # AdvAug (none unless set)
        for term in self.loss_terms:
            if term.phase not in ("energy", "generator"):
                raise ValueError(f"loss term phase must be energy or generator, got {term.phase}")
        if augment is None:  # DiffAugment when config.tickets.diffaugment is set
            augment = diff_augment(config, self.input_shape, self._rank_seed(6))
        self.augment = augment
        self.callbacks: list[Callback] = [Snapshots(), MetricsLog(log_path)]
        if self.checkpoint_path:
            self.callbacks.append(Checkpoints(self.checkpoint_path, checkpoint_every))
        self.callbacks += list(callbacks)
        self.step = 0
        self.history: list[dict] = []
        self.snapshots: list[dict] = []
        self.seconds = 0.0
        self.selection_seconds = 0.0
        self.sampler = None
        self._restore: dict | None = None  # sampler state of a checkpoint, used by fit
        self._sampler_key = 0
        #: Identifies the training data (see :func:`data_fingerprint`); kept in checkpoints so
        #: that a run is resumed only on the data it started with. None: not recorded.
        self.data_fingerprint: str | None = None

        cfg = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.energy_net, self.generator, self.stats_net = networks_from_config(
                cfg, self.input_shape, views=views, prior_shape=self.prior.shape
            )
            if self.world_size > 1:  # batch statistics of all ranks' batches together
                sync_batch_norm(self.generator)
        self.energy_avg = _copy_frozen(self.energy_net)
        self.generator_avg = _copy_frozen(self.generator) if cfg.schedule.generator_ema else None
        for net in (self.energy_net, self.generator, self.stats_net, self.energy_avg,
                    self.generator_avg):  # fmt: skip
            if net is not None:
                net.to(self.device)
                distributed.broadcast_module(net)  # the same start on every rank, whatever happens
        self._truncation_gen: torch.Generator | None = None  # set by fit when truncating
        lr, betas = cfg.objective.learning_rate, cfg.objective.betas
        self.opt_e = torch.optim.Adam(self.energy_net.parameters(), lr=lr, betas=betas)
        self.opt_g = torch.optim.Adam(
            list(self.generator.parameters()) + list(self.stats_net.parameters()),
            lr=lr,
            betas=betas,
        )

    # ------------------------------------------------------------------ training
    def fit(self, X: np.ndarray) -> MEGTrainer:
        """Train until ``n_iter`` iterations are done (continuing after a resume).

        With ``n_iter=0`` (the core-set energy only) nothing is trained: the centres are placed
        and that energy is the one snapshot.
        """
        cfg = self.config
        X = np.asarray(X, dtype=np.float32)
        if tuple(X.shape[1:]) != self.input_shape:
            raise ValueError(f"samples of shape {X.shape[1:]} given, expected {self.input_shape}")
        data = torch.from_numpy(X).to(self.device)  # (N, *input_shape)
        # A checkpoint's sampler continues where it stopped (a resumed run ends as one never
        # interrupted); otherwise batches are drawn from a stream keyed by the step.
        restore, self._restore = self._restore, None
        if restore or self.step < cfg.schedule.n_iter:  # no batches to draw when none train
            self._sampler_key = restore["key"] if restore else self.step
            self.sampler, self._perm_gen, self._truncation_gen = self._batch_streams(
                X, min(cfg.batches.batch_size, len(X))
            )
        if restore:
            self.sampler.load_state_dict(restore["sampler"])
            self._perm_gen.set_state(restore["perm_gen"])
            if self._truncation_gen is not None:
                self._truncation_gen.set_state(restore["truncation_gen"])
            streams = restore.get("streams", {})
            for name, owner in self._stream_owners().items():
                if name in streams:
                    owner.set_rng_state(streams[name], self.device)
        elif self.step == 0 and isinstance(self.energy_net, (CoresetEnergy, ViewsEnergy)):
            self.place_centres(data)
        start_selection = 0.0 if self.sampler is None else self.sampler.selection_seconds

        for net in (self.energy_net, self.generator, self.stats_net):
            net.train()
        with progress(cfg.schedule.n_iter - self.step, "Training MEG", self.verbose) as self.bar:
            while self.step < cfg.schedule.n_iter:
                t0 = time.perf_counter()
                self._schedule_learning_rate()
                for _ in range(cfg.objective.n_energy_steps):
                    loss_e, e_real, e_fake, gp = self.energy_step(data)
                loss_g, mi = self.generator_step()
                self.step += 1
                self.seconds += time.perf_counter() - t0
                self.selection_seconds = self.sampler.selection_seconds - start_selection
                self.bar.advance()
                result = StepResult(loss_e, loss_g, mi, e_real, e_fake, gp)
                for callback in self.callbacks:
                    callback.on_step_end(self, result)
        if cfg.schedule.n_iter == 0:  # no training: the energy as placed is the one to score
            self.snapshots = [
                {k: v.detach().cpu().clone() for k, v in self.energy_avg.state_dict().items()}
            ]
        if self.checkpoint_path:
            self.save_checkpoint(self.checkpoint_path)
        _train_only(self.energy_net, self.generator, self.stats_net)
        for net in (self.energy_net, self.generator, self.stats_net, self.energy_avg):
            net.eval()
        if self.generator_avg is not None:
            self.generator_avg.eval()
        return self

    def _entropy(self, *words: int) -> list[int]:
        """Seed words of one of this rank's random streams: a single process's own words; on
        several processes the world size and rank are appended, so each rank draws its own."""
        base = [self.seed, *words]
        return base if self.world_size == 1 else [*base, 7919, self.world_size, self.rank]

    def _rank_seed(self, word: int) -> int:
        """An int seed of this rank's stream ``word`` (the trainer's seed in one process)."""
        if self.world_size == 1:
            return self.seed
        return int(np.random.SeedSequence(self._entropy(word)).generate_state(1)[0])

    def _batch_streams(self, X: np.ndarray, batch_size: int):
        """This rank's random streams for :meth:`fit`: the core-set sampler, the generator of
        the mutual-information permutations, and the truncation trick's (or None).

        Keyed by ``_sampler_key`` (the step a fit started at), so a fit continued without a
        checkpoint draws fresh batches; seeded by :meth:`_entropy`.
        """
        cfg = self.config
        seeds = np.random.SeedSequence(self._entropy(self._sampler_key)).generate_state(2)
        sampler = make_sampler(
            X,
            batch_size=batch_size,
            latent_dim=cfg.networks.latent_dim,
            prior_factor=cfg.batches.prior_factor,
            data_factor=cfg.batches.data_factor,
            embedding=cfg.batches.embedding,
            projection_dim=cfg.batches.projection_dim,
            prior=self.prior,
            cache_dir=self.cache_dir,
            random_state=int(seeds[0]),
            device=self.device,
            verbose=self.verbose,
            stratified=cfg.batches.stratified,
        )
        perm_gen = torch.Generator(device=self.device).manual_seed(int(seeds[1]))
        truncation_gen = None
        if cfg.batches.truncation:  # its own stream: the others draw as without truncation
            seed = np.random.SeedSequence(self._entropy(self._sampler_key, 2)).generate_state(1)
            truncation_gen = torch.Generator(device=self.device).manual_seed(int(seed[0]))
        return sampler, perm_gen, truncation_gen

    def _stream_owners(self) -> dict:
        """The augmentation and loss terms that draw from a random stream of their own
        (DiffAugment, AdvAug: ``rng_state`` / ``set_rng_state``), by a stable name."""
        owners = {
            "augment": self.augment,
            **{f"loss_term_{i}": t for i, t in enumerate(self.loss_terms)},
        }
        return {name: o for name, o in owners.items() if hasattr(o, "rng_state")}

    def _stream_states(self) -> dict:
        """The states of :meth:`_stream_owners`' streams that have drawn (for checkpoints)."""
        states = {name: o.rng_state() for name, o in self._stream_owners().items()}
        return {name: state for name, state in states.items() if state is not None}

    def learning_rate(self, step: int) -> float:
        """The learning rate of every network for the iteration after ``step`` ones: the
        configured one, decaying linearly after ``lr_decay_start * n_iter`` towards 0 at
        ``n_iter``."""
        lr, start = self.config.objective.learning_rate, self.config.schedule.lr_decay_start
        total = self.config.schedule.n_iter
        first = int(start * total) if start is not None else total
        if step < first:
            return lr
        return lr * max(0.0, (total - step) / (total - first))

    def _schedule_learning_rate(self) -> None:
        if self.config.schedule.lr_decay_start is None:  # constant: the optimisers' own
            return
        lr = self.learning_rate(self.step)
        for opt in (self.opt_e, self.opt_g):
            for group in opt.param_groups:
                group["lr"] = lr

    def _permutation(self, n: int) -> torch.Tensor:
        """A random permutation of ``n`` (the mutual-information estimate's shuffled pairs)."""
        return torch.randperm(n, generator=self._perm_gen, device=self.device)

    def truncate(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with BigGAN's truncation trick when ``config.batches.truncation`` is set
        (:func:`coreset_meg.coreset.truncate`, redraws from the prior on the trainer's own stream),
        else ``z`` itself."""
        threshold = self.config.batches.truncation
        if not threshold:
            return z
        return truncate(z, threshold, self.prior.draw, self._truncation_gen)

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator that draws samples: the weight average of ``G`` when
        ``generator_ema`` is set, else ``G`` itself."""
        return self.generator if self.generator_avg is None else self.generator_avg

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
        """``n`` generated samples ``(n, *input_shape)`` of :attr:`sampling_generator` in eval
        mode, latents drawn from the prior by a generator seeded with ``seed``.

        ``truncation``: the threshold of the truncation trick for this call; None: the
        configured one (``config.batches.truncation``); 0: none.
        """
        threshold = self.config.batches.truncation if truncation is None else truncation
        prior = make_prior(self.prior, self.prior.shape[0], threshold or None)
        z = prior.draw(n, torch.Generator(device=self.device).manual_seed(int(seed)))
        net = self.sampling_generator
        training = net.training
        try:
            return net.eval()(z)
        finally:
            net.train(training)

    def place_centres(self, data: torch.Tensor) -> None:
        """Set the centres, temperature and Gaussian term of a
        :class:`~coreset_meg.gan.networks.CoresetEnergy` from the training data
        (:func:`coreset_energy_parts`)."""
        t0 = time.perf_counter()
        if isinstance(self.energy_net, ViewsEnergy):
            place_views(self.energy_net, data, self.config, self.seed)
        else:
            self.energy_net.set_centres(**coreset_energy_parts(data, self.config, self.seed))
        self.energy_avg.load_state_dict(self.energy_net.state_dict())  # the same, not again
        self.selection_seconds += time.perf_counter() - t0

    def energy_step(self, data: torch.Tensor):
        """One energy update: real (core-set) batches down, negatives up, gradient penalty.

        Returns the loss, the energies of both batches and the penalty's per-sample terms.
        """
        _train_only(self.energy_net, frozen=(self.generator, self.stats_net))
        idx, w_real = data_batch(self.sampler)
        idx = torch.from_numpy(idx).to(self.device)
        if w_real is not None:  # stratified batches: weights of the real samples
            w_real = torch.from_numpy(w_real).to(self.device)
        x_real = data.index_select(0, idx)  # (B, *input_shape)
        x_fake, w_fake = self.negatives(self, x_real), None
        if isinstance(x_fake, tuple):  # (samples, weights)
            x_fake, w_fake = x_fake
        e_real, gp = input_gradient_sq_norm(self.energy_net, self.augmented(x_real))
        e_fake = self.energy_net(self.augmented(x_fake))
        loss = energy_loss(
            e_real, e_fake, gp, self.config.objective.gp_weight, w_real=w_real, w_fake=w_fake
        )
        loss = self._extra_terms(
            "energy", loss, x_real=x_real, x_fake=x_fake, e_real=e_real, e_fake=e_fake
        )
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.energy_net.parameters())
        self.opt_e.step()
        self._update_average()
        return loss, e_real, e_fake, gp

    def generator_step(self):
        """One generator and statistics update: low energy, high entropy (via ``I(x; z)``).

        Returns the loss and the mutual-information estimate.
        """
        _train_only(self.generator, self.stats_net, frozen=(self.energy_net,))
        z, w = prior_batch(self.sampler)  # (B, *prior.shape), weights or None
        x_gen = self.generator(z)
        perm = self._permutation(len(z))
        # Stratified batches: a shuffled pair (x_i, z_perm(i)) stands for both cells' draws.
        w_pairs = None if w is None else w * w.index_select(0, perm)
        mi = jsd_mutual_information(
            self.stats_net(x_gen, z),
            self.stats_net(x_gen, z.index_select(0, perm)),
            w_joint=w,
            w_marginal=w_pairs,
        )
        e_gen = self.energy_net(self.augmented(x_gen))
        loss = self._extra_terms(
            "generator",
            generator_loss(e_gen, mi, self.config.objective.entropy_weight, weights=w),
            x_gen=x_gen,
            z=z,
            e_gen=e_gen,
        )
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients([*self.generator.parameters(), *self.stats_net.parameters()])
        self.opt_g.step()
        if self.generator_avg is not None:
            _lerp_average(self.generator_avg, self.generator, self.config.schedule.generator_ema)
        return loss, mi

    def augmented(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` through the ``augment`` seam (as it is when there is none): what ``E`` sees of
        a real or generated batch in both updates."""
        return x if self.augment is None else self.augment(x)

    def _extra_terms(self, phase: str, loss: torch.Tensor, **tensors) -> torch.Tensor:
        for term in self.loss_terms:
            if term.phase == phase:
                loss = loss + term(self, **tensors)
        return loss

    def snapshot_steps(self) -> set[int]:
        """Steps after which ``energy_avg`` is kept: evenly over the second half, ending at the
        last step (``n_snapshots = 1``: the last step only)."""
        n, total = self.config.schedule.n_snapshots, self.config.schedule.n_iter
        return {total - (i * total) // (2 * n) for i in range(n)}

    @torch.no_grad()
    def _update_average(self) -> None:
        # One fused call over all parameters (a per-parameter loop costs a launch each on GPU).
        torch._foreach_lerp_(
            list(self.energy_avg.parameters()),
            list(self.energy_net.parameters()),
            1.0 - self.config.schedule.ema_decay,
        )
        for avg, live in zip(self.energy_avg.buffers(), self.energy_net.buffers(), strict=True):
            avg.copy_(live)

    # --------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to resume: networks, optimisers, config, step, seed, history.

        Under torchrun every rank must call it (it gathers each rank's batch streams, kept
        under ``"ranks"``; the networks are the same on every rank).
        """
        streams = None if self.sampler is None else self._rank_streams_state()
        ranks = None
        if self.world_size > 1 and streams is not None:
            ranks = distributed.all_gather_objects(streams)
        return {
            "energy_net": self.energy_net.state_dict(),
            "energy_avg": self.energy_avg.state_dict(),
            "generator": self.generator.state_dict(),
            "stats_net": self.stats_net.state_dict(),
            "opt_e": self.opt_e.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "config": json.dumps(self.config.to_dict()),
            "input_shape": list(self.input_shape),
            "step": self.step,
            "seed": self.seed,
            "seconds": self.seconds,
            "history": json.dumps(self.history),
            "snapshots": self.snapshots,
            **({} if self.data_fingerprint is None else {"data": self.data_fingerprint}),
            **(
                {}
                if self.generator_avg is None
                else {"generator_avg": self.generator_avg.state_dict()}
            ),
            **({} if streams is None else {**streams, "sampler_key": self._sampler_key}),
            **({} if ranks is None else {"ranks": ranks}),
        }

    def _rank_streams_state(self) -> dict:
        """This rank's random streams of :meth:`fit` as a checkpoint keeps them: the sampler,
        the permutation and truncation generators, the augmentations' streams."""
        return {
            "sampler": self.sampler.state_dict(),
            "perm_gen": self._perm_gen.get_state(),
            "streams": self._stream_states(),
            **(
                {}
                if self._truncation_gen is None
                else {"truncation_gen": self._truncation_gen.get_state()}
            ),
        }

    def save_checkpoint(self, path) -> None:
        """Write the checkpoint atomically (temporary file, then rename); under torchrun every
        rank calls it and rank 0 writes."""
        state = self.state_dict()
        if distributed.is_main():
            try:
                with atomic_path(path) as tmp:
                    torch.save(state, tmp)
            except (OSError, RuntimeError) as err:  # torch chains a disk-full error many deep
                raise OSError(
                    f"cannot write the checkpoint {path}: {write_failure(err, path)}"
                ) from None
        distributed.barrier()  # no rank reads or replaces it before it is complete

    @classmethod
    def from_checkpoint(cls, path, *, device="auto", verbose: bool = False, **kwargs) -> MEGTrainer:
        """Rebuild a trainer from :meth:`save_checkpoint`'s file to resume or inspect it.

        ``config.schedule.n_iter`` may be raised afterwards to train further.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = MEGConfig.from_dict(json.loads(state["config"]))
        trainer = cls(
            config,
            state["input_shape"],
            device=device,
            random_state=state["seed"],
            verbose=verbose,
            **kwargs,
        )
        for name in ("energy_net", "energy_avg", "generator", "stats_net", "opt_e", "opt_g"):
            getattr(trainer, name).load_state_dict(state[name])
        if trainer.generator_avg is not None:
            trainer.generator_avg.load_state_dict(state["generator_avg"])
        trainer.step = int(state["step"])
        trainer.seconds = float(state["seconds"])
        trainer.history = json.loads(state["history"])
        trainer.snapshots = list(state["snapshots"])
        trainer.data_fingerprint = state.get("data")
        if "sampler" in state:
            ranks = state.get("ranks")
            world = 1 if ranks is None else len(ranks)
            if world != trainer.world_size:
                raise ValueError(
                    f"the checkpoint was written by {world} process(es) and this run has "
                    f"{trainer.world_size}: resume it with as many "
                    f"(torchrun --nproc-per-node {world} ...)"
                )
            mine = state if ranks is None else ranks[trainer.rank]
            trainer._restore = {
                "sampler": mine["sampler"],
                "perm_gen": mine["perm_gen"],
                "key": int(state["sampler_key"]),
                "truncation_gen": mine.get("truncation_gen"),
                "streams": mine.get("streams", {}),
            }
        for callback in trainer.callbacks:  # records after the checkpoint are written again
            if isinstance(callback, MetricsLog):
                callback.drop_after(trainer.step)
        return trainer


def data_fingerprint(X: np.ndarray) -> str:
    """A SHA-256 of the training samples' shape and float32 values, as hex (what a checkpoint
    records to be resumed on the same data only): the embedding cache's digest of them."""
    return data_digest(np.asarray(X, dtype=np.float32))


def _train_only(*nets: nn.Module, frozen: Sequence[nn.Module] = ()) -> None:
    """Switch gradients on for ``nets`` and off for ``frozen`` (one phase's networks)."""
    for net in nets:
        net.requires_grad_(True)
    for net in frozen:
        net.requires_grad_(False)


def coreset_energy_parts(data: torch.Tensor, config: MEGConfig, seed: int = 0) -> dict:
    """Keyword arguments of :meth:`~coreset_meg.gan.networks.CoresetEnergy.set_centres` for
    ``data``.

    Centres: a greedy k-center core-set of ``coreset_fraction`` of the samples (at most
    ``max_centres``; all of them by default), selected on a ``projection_dim``-d Gaussian random
    projection, seeded. Temperature: ``temperature`` times the
    scale ``s``, the median squared distance from a sample (a seeded subsample of 1,000) to its
    nearest other one. Gaussian term: the Ledoit-Wolf shrunk covariance of the samples, weighted
    by ``gaussian_weight * s / d`` for ``d`` inputs (it then averages about
    ``gaussian_weight * s`` on the training data).
    """
    cfg = config.networks
    flat = data.flatten(1)
    n, d = flat.shape
    k = max(1, min(cfg.max_centres, n, math.ceil(cfg.coreset_fraction * n)))
    if k < 2:  # one centre: every score the same, the threshold NaN
        raise ValueError(
            f"coreset_fraction={cfg.coreset_fraction:g} and max_centres={cfg.max_centres} keep "
            f"{k} centre of {n} samples; the coreset network needs at least 2 (a coreset_fraction "
            f"of at least {2 / n:.3g})"
        )
    seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    if k == n:
        centres = flat
    else:  # k-center on a random projection, as the batch selection does (Small-GAN)
        projection = GaussianProjection(config.batches.projection_dim, random_state=seed)
        index = greedy_k_center(projection.fit_transform(flat), k, random_state=seed)
        centres = flat.index_select(0, torch.as_tensor(index, device=flat.device))
    scale = nearest_neighbour_sq_distance(flat, random_state=seed)
    parts = {"centres": centres, "temperature": cfg.temperature * scale}
    weight = cfg.gaussian_weight or 0.0  # None (the detector's "auto" left unresolved): none
    if weight > 0:
        parts.update(**_shrunk_gaussian(flat), gaussian_weight=weight * scale / d)
    return parts


def _shrunk_gaussian(flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """``mean`` and ``covariance`` (Ledoit-Wolf shrunk) of the rows of ``flat``: the Gaussian
    term's parts (its precision is taken from the covariance when the energy is set)."""
    fitted = LedoitWolf(store_precision=False).fit(flat.cpu().numpy())
    return {
        "mean": torch.as_tensor(fitted.location_, dtype=torch.float32),
        "covariance": torch.as_tensor(fitted.covariance_),
    }


#: Training samples that calibrate a :class:`~coreset_meg.gan.networks.ViewsEnergy` (a seeded
#: subsample).
VIEWS_CALIBRATION = 2000


def place_views(net: ViewsEnergy, data: torch.Tensor, config: MEGConfig, seed: int = 0) -> None:
    """Set and calibrate a :class:`~coreset_meg.gan.networks.ViewsEnergy` from the training data.

    The centres, the temperature of the whole row and the Gaussian weight are those of
    :func:`coreset_energy_parts` (the Gaussian term on the second block only, from its own
    shrunk covariance); each block's temperature is the same fraction of its own median
    nearest-neighbour squared distance. The calibration energies are those of a seeded
    subsample of ``VIEWS_CALIBRATION`` training samples, each scored leave one out."""
    flat = data.flatten(1)
    s, d = net.split, flat.shape[1]
    networks = dataclasses.replace(config.networks, gaussian_weight=0.0)
    parts = coreset_energy_parts(flat, dataclasses.replace(config, networks=networks), seed)
    derived = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])  # as parts' scale
    t = config.networks.temperature
    temperatures = [
        t * nearest_neighbour_sq_distance(flat[:, :s], random_state=derived),
        t * nearest_neighbour_sq_distance(flat[:, s:], random_state=derived),
        parts["temperature"],
    ]
    gaussian = {}
    weight = config.networks.gaussian_weight or 0.0
    if weight > 0:
        gaussian = dict(
            **_shrunk_gaussian(flat[:, s:]),
            gaussian_weight=weight * temperatures[1] / t / (d - s),
        )
    net.set_parts(parts["centres"], temperatures, **gaussian)
    net.calibrate(views_calibration_rows(flat, seed))


def views_calibration_rows(data: torch.Tensor, seed: int) -> torch.Tensor:
    """The seeded subsample of training samples that calibrates a ViewsEnergy."""
    n = len(data)
    rows = np.random.default_rng(seed).choice(n, min(n, VIEWS_CALIBRATION), replace=False)
    return data[torch.as_tensor(np.sort(rows), device=data.device)]


def nearest_neighbour_sq_distance(
    X: torch.Tensor, n_queries: int = 1000, random_state: int | None = 0
) -> float:
    """Median squared distance from a sample of ``X`` (a seeded subsample of ``n_queries``) to
    its nearest other sample of ``X``: the scale of the core-set energy's temperature."""
    flat = X.flatten(1)
    n = len(flat)
    if n < 2:
        return 1.0
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(n, min(n_queries, n), replace=False))
    queries = flat[torch.as_tensor(rows, device=flat.device)]
    sq = (flat * flat).sum(1)
    nearest = []
    for start in range(0, len(rows), 256):
        q = queries[start : start + 256]
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * q @ flat.T + sq
        d2[torch.arange(len(q)), torch.as_tensor(rows[start : start + 256])] = float("inf")
        nearest.append(d2.min(1).values.clamp_min(0.0))
    median = float(torch.cat(nearest).median())
    return median if median > 0 else 1.0


@torch.no_grad()
def _lerp_average(avg: nn.Module, live: nn.Module, decay: float) -> None:
    """``avg <- decay * avg + (1 - decay) * live`` for the parameters; buffers copied."""
    torch._foreach_lerp_(list(avg.parameters()), list(live.parameters()), 1.0 - decay)
    for a, b in zip(avg.buffers(), live.buffers(), strict=True):
        a.copy_(b)


def _copy_frozen(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose parameters take no gradient (the weight average)."""
    avg = copy.deepcopy(net)
    for p in avg.parameters():
        p.requires_grad_(False)
    return avg
