"""One-class benchmark: train on one normal class, test on the whole test split (Deep SVDD).

For each normal class the split of :func:`datasets.load_benchmark` (protocol ``"one-class"``) is
built and, for every seed, the five detectors of the held-out benchmark are fitted and scored on
it: MEG with core-set batches, MEG with random batches, kNN distance, Isolation Forest and PCA
reconstruction error. The metric is AUROC (average precision alongside). For CIFAR-10 the mean
AUROC of well-known methods is shown as a published reference.

Files written to ``out_dir``: ``results.csv`` (one row per method x class x seed),
``training_history.csv``, ``scores.npz`` (every split's scores), ``table.md``, ``roc_curves.png``,
``auroc_bars.png`` and ``meta.json``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from datasets import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

from ._detection import (
    METHODS,
    metric_table,
    plot_bars,
    plot_curves,
    run_protocol,
    seed_means,
    timing_table,
)
from ._io import (
    QUICK_NOTE,
    fmt,
    fmt_mean_std,
    markdown_table,
    write_meta,
    write_table,
)
from ._reference import PUBLISHED_NOTE, PUBLISHED_ONE_CLASS_AUROC

__all__ = ["report", "run_one_class"]

logger = logging.getLogger(__name__)

NAME = "one-class"

_CLASS_NAMES = {"cifar10": CIFAR10_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}


def _key(dataset: str) -> str:
    key = str(dataset).lower().replace("_", "-")
    return {"cifar-10": "cifar10", "fashion": "fashion-mnist"}.get(key, key)


def _class_label(dataset: str):
    names = _CLASS_NAMES.get(_key(dataset))
    if names is None:
        return str
    return lambda c: f"{c} ({names[c]})"


def run_one_class(
    dataset: str = "mnist",
    *,
    classes: Iterable[int] = range(10),
    seeds: Iterable[int] = (0, 1, 2),
    device: str = "auto",
    quick: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    jobs: int = 1,
    resume: bool = False,
) -> str:
    """Run the one-class benchmark and write its results; return the Markdown report.

    Parameters
    ----------
    dataset : str, optional
        ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"digits"``. Without the official
        CIFAR-10 files, :func:`datasets.load_benchmark` reads the JPEG-compressed copy in
        ``data_root/cifar10-jpeg``, and the report says so.
    classes : iterable of int, optional
        Normal classes to run, each in its own split.
    seeds : iterable of int, optional
        Seeds of the detectors and of the Isolation Forest (the split is the official one,
        except for the digits, whose stratified split is also seeded).
    device : str, optional
        Torch device of the GAN detectors ("auto" = CUDA when available).
    quick : bool, optional
        Smoke-test sizes: 5 iterations of tiny networks on 600 training and 400 test samples.
    data_root : str, os.PathLike or None, optional
        Data folder (see :func:`datasets.load_benchmark`).
    out_dir : str, os.PathLike or None, optional
        Output folder; ``results/benchmarks/one-class`` by default.
    verbose : bool, optional
        Progress bar on stderr.
    jobs : int, optional
        Splits measured at once in separate processes (they share the cores, and the GPU).
    resume : bool, optional
        Keep the splits an interrupted run with the same settings left in ``out_dir``.

    Returns
    -------
    str
        The Markdown report, also written to ``out_dir/table.md``.
    """
    started = time.time()
    run, options, out, dev = run_protocol(
        NAME,
        "one-class",
        dataset=dataset,
        classes=classes,
        seeds=seeds,
        device=device,
        quick=quick,
        data_root=data_root,
        out_dir=out_dir,
        verbose=verbose,
        jobs=jobs,
        resume=resume,
    )
    label = _class_label(dataset)
    title = f"{dataset} one-class: ROC, seed {options['seeds'][0]}"
    plot_curves(run, out / "roc_curves.png", kind="roc", class_label=label, title=title)
    plot_bars(
        run.results,
        "auroc",
        out / "auroc_bars.png",
        title=f"{dataset} one-class: AUROC (mean ± std over seeds)",
    )
    text = report(run.results, dataset=dataset, params=run.params, quick=quick)
    write_table(text, out)
    write_meta(out, NAME, options, started=started, device=dev, extra={"detector": run.params})
    return text


def report(
    results: pd.DataFrame,
    *,
    dataset: str,
    params: Mapping[str, Any] | None = None,
    quick: bool = False,
) -> str:
    """The Markdown report of a one-class run, from its ``results.csv`` rows.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows as written to ``results.csv``.
    dataset : str
        Data set name; published reference figures exist for ``"cifar10"``.
    params : mapping, optional
        Detector parameters, listed under the tables.
    quick : bool, optional
        Mark the report as a smoke test.

    Returns
    -------
    str
    """
    classes = sorted(int(c) for c in results["cls"].unique())
    seeds = sorted(int(s) for s in results["seed"].unique())
    label = _class_label(dataset)
    lines = [f"# One-class benchmark: {dataset}", ""]
    if quick:
        lines += [QUICK_NOTE, ""]
    lines += [
        "One class is normal: the detectors train on that class of the training split only and "
        "are tested on the whole test split, every other class being an anomaly. Normal classes "
        f"{', '.join(map(str, classes))}; seeds {', '.join(map(str, seeds))}; every method ran "
        "on the same split for each class and seed. Cells are mean ± standard deviation over "
        "seeds; the mean row averages over classes within each seed first.",
        "",
    ]
    descriptions = " ".join(results["split"].astype(str).unique())
    if _key(dataset) == "cifar10":
        if "JPEG" in descriptions:
            lines += [
                "Note: these CIFAR-10 images are the shared JPEG-compressed copy (quality about "
                "75; pixels differ from the originals by up to about 15 levels), so the figures "
                "are close to, but not exactly comparable with, published CIFAR-10 results.",
                "",
            ]
        else:
            lines += ["Data: the official CIFAR-10 files.", ""]
    lines += ["## AUROC", "", *metric_table(results, "auroc", class_label=label), ""]

    published = PUBLISHED_ONE_CLASS_AUROC.get(_key(dataset))
    if published:
        rows = [[name, f"≈{value:.2f}", PUBLISHED_NOTE] for name, value in published.items()]
        rows += [
            [m, fmt_mean_std(seed_means(results, "auroc", m)), f"measured ({len(classes)} classes)"]
            for m in METHODS
            if m in set(results["method"])
        ]
        lines += [
            "## Mean AUROC beside published figures",
            "",
            *markdown_table(["method", "mean AUROC", "source"], rows, ["l", "r", "l"]),
            "",
            f"Rows marked {PUBLISHED_NOTE} are the ten-class means reported in their papers "
            "(rounded); a measured mean over fewer than ten classes is not comparable with them.",
            "",
        ]
    lines += [
        "## Average precision (step-wise, anomaly = positive)",
        "",
        *metric_table(results, "average_precision", class_label=label),
        "",
        "## Time (mean per split)",
        "",
        *timing_table(results),
    ]
    share = results["anomaly_fraction"]
    lines += ["", f"Anomaly share of the test sets: {fmt(100 * share.mean(), 1)}%."]
    if params:
        listed = ", ".join(f"{k}={v}" for k, v in params.items())
        lines += ["", f"MEG parameters (random batches: prior_factor=1, data_factor=1): {listed}."]
    return "\n".join(lines) + "\n"
