"""The held-out and one-class benchmarks: one detection protocol runner, two instances.

For each class and seed one split of :func:`coreset_meg.datasets.load_benchmark` is built, and every
detector of :data:`~.detectors.DETECTORS` is fitted and scored on that same split in the same run.

* :data:`run_heldout`: one class is the anomaly, the other nine are normal (MNIST held-out
  digit protocol, leak-free split); AUPRC beside the published MNIST figures.
* :data:`run_one_class`: one class is normal and the whole test split is scored (Deep SVDD
  protocol); AUROC.

Files written to ``out_dir``: ``results.csv`` (a row per detector x class x seed),
``training_history.csv`` (MEG training records), ``scores.npz`` (labels and anomaly scores, keys
``"<cls>/<seed>/y_test"`` and ``"<cls>/<seed>/<detector slug>"``), ``settings.json``,
``table.md``, curves and bars plots and ``meta.json``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve
from sklearn.model_selection import train_test_split

from coreset_meg.anomaly.settings import family, preset
from coreset_meg.datasets import Split, load_benchmark
from coreset_meg.gan import resolve_device

from ..metrics import evaluate
from . import _reports as reports
from ._grid import Cell, run_grid
from ._io import (
    int_list,
    new_figure,
    prepare_out_dir,
    read_npz,
    save_figure,
    timed,
    write_csv,
    write_meta,
    write_npz,
    write_text,
)
from .detectors import DETECTORS, anomaly_score, joined_views, view_of
from .features import DEFAULT_CACHE, FeatureView

__all__ = ["COLUMNS", "Protocol", "run_heldout", "run_one_class", "subsample"]

logger = logging.getLogger(__name__)

#: Columns of ``results.csv``, in order.
# fmt: off
COLUMNS = (
    "benchmark", "dataset", "protocol", "method", "cls", "seed", "auroc", "auprc",
    "average_precision", "fit_seconds", "score_seconds", "embedding_seconds", "n_iter",
    "iters_per_second",
    "selection_seconds", "selection_share", "n_train", "n_test", "anomaly_fraction", "split",
)
# fmt: on


def slug(text: str) -> str:
    """``"kNN distance"`` -> ``"knn_distance"`` (keys of ``scores.npz``)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def subsample(split: Split, seed: int, n_train: int = 600, n_test: int = 400) -> Split:
    """A smaller split for quick runs: random training rows, stratified test rows."""
    rng = np.random.default_rng(seed)
    tr, te = np.arange(len(split.X_train)), np.arange(len(split.X_test))
    if len(tr) > n_train:
        tr = np.sort(rng.choice(len(tr), n_train, replace=False))
    if len(te) > n_test:
        te = np.sort(
            train_test_split(te, train_size=n_test, stratify=split.y_test, random_state=seed)[0]
        )
    return replace(
        split,
        X_train=split.X_train[tr],
        X_test=split.X_test[te],
        y_test=split.y_test[te],
        train_index=split.train_index[tr],
        test_index=split.test_index[te],
        description=f"{split.description}; quick subsample {len(tr)} train, {len(te)} test",
    )


def score_split(
    split: Split, seed: int, dataset: str, device: str, quick: bool, detectors, features=None
):
    """Fit every detector on ``split.X_train``, score ``split.X_test``: ``{name: (anomaly score,
    timings and training figures, fitted detector)}``. Detectors of the feature view get
    ``features`` (the same split's pretrained features) instead, those of the both view the
    pixels and the features side by side (:func:`~.detectors.joined_views`)."""
    out, views = {}, {"pixels": split, "features": features}
    if any(view_of(f) == "both" for f in detectors.values()):
        views["both"] = replace(
            split,
            X_train=joined_views(split.X_train, features.X_train),
            X_test=joined_views(split.X_test, features.X_test),
        )
    n_pixels = int(np.prod(split.X_train.shape[1:]))

    def build(factory):
        det = factory(dataset, seed, device, quick)
        return det.set_params(n_pixels=n_pixels) if view_of(factory) == "both" else det

    for name, factory in detectors.items():
        data = views[view_of(factory)]
        det, fit_s = timed(lambda f=factory, d=data: build(f).fit(d.X_train))
        score, score_s = timed(lambda d=det, x=data.X_test: anomaly_score(d, x))
        figures = {"fit_seconds": fit_s, "score_seconds": score_s}
        meg = getattr(det, "detector_", det)  # the both view's detector is wrapped
        if hasattr(meg, "train_seconds_"):  # MEG: iterations and core-set selection
            trained = meg.n_iter_ > 0 and meg.train_seconds_ > 0
            figures.update(
                n_iter=float(meg.n_iter_),
                iters_per_second=meg.n_iter_ / meg.train_seconds_ if trained else float("nan"),
                selection_seconds=meg.selection_seconds_,
                selection_share=(
                    meg.selection_seconds_ / meg.train_seconds_ if trained else float("nan")
                ),
            )
        out[name] = (score, figures, det)
    return out


# A worker's last split: cells come by class, so seeds of a class whose split does not depend on
# the seed reuse it.
_SPLIT_CACHE: dict[tuple, Split] = {}


def _save(out: Path, cells: list[Cell]) -> None:
    histories = pd.DataFrame([h for c in cells for h in c.extra["histories"]])
    if len(histories):
        write_csv(histories, out / "training_history.csv")
    arrays = {}
    for cell in cells:
        prefix = "/".join(map(str, cell.key))
        arrays[f"{prefix}/y_test"] = cell.extra["y_test"]
        arrays.update({f"{prefix}/{slug(m)}": s for m, s in cell.extra["scores"].items()})
    write_npz(arrays, out / "scores.npz")


def _load(out: Path, cells: dict[tuple, Cell], methods: Iterable[str]) -> dict[tuple, Cell]:
    """The cells with their scores and histories added, ``extra["missing"]`` naming the detectors
    of ``methods`` they lack (scores of detectors no longer asked for are kept as they are)."""
    if not (out / "scores.npz").exists():
        return {}
    path = out / "training_history.csv"
    histories = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["cls", "seed"])
    kept, methods = {}, list(methods)
    arrays = read_npz(out / "scores.npz")
    for (cls, seed), cell in cells.items():
        prefix, have = f"{cls}/{seed}", list(dict.fromkeys(r["method"] for r in cell.rows))
        if f"{prefix}/y_test" not in arrays:
            continue
        if any(f"{prefix}/{slug(m)}" not in arrays for m in have):
            continue
        mine = histories[(histories["cls"] == cls) & (histories["seed"] == seed)]
        cell.extra = {
            "y_test": arrays[f"{prefix}/y_test"],
            "scores": {m: arrays[f"{prefix}/{slug(m)}"] for m in have},
            "histories": mine.to_dict("records"),
            "missing": [m for m in methods if m not in have],
        }
        kept[(cls, seed)] = cell
    return kept


@dataclass(frozen=True)
class Protocol:
    """A detection benchmark: which split, which metric leads, which report. Call it to run."""

    name: str  # benchmark name (``benchmark`` column, default output folder)
    title: str  # what the plots call it
    protocol: str  # protocol of coreset_meg.datasets.load_benchmark
    metric: str  # metric of the bar plot
    curve: str  # "pr" or "roc" curves
    report: Callable[..., str]  # report(results, *, dataset, params, quick) -> Markdown
    named_classes: bool = False  # label classes by name where the data set has names
    published: Mapping[str, Mapping[str, Mapping[int, float]]] = field(default_factory=dict)

    def __call__(
        self,
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
        features: str = "efficientnet-lite0",
        cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE,
    ) -> str:
        """Run the benchmark, write its files and return the Markdown report.

        Parameters
        ----------
        dataset : str, optional
            ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` (one-class) or ``"digits"``.
        classes, seeds : iterable of int, optional
            Classes (the anomaly for held-out, the normal class for one-class) and seeds (of
            the detectors, and of the split where it is shuffled).
        device : str, optional
            Torch device of the MEG detectors ("auto" = CUDA when available).
        quick : bool, optional
            Smoke test: 5 iterations of tiny networks on 600 training and 400 test samples.
        data_root, out_dir : str, os.PathLike or None, optional
            Data folder; output folder (``results/benchmarks/<name>`` by default).
        verbose : bool, optional
            Progress bar on stderr.
        jobs : int, optional
            Splits measured at once in separate processes (sharing the cores and the GPU).
        resume : bool, optional
            Keep the splits a run with the same settings left in ``out_dir``.
        features : str, optional
            Feature extractor of the feature-view detectors (images only; on other data those
            detectors are left out).
        cache_dir : str, os.PathLike or None, optional
            Embedding cache (``results/embeddings`` by default): every image of the data set is
            embedded once, and every split takes its rows.
        """
        started, options = time.time(), {k: v for k, v in locals().items() if k != "self"}
        classes, seeds = int_list(classes, "classes"), int_list(seeds, "seeds")
        options.update(classes=classes, seeds=seeds)
        if int(jobs) < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        out = prepare_out_dir(out_dir, self.name)
        images = family(dataset) == "images"
        dev, params, detectors = (
            str(resolve_device(device)),
            preset(dataset, quick),
            {k: f for k, f in DETECTORS.items() if images or view_of(f) == "pixels"},
        )
        view = FeatureView(features, None if cache_dir is None else str(cache_dir), verbose)
        root = None if data_root is None else str(data_root)
        measure = partial(
            self.measure,
            dataset=dataset,
            device=dev,
            quick=quick,
            data_root=root,
            detectors=detectors,
            view=view,
        )
        settings = {"benchmark": self.name, "dataset": dataset, "protocol": self.protocol}
        if images:
            settings["features"] = features
        cells = run_grid(
            out,
            {**settings, "quick": quick, "detector": params},
            {"cls": classes, "seed": seeds},
            measure,
            columns=COLUMNS,
            resume=resume,
            load=partial(_load, methods=detectors),
            save=_save,
            jobs=int(jobs),
            label=f"{self.name} {dataset}",
            verbose=verbose,
        )
        results = pd.DataFrame([r for c in cells for r in c.rows], columns=list(COLUMNS))
        label = reports.class_label(dataset) if self.named_classes else str
        curves = {
            c.key[0]: c.extra for c in sorted(cells, key=lambda c: c.key) if c.key[1] == seeds[0]
        }
        kind = {"pr": "precision-recall", "roc": "ROC"}[self.curve]
        title = f"{dataset} {self.title}: {kind}, seed {seeds[0]}"
        plot_curves(curves, out / f"{self.curve}_curves.png", self.curve, label, title)
        published = self.published.get(reports.dataset_key(dataset))
        title = f"{dataset} {self.title}: {self.metric.upper()} (mean ± std over seeds)"
        plot_bars(results, self.metric, out / f"{self.metric}_bars.png", label, published, title)
        text = self.report(results, dataset=dataset, params=params, quick=quick)
        write_text(text, out / "table.md")
        write_meta(out, self.name, options, started=started, device=dev, extra={"detector": params})
        return text

    def measure(
        self, cls: int, seed: int, *, dataset, device, quick, data_root, detectors, view, kept=None
    ) -> Cell:
        """Every detector on the split of one class and seed: one grid cell; with ``kept`` (a cell
        of an earlier run), only the detectors it lacks, added to it."""
        seeded = self.protocol == "heldout" or dataset == "digits"  # published: one draw
        key = (dataset, self.protocol, cls, seed if seeded else None, data_root)
        if key not in _SPLIT_CACHE:
            _SPLIT_CACHE.clear()
            _SPLIT_CACHE[key] = load_benchmark(
                dataset, self.protocol, cls, root=data_root, random_state=seed
            )
        split = subsample(_SPLIT_CACHE[key], seed) if quick else _SPLIT_CACHE[key]
        logger.info("%s: %s", self.name, split.description)
        order = list(detectors)
        if kept is not None and not _same_split(kept, split):
            logger.warning("class %d seed %d: the kept split differs; measured anew", cls, seed)
            kept = None
        if kept is not None:
            detectors = {m: f for m, f in detectors.items() if m in kept.extra["missing"]}
        features, embed_s = None, float("nan")
        if any(view_of(f) != "pixels" for f in detectors.values()):
            features, embed_s = view(split, dataset, self.protocol, data_root, quick)
        rows, histories, scores = [], [], {}
        for method, (score, figures, det) in score_split(
            split, seed, dataset, device, quick, detectors, features
        ).items():
            metrics = evaluate(split.y_test, score, higher="anomalous")
            rows.append(
                {
                    "benchmark": self.name,
                    "dataset": dataset,
                    "protocol": self.protocol,
                    "method": method,
                    "cls": cls,
                    "seed": seed,
                    **metrics,
                    **figures,
                    "embedding_seconds": embed_s
                    if view_of(detectors[method]) != "pixels"
                    else float("nan"),
                    "n_train": len(split.X_train),
                    "n_test": len(split.X_test),
                    "anomaly_fraction": split.anomaly_fraction,
                    "split": split.description,
                }
            )
            histories += [
                {"method": method, "cls": cls, "seed": seed, **h}
                for h in getattr(getattr(det, "detector_", det), "history_", [])
            ]
            scores[method] = np.asarray(score, dtype=np.float32)
            logger.info(
                "%s class %d seed %d %s: AUPRC %.3f", self.name, cls, seed, method, metrics["auprc"]
            )
        if kept is not None:  # registry order; detectors no longer asked for last
            rank = {m: i for i, m in enumerate(order)}
            rows = sorted(kept.rows + rows, key=lambda r: rank.get(r["method"], len(order)))
            scores = {**kept.extra["scores"], **scores}
            histories = kept.extra["histories"] + histories
        return Cell(
            (cls, seed), rows, {"y_test": split.y_test, "scores": scores, "histories": histories}
        )


def _same_split(kept: Cell, split: Split) -> bool:
    """Whether a kept cell was measured on ``split`` (same description, sizes and labels)."""
    row = kept.rows[0]
    return (
        str(row["split"]) == split.description
        and int(row["n_train"]) == len(split.X_train)
        and int(row["n_test"]) == len(split.X_test)
        and np.array_equal(kept.extra["y_test"], split.y_test)
    )


def plot_curves(curves: Mapping[int, Mapping[str, Any]], path, kind, class_label, title) -> None:
    """One subplot per class, one line per detector: PR (``kind="pr"``) or ROC curves."""
    classes = sorted(curves)
    ncols = min(5, len(classes))
    # At least 10 in wide in all: the legend and the title must fit with one or two classes.
    fig, axes = new_figure(-(-len(classes) // ncols), ncols, size=(max(3.4, 10 / ncols), 3.0))
    for ax in axes.ravel()[len(classes) :]:
        ax.set_visible(False)
    for ax, cls in zip(axes.ravel(), classes, strict=False):
        y = curves[cls]["y_test"]
        for method, score in curves[cls]["scores"].items():
            if kind == "pr":
                precision, recall, _ = precision_recall_curve(y, score)
                ax.plot(recall, precision, label=method, lw=1.2)
            else:
                fpr, tpr, _ = roc_curve(y, score)
                ax.plot(fpr, tpr, label=method, lw=1.2)
        chance = dict(color="grey", ls=":", lw=1, label="chance")
        if kind == "pr":
            ax.axhline(float(np.mean(y)), **chance)
            ax.set(xlabel="recall", ylabel="precision")
        else:
            ax.plot([0, 1], [0, 1], **chance)
            ax.set(xlabel="false positive rate", ylabel="true positive rate")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=f"class {class_label(cls)}")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    per_row = max(3, min(6, int(fig.get_figwidth() / 3.3)))  # long names: about 3.3 in each
    fig.legend(handles, labels, loc="outside lower center", ncols=min(per_row, len(labels)),
               fontsize=8)  # fmt: skip
    fig.suptitle(title)
    save_figure(fig, path)


def plot_bars(results: pd.DataFrame, metric, path, class_label, published, title) -> None:
    """Bars of one metric per class and detector (mean, error bar = std over seeds);
    ``published`` values (``{name: {cls: value}}``) as hatched, unfilled bars."""
    methods = list(dict.fromkeys(results["method"]))
    classes = sorted(int(c) for c in results["cls"].unique())
    refs = {n: ref for n, ref in (published or {}).items() if any(c in ref for c in classes)}
    n_bars = len(methods) + len(refs)
    width, x = 0.8 / n_bars, np.arange(len(classes))
    # At least 10 in wide: the legend (3 columns of long names) and the title must fit.
    fig, axes = new_figure(1, 1, size=(max(10.0, 1.1 * len(classes) * n_bars / 3), 3.6))
    ax = axes[0, 0]
    values = results.groupby(["method", "cls"])[metric]
    mean, std = values.mean(), values.std(ddof=1).fillna(0.0)
    for i, method in enumerate(methods):
        keys = [(method, c) for c in classes]
        bars = dict(yerr=std.reindex(keys).fillna(0.0), capsize=2, label=method)
        ax.bar(x + (i - (n_bars - 1) / 2) * width, mean.reindex(keys), width, **bars)
    for j, (name, ref) in enumerate(refs.items()):
        pos = x + (len(methods) + j - (n_bars - 1) / 2) * width
        heights, color = [ref.get(c, np.nan) for c in classes], f"C{len(methods) + j}"
        label = f"{name} ({reports.PUBLISHED_NOTE})"
        ax.bar(pos, heights, width, fill=False, hatch="//", edgecolor=color, label=label)
    ax.set_xticks(x, [class_label(c) for c in classes])
    ax.set(xlabel="class", ylabel=metric.upper(), ylim=(0, 1.05), title=title)
    fig.legend(loc="outside lower center", ncols=min(3, n_bars), fontsize=8)
    save_figure(fig, path)


#: Held-out class benchmark (MNIST protocol): AUPRC, published MNIST figures beside it.
run_heldout = Protocol(
    "heldout",
    "held-out class",
    "heldout",
    metric="auprc",
    curve="pr",
    report=reports.heldout_report,
    published={"mnist": {"MEG": reports.PUBLISHED_HELDOUT_AUPRC["MEG"]}},
)
#: The same, on the published loaders' leaky split (one draw, the same for every seed): only
#: to compare with the published figures, which were measured on it.
run_heldout_published = Protocol(
    "heldout-published",
    "held-out class, published (leaky) split",
    "heldout-published",
    metric="auprc",
    curve="pr",
    report=partial(reports.heldout_report, leaky=True),
    published={"mnist": {"MEG": reports.PUBLISHED_HELDOUT_AUPRC["MEG"]}},
)
#: One-class benchmark (Deep SVDD protocol): AUROC.
run_one_class = Protocol(
    "one-class",
    "one-class",
    "one-class",
    metric="auroc",
    curve="roc",
    report=reports.one_class_report,
    named_classes=True,
)
