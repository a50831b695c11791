"""The detection loop shared by the held-out and one-class benchmarks, and their tables and plots.

For each class and seed one split is loaded, and every method is fitted and scored on that same
split in the same run: the MEG detector with core-set batches, the same detector with plain random
batches, and the kNN, Isolation Forest and PCA baselines. One result row per method x class x
seed goes to ``results.csv`` (rewritten after every split, so a long run can be watched and an
interrupted one keeps what it had).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve
from sklearn.model_selection import train_test_split

from common import progress
from datasets import Split, load_benchmark
from gan import resolve_device

from .._meg import MEGDetector
from ..metrics import evaluate
from ._baselines import iforest_scores, knn_scores, pca_scores
from ._config import QUICK_N_TEST, QUICK_N_TRAIN, detector_params
from ._io import (
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
    write_settings,
)
from ._reference import PUBLISHED_NOTE

__all__ = [
    "BASELINES",
    "COLUMNS",
    "GAN_METHODS",
    "METHODS",
    "DetectionRun",
    "metric_table",
    "plot_bars",
    "plot_curves",
    "run_detection",
    "subsample",
]

logger = logging.getLogger(__name__)

MEG_CORESET = "MEG + core-set"
MEG_RANDOM = "MEG + random batches"
KNN = "kNN distance"
IFOREST = "Isolation Forest"
PCA_ERROR = "PCA reconstruction"

#: The GAN variants, in table order.
GAN_METHODS = (MEG_CORESET, MEG_RANDOM)
#: The baselines, in table order.
BASELINES = (KNN, IFOREST, PCA_ERROR)
#: Every method, in table order.
METHODS = GAN_METHODS + BASELINES

#: Columns of ``results.csv``, in order.
COLUMNS = (
    "benchmark",
    "dataset",
    "protocol",
    "method",
    "cls",
    "seed",
    "auroc",
    "auprc",
    "average_precision",
    "fit_seconds",
    "score_seconds",
    "n_iter",
    "iters_per_second",
    "selection_seconds",
    "selection_share",
    "n_train",
    "n_test",
    "anomaly_fraction",
    "split",
)

#: Metrics as named in the tables.
METRIC_NAMES = {"auprc": "AUPRC", "auroc": "AUROC", "average_precision": "AP"}


@dataclass
class DetectionRun:
    """What :func:`run_detection` measured.

    Attributes
    ----------
    results : pandas.DataFrame
        One row per method x class x seed, columns :data:`COLUMNS`.
    curves : dict
        ``{cls: (y_test, {method: anomaly_score})}`` for the first seed, for the plots.
    histories : pandas.DataFrame
        The GAN training records (``history_``) with method, class and seed columns.
    descriptions : dict
        ``{(cls, seed): split description}``.
    params : dict
        The core-set detector's parameters (without ``random_state``).
    """

    results: pd.DataFrame
    curves: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)
    histories: pd.DataFrame = field(default_factory=pd.DataFrame)
    descriptions: dict[tuple[int, int], str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def subsample(split: Split, seed: int, n_train: int = QUICK_N_TRAIN, n_test: int = QUICK_N_TEST):
    """A smaller split for quick runs: random training rows, stratified test rows.

    Parameters
    ----------
    split : datasets.Split
        The full split.
    seed : int
        Seed of the draws.
    n_train, n_test : int, optional
        Sizes kept (at most the sizes there are).

    Returns
    -------
    datasets.Split
        Both labels stay in the test set.
    """
    rng = np.random.default_rng(seed)
    tr = np.arange(len(split.X_train))
    if len(tr) > n_train:
        tr = np.sort(rng.choice(len(tr), n_train, replace=False))
    te = np.arange(len(split.X_test))
    if len(te) > n_test:
        te, _ = train_test_split(te, train_size=n_test, stratify=split.y_test, random_state=seed)
        te = np.sort(te)
    return replace(
        split,
        X_train=split.X_train[tr],
        X_test=split.X_test[te],
        y_test=split.y_test[te],
        train_index=split.train_index[tr],
        test_index=split.test_index[te],
        description=f"{split.description}; quick subsample {len(tr)} train, {len(te)} test",
    )


def _fit_meg(params: dict, split: Split) -> tuple[np.ndarray, dict[str, float]]:
    start = time.perf_counter()
    det = MEGDetector(**params).fit(split.X_train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    score = -det.score_samples(split.X_test)
    extra = {
        "fit_seconds": fit_seconds,
        "score_seconds": time.perf_counter() - start,
        "n_iter": float(params["n_iter"]),
        "iters_per_second": params["n_iter"] / det.train_seconds_,
        "selection_seconds": det.selection_seconds_,
        "selection_share": det.selection_seconds_ / det.train_seconds_,
        "history": det.history_,
    }
    return score, extra


def _baseline(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
    start = time.perf_counter()
    score = fn()
    # The baselines fit and score in one call; the time is reported as fit time.
    return score, {"fit_seconds": time.perf_counter() - start}


def score_methods(
    split: Split, seed: int, params: Mapping[str, Any], device: str
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Fit every method on ``split.X_train`` and score ``split.X_test``.

    Parameters
    ----------
    split : datasets.Split
        The data.
    seed : int
        ``random_state`` of the detectors and of the Isolation Forest.
    params : mapping
        Core-set detector parameters (:func:`~anomaly.benchmarks._config.detector_params`).
    device : str
        Torch device of the detectors.

    Returns
    -------
    dict
        ``{method: (anomaly_score, timings)}``; the scores are higher for anomalies.
    """
    coreset = {**params, "random_state": seed, "device": device}
    random_batches = {**coreset, "prior_factor": 1, "data_factor": 1}
    X_tr, X_te = split.X_train, split.X_test
    return {
        MEG_CORESET: _fit_meg(coreset, split),
        MEG_RANDOM: _fit_meg(random_batches, split),
        KNN: _baseline(lambda: knn_scores(X_tr, X_te, k=5)),
        IFOREST: _baseline(lambda: iforest_scores(X_tr, X_te, random_state=seed)),
        PCA_ERROR: _baseline(lambda: pca_scores(X_tr, X_te, random_state=seed)),
    }


def _split_rows(
    benchmark: str,
    dataset: str,
    protocol: str,
    cls: int,
    seed: int,
    split: Split,
    scored: Mapping[str, tuple[np.ndarray, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``results.csv`` rows and training-history records of one scored split."""
    rows, histories = [], []
    for method, (score, extra) in scored.items():
        row = {
            "benchmark": benchmark,
            "dataset": dataset,
            "protocol": protocol,
            "method": method,
            "cls": cls,
            "seed": seed,
            **evaluate(split.y_test, score),
            **{k: v for k, v in extra.items() if k != "history"},
            "n_train": len(split.X_train),
            "n_test": len(split.X_test),
            "anomaly_fraction": split.anomaly_fraction,
            "split": split.description,
        }
        rows.append(row)
        histories += [
            {"method": method, "cls": cls, "seed": seed, **record}
            for record in extra.get("history", [])
        ]
        logger.info(
            "%s class %d seed %d %s: AUPRC %.3f AUROC %.3f",
            benchmark,
            cls,
            seed,
            method,
            row["auprc"],
            row["auroc"],
        )
    return rows, histories


@dataclass
class _SplitTask:
    """Everything one worker needs to measure one (class, seed) split."""

    benchmark: str
    dataset: str
    protocol: str
    cls: int
    seed: int
    params: dict[str, Any]
    device: str
    quick: bool
    data_root: str | None


@dataclass
class _SplitResult:
    cls: int
    seed: int
    rows: list[dict[str, Any]]
    histories: list[dict[str, Any]]
    y_test: np.ndarray
    scores: dict[str, np.ndarray]


# A worker's last loaded split: tasks are ordered by class, so the seeds of a class whose split
# does not depend on the seed reuse it.
_SPLIT_CACHE: dict[tuple, Split] = {}


def _measure_split(task: _SplitTask) -> _SplitResult:
    seeded = task.protocol == "heldout" or task.dataset == "digits"
    key = (task.dataset, task.protocol, task.cls, task.seed if seeded else None, task.data_root)
    if key not in _SPLIT_CACHE:
        _SPLIT_CACHE.clear()
        _SPLIT_CACHE[key] = load_benchmark(
            task.dataset, task.protocol, task.cls, root=task.data_root, random_state=task.seed
        )
    split = _SPLIT_CACHE[key]
    if task.quick:
        split = subsample(split, task.seed)
    logger.info("%s: %s", task.benchmark, split.description)
    scored = score_methods(split, task.seed, task.params, task.device)
    rows, histories = _split_rows(
        task.benchmark, task.dataset, task.protocol, task.cls, task.seed, split, scored
    )
    scores = {m: np.asarray(s, dtype=np.float32) for m, (s, _) in scored.items()}
    return _SplitResult(task.cls, task.seed, rows, histories, split.y_test, scores)


def _init_worker(threads: int, log_level: int) -> None:
    """Limit a worker's torch and BLAS threads so that the workers share the cores."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
    logging.basicConfig(level=log_level, format="%(message)s")


def run_detection(
    benchmark: str,
    *,
    dataset: str,
    protocol: str,
    classes: Iterable[int],
    seeds: Iterable[int],
    device: str,
    quick: bool,
    data_root: str | os.PathLike[str] | None,
    out_dir: Path,
    verbose: bool,
    jobs: int = 1,
    resume: bool = False,
) -> DetectionRun:
    """Measure every method on every class and seed of a protocol; write ``results.csv``.

    ``results.csv``, ``training_history.csv`` and ``scores.npz`` are rewritten after every split,
    so a long run can be watched, and an interrupted one continued with ``resume=True``.

    Parameters
    ----------
    benchmark : str
        Name written in the ``benchmark`` column.
    dataset, protocol : str
        Passed to :func:`datasets.load_benchmark`.
    classes, seeds : iterable of int
        Classes (the anomaly for "heldout", the normal class for "one-class") and seeds.
    device : str
        Torch device of the detectors.
    quick : bool
        Tiny networks and a :func:`subsample` of each split.
    data_root : str, os.PathLike or None
        Data folder.
    out_dir : pathlib.Path
        Where ``results.csv``, ``training_history.csv`` and ``scores.npz`` go.
    verbose : bool
        Progress bar over the splits.
    jobs : int, optional
        Splits measured at once (>= 1, checked by :func:`run_protocol`), each in its own process
        with ``cpu_count // jobs`` threads (they share one GPU when ``device`` is CUDA). Every
        split is seeded on its own, so the numbers do not depend on ``jobs`` beyond
        floating-point summation order.
    resume : bool, optional
        Keep the splits already measured in ``out_dir`` (by a run with the same settings) and
        measure only the others. Kept splits of classes or seeds not asked for this time stay
        in the outputs and the report.

    Returns
    -------
    DetectionRun
    """
    classes, seeds = [int(c) for c in classes], [int(s) for s in seeds]
    params = detector_params(dataset, quick=quick)
    settings = {
        "benchmark": benchmark,
        "dataset": dataset,
        "protocol": protocol,
        "quick": quick,
        "detector": params,
    }
    done = _load_done(out_dir, settings) if resume else {}
    write_settings(out_dir, settings)
    root = None if data_root is None else str(data_root)
    tasks = [
        _SplitTask(benchmark, dataset, protocol, c, s, params, device, quick, root)
        for c in classes
        for s in seeds
        if (c, s) not in done
    ]
    # Every split measured before stays in the outputs, also those of classes or seeds not asked
    # for this time: resuming never drops results from disk.
    finished: dict[tuple[int, int], _SplitResult] = dict(done)
    classes_out = list(dict.fromkeys([*classes, *sorted(c for c, _ in done)]))
    seeds_out = list(dict.fromkeys([*seeds, *sorted(s for _, s in done)]))
    total = len(classes) * len(seeds)
    if done:
        logger.info(
            "%s: resuming, %d of %d splits already measured",
            benchmark,
            total - len(tasks),
            total,
        )
    run = DetectionRun(pd.DataFrame(columns=COLUMNS), params=params)

    def record(result: _SplitResult) -> None:
        finished[(result.cls, result.seed)] = result
        _write_progress(run, finished, classes_out, seeds_out, out_dir)

    with progress(total, f"{benchmark} {dataset}", enabled=verbose) as bar:
        for _ in range(total - len(tasks)):
            bar.advance()
        if int(jobs) == 1 or len(tasks) <= 1:
            for task in tasks:
                record(_measure_split(task))
                bar.advance()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (os.cpu_count() or 1) // int(jobs))
            level = logging.getLogger().getEffectiveLevel()
            with ProcessPoolExecutor(
                max_workers=min(int(jobs), len(tasks)),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads, level),
            ) as pool:
                futures = [pool.submit(_measure_split, task) for task in tasks]
                try:
                    for future in as_completed(futures):
                        record(future.result())
                        bar.advance()
                except BaseException:
                    # Fail fast: the splits not started yet are dropped, not run to the end.
                    for future in futures:
                        future.cancel()
                    raise
    if not tasks:
        _write_progress(run, finished, classes_out, seeds_out, out_dir)
    for (cls, seed), result in finished.items():
        run.descriptions[(cls, seed)] = str(result.rows[0]["split"])
        if seed == seeds[0]:
            run.curves[cls] = (result.y_test, result.scores)
    run.curves = dict(sorted(run.curves.items()))
    return run


def _ordered(
    finished: Mapping[tuple[int, int], _SplitResult], classes: list[int], seeds: list[int]
) -> list[_SplitResult]:
    return [finished[(c, s)] for c in classes for s in seeds if (c, s) in finished]


def _write_progress(
    run: DetectionRun,
    finished: Mapping[tuple[int, int], _SplitResult],
    classes: list[int],
    seeds: list[int],
    out_dir: Path,
) -> None:
    """Rewrite ``results.csv``, ``training_history.csv`` and ``scores.npz`` from the splits."""
    ordered = _ordered(finished, classes, seeds)
    rows = [row for result in ordered for row in result.rows]
    run.results = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    run.histories = pd.DataFrame([h for result in ordered for h in result.histories])
    write_csv(run.results, out_dir / "results.csv")
    if len(run.histories):
        write_csv(run.histories, out_dir / "training_history.csv")
    arrays: dict[str, np.ndarray] = {}
    for result in ordered:
        arrays[f"{result.cls}/{result.seed}/y_test"] = result.y_test
        for method, score in result.scores.items():
            arrays[f"{result.cls}/{result.seed}/{_slug(method)}"] = score
    with atomic_write(out_dir / "scores.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _load_done(out_dir: Path, settings: Mapping[str, Any]) -> dict[tuple[int, int], _SplitResult]:
    """The splits an earlier run with the same settings measured in ``out_dir``."""
    results_path, scores_path = out_dir / "results.csv", out_dir / "scores.npz"
    if not (results_path.exists() and scores_path.exists()):
        return {}
    check_resumable(out_dir, settings)
    results = pd.read_csv(results_path)
    history_path = out_dir / "training_history.csv"
    histories = pd.read_csv(history_path) if history_path.exists() else pd.DataFrame()
    done: dict[tuple[int, int], _SplitResult] = {}
    with np.load(scores_path) as arrays:
        for (cls, seed), group in results.groupby(["cls", "seed"]):
            key = f"{cls}/{seed}"
            methods = list(group["method"])
            if set(methods) != set(METHODS) or f"{key}/y_test" not in arrays:
                continue
            scores = {m: arrays[f"{key}/{_slug(m)}"] for m in METHODS}
            hist = histories
            if len(hist):
                hist = hist[(hist["cls"] == cls) & (hist["seed"] == seed)]
            rows = group.to_dict("records")
            done[(int(cls), int(seed))] = _SplitResult(
                int(cls),
                int(seed),
                rows,
                hist.to_dict("records") if len(hist) else [],
                arrays[f"{key}/y_test"],
                scores,
            )
    return done


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# ---------------------------------------------------------------------------- tables


def per_class(results: pd.DataFrame, metric: str) -> dict[tuple[int, str], list[float]]:
    """``{(cls, method): per-seed values}`` of one metric."""
    out: dict[tuple[int, str], list[float]] = {}
    for (cls, method), group in results.groupby(["cls", "method"], sort=False):
        out[(int(cls), str(method))] = group.sort_values("seed")[metric].tolist()
    return out


def seed_means(results: pd.DataFrame, metric: str, method: str, classes=None) -> list[float]:
    """Per seed, the mean of ``metric`` over the classes (all run, or ``classes``)."""
    rows = results[results["method"] == method]
    if classes is not None:
        rows = rows[rows["cls"].isin(list(classes))]
    return rows.groupby("seed")[metric].mean().sort_index().tolist()


def class_mean(results: pd.DataFrame, metric: str, method: str, cls: int) -> float:
    """Mean over seeds of ``metric`` for one method and class (NaN when not run)."""
    rows = results[(results["method"] == method) & (results["cls"] == cls)]
    return float(rows[metric].mean()) if len(rows) else float("nan")


def metric_table(
    results: pd.DataFrame,
    metric: str,
    *,
    class_label: Callable[[int], str] = str,
    published: Mapping[str, Mapping[int, float]] | None = None,
    published_note: str = "published",
    extra_mean_rows: Sequence[tuple[str, Sequence[int]]] = (),
) -> list[str]:
    """Markdown lines: per class, mean ± std over seeds of one metric for every method.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows of :data:`COLUMNS`.
    metric : str
        ``"auprc"``, ``"auroc"`` or ``"average_precision"``.
    class_label : callable, optional
        Text of a class in the first column.
    published : mapping, optional
        ``{name: {cls: value}}``: fixed reference columns, headed ``"name (published_note)"``.
    published_note : str, optional
        Marker of the reference columns.
    extra_mean_rows : sequence of (str, sequence of int), optional
        More mean rows over subsets of the classes, shown when every class of the subset ran.

    Returns
    -------
    list of str
    """
    methods = [m for m in METHODS if m in set(results["method"])]
    classes = sorted(int(c) for c in results["cls"].unique())
    values = per_class(results, metric)
    published = published or {}
    header = ["class", *methods, *(f"{name} ({published_note})" for name in published)]
    rows = []
    for cls in classes:
        cells = [fmt_mean_std(values.get((cls, m), [])) for m in methods]
        cells += [fmt(ref.get(cls)) for ref in published.values()]
        rows.append([class_label(cls), *cells])
    plural = "class" if len(classes) == 1 else "classes"
    mean_rows = [(f"mean over {len(classes)} {plural}", classes)]
    mean_rows += [
        (label, sorted(subset))
        for label, subset in extra_mean_rows
        if set(subset) <= set(classes) and sorted(subset) != classes
    ]
    for label, subset in mean_rows:
        cells = [fmt_mean_std(seed_means(results, metric, m, subset)) for m in methods]
        for ref in published.values():
            known = [ref[c] for c in subset if c in ref]
            cells.append(fmt(float(np.mean(known))) if len(known) == len(subset) else "–")
        rows.append([f"**{label}**", *(f"**{c}**" if c != "–" else c for c in cells)])
    return markdown_table(header, rows)


def timing_table(results: pd.DataFrame) -> list[str]:
    """Markdown lines: mean fit and score seconds per method, iterations/s and selection share."""
    rows = []
    for method in [m for m in METHODS if m in set(results["method"])]:
        r = results[results["method"] == method]
        gan = method in GAN_METHODS
        rows.append(
            [
                method,
                fmt(r["fit_seconds"].mean(), 1),
                fmt(r["score_seconds"].mean(), 2) if gan else "(in fit)",
                fmt(r["iters_per_second"].mean(), 2) if gan else "–",
                fmt(100 * r["selection_share"].mean(), 1) if gan else "–",
            ]
        )
    header = ["method", "fit s", "score s", "GAN iterations/s", "selection share %"]
    return markdown_table(header, rows)


# ----------------------------------------------------------------------------- plots


def plot_curves(
    run: DetectionRun,
    path: Path,
    *,
    kind: str = "pr",
    class_label: Callable[[int], str] = str,
    title: str = "",
) -> Path:
    """One subplot per class, one line per method: PR (``kind="pr"``) or ROC curves.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    classes = sorted(run.curves)
    ncols = min(5, len(classes))
    nrows = -(-len(classes) // ncols)
    fig, axes = new_figure(nrows, ncols, size=(3.4, 3.0))
    for ax in axes.ravel()[len(classes) :]:
        ax.set_visible(False)
    for ax, cls in zip(axes.ravel(), classes, strict=False):
        y, scores = run.curves[cls]
        for method, score in scores.items():
            if kind == "pr":
                precision, recall, _ = precision_recall_curve(y, score)
                ax.plot(recall, precision, label=method, lw=1.2)
            else:
                fpr, tpr, _ = roc_curve(y, score)
                ax.plot(fpr, tpr, label=method, lw=1.2)
        if kind == "pr":
            ax.axhline(float(np.mean(y)), color="grey", ls=":", lw=1, label="chance")
            ax.set(xlabel="recall", ylabel="precision")
        else:
            ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
            ax.set(xlabel="false positive rate", ylabel="true positive rate")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=f"class {class_label(cls)}")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_bars(
    results: pd.DataFrame,
    metric: str,
    path: Path,
    *,
    published: Mapping[str, Mapping[int, float]] | None = None,
    class_label: Callable[[int], str] = str,
    title: str = "",
) -> Path:
    """Grouped bars of one metric per class and method (mean, error bar = std over seeds).

    ``published`` reference values are drawn as hatched, unfilled bars, marked "published, not
    measured" in the legend.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    methods = [m for m in METHODS if m in set(results["method"])]
    classes = sorted(int(c) for c in results["cls"].unique())
    refs = {name: ref for name, ref in (published or {}).items() if any(c in ref for c in classes)}
    n_bars = len(methods) + len(refs)
    width = 0.8 / n_bars
    x = np.arange(len(classes))
    fig, axes = new_figure(1, 1, size=(max(6.0, 1.1 * len(classes) * n_bars / 3), 3.6))
    ax = axes[0, 0]
    values = per_class(results, metric)
    for i, method in enumerate(methods):
        v = [values.get((c, method), []) for c in classes]
        mean = [np.mean(a) if a else np.nan for a in v]
        std = [np.std(a, ddof=1) if len(a) > 1 else 0.0 for a in v]
        ax.bar(x + (i - (n_bars - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=method)
    for j, (name, ref) in enumerate(refs.items()):
        pos = x + (len(methods) + j - (n_bars - 1) / 2) * width
        heights = [ref.get(c, np.nan) for c in classes]
        color = f"C{len(methods) + j}"
        label = f"{name} ({PUBLISHED_NOTE})"
        ax.bar(pos, heights, width, fill=False, hatch="//", edgecolor=color, label=label)
    ax.set_xticks(x, [class_label(c) for c in classes])
    ax.set(xlabel="class", ylabel=METRIC_NAMES.get(metric, metric), ylim=(0, 1.05))
    fig.legend(loc="outside right upper", fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def run_protocol(
    name: str,
    protocol: str,
    *,
    dataset: str,
    classes: Iterable[int],
    seeds: Iterable[int],
    device: str,
    quick: bool,
    data_root,
    out_dir,
    verbose: bool,
    jobs: int = 1,
    resume: bool = False,
) -> tuple[DetectionRun, dict[str, Any], Path, str]:
    """The common start of the held-out and one-class runners.

    Validates the options, prepares the output folder and runs :func:`run_detection`.

    Returns
    -------
    run : DetectionRun
    options : dict
        The options as given (for ``meta.json``).
    out : Path
        The output folder.
    device : str
        The resolved torch device.
    """
    options = {
        "dataset": dataset,
        "classes": int_list(classes, "classes"),
        "seeds": int_list(seeds, "seeds"),
        "device": device,
        "quick": quick,
        "data_root": data_root,
        "out_dir": out_dir,
        "jobs": jobs,
        "resume": resume,
    }
    if int(jobs) < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = prepare_out_dir(out_dir, name)
    dev = str(resolve_device(device))
    run = run_detection(
        name,
        dataset=dataset,
        protocol=protocol,
        classes=options["classes"],
        seeds=options["seeds"],
        device=dev,
        quick=quick,
        data_root=data_root,
        out_dir=out,
        verbose=verbose,
        jobs=jobs,
        resume=resume,
    )
    return run, options, out, dev
