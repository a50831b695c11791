"""Mode coverage on 2-D Gaussian grids: random batches vs core-set batches vs large batches.

Small-GAN's claim: a small core-set batch drops fewer modes than a small random batch, as a large
batch would. For each grid (``side`` x ``side`` modes, spacing 2, std 0.05) and seed, the MEG
generator (an MLP, uniform latent prior, unbounded output) is trained on samples of the mixture
under three batch settings: random batches of 64, core-set batches of 64 (prior factor 4, data
factor 8), and random batches of 512. Then 10,000 generated samples are scored with
:func:`datasets.mode_coverage`: modes recovered, share of high-quality samples (within 4 std of a
mode) and KL divergence of the mode histogram from uniform. Seconds per training step are
recorded too.

Files written to ``out_dir``: ``results.csv`` (one row per grid x setting x seed),
``samples.npz`` (lowest seed's generated samples), ``table.md``, ``samples.png``,
``settings.json`` and ``meta.json``. With ``resume=True`` the rows already in ``results.csv`` (of
a run with the same settings, finished or interrupted) are kept and only the missing ones are
trained.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from common import progress
from datasets import GaussianMixture, grid_mixture, mode_coverage
from gan import MEGConfig, MEGTrainer, resolve_device

from ._config import MIXTURE_SETTINGS, BatchSetting, mixture_params
from ._io import (
    QUICK_NOTE,
    atomic_write,
    check_resumable,
    fmt,
    fmt_mean_std,
    int_list,
    markdown_table,
    new_figure,
    prepare_out_dir,
    save_figure,
    write_csv,
    write_meta,
    write_settings,
    write_table,
)

__all__ = ["generate", "report", "run_mixture", "train_setting"]

logger = logging.getLogger(__name__)

NAME = "mixture"
SPACING = 2.0
STD = 0.05

COLUMNS = (
    "benchmark",
    "side",
    "n_modes",
    "setting",
    "batch_size",
    "prior_factor",
    "data_factor",
    "seed",
    "modes_recovered",
    "recovered_fraction",
    "high_quality_fraction",
    "kl_uniform",
    "steps",
    "seconds",
    "seconds_per_step",
    "selection_seconds",
    "selection_share",
)


def train_setting(
    X: np.ndarray,
    setting: BatchSetting,
    config: dict[str, Any],
    *,
    seed: int,
    device: str,
) -> MEGTrainer:
    """Train the MEG generator on 2-D samples with one batch setting.

    Parameters
    ----------
    X : numpy.ndarray of shape (n, 2)
        Training samples.
    setting : BatchSetting
        Batch size and core-set factors.
    config : dict
        The other :class:`~gan.MEGConfig` fields (:func:`~._config.mixture_params`).
    seed : int
        Seed of the networks and batches.
    device : str
        Torch device.

    Returns
    -------
    gan.MEGTrainer
        The trained trainer (``seconds``, ``step``, ``selection_seconds``, ``generator``).
    """
    cfg = MEGConfig.from_params(
        **config,
        batch_size=setting.batch_size,
        prior_factor=setting.prior_factor,
        data_factor=setting.data_factor,
    )
    return MEGTrainer(cfg, (X.shape[1],), device=device, random_state=seed).fit(X)


@torch.no_grad()
def generate(trainer: MEGTrainer, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` samples from the trained generator, with latents from its training prior.

    Returns
    -------
    numpy.ndarray of float32, shape (n, d)
    """
    generator = trainer.generator.eval()
    cfg = trainer.config
    gen = torch.Generator(device=trainer.device).manual_seed(int(seed))
    shape = (n, cfg.networks.latent_dim)
    if cfg.batches.prior == "uniform":
        z = torch.rand(shape, generator=gen, device=trainer.device) * 2.0 - 1.0
    else:
        z = torch.randn(shape, generator=gen, device=trainer.device)
    return generator(z).float().cpu().numpy()  # (n, d)


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
    """Run the mode-coverage benchmark and write its results; return the Markdown report.

    Parameters
    ----------
    sides : iterable of int, optional
        Grid sides: 5, 7, 10 give mixtures of 25, 49 and 100 modes.
    classes : ignored
        Accepted so that every benchmark takes the same options.
    seeds : iterable of int, optional
        Seeds of the training samples, networks, batches and generated samples.
    device : str, optional
        Torch device ("auto" = CUDA when available).
    quick : bool, optional
        Smoke-test sizes: 5 steps of tiny networks, 2,000 training and 1,000 generated samples.
    data_root : ignored
        The mixtures are generated, not read.
    out_dir : str, os.PathLike or None, optional
        Output folder; ``results/benchmarks/mixture`` by default.
    verbose : bool, optional
        Progress bar on stderr.
    resume : bool, optional
        Keep the (grid, setting, seed) rows already in ``out_dir/results.csv`` and train only
        the others. Refused when that run had other training settings.

    Returns
    -------
    str
        The Markdown report, also written to ``out_dir/table.md``.
    """
    started = time.time()
    sides, seeds = int_list(sides, "sides"), int_list(seeds, "seeds")
    if min(sides) < 1:
        raise ValueError(f"sides must be >= 1, got {sides}")
    options = {
        "sides": sides,
        "seeds": seeds,
        "device": device,
        "quick": quick,
        "out_dir": out_dir,
        "resume": resume,
    }
    out = prepare_out_dir(out_dir, NAME)
    dev = str(resolve_device(device))
    params = mixture_params(quick)
    settings = {"benchmark": NAME, "quick": quick, "training": params}
    rows, samples = _load_done(out, settings) if resume else ([], {})
    write_settings(out, settings)
    done = {(r["side"], r["setting"], r["seed"]) for r in rows}
    if done:
        logger.info("mixture: resuming, %d rows already measured", len(done))
    total = len(sides) * len(seeds) * len(MIXTURE_SETTINGS)
    with progress(total, "mixture", enabled=verbose) as bar:
        for side in sides:
            mixture = grid_mixture(side, spacing=SPACING, std=STD)
            for seed in seeds:
                X, _ = mixture.sample(params["n_train"], random_state=seed)
                for setting in MIXTURE_SETTINGS:
                    if (side, setting.name, seed) in done:
                        bar.advance()
                        continue
                    trainer = train_setting(X, setting, params["config"], seed=seed, device=dev)
                    generated = generate(trainer, params["n_generated"], seed)
                    coverage = mode_coverage(generated, mixture)
                    rows.append(_row(side, setting, seed, trainer, coverage))
                    logger.info(
                        "mixture %d modes, %s, seed %d: %d recovered, %.1f%% high quality",
                        mixture.n_modes,
                        setting.name,
                        seed,
                        coverage["modes_recovered"],
                        100 * coverage["high_quality_fraction"],
                    )
                    kept = samples.get((side, setting.name))
                    if kept is None or seed < kept[0]:  # plot the lowest seed measured
                        samples[(side, setting.name)] = (seed, generated)
                    write_csv(pd.DataFrame(rows, columns=list(COLUMNS)), out / "results.csv")
                    bar.advance()
    results = pd.DataFrame(rows, columns=list(COLUMNS))
    with atomic_write(out / "samples.npz") as tmp, open(tmp, "wb") as fh:
        arrays = {f"{side}/{name}/{seed}": v for (side, name), (seed, v) in samples.items()}
        np.savez_compressed(fh, **arrays)
    plot_samples(samples, sides, out / "samples.png")
    text = report(results, config=params, quick=quick)
    write_table(text, out)
    write_meta(out, NAME, options, started=started, device=dev, extra={"training": params})
    return text


def _load_done(
    out: Path, settings: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[tuple[int, str], tuple[int, np.ndarray]]]:
    """The rows and the kept generated samples (``(side, setting) -> (seed, samples)``) of an
    earlier run in ``out`` with the same settings, finished or interrupted (none when there is
    no earlier run)."""
    results_path = out / "results.csv"
    if not results_path.exists():
        return [], {}
    check_resumable(out, settings)
    results = pd.read_csv(results_path)
    missing = set(COLUMNS) - set(results.columns)
    if missing:
        raise ValueError(f"cannot resume: {results_path} lacks the columns {sorted(missing)}")
    rows = results[list(COLUMNS)].to_dict("records")
    samples: dict[tuple[int, str], tuple[int, np.ndarray]] = {}
    if (out / "samples.npz").exists():
        with np.load(out / "samples.npz") as arrays:
            for key in arrays.files:
                parts = key.split("/")
                if len(parts) == 3:  # "side/setting/seed"; older files lack the seed: not kept
                    samples[(int(parts[0]), parts[1])] = (int(parts[2]), arrays[key])
    return rows, samples


def _row(side: int, setting: BatchSetting, seed: int, trainer: MEGTrainer, coverage: dict):
    return {
        "benchmark": NAME,
        "side": side,
        "n_modes": coverage["n_modes"],
        **{k: v for k, v in dataclasses.asdict(setting).items() if k != "name"},
        "setting": setting.name,
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


def plot_samples(
    samples: dict[tuple[int, str], tuple[int, np.ndarray]], sides: list[int], path: Path
) -> Path:
    """Generated samples over the mode centres: rows = mixture size, columns = setting.

    ``samples`` maps ``(side, setting name)`` to ``(seed, samples)``; a panel without samples
    shows the mode centres only."""
    names = [s.name for s in MIXTURE_SETTINGS]
    fig, axes = new_figure(len(sides), len(names), size=(3.2, 3.2))
    for i, side in enumerate(sides):
        mixture: GaussianMixture = grid_mixture(side, spacing=SPACING, std=STD)
        lim = (side - 1) / 2 * SPACING + 1.5
        for j, name in enumerate(names):
            ax = axes[i, j]
            seed, pts = samples.get((side, name), (None, None))
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
    return save_figure(fig, path)


def report(results: pd.DataFrame, *, config: dict | None = None, quick: bool = False) -> str:
    """The Markdown report of a mixture run, from its ``results.csv`` rows.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows as written to ``results.csv``.
    config : dict, optional
        Training settings (:func:`~._config.mixture_params`), listed under the table.
    quick : bool, optional
        Mark the report as a smoke test.

    Returns
    -------
    str
    """
    seeds = sorted(int(s) for s in results["seed"].unique())
    lines = ["# Mode coverage on 2-D Gaussian grids", ""]
    if quick:
        lines += [QUICK_NOTE, ""]
    lines += [
        f"Grids of modes with spacing {SPACING:g} and std {STD:g}; a generated sample is high "
        "quality within 4 std of a mode, and a mode is recovered when it has a high-quality "
        "sample. KL: divergence of the high-quality samples' mode histogram from uniform (0 is "
        f"perfectly even). Mean ± standard deviation over seeds {', '.join(map(str, seeds))}.",
        "",
    ]
    rows = []
    order = [s.name for s in MIXTURE_SETTINGS]
    for n_modes in sorted(results["n_modes"].unique()):
        for name in order:
            r = results[(results["n_modes"] == n_modes) & (results["setting"] == name)]
            if not len(r):
                continue
            rows.append(
                [
                    str(n_modes),
                    name,
                    fmt_mean_std(r["modes_recovered"], 1),
                    fmt_mean_std(100 * r["high_quality_fraction"], 1),
                    fmt_mean_std(r["kl_uniform"], 3),
                    fmt_mean_std(1000 * r["seconds_per_step"], 1),
                    fmt(100 * r["selection_share"].mean(), 1),
                ]
            )
    header = [
        "modes",
        "setting",
        "modes recovered",
        "high quality %",
        "KL to uniform",
        "ms/step",
        "selection share %",
    ]
    lines += markdown_table(header, rows, ["r", "l", "r", "r", "r", "r", "r"])
    lines += ["", "## Targets", "", "Verdicts computed from the measured numbers above."]
    for n_modes in sorted(results["n_modes"].unique()):
        r = results[results["n_modes"] == n_modes].groupby("setting")["modes_recovered"].mean()
        if {"core-set 64", "random 64"} <= set(r.index):
            ok = r["core-set 64"] >= r["random 64"]
            lines.append(
                f"- {n_modes} modes: core-set 64 recovers at least as many modes as random 64: "
                f"{'MET' if ok else 'NOT MET'} ({r['core-set 64']:.1f} vs {r['random 64']:.1f})"
            )
    if config:
        cfg = ", ".join(f"{k}={v}" for k, v in config["config"].items())
        lines += [
            "",
            f"Training: {config['n_train']} samples from the mixture, {cfg}; coverage measured on "
            f"{config['n_generated']} generated samples.",
        ]
    return "\n".join(lines) + "\n"
