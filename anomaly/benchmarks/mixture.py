"""Mode coverage on 2-D Gaussian grids: random batches vs core-set batches vs large batches.

Small-GAN's claim: a small core-set batch drops fewer modes than a small random batch, as a large
batch would. For each grid (``side`` x ``side`` modes, spacing 2, std 0.05) and seed, the MEG
generator (an MLP, uniform latent prior, unbounded output) is trained on samples of the mixture
under each of :data:`MIXTURE_SETTINGS`. Then generated samples are scored with
:func:`coreset_meg.datasets.mode_coverage`: modes recovered, share of high-quality samples (within 4
std of a mode) and KL divergence of the mode histogram from uniform. Seconds per step are recorded
too.

BigGAN's techniques are settings too (:data:`TECHNIQUE_SETTINGS`, chosen with ``settings``):
the core-set setting with orthogonal regularisation, spectral normalisation of E and G, or a
weight average of G drawing the samples. ``truncations`` adds a sweep of the truncation trick on
every trained generator: coverage of samples whose latents are truncated at each threshold
(fidelity against diversity), without training again.

Files written to ``out_dir``: ``results.csv`` (one row per grid x seed x setting),
``samples.npz`` (lowest seed's generated samples, keys ``"<side>/<setting>/<seed>"``),
``table.md``, ``samples.png``, ``settings.json`` and ``meta.json``; with ``truncations``, also
``truncation.csv`` (one row per grid x seed x setting x threshold), ``truncation.md`` and
``truncation.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coreset_meg.datasets import grid_mixture, mode_coverage
from coreset_meg.gan import MEGConfig, MEGTrainer, resolve_device

from ._grid import Cell, run_grid
from ._io import (
    int_list,
    new_figure,
    prepare_out_dir,
    read_npz,
    save_figure,
    write_csv,
    write_meta,
    write_npz,
    write_text,
)
from ._reports import mixture_report, truncation_report

__all__ = [
    "MIXTURE_SETTINGS",
    "TECHNIQUE_SETTINGS",
    "COVERAGE_SETTINGS",
    "BatchSetting",
    "generate",
    "mixture_params",
    "run_mixture",
]

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
TRUNCATION_COLUMNS = (
    "side", "n_modes", "setting", "seed", "truncation", "modes_recovered", "recovered_fraction",
    "high_quality_fraction", "kl_uniform",
)
# fmt: on


@dataclass(frozen=True)
class BatchSetting:
    """How the batches of one mixture / cost setting are drawn."""

    name: str  # label in tables and plots
    batch_size: int  # samples (and latents) the networks see per step
    prior_factor: int  # latent candidates per kept latent (1 = no selection)
    data_factor: int  # data candidates per kept sample (1 = no selection)
    options: tuple[tuple[str, Any], ...] = ()  # flat MEGConfig settings on top of the run's


#: The three settings of the mixture benchmark (Small-GAN's comparison).
MIXTURE_SETTINGS = (
    BatchSetting("random 64", 64, 1, 1),
    BatchSetting("core-set 64", 64, 4, 8),
    BatchSetting("random 512", 512, 1, 1),
)

#: BigGAN's techniques, each on the core-set setting: orthogonal regularisation (beta 1e-4, as
#: BigGAN), spectral normalisation of E and G, and a weight average of G drawing the samples
#: (decay 0.99, E's default: BigGAN's 0.9999 would average over more steps than the 2,000 run).
TECHNIQUE_SETTINGS = (
    BatchSetting("core-set 64 + orthogonal reg", 64, 4, 8, (("orthogonal_reg", 1e-4),)),
    BatchSetting("core-set 64 + spectral norm", 64, 4, 8, (("spectral_norm", "both"),)),
    BatchSetting("core-set 64 + G average", 64, 4, 8, (("generator_ema", 0.99),)),
)

#: Issue 31 (why core-set batches dropped modes): the core-set setting with stratified, weighted
#: batches (one random candidate of each k-center cell, weighted by the cell's size: an unbiased
#: estimate of the prior and the data, see :class:`coreset_meg.coreset.CoresetSampler`), and the
#: selection on one side only (data, or latents) to tell the two sides' effects apart.
COVERAGE_SETTINGS = (
    BatchSetting("core-set 64 stratified", 64, 4, 8, (("stratified", True),)),
    BatchSetting("core-set 64 data only", 64, 1, 8),
    BatchSetting("core-set 64 latents only", 64, 4, 1),
)

_SETTINGS = {s.name: s for s in MIXTURE_SETTINGS + TECHNIQUE_SETTINGS + COVERAGE_SETTINGS}


def mixture_params(quick: bool = False) -> dict[str, Any]:
    """Training settings: ``n_train`` samples of the mixture to train on, ``n_generated`` samples
    of the generator to measure coverage, and the flat :class:`~coreset_meg.gan.MEGConfig` settings
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
    the other flat :class:`~coreset_meg.gan.MEGConfig` settings."""
    cfg = MEGConfig.from_params(
        **config,
        **dict(setting.options),
        batch_size=setting.batch_size,
        prior_factor=setting.prior_factor,
        data_factor=setting.data_factor,
    )
    return MEGTrainer(cfg, (X.shape[1],), device=device, random_state=seed).fit(X)


def generate(trainer: MEGTrainer, n: int, seed: int, truncation: float | None = None) -> np.ndarray:
    """``n`` samples (n, d) of the trained generator (its weight average when it has one),
    latents drawn from its training prior, truncated at ``truncation`` (None: as trained)."""
    return trainer.sample(n, seed, truncation).float().cpu().numpy()  # (n, d)


def measure_setting(
    side: int, seed: int, setting: str, *, params, device, truncations: Iterable[float] = ()
) -> Cell:
    """Train one batch setting on one grid and seed, and measure its mode coverage (and, for
    each of ``truncations``, that of samples with truncated latents)."""
    batches = _SETTINGS[setting]
    mixture = grid_mixture(side, spacing=SPACING, std=STD)
    X, _ = mixture.sample(params["n_train"], random_state=seed)
    trainer = train_setting(X, batches, params["config"], seed=seed, device=device)
    generated = generate(trainer, params["n_generated"], seed)
    coverage = mode_coverage(generated, mixture)
    sweep = []
    for threshold in truncations:
        cut = mode_coverage(generate(trainer, params["n_generated"], seed, threshold), mixture)
        sweep.append(
            {
                "side": side,
                "n_modes": cut["n_modes"],
                "setting": setting,
                "seed": seed,
                "truncation": threshold,
                "modes_recovered": cut["modes_recovered"],
                "recovered_fraction": cut["modes_recovered"] / cut["n_modes"],
                "high_quality_fraction": cut["high_quality_fraction"],
                "kl_uniform": cut["kl_uniform"],
            }
        )
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
    row.pop("options")
    logger.info("mixture %d, %s, seed %d: %d modes", side, setting, seed, row["modes_recovered"])
    extra = {"samples": generated, **({"truncation": sweep} if sweep else {})}
    return Cell((side, seed, setting), [row], extra)


def _load_samples(out: Path, cells: dict[tuple, Cell]) -> dict[tuple, Cell]:
    """Add the kept generated samples and truncation rows to the cells (every row is kept,
    with samples or not)."""
    if (out / "truncation.csv").exists():
        sweep = pd.read_csv(out / "truncation.csv")
        for row in sweep[list(TRUNCATION_COLUMNS)].to_dict("records"):
            key = (int(row["side"]), int(row["seed"]), row["setting"])
            if key in cells:
                cells[key].extra.setdefault("truncation", []).append(row)
    if (out / "samples.npz").exists():
        arrays = read_npz(out / "samples.npz")
        for name in arrays:
            side, setting, *seed = name.split("/")  # older files lack the seed: not kept
            key = (int(side), int(seed[0]), setting) if seed else None
            if key in cells:
                cells[key].extra["samples"] = arrays[name]
    return cells


def _plotted_samples(cells: list[Cell]) -> dict[tuple[int, str], tuple[int, np.ndarray]]:
    """``{(side, setting): (seed, samples)}``: the lowest seed with samples of each panel."""
    samples: dict[tuple[int, str], tuple[int, np.ndarray]] = {}
    for cell in cells:
        side, seed, setting = cell.key
        if "samples" in cell.extra and seed < samples.get((side, setting), (seed + 1,))[0]:
            samples[(side, setting)] = (seed, cell.extra["samples"])
    return samples


def _save_cells(out: Path, cells: list[Cell]) -> None:
    """Write what the cells have besides their rows, after every cell (an interrupted run keeps
    it): the plotted samples to ``samples.npz``, the truncation rows to ``truncation.csv``."""
    samples = _plotted_samples(cells)
    write_npz({f"{k[0]}/{k[1]}/{seed}": v for k, (seed, v) in samples.items()}, out / "samples.npz")
    rows = [r for c in cells for r in c.extra.get("truncation", [])]
    if rows:
        write_csv(pd.DataFrame(rows, columns=list(TRUNCATION_COLUMNS)), out / "truncation.csv")


def run_mixture(
    sides: Iterable[int] = (5, 7, 10),
    *,
    settings: Iterable[str] | None = None,
    truncations: Iterable[float] = (),
    config: Mapping[str, Any] | None = None,
    classes: Iterable[int] | None = None,
    seeds: Iterable[int] = (0, 1, 2),
    device: str = "auto",
    quick: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    resume: bool = False,
    jobs: int = 1,
) -> str:
    """Run the mode-coverage benchmark, write its files and return the Markdown report.

    ``sides`` 5, 7, 10 give grids of 25, 49 and 100 modes; ``settings`` names the batch settings
    run (default: :data:`MIXTURE_SETTINGS`; any of :data:`TECHNIQUE_SETTINGS` and
    :data:`COVERAGE_SETTINGS` too);
    ``truncations`` lists thresholds of the truncation trick measured on every trained
    generator (none by default); ``config``: flat :class:`~coreset_meg.gan.MEGConfig` settings
    replacing those of :func:`mixture_params` (e.g. fewer iterations); ``seeds`` seed the training
    samples, networks, batches and generated samples; ``quick``: 5 steps of tiny networks, 2,000
    training and 1,000 generated samples; ``resume`` keeps the (grid, seed, setting) rows a run with
    the same settings left in ``out_dir`` (default ``results/benchmarks/mixture``); ``jobs``: cells
    trained at once in separate processes sharing the cores (results are the same). ``classes`` and
    ``data_root`` are ignored (every benchmark takes them).
    """
    started, options = time.time(), dict(locals())
    sides, seeds = int_list(sides, "sides"), int_list(seeds, "seeds")
    if min(sides) < 1:
        raise ValueError(f"sides must be >= 1, got {sides}")
    names = [s.name for s in MIXTURE_SETTINGS] if settings is None else list(settings)
    unknown = [n for n in names if n not in _SETTINGS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"settings must be distinct names among {', '.join(map(repr, _SETTINGS))}, got {names}"
        )
    truncations = [float(t) for t in truncations]
    if any(not t > 0 for t in truncations):
        raise ValueError(f"truncation thresholds must be > 0, got {truncations}")
    options.update(sides=sides, seeds=seeds, settings=names, truncations=truncations)
    out = prepare_out_dir(out_dir, NAME)
    dev = str(resolve_device(device))
    params = mixture_params(quick)
    params["config"].update(config or {})
    MEGConfig.from_params(**params["config"])  # a wrong setting fails here, before any work
    recorded = {"benchmark": NAME, "quick": quick, "training": params}
    # Runs of the default settings without a sweep record what they always did (and resume).
    if truncations:
        recorded["truncations"] = truncations
    if any(_SETTINGS[n].options for n in names):  # what the technique settings mean
        recorded["setting_options"] = {
            k: dict(v.options) for k, v in _SETTINGS.items() if v.options
        }
    cells = run_grid(
        out,
        recorded,
        {"side": sides, "seed": seeds, "setting": names},
        partial(measure_setting, params=params, device=dev, truncations=truncations),
        columns=COLUMNS,
        resume=resume,
        load=_load_samples,
        save=_save_cells,
        jobs=jobs,
        label=NAME,
        verbose=verbose,
    )
    _save_cells(out, cells)  # (a resumed run with nothing left to measure has not saved)
    plot_samples(_plotted_samples(cells), sides, out / "samples.png", names)
    results = pd.DataFrame([r for c in cells for r in c.rows], columns=list(COLUMNS))
    text = mixture_report(results, spacing=SPACING, std=STD, config=params, quick=quick)
    write_text(text, out / "table.md")
    sweep = [r for c in cells for r in c.extra.get("truncation", [])]
    if truncations and sweep:
        sweep = pd.DataFrame(sweep, columns=list(TRUNCATION_COLUMNS))
        sweep = sweep[sweep["truncation"].isin(truncations)]
        write_text(truncation_report(sweep, results, quick=quick), out / "truncation.md")
        plot_truncation(sweep, results, out / "truncation.png")
    write_meta(out, NAME, options, started=started, device=dev, extra={"training": params})
    return text


def plot_samples(
    samples: dict[tuple[int, str], tuple[int, np.ndarray]], sides, path, names=None
) -> None:
    """Generated samples over the mode centres: rows = grid, columns = setting (``names``,
    default :data:`MIXTURE_SETTINGS`).

    ``samples`` maps ``(side, setting name)`` to ``(seed, samples)``; a panel without samples
    shows the mode centres and says so."""
    names = [s.name for s in MIXTURE_SETTINGS] if names is None else list(names)
    fig, axes = new_figure(len(sides), len(names), size=(3.2, 3.2))
    for i, side in enumerate(sides):
        mixture = grid_mixture(side, spacing=SPACING, std=STD)
        lim = (side - 1) / 2 * SPACING + 1.5
        for j, name in enumerate(names):
            ax = axes[i, j]
            _, pts = samples.get((side, name), (None, None))
            if pts is not None:
                ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.3, color="C0", rasterized=True)
            else:  # e.g. a resumed run whose samples.npz was not kept
                ax.text(0.5, 0.5, "no samples kept", transform=ax.transAxes, ha="center")
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


def plot_truncation(sweep: pd.DataFrame, results: pd.DataFrame, path) -> None:
    """Fidelity against diversity as the truncation threshold moves: share of high-quality
    samples against modes recovered, means over seeds, one line per setting and a panel per
    grid; the untruncated samples (``results``) end each line."""
    sides = sorted(sweep["side"].unique())
    fig, axes = new_figure(1, len(sides), size=(4.2, 3.6))
    for ax, side in zip(axes[0], sides, strict=True):
        for k, name in enumerate(dict.fromkeys(sweep["setting"])):
            cut = sweep[(sweep["side"] == side) & (sweep["setting"] == name)]
            full = results[(results["side"] == side) & (results["setting"] == name)]
            points = cut.groupby("truncation")[["modes_recovered", "high_quality_fraction"]].mean()
            points = points.sort_index(ascending=False)
            x = [full["modes_recovered"].mean(), *points["modes_recovered"]]
            y = [100 * full["high_quality_fraction"].mean(), *100 * points["high_quality_fraction"]]
            ax.plot(x, y, marker="o", markersize=3, color=f"C{k}", label=name)
            labels = ["none", *(f"{t:g}" for t in points.index)]
            for label, xi, yi in zip(labels, x, y, strict=True):
                ax.annotate(label, (xi, yi), fontsize=6, color=f"C{k}")
        n_modes = int(sweep.loc[sweep["side"] == side, "n_modes"].iloc[0])
        ax.set(
            xlabel="modes recovered",
            ylabel="high-quality samples %",
            title=f"{n_modes} modes",
        )
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    seeds = ", ".join(map(str, sorted(sweep["seed"].unique())))
    fig.suptitle(f"truncation trick, seeds {seeds}:\neach point a threshold (none: untruncated)")
    save_figure(fig, path)
