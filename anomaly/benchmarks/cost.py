"""Cost of core-set selection: time per training step with and without it, in the same run.

Two kinds of data: MNIST-shaped images (synthetic, 1x28x28 in [-1, 1], with the image preset's
convolutional settings; the time of a step does not depend on the pixel values) and the 25-mode
Gaussian grid (the mixture benchmark's MLP settings). For each seed both settings are timed back
to back, in alternating order, after a short warm-up: random batches of 64 and core-set batches
of 64 (prior factor 4, data factor 8). The selection's time is the sampler's own clock
(``selection_seconds``); embedding and projecting the training set happens once, before the
loop, and is not counted.

Files written to ``out_dir``: ``results.csv`` (one row per data x setting x seed), ``table.md``,
``step_time.png`` and ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from coreset_meg.anomaly.settings import preset
from coreset_meg.common import progress
from coreset_meg.datasets import grid_mixture
from coreset_meg.gan import MEGConfig, MEGTrainer, resolve_device
from coreset_meg.gan.config import TRAINING_GROUPS, setting_fields

from ._io import (
    fmt,
    int_list,
    new_figure,
    prepare_out_dir,
    save_figure,
    write_csv,
    write_meta,
    write_text,
)
from ._reports import cost_report
from .mixture import BatchSetting, mixture_params

__all__ = ["run_cost"]

logger = logging.getLogger(__name__)

NAME = "cost"

#: The two settings compared.
SETTINGS = (BatchSetting("random batches", 64, 1, 1), BatchSetting("core-set", 64, 4, 8))

# fmt: off
COLUMNS = (
    "benchmark", "data", "setting", "batch_size", "prior_factor", "data_factor", "seed", "steps",
    "seconds", "ms_per_step", "selection_ms_per_step", "selection_share",
)
# fmt: on

_MEG_FIELDS = {f.name for _, f in setting_fields(TRAINING_GROUPS)}


def _workloads(quick: bool, seed: int) -> list[tuple[str, np.ndarray, dict[str, Any], int]]:
    """``(name, training data, flat MEGConfig settings, timed steps)`` per kind of data."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, size=(600 if quick else 10_000, 1, 28, 28))
    image_cfg = {k: v for k, v in preset("mnist", quick).items() if k in _MEG_FIELDS}
    image_cfg["bounded_output"] = True  # as the detector does for images
    mix = mixture_params(quick)
    points, _ = grid_mixture(5).sample(mix["n_train"], random_state=seed)
    steps_images, steps_mixture = (3, 3) if quick else (50, 200)
    return [
        ("MNIST-shaped 1x28x28 (conv)", images.astype(np.float32), image_cfg, steps_images),
        ("25-mode grid, 2-D (MLP)", points, dict(mix["config"]), steps_mixture),
    ]


def _time(X, cfg: dict[str, Any], setting: BatchSetting, steps: int, seed: int, device: str):
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

    One timing of each setting per seed (data, networks and batches seeded by it); ``quick``: 3
    steps of tiny networks; ``out_dir`` defaults to ``results/benchmarks/cost``. ``classes`` and
    ``data_root`` are ignored (every benchmark takes them; the data are synthetic).
    """
    started, seeds = time.time(), int_list(seeds, "seeds")
    options = {"seeds": seeds, "device": device, "quick": quick, "out_dir": out_dir}
    out = prepare_out_dir(out_dir, NAME)
    dev = str(resolve_device(device))
    rows: list[dict[str, Any]] = []
    with progress(len(seeds) * 2 * len(SETTINGS), NAME, enabled=verbose) as bar:
        for i, seed in enumerate(seeds):
            for data, X, cfg, steps in _workloads(quick, seed):
                if i == 0:  # warm-up: first calls allocate memory and pick kernels
                    for setting in SETTINGS:
                        _time(X, cfg, setting, 2, seed, dev)
                for setting in SETTINGS if i % 2 == 0 else SETTINGS[::-1]:
                    trainer = _time(X, cfg, setting, steps, seed, dev)
                    seconds, selection = trainer.seconds, trainer.selection_seconds
                    rows.append(
                        {
                            "benchmark": NAME,
                            **dataclasses.asdict(setting),
                            "data": data,
                            "setting": setting.name,
                            "seed": seed,
                            "steps": trainer.step,
                            "seconds": seconds,
                            "ms_per_step": 1000 * seconds / trainer.step,
                            "selection_ms_per_step": 1000 * selection / trainer.step,
                            "selection_share": selection / seconds,
                        }
                    )
                    logger.info("cost %s, %s, seed %d", data, setting.name, seed)
                    write_csv(pd.DataFrame(rows, columns=list(COLUMNS)), out / "results.csv")
                    bar.advance()
    results = pd.DataFrame(rows, columns=list(COLUMNS))
    plot_step_time(results, out / "step_time.png")
    text = cost_report(results, device=dev, quick=quick)
    write_text(text, out / "table.md")
    write_meta(out, NAME, options, started=started, device=dev)
    return text


def plot_step_time(results: pd.DataFrame, path) -> None:
    """Bars of ms/step per data and setting, split into selection time and the rest."""
    datas = list(results["data"].unique())
    fig, axes = new_figure(1, len(datas), size=(3.6, 3.2))
    for ax, data in zip(axes[0], datas, strict=True):
        r = results[results["data"] == data].groupby("setting", sort=False)
        total, sel = r["ms_per_step"].mean(), r["selection_ms_per_step"].mean()
        names, rest = list(total.index), (total - sel).to_numpy()
        ax.bar(names, rest, color="C0", label="networks and rest")
        ax.bar(names, sel.to_numpy(), bottom=rest, color="C3", label="core-set selection")
        for k, value in enumerate(total.to_numpy()):
            ax.text(k, value, fmt(value, 1), ha="center", va="bottom", fontsize=8)
        ax.set(title=data, ylabel="ms per step")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    save_figure(fig, path)
