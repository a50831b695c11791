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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coreset import make_sampler
from datasets._progress import progress

from .losses import energy_loss, generator_loss, input_gradient_sq_norm, jsd_mutual_information
from .networks import build_networks

__all__ = ["MEGConfig", "MEGTrainer", "resolve_device"]

logger = logging.getLogger(__name__)


@dataclass
class MEGConfig:
    """Hyperparameters of one MEG training run."""

    n_iter: int = 1000  # generator updates (each after n_energy_steps energy updates)
    n_energy_steps: int = 5  # energy updates per generator update (paper: 5)
    batch_size: int = 64  # size of the (core-set) batch the networks see
    latent_dim: int = 32  # size of the generator's input z
    network: str = "auto"  # "auto" | "mlp" | "conv"
    width: int | None = None  # MLP hidden units (256) or conv base channels (32)
    learning_rate: float = 2e-4  # Adam step size for E, G and T
    betas: tuple[float, float] = (0.5, 0.9)  # Adam betas (paper: 0.5, 0.9)
    gp_weight: float = 1.0  # weight of the zero-centred gradient penalty on real data
    prior_factor: int = 4  # draw prior_factor * batch_size latents, keep a k-center subset
    data_factor: int = 8  # draw data_factor * batch_size data points, keep a k-center subset
    projection_dim: int = 32  # random-projection size of the data embeddings used for selection
    embedding: str = "pixels"  # "pixels" or a path to a TorchScript feature extractor
    prior: str = "normal"  # latent prior: "normal" | "uniform"
    ema_decay: float = 0.99  # decay of the weight average of E used for scoring (0 = off)
    n_snapshots: int = 10  # copies of the averaged E kept over the second half of training
    bounded_output: bool = False  # end an MLP generator with tanh (data in [-1, 1])
    log_every: int = 50  # iterations between metric records
    extra: dict = field(default_factory=dict)  # free-form notes saved with the run

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        checks = {
            "n_iter": self.n_iter >= 1,
            "n_energy_steps": self.n_energy_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "latent_dim": self.latent_dim >= 1,
            "learning_rate": self.learning_rate > 0,
            "gp_weight": self.gp_weight >= 0,
            "prior_factor": self.prior_factor >= 1,
            "data_factor": self.data_factor >= 1,
            "projection_dim": self.projection_dim >= 1,
            "ema_decay": 0 <= self.ema_decay < 1,
            "n_snapshots": self.n_snapshots >= 1,
            "log_every": self.log_every >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            name = bad[0]
            raise ValueError(f"invalid MEG setting {name}={getattr(self, name)!r}")
        if self.network not in ("auto", "mlp", "conv"):
            raise ValueError(f"network must be 'auto', 'mlp' or 'conv', got {self.network!r}")
        if self.prior not in ("normal", "uniform"):
            raise ValueError(f"prior must be 'normal' or 'uniform', got {self.prior!r}")


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
        Metrics appended as JSON lines every ``config.log_every`` iterations.
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
                cfg.latent_dim,
                kind=cfg.network,
                width=cfg.width,
                bounded=cfg.bounded_output,
            )
        self.energy_avg = _copy_frozen(self.energy_net)
        for net in (self.energy_net, self.generator, self.stats_net, self.energy_avg):
            net.to(self.device)
        self.opt_e = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.learning_rate, betas=cfg.betas
        )
        self.opt_g = torch.optim.Adam(
            list(self.generator.parameters()) + list(self.stats_net.parameters()),
            lr=cfg.learning_rate,
            betas=cfg.betas,
        )

    # ------------------------------------------------------------------ training
    def fit(self, X: np.ndarray) -> MEGTrainer:
        """Train until ``config.n_iter`` iterations are done (continuing after a resume)."""
        cfg = self.config
        X = np.asarray(X, dtype=np.float32)
        if tuple(X.shape[1:]) != self.input_shape:
            raise ValueError(f"samples of shape {X.shape[1:]} given, expected {self.input_shape}")
        data = torch.from_numpy(X).to(self.device)  # (N, *input_shape)
        # Batches after a resume are drawn from a stream keyed by the step, so runs are repeatable.
        seeds = np.random.SeedSequence([self.seed, self.step]).generate_state(2)
        sampler = make_sampler(
            X,
            batch_size=min(cfg.batch_size, len(X)),
            latent_dim=cfg.latent_dim,
            prior_factor=cfg.prior_factor,
            data_factor=cfg.data_factor,
            embedding=cfg.embedding,
            projection_dim=cfg.projection_dim,
            prior=cfg.prior,
            cache_dir=self.cache_dir,
            random_state=int(seeds[0]),
            device=self.device,
            verbose=self.verbose,
        )
        perm_gen = torch.Generator(device=self.device).manual_seed(int(seeds[1]))
        start_selection = sampler.selection_seconds

        for net in (self.energy_net, self.generator, self.stats_net):
            net.train()
        todo = cfg.n_iter - self.step
        with progress(todo, "Training MEG", enabled=self.verbose) as bar:
            while self.step < cfg.n_iter:
                t0 = time.perf_counter()
                # 1) energy updates: real (core-set) batches down, generated batches up
                for _ in range(cfg.n_energy_steps):
                    idx = torch.from_numpy(sampler.sample_data_indices()).to(self.device)
                    x_real = data.index_select(0, idx)  # (B, *input_shape)
                    with torch.no_grad():
                        x_fake = self.generator(sampler.sample_prior())
                    e_real, gp = input_gradient_sq_norm(self.energy_net, x_real)
                    e_fake = self.energy_net(x_fake)
                    loss_e = energy_loss(e_real, e_fake, gp, cfg.gp_weight)
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
                if self.step % cfg.log_every == 0 or self.step == cfg.n_iter:
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
        n, total = self.config.n_snapshots, self.config.n_iter
        return {total - (i * total) // (2 * n) for i in range(n)}

    @torch.no_grad()
    def _update_average(self) -> None:
        # One fused call over all parameters (a per-parameter loop costs a launch each on GPU).
        torch._foreach_lerp_(
            list(self.energy_avg.parameters()),
            list(self.energy_net.parameters()),
            1.0 - self.config.ema_decay,
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
        config = asdict(self.config)
        config["betas"] = list(config["betas"])
        return {
            "energy_net": self.energy_net.state_dict(),
            "energy_avg": self.energy_avg.state_dict(),
            "generator": self.generator.state_dict(),
            "stats_net": self.stats_net.state_dict(),
            "opt_e": self.opt_e.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "config": json.dumps(config),
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

        ``config.n_iter`` may be raised afterwards to train further.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = MEGConfig(**json.loads(state["config"]))
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


def _copy_frozen(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose parameters take no gradient (the weight average)."""
    avg = copy.deepcopy(net)
    for p in avg.parameters():
        p.requires_grad_(False)
    return avg
