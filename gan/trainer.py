"""The MEG trainer: energy updates and generator updates on core-set batches.

The loop only orchestrates: networks live in :mod:`gan.networks`, losses in :mod:`gan.losses`,
batch selection in :mod:`coreset`. One iteration is ``n_energy_steps`` energy updates followed by
one generator (and statistics-network) update.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import progress
from coreset import make_sampler

from .config import MEGConfig
from .losses import energy_loss, generator_loss, input_gradient_sq_norm, jsd_mutual_information
from .networks import build_networks

__all__ = ["MEGConfig", "MEGTrainer", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    return dev


def _seed_from(random_state) -> int:
    """An int seed from None, an int, or a numpy Generator (consumed once)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    return int(random_state)


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

    Attributes
    ----------
    energy_net, generator, stats_net : nn.Module
    energy_avg : nn.Module
        Exponential moving average of ``energy_net``'s weights.
    snapshots : list of dict
        CPU state dicts of ``energy_avg`` taken at :meth:`snapshot_steps`: the energy alone
        swings from one checkpoint to the next, so scores are averaged over these.
    history : list of dict
        The metric records.
    step : int
        Iterations done so far.
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
    ):
        self.config = config
        self.input_shape = tuple(int(s) for s in input_shape)
        self.device = resolve_device(device)
        self.seed = _seed_from(random_state)
        self.verbose = verbose
        self.log_path = Path(log_path) if log_path else None
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.checkpoint_every = int(checkpoint_every)
        self.cache_dir = cache_dir
        self.step = 0
        self.history: list[dict] = []
        self.snapshots: list[dict] = []
        self.seconds = 0.0
        self.selection_seconds = 0.0

        cfg = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.energy_net, self.generator, self.stats_net = build_networks(
                self.input_shape,
                cfg.networks.latent_dim,
                kind=cfg.networks.network,
                width=cfg.networks.width,
                bounded=_bounded(cfg, self.input_shape),
            )
        self.energy_avg = _copy_frozen(self.energy_net)
        for net in (self.energy_net, self.generator, self.stats_net, self.energy_avg):
            net.to(self.device)
        self.opt_e = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.objective.learning_rate, betas=cfg.objective.betas
        )
        self.opt_g = torch.optim.Adam(
            list(self.generator.parameters()) + list(self.stats_net.parameters()),
            lr=cfg.objective.learning_rate,
            betas=cfg.objective.betas,
        )

    # ------------------------------------------------------------------ training
    def fit(self, X: np.ndarray) -> MEGTrainer:
        """Train until ``n_iter`` iterations are done (continuing after a resume)."""
        cfg = self.config
        X = np.asarray(X, dtype=np.float32)
        if tuple(X.shape[1:]) != self.input_shape:
            raise ValueError(f"samples of shape {X.shape[1:]} given, expected {self.input_shape}")
        data = torch.from_numpy(X).to(self.device)  # (N, *input_shape)
        # Batches after a resume are drawn from a stream keyed by the step, so runs are repeatable.
        seeds = np.random.SeedSequence([self.seed, self.step]).generate_state(2)
        sampler = make_sampler(
            X,
            batch_size=min(cfg.batches.batch_size, len(X)),
            latent_dim=cfg.networks.latent_dim,
            prior_factor=cfg.batches.prior_factor,
            data_factor=cfg.batches.data_factor,
            embedding=cfg.batches.embedding,
            projection_dim=cfg.batches.projection_dim,
            prior=cfg.batches.prior,
            cache_dir=self.cache_dir,
            random_state=int(seeds[0]),
            device=self.device,
            verbose=self.verbose,
        )
        perm_gen = torch.Generator(device=self.device).manual_seed(int(seeds[1]))
        start_selection = sampler.selection_seconds

        for net in (self.energy_net, self.generator, self.stats_net):
            net.train()
        todo = cfg.schedule.n_iter - self.step
        with progress(todo, "Training MEG", enabled=self.verbose) as bar:
            while self.step < cfg.schedule.n_iter:
                t0 = time.perf_counter()
                # 1) energy updates: real (core-set) batches down, generated batches up
                for _ in range(cfg.objective.n_energy_steps):
                    idx = torch.from_numpy(sampler.sample_data_indices()).to(self.device)
                    x_real = data.index_select(0, idx)  # (B, *input_shape)
                    with torch.no_grad():
                        x_fake = self.generator(sampler.sample_prior())
                    e_real, gp = input_gradient_sq_norm(self.energy_net, x_real)
                    e_fake = self.energy_net(x_fake)
                    loss_e = energy_loss(e_real, e_fake, gp, cfg.objective.gp_weight)
                    self.opt_e.zero_grad(set_to_none=True)
                    loss_e.backward()
                    self.opt_e.step()
                    self._update_average()

                # 2) generator + statistics update: low energy, high entropy (via I(x; z))
                z = sampler.sample_prior()  # (B, latent)
                x_gen = self.generator(z)
                z_shuffled = z.index_select(
                    0, torch.randperm(len(z), generator=perm_gen, device=self.device)
                )
                mi = jsd_mutual_information(
                    self.stats_net(x_gen, z), self.stats_net(x_gen, z_shuffled)
                )
                e_gen = self.energy_net(x_gen)
                loss_g = generator_loss(e_gen, mi)
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()

                # 3) bookkeeping: time, metrics, checkpoints
                self.step += 1
                self.seconds += time.perf_counter() - t0
                self.selection_seconds = sampler.selection_seconds - start_selection
                bar.advance()
                if self.step in self.snapshot_steps():
                    self.snapshots.append(
                        {
                            k: v.detach().cpu().clone()
                            for k, v in self.energy_avg.state_dict().items()
                        }
                    )
                if self.step % cfg.schedule.log_every == 0 or self.step == cfg.schedule.n_iter:
                    record = {
                        "step": self.step,
                        "loss_energy": float(loss_e.detach()),
                        "loss_generator": float(loss_g.detach()),
                        "mutual_information": float(mi.detach()),
                        "energy_real": float(e_real.detach().mean()),
                        "energy_fake": float(e_fake.detach().mean()),
                        "grad_sq_norm": float(gp.detach().mean()),
                        "seconds": round(self.seconds, 3),
                        "selection_seconds": round(self.selection_seconds, 4),
                    }
                    if not all(math.isfinite(v) for v in record.values()):
                        raise FloatingPointError(
                            f"training diverged at step {self.step} (non-finite loss); "
                            "try a smaller learning rate or a larger gradient penalty"
                        )
                    self._log(record)
                    bar.set_postfix(f"E(real) {record['energy_real']:.3g}")
                if (
                    self.checkpoint_path
                    and self.checkpoint_every
                    and self.step % self.checkpoint_every == 0
                ):
                    self.save_checkpoint(self.checkpoint_path)
        if self.checkpoint_path:
            self.save_checkpoint(self.checkpoint_path)
        for net in (self.energy_net, self.generator, self.stats_net, self.energy_avg):
            net.eval()
        return self

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

    def _log(self, record: dict) -> None:
        self.history.append(record)
        logger.debug("%s", record)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    # --------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to resume: networks, optimisers, config, step, seed, history."""
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
        }

    def save_checkpoint(self, path) -> None:
        """Write the checkpoint atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

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
        trainer.step = int(state["step"])
        trainer.seconds = float(state["seconds"])
        trainer.history = json.loads(state["history"])
        trainer.snapshots = list(state["snapshots"])
        return trainer


def _bounded(config: MEGConfig, input_shape: tuple[int, ...]) -> bool:
    """Whether an MLP generator ends with tanh: as set, or (None) for images only."""
    bounded = config.networks.bounded_output
    return len(input_shape) == 3 if bounded is None else bool(bounded)


def _copy_frozen(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose parameters take no gradient (the weight average)."""
    avg = copy.deepcopy(net)
    for p in avg.parameters():
        p.requires_grad_(False)
    return avg
