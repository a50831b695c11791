"""Cost of core-set selection: time per training step with and without it, in the same run.

Two kinds of data: MNIST-shaped images (synthetic, 1x28x28 in [-1, 1], with the held-out
benchmark's convolutional detector settings; the time of a step does not depend on the pixel
values) and the 25-mode Gaussian grid (the mixture benchmark's MLP settings). For each seed both
settings are timed back to back, in alternating order, after a short warm-up: random batches of
64 (no selection) and core-set batches of 64 (prior factor 4, data factor 8). The selection's
time is measured by the sampler itself (``selection_seconds``), so its share of a step is read
directly; embedding and projecting the training set happens once, before the loop, and is not
counted.

Files written to ``out_dir``: ``results.csv`` (one row per data x setting x seed),
``table.md``, ``step_time.png`` and ``meta.json``.
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

from common import progress
from datasets import grid_mixture
from gan import MEGConfig, MEGTrainer, resolve_device
from gan.config import TRAINING_GROUPS, setting_fields

from ._config import BatchSetting, detector_params, mixture_params
from ._io import (
    QUICK_NOTE,
    fmt,
    fmt_mean_std,
    int_list,
    markdown_table,
    new_figure,
    prepare_out_dir,
    save_figure,
    write_csv,
    write_meta,
    write_table,
)

__all__ = ["report", "run_cost"]

logger = logging.getLogger(__name__)

NAME = "cost"

#: The two settings compared.
SETTINGS = (BatchSetting("random batches", 64, 1, 1), BatchSetting("core-set", 64, 4, 8))

COLUMNS = (
    "benchmark",
    "data",
    "setting",
    "batch_size",
    "prior_factor",
    "data_factor",
    "seed",
    "steps",
    "seconds",
    "ms_per_step",
    "selection_ms_per_step",
    "selection_share",
)

_MEG_FIELDS = {f.name for _, f in setting_fields(TRAINING_GROUPS)}


def _workloads(quick: bool, seed: int) -> list[tuple[str, np.ndarray, dict[str, Any], int]]:
    """``(name, training data, MEGConfig fields, timed steps)`` for each kind of data."""
    rng = np.random.default_rng(seed)
    n_images = 600 if quick else 10_000
    images = rng.uniform(-1.0, 1.0, size=(n_images, 1, 28, 28)).astype(np.float32)
    image_cfg = {k: v for k, v in detector_params("mnist", quick).items() if k in _MEG_FIELDS}
    image_cfg["bounded_output"] = True  # as the detector does for images
    mix = mixture_params(quick)
    points, _ = grid_mixture(5).sample(mix["n_train"], random_state=seed)
    steps_images, steps_mixture = (3, 3) if quick else (50, 200)
    return [
        ("MNIST-shaped 1x28x28 (conv)", images, image_cfg, steps_images),
        ("25-mode grid, 2-D (MLP)", points, dict(mix["config"]), steps_mixture),
    ]


def _time(
    X: np.ndarray, cfg: dict[str, Any], setting: BatchSetting, steps: int, seed: int, device: str
) -> MEGTrainer:
    config = MEGConfig.from_params(
        **{
            **cfg,
            "n_iter": steps,
            "batch_size": setting.batch_size,
            "prior_factor": setting.prior_factor,
            "data_factor": setting.data_factor,
        }
    )
    return MEGTrainer(config, X.shape[1:], device=device, random_state=seed).fit(X)


def run_cost(
    *,
    classes: Iterable[int] | None = None,
    seeds: Iterable[int] = (0, 1, 2),
    device: str = "auto",
    quick: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    verbose: bool = False,
) -> str:
    """Time training steps with and without core-set selection; return the Markdown report.

    Parameters
    ----------
    classes : ignored
        Accepted so that every benchmark takes the same options.
    seeds : iterable of int, optional
        One timing of each setting per seed (data, networks and batches seeded by it).
    device : str, optional
        Torch device ("auto" = CUDA when available).
    quick : bool, optional
        Smoke-test sizes: 3 steps of tiny networks.
    data_root : ignored
        The data are synthetic.
    out_dir : str, os.PathLike or None, optional
        Output folder; ``results/benchmarks/cost`` by default.
    verbose : bool, optional
        Progress bar on stderr.

    Returns
    -------
    str
        The Markdown report, also written to ``out_dir/table.md``.
    """
    started = time.time()
    seeds = int_list(seeds, "seeds")
    options = {"seeds": seeds, "device": device, "quick": quick, "out_dir": out_dir}
    out = prepare_out_dir(out_dir, NAME)
    dev = str(resolve_device(device))
    rows: list[dict[str, Any]] = []
    with progress(len(seeds) * 2 * len(SETTINGS), "cost", enabled=verbose) as bar:
        for i, seed in enumerate(seeds):
            for data, X, cfg, steps in _workloads(quick, seed):
                if i == 0:  # warm-up: first calls allocate memory and pick kernels
                    for setting in SETTINGS:
                        _time(X, cfg, setting, 2, seed, dev)
                order = SETTINGS if i % 2 == 0 else SETTINGS[::-1]
                for setting in order:
                    trainer = _time(X, cfg, setting, steps, seed, dev)
                    rows.append(
                        {
                            "benchmark": NAME,
                            "data": data,
                            **dataclasses.asdict(setting),
                            "setting": setting.name,
                            "seed": seed,
                            "steps": trainer.step,
                            "seconds": trainer.seconds,
                            "ms_per_step": 1000 * trainer.seconds / trainer.step,
                            "selection_ms_per_step": 1000
                            * trainer.selection_seconds
                            / trainer.step,
                            "selection_share": trainer.selection_seconds / trainer.seconds,
                        }
                    )
                    logger.info(
                        "cost %s, %s, seed %d: %.1f ms/step",
                        data,
                        setting.name,
                        seed,
                        rows[-1]["ms_per_step"],
                    )
                    write_csv(pd.DataFrame(rows, columns=list(COLUMNS)), out / "results.csv")
                    bar.advance()
    results = pd.DataFrame(rows, columns=list(COLUMNS))
    plot_step_time(results, out / "step_time.png")
    text = report(results, device=dev, quick=quick)
    write_table(text, out)
    write_meta(out, NAME, options, started=started, device=dev)
    return text


def _overheads(results: pd.DataFrame, data: str) -> list[float]:
    """Per seed: core-set ms/step over random ms/step, minus 1, in percent."""
    r = results[results["data"] == data].pivot_table(
        index="seed", columns="setting", values="ms_per_step"
    )
    if not {"core-set", "random batches"} <= set(r.columns):
        return []
    return (100 * (r["core-set"] / r["random batches"] - 1)).tolist()


def report(results: pd.DataFrame, *, device: str = "", quick: bool = False) -> str:
    """The Markdown report of a cost run, from its ``results.csv`` rows.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows as written to ``results.csv``.
    device : str, optional
        Device the steps ran on, named in the text.
    quick : bool, optional
        Mark the report as a smoke test.

    Returns
    -------
    str
    """
    seeds = sorted(int(s) for s in results["seed"].unique())
    lines = ["# Cost of core-set selection per training step", ""]
    if quick:
        lines += [QUICK_NOTE, ""]
    on = f" on {device}" if device else ""
    lines += [
        f"One step = 5 energy updates + 1 generator update, batch 64{on}, {os.cpu_count()} CPU "
        "cores. Both settings timed in the same run, back to back; mean ± standard deviation "
        f"over seeds {', '.join(map(str, seeds))}. The selection time is the sampler's own "
        "clock (greedy k-center on the latent and data candidates); the overhead is measured "
        "per seed against the random-batch step.",
        "",
    ]
    rows = []
    for data in results["data"].unique():
        overhead = _overheads(results, data)
        for setting in SETTINGS:
            r = results[(results["data"] == data) & (results["setting"] == setting.name)]
            if not len(r):
                continue
            rows.append(
                [
                    data,
                    setting.name,
                    fmt_mean_std(r["ms_per_step"], 1),
                    fmt_mean_std(r["selection_ms_per_step"], 2),
                    fmt_mean_std(100 * r["selection_share"], 1),
                    fmt_mean_std(overhead, 1) if setting.coreset else "(baseline)",
                ]
            )
    header = ["data", "setting", "ms/step", "selection ms/step", "share %", "overhead vs random %"]
    lines += markdown_table(header, rows, ["l", "l", "r", "r", "r", "r"])
    steps = results.groupby("data", sort=False)["steps"].first()
    lines += ["", "Timed steps per run: " + ", ".join(f"{d}: {n}" for d, n in steps.items()) + "."]
    return "\n".join(lines) + "\n"


def plot_step_time(results: pd.DataFrame, path: Path) -> Path:
    """Bars of ms/step per data and setting, split into selection time and the rest."""
    datas = list(results["data"].unique())
    fig, axes = new_figure(1, len(datas), size=(3.6, 3.2))
    for ax, data in zip(axes[0], datas, strict=True):
        names, rest, sel = [], [], []
        for setting in SETTINGS:
            r = results[(results["data"] == data) & (results["setting"] == setting.name)]
            names.append(setting.name)
            total = float(r["ms_per_step"].mean())
            selection = float(r["selection_ms_per_step"].mean())
            sel.append(selection)
            rest.append(total - selection)
        ax.bar(names, rest, color="C0", label="networks and rest")
        ax.bar(names, sel, bottom=rest, color="C3", label="core-set selection")
        for k, (a, b) in enumerate(zip(rest, sel, strict=True)):
            ax.text(k, a + b, fmt(a + b, 1), ha="center", va="bottom", fontsize=8)
        ax.set(title=data, ylabel="ms per step")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    return save_figure(fig, path)
