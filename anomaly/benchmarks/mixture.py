"""Mode coverage on 2-D Gaussian grids: random batches vs core-set batches vs large batches.

Small-GAN's claim: a small core-set batch drops fewer modes than a small random batch, as a large
batch would. For each grid (``side`` x ``side`` modes, spacing 2, std 0.05) and seed, the MEG
generator (an MLP, uniform latent prior, unbounded output) is trained on samples of the mixture
under each of :data:`MIXTURE_SETTINGS`. Then generated samples are scored with
:func:`datasets.mode_coverage`: modes recovered, share of high-quality samples (within 4 std of a
mode) and KL divergence of the mode histogram from uniform. Seconds per step are recorded too.

Files written to ``out_dir``: ``results.csv`` (one row per grid x seed x setting),
``samples.npz`` (lowest seed's generated samples, keys ``"<side>/<setting>/<seed>"``),
``table.md``, ``samples.png``, ``settings.json`` and ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from datasets import grid_mixture, mode_coverage
from gan import MEGConfig, MEGTrainer, resolve_device

from ._grid import Cell, run_grid
from ._io import (
    int_list,
    new_figure,
    prepare_out_dir,
    save_figure,
    write_meta,
    write_npz,
    write_text,
)
from ._reports import mixture_report

__all__ = ["MIXTURE_SETTINGS", "BatchSetting", "generate", "mixture_params", "run_mixture"]

logger = logging.getLogger(__name__)

NAME = "mixture"
SPACING = 2.0
STD = 0.05

# fmt: off
COLUMNS = (
    "benchmark", "side", "n_modes", "setting", "batch_size", "prior_factor", "data_factor",
    "seed", "modes_recovered", "recovered_fraction", "high_quality_fraction", "kl_uniform",
    "steps", "seconds", "seconds_per_step", "selection_seconds", "selection_share",
)
# fmt: on


@dataclass(frozen=True)
class BatchSetting:
    """How the batches of one mixture / cost setting are drawn."""

    name: str  # label in tables and plots
    batch_size: int  # samples (and latents) the networks see per step
    prior_factor: int  # latent candidates per kept latent (1 = no selection)
    data_factor: int  # data candidates per kept sample (1 = no selection)


#: The three settings of the mixture benchmark (Small-GAN's comparison).
MIXTURE_SETTINGS = (
    BatchSetting("random 64", 64, 1, 1),
    BatchSetting("core-set 64", 64, 4, 8),
    BatchSetting("random 512", 512, 1, 1),
)


def mixture_params(quick: bool = False) -> dict[str, Any]:
    """Training settings: ``n_train`` samples of the mixture to train on, ``n_generated`` samples
    of the generator to measure coverage, and the flat :class:`~gan.MEGConfig` settings
    ``config`` shared by the batch settings (an MLP with a uniform latent prior and an unbounded
    output, as in the third-party reproduction)."""
    config: dict[str, Any] = {
        "n_iter": 2000,
        "n_energy_steps": 5,
        "latent_dim": 2,
        "network": "mlp",
        "width": 256,
        "learning_rate": 2e-4,
        "gp_weight": 0.1,
        "projection_dim": 32,
        "prior": "uniform",
        "bounded_output": False,
    }
    n_train, n_generated = 20_000, 10_000
    if quick:
        config.update(n_iter=5, width=16)
        n_train, n_generated = 2_000, 1_000
    return {"n_train": n_train, "n_generated": n_generated, "config": config}


def train_setting(
    X: np.ndarray, setting: BatchSetting, config: dict[str, Any], *, seed: int, device: str
) -> MEGTrainer:
    """Train the MEG generator on samples ``X`` (n, d) with one batch setting; ``config`` holds
    the other flat :class:`~gan.MEGConfig` settings."""
    cfg = MEGConfig.from_params(
        **config,
        batch_size=setting.batch_size,
        prior_factor=setting.prior_factor,
        data_factor=setting.data_factor,
    )
    return MEGTrainer(cfg, (X.shape[1],), device=device, random_state=seed).fit(X)


@torch.no_grad()
def generate(trainer: MEGTrainer, n: int, seed: int) -> np.ndarray:
    """``n`` samples (n, d) of the trained generator, latents drawn from its training prior."""
    z = trainer.prior.draw(n, torch.Generator(device=trainer.device).manual_seed(int(seed)))
    return trainer.generator.eval()(z).float().cpu().numpy()  # (n, d)


def measure_setting(side: int, seed: int, setting: str, *, params, device) -> Cell:
    """Train one batch setting on one grid and seed, and measure its mode coverage."""
    batches = next(s for s in MIXTURE_SETTINGS if s.name == setting)
    mixture = grid_mixture(side, spacing=SPACING, std=STD)
    X, _ = mixture.sample(params["n_train"], random_state=seed)
    trainer = train_setting(X, batches, params["config"], seed=seed, device=device)
    generated = generate(trainer, params["n_generated"], seed)
    coverage = mode_coverage(generated, mixture)
    row = {
        "benchmark": NAME,
        "side": side,
        "n_modes": coverage["n_modes"],
        **dataclasses.asdict(batches),
        "setting": setting,
        "seed": seed,
        "modes_recovered": coverage["modes_recovered"],
        "recovered_fraction": coverage["modes_recovered"] / coverage["n_modes"],
        "high_quality_fraction": coverage["high_quality_fraction"],
        "kl_uniform": coverage["kl_uniform"],
        "steps": trainer.step,
        "seconds": trainer.seconds,
        "seconds_per_step": trainer.seconds / trainer.step,
        "selection_seconds": trainer.selection_seconds,
        "selection_share": trainer.selection_seconds / trainer.seconds,
    }
    logger.info("mixture %d, %s, seed %d: %d modes", side, setting, seed, row["modes_recovered"])
    return Cell((side, seed, setting), [row], {"samples": generated})


def _load_samples(out: Path, cells: dict[tuple, Cell]) -> dict[tuple, Cell]:
    """Add the kept generated samples to the cells (every row is kept, with samples or not)."""
    if (out / "samples.npz").exists():
        with np.load(out / "samples.npz") as arrays:
            for name in arrays.files:
                side, setting, *seed = name.split("/")  # older files lack the seed: not kept
                key = (int(side), int(seed[0]), setting) if seed else None
                if key in cells:
                    cells[key].extra["samples"] = arrays[name]
    return cells


def run_mixture(
    sides: Iterable[int] = (5, 7, 10),
    *,
    classes: Iterable[int] | None = None,
    seeds: Iterable[int] = (0, 1, 2),
    device: str = "auto",
    quick: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    resume: bool = False,
) -> str:
    """Run the mode-coverage benchmark, write its files and return the Markdown report.

    ``sides`` 5, 7, 10 give grids of 25, 49 and 100 modes; ``seeds`` seed the training samples,
    networks, batches and generated samples; ``quick``: 5 steps of tiny networks, 2,000 training
    and 1,000 generated samples; ``resume`` keeps the (grid, seed, setting) rows a run with the
    same settings left in ``out_dir`` (default ``results/benchmarks/mixture``). ``classes`` and
    ``data_root`` are ignored (every benchmark takes them).
    """
    started, options = time.time(), dict(locals())
    sides, seeds = int_list(sides, "sides"), int_list(seeds, "seeds")
    if min(sides) < 1:
        raise ValueError(f"sides must be >= 1, got {sides}")
    options.update(sides=sides, seeds=seeds)
    out = prepare_out_dir(out_dir, NAME)
    dev = str(resolve_device(device))
    params = mixture_params(quick)
    cells = run_grid(
        out,
        {"benchmark": NAME, "quick": quick, "training": params},
        {"side": sides, "seed": seeds, "setting": [s.name for s in MIXTURE_SETTINGS]},
        partial(measure_setting, params=params, device=dev),
        columns=COLUMNS,
        resume=resume,
        load=_load_samples,
        label=NAME,
        verbose=verbose,
    )
    samples: dict[tuple[int, str], tuple[int, np.ndarray]] = {}
    for cell in cells:  # the plot shows the lowest seed with samples
        side, seed, setting = cell.key
        if "samples" in cell.extra and seed < samples.get((side, setting), (seed + 1,))[0]:
            samples[(side, setting)] = (seed, cell.extra["samples"])
    arrays = {f"{side}/{name}/{seed}": v for (side, name), (seed, v) in samples.items()}
    write_npz(arrays, out / "samples.npz")
    plot_samples(samples, sides, out / "samples.png")
    results = pd.DataFrame([r for c in cells for r in c.rows], columns=list(COLUMNS))
    text = mixture_report(results, spacing=SPACING, std=STD, config=params, quick=quick)
    write_text(text, out / "table.md")
    write_meta(out, NAME, options, started=started, device=dev, extra={"training": params})
    return text


def plot_samples(samples: dict[tuple[int, str], tuple[int, np.ndarray]], sides, path) -> None:
    """Generated samples over the mode centres: rows = grid, columns = setting.

    ``samples`` maps ``(side, setting name)`` to ``(seed, samples)``; a panel without samples
    shows the mode centres only."""
    names = [s.name for s in MIXTURE_SETTINGS]
    fig, axes = new_figure(len(sides), len(names), size=(3.2, 3.2))
    for i, side in enumerate(sides):
        mixture = grid_mixture(side, spacing=SPACING, std=STD)
        lim = (side - 1) / 2 * SPACING + 1.5
        for j, name in enumerate(names):
            ax = axes[i, j]
            _, pts = samples.get((side, name), (None, None))
            if pts is not None:
                ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.3, color="C0", rasterized=True)
            c = mixture.centers
            ax.scatter(c[:, 0], c[:, 1], s=12, marker="x", color="C3", linewidths=0.8)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
            if i == 0:
                ax.set_title(name)
            if j == 0:
                ax.set_ylabel(f"{mixture.n_modes} modes")
    shown = sorted({seed for (side, _), (seed, _) in samples.items() if side in sides})
    label = "seed" if len(shown) == 1 else "seeds"
    fig.suptitle(
        f"generated samples (blue) and mode centres (red), {label} {', '.join(map(str, shown))}"
    )
    save_figure(fig, path)
