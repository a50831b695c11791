"""Reports a person can look at: PNG figures tied together in one HTML page, ``index.html``.

* :func:`score_report`: a histogram of the anomaly scores with the threshold; when labels are
  known, ROC and precision-recall curves, precision, recall, F1 and the false-positive rate at
  the threshold and the F1-maximising threshold, a table per class (labels from sub-folders),
  and galleries of the mistakes (highest-scored normals, lowest-scored anomalies); a grid of
  the most anomalous images when images are given, and a table of the most anomalous samples
  (``anomaly score --report DIR``).
* :func:`training_report`: the metrics the trainer records every ``log_every`` iterations
  (``MEGDetector.history_``) against the iteration (``anomaly fit --report DIR``).

A report folder holds only what this module wrote: ``report.json`` lists its files. A new or empty
folder is used, a report folder is replaced by the next report written into it (its old files
removed), and a folder holding anything else is refused, so a user's files are never deleted.
Every file is written atomically (:func:`coreset_meg.common.atomic_path`); figures use matplotlib's
object API (:class:`matplotlib.figure.Figure`), never pyplot's global state.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from coreset_meg.anomaly.metrics import threshold_summary
from coreset_meg.common import atomic_path, write_text_atomic

__all__ = ["ReportError", "check_report_destination", "score_report", "training_report"]

FORMAT = "coreset-meg-report"
MANIFEST, PAGE = "report.json", "index.html"
#: Most anomalous samples shown in the image grid and listed in the table.
TOP = 16
#: Points kept of a curve for plotting (a curve over millions of samples is thinned).
_CURVE_POINTS = 2000
#: Metrics of ``training_report`` drawn in one panel; other numeric keys get a panel each.
_PANELS = (
    ("loss_energy", "loss_generator"),
    ("energy_real", "energy_fake"),
    ("mutual_information",),
    ("grad_sq_norm",),
)
_NOT_PLOTTED = {"step", "seconds", "selection_seconds"}


class ReportError(ValueError):
    """A report folder that cannot be written (it holds files this module did not write)."""


# ------------------------------------------------------------------------------- the folder
def _manifest(folder: Path) -> dict | None:
    """The folder's manifest, or None when it has none or an unreadable one."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if manifest.get("format") != FORMAT or not isinstance(files, list):
        return None
    if not all(isinstance(f, str) and f == Path(f).name for f in files):
        return None
    return manifest


def _ours(name: str, files: Sequence[str]) -> bool:
    """Whether a folder entry is a listed file, the manifest or a temporary file of them."""
    known = [*files, MANIFEST]
    return name in known or any(name.startswith(f".{f}.") for f in known)


def check_report_destination(folder: str | os.PathLike[str]) -> Path:
    """Raise :class:`ReportError` unless ``folder`` is free, an empty folder, or a report folder
    that holds only the files its report wrote; return it as a path.

    Call it before long work (scoring, training), so that a folder that cannot be used is
    refused first.
    """
    folder = Path(folder)
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise ReportError(f"--report {folder} exists and is not a folder")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return folder
    manifest = _manifest(folder)
    if manifest is None:
        raise ReportError(
            f"--report {folder} is a folder that is not a report folder ({entries[0]}, ...); "
            "refusing to write into it (choose a new or empty folder)"
        )
    foreign = [name for name in entries if not _ours(name, manifest["files"])]
    if foreign:
        raise ReportError(
            f"--report {folder} holds {foreign[0]}, which no report wrote; refusing to write "
            "into it (choose a new or empty folder)"
        )
    return folder


def _write_report(folder: Path, kind: str, figures: Mapping[str, object], page: str) -> Path:
    """Write the figures (PNG) and the page into ``folder``; remove the files of the earlier
    report that this one does not replace. Returns the page's path."""
    folder = check_report_destination(folder)
    old = _manifest(folder) if folder.is_dir() else None
    old_files = [] if old is None else old["files"]
    files = [*figures, PAGE]
    # List every file that may exist in the folder before writing any, so that a run killed
    # midway leaves a folder the next run recognises as its own.
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "kind": kind}
    write_text_atomic(
        folder / MANIFEST, json.dumps({**manifest, "files": sorted({*old_files, *files})})
    )
    for name, fig in figures.items():
        with atomic_path(folder / name, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    write_text_atomic(folder / PAGE, page)
    write_text_atomic(folder / MANIFEST, json.dumps({**manifest, "files": files}, indent=1))
    for name in set(old_files) - set(files):
        (folder / name).unlink(missing_ok=True)
    return folder / PAGE


def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (5.0, 3.6)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _page(title: str, summary: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary
    )
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}th,td{padding:2px 10px;text-align:left;"
        "border-bottom:1px solid #ddd}img{max-width:100%}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<table>\n{rows}\n</table>\n{body}\n</body>\n</html>\n"
    )


def _image_section(name: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _thin(*curves: np.ndarray) -> list[np.ndarray]:
    """Every curve at the same at most ``_CURVE_POINTS`` indices (ends kept)."""
    n = len(curves[0])
    if n <= _CURVE_POINTS:
        return list(curves)
    keep = np.unique(np.linspace(0, n - 1, _CURVE_POINTS).round().astype(int))
    return [c[keep] for c in curves]


# --------------------------------------------------------------------------- score report
def score_report(
    folder: str | os.PathLike[str],
    anomaly_score,
    threshold: float,
    y=None,
    images=None,
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    normal: str | None = None,
    threshold_from: str | None = None,
) -> Path:
    """Write a report on scored samples into ``folder``; return the path of its ``index.html``.

    Parameters
    ----------
    folder : str or os.PathLike
        A new or empty folder, or an earlier report folder (replaced); see
        :func:`check_report_destination`.
    anomaly_score : array-like of shape (n_samples,)
        **Higher = more anomalous** (``-MEGDetector.score_samples``).
    threshold : float
        Samples scoring above it are flagged (``-MEGDetector.offset_``).
    y : array-like of shape (n_samples,), optional
        0 (normal) / 1 (anomaly): adds the ROC and precision-recall curves and splits the
        histogram by label.
    images : array of shape (n_samples, H, W) or (n_samples, H, W, C), optional
        The samples as images (C = 1 or 3; ``uint8`` 0..255, or floats shown scaled to their
        range): adds a grid of the most anomalous ones.
    names : sequence of str, optional
        A name per sample (a file path) for the grid and the table; by default the row index.
    classes : sequence of str, optional
        The class of each sample (an image folder's sub-folders), with ``normal`` the normal
        one: adds a table of the share flagged per class and labels the galleries by class.
    normal : str, optional
        The normal class among ``classes``.
    threshold_from : str, optional
        Where the threshold comes from, shown beside it ("set at fit", ...).

    Returns
    -------
    pathlib.Path
    """
    score = np.asarray(anomaly_score, dtype=np.float64).ravel()
    n = len(score)
    if n == 0:
        raise ValueError("score_report needs at least one score")
    if y is not None:
        y = np.asarray(y).ravel()
        if len(y) != n or not set(np.unique(y).tolist()) <= {0, 1}:
            raise ValueError(f"y must hold {n} labels, 0 (normal) or 1 (anomaly)")
    if images is not None and len(images) != n:
        raise ValueError(f"{len(images)} images but {n} scores")
    if names is not None and len(names) != n:
        raise ValueError(f"{len(names)} names but {n} scores")
    threshold = float(threshold)
    finite = np.isfinite(score)
    flagged = ~(score <= threshold)  # a score that is not a number is flagged
    ranked = np.argsort(-np.where(finite, score, np.inf), kind="stable")[: min(TOP, n)]
    label = (lambda i: str(i)) if names is None else (lambda i: str(names[i]))
    if classes is not None and (len(classes) != n or normal is None):
        raise ValueError(f"classes must hold {n} class names, given with the normal one")

    histogram, beyond = _histogram(score[finite], threshold, None if y is None else y[finite])
    figures = {"scores.png": histogram}
    source = "" if threshold_from is None else f" ({threshold_from})"
    summary = [
        ("samples", f"{n:,}"),
        ("flagged as anomalies", f"{int(flagged.sum()):,} ({flagged.mean():.1%})"),
        ("threshold (anomaly score)", f"{threshold:.4g}{source}"),
    ]
    if beyond:
        summary.append(("scores beyond the histogram's range", beyond))
    if not finite.all():
        summary.append(("scores that are not finite (flagged)", f"{int((~finite).sum()):,}"))
    sections = [_image_section("scores.png", "Anomaly scores and the threshold")]
    found = {}
    if y is not None and len(np.unique(y)) == 2 and finite.all():
        found = threshold_summary(y, score, threshold, classes, normal)
        roc, pr, metrics = _curves(y, score, threshold, found["best_f1"]["threshold"])
        figures.update({"roc.png": roc, "pr.png": pr})
        summary += [(k, f"{v:.4f}") for k, v in metrics.items()]
        summary += _threshold_rows(found)
        sections += [
            _image_section("roc.png", "ROC curve (anomaly = positive)"),
            _image_section("pr.png", "Precision-recall curve (anomaly = positive)"),
        ]
    elif y is not None:
        summary.append(("curves", "not drawn: the labels need both classes and finite scores"))
    if "classes" in found:
        sections.append(_class_table(found["classes"]))
    if images is not None:
        figures["top_anomalies.png"] = _grid(images, ranked, score, label)
        sections.append(_image_section("top_anomalies.png", "The most anomalous samples"))
    if images is not None and y is not None:
        kind = (
            (lambda i: "anomaly" if y[i] else "normal") if classes is None else classes.__getitem__
        )
        order = np.argsort(np.where(finite, score, np.inf), kind="stable")  # lowest first
        normals, anomalies = order[y[order] == 0][::-1][:TOP], order[y[order] == 1][:TOP]
        for name, chosen, what, wrong in (
            ("false_positives.png", normals, "normal samples", "flagged (false alarms)"),
            ("missed_anomalies.png", anomalies, "anomalies", "not flagged (missed)"),
        ):
            if not len(chosen):
                continue
            mistakes = int((flagged[chosen] == (what == "normal samples")).sum())
            high = "highest" if what == "normal samples" else "lowest"

            def caption(i, kind=kind):
                mark = "flagged" if flagged[i] else "not flagged"
                return f"{kind(i)} {score[i]:.3g}\n{mark}"

            figures[name] = _grid(images, chosen, score, label, caption)
            sections.append(
                _image_section(
                    name,
                    f"The {len(chosen)} {high}-scored {what}: {mistakes} of them {wrong} at "
                    f"the threshold {threshold:.4g}",
                )
            )
    header = ["rank", "sample", "anomaly score", *(["label"] if y is not None else [])]
    rows = [
        [str(r + 1), label(i), f"{score[i]:.4g}", *([str(int(y[i]))] if y is not None else [])]
        for r, i in enumerate(ranked)
    ]
    sections.append(_table(f"The {len(ranked)} most anomalous samples", header, rows))
    page = _page("Anomaly scores", summary, sections)
    return _write_report(Path(folder), "score", figures, page)


def _threshold_rows(found: dict) -> list[tuple[str, str]]:
    """Summary rows of :func:`coreset_meg.anomaly.metrics.threshold_summary`'s metrics."""
    m, b = found["at_threshold"], found["best_f1"]
    return [
        ("precision at the threshold", f"{m['precision']:.4f}"),
        ("recall at the threshold", f"{m['recall']:.4f}"),
        ("F1 at the threshold", f"{m['f1']:.4f}"),
        ("false-positive rate at the threshold", f"{m['false_positive_rate']:.4f}"),
        ("false alarms (normal samples flagged)", f"{m['false_positives']:,}"),
        ("missed anomalies (not flagged)", f"{m['false_negatives']:,}"),
        (
            "best F1 (threshold chosen on these labels)",
            f"{b['f1']:.4f} at threshold {b['threshold']:.4g} (precision {b['precision']:.4f}, "
            f"recall {b['recall']:.4f})",
        ),
    ]


def _class_table(rows: Sequence[Mapping]) -> str:
    """The share flagged per class: false alarms for the normal class, recall for the others."""
    cells = [
        [r["class"], "normal" if r["normal"] else "anomaly", f"{r['samples']:,}",
         f"{r['flagged']:,}",
         f"{r['rate']:.3f} ({'false-positive rate' if r['normal'] else 'recall'})"]
        for r in rows
    ]  # fmt: skip
    header = ["class", "kind", "samples", "flagged", "share flagged"]
    return _table("Per class at the threshold (most missed anomaly class first)", header, cells)


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return (
        f"<h2>{html.escape(title)}</h2>\n<table>\n<tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr>\n"
        + "\n".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        + "\n</table>"
    )


#: Score histograms span the 0.5th to 99.5th percentiles (widened by this share of their
#: width) when the extremes lie farther than this many such widths away: a heavy tail.
_ROBUST_MARGIN, _HEAVY_TAIL = 0.1, 0.5


def _histogram(score: np.ndarray, threshold: float, y: np.ndarray | None):
    """The histogram figure, and a note on the scores left beyond its range ("" if none)."""
    fig, axes = _figure()
    ax = axes[0, 0]
    low, high = np.percentile(score, [0.5, 99.5]) if len(score) else (threshold, threshold)
    width = max(high - low, 1e-12)
    lo, hi = low - _ROBUST_MARGIN * width, high + _ROBUST_MARGIN * width
    beyond = ""
    if len(score) and (
        score.min() < low - _HEAVY_TAIL * width or score.max() > high + _HEAVY_TAIL * width
    ):
        lo, hi = min(lo, threshold), max(hi, threshold)
        outside = (score < lo) | (score > hi)
        beyond = (
            f"{int(outside.sum()):,} (from {score.min():.4g} to {score.max():.4g}); the "
            f"histogram shows {lo:.4g} to {hi:.4g}"
        )
        ax.set_title(
            f"{int(outside.sum())} scores beyond this range (up to {score.max():.4g})", fontsize=9
        )
        score, y = score[~outside], None if y is None else y[~outside]
    bins = np.histogram_bin_edges(np.append(score, threshold), bins=60)
    if y is None:
        ax.hist(score, bins=bins, color="tab:blue", alpha=0.8, label="samples")
    else:
        for value, name, colour in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
            ax.hist(score[y == value], bins=bins, color=colour, alpha=0.6, label=name)
    ax.axvline(threshold, color="black", linestyle="--", label="threshold")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="samples")
    ax.legend()
    return fig, beyond


def _curves(y: np.ndarray, score: np.ndarray, threshold: float, best: float):
    from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    precision, recall, _ = precision_recall_curve(y, score)
    metrics = {"AUROC": float(roc_auc_score(y, score)), "AUPRC": float(auc(recall, precision))}
    flagged = score > threshold
    point_tpr = float(flagged[y == 1].mean())
    point_fpr = float(flagged[y == 0].mean())
    point_precision = float(y[flagged].mean()) if flagged.any() else math.nan

    roc, axes = _figure(size=(4.2, 4.0))
    ax = axes[0, 0]
    ax.plot(*_thin(fpr, tpr), label=f"AUROC {metrics['AUROC']:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.plot([point_fpr], [point_tpr], "ko", label="threshold")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")

    pr, axes = _figure(size=(4.2, 4.0))
    ax = axes[0, 0]
    ax.plot(*_thin(recall, precision), label=f"AUPRC {metrics['AUPRC']:.3f}")
    ax.axhline(y.mean(), color="grey", linestyle=":", linewidth=1, label="share of anomalies")
    if not math.isnan(point_precision):
        ax.plot([point_tpr], [point_precision], "ko", label="threshold")
    chosen = score > best
    ax.plot([float(chosen[y == 1].mean())], [float(y[chosen].mean())], "r^",
            label="best F1 (chosen on these labels)")  # fmt: skip
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return roc, pr, metrics


def _grid(images, ranked: np.ndarray, score: np.ndarray, label, caption=None):
    """The images ``ranked`` in a grid, each titled with its name and ``caption(i)`` (by
    default its score)."""
    shown = np.asarray([np.asarray(images[i]) for i in ranked])  # (k, H, W[, C])
    if shown.ndim == 4 and shown.shape[-1] == 1:
        shown = shown[..., 0]
    if shown.ndim not in (3, 4) or (shown.ndim == 4 and shown.shape[-1] != 3):
        raise ValueError(
            f"images must be (n, H, W) or (n, H, W, C) with C 1 or 3, got {shown.shape[1:]}"
        )
    if shown.dtype != np.uint8:  # floats: shown scaled to their range
        shown = shown.astype(np.float64)
        low, high = shown.min(), shown.max()
        shown = (shown - low) / (high - low if high > low else 1.0)
    cols = min(4, len(ranked))
    rows = math.ceil(len(ranked) / cols)
    fig, axes = _figure(rows, cols, size=(2.0, 2.2))
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= len(ranked):
            continue
        i = ranked[k]
        name = label(i)
        name = name if len(name) <= 24 else "..." + name[-21:]
        grey = shown.ndim == 3
        ax.imshow(
            shown[k],
            cmap="gray" if grey else None,
            vmin=0,
            vmax=255 if shown.dtype == np.uint8 else 1,
        )
        text = f"{score[i]:.3g}" if caption is None else caption(i)
        ax.set_title(f"{name}\n{text}", fontsize=7)
    return fig


# ------------------------------------------------------------------------ training report
def training_report(folder: str | os.PathLike[str], history: Sequence[Mapping[str, float]]) -> Path:
    """Write the training curves into ``folder``; return the path of its ``index.html``.

    Parameters
    ----------
    folder : str or os.PathLike
        A new or empty folder, or an earlier report folder (replaced); see
        :func:`check_report_destination`.
    history : sequence of dict
        The records the trainer keeps, one per logged iteration: ``MEGDetector.history_`` (or
        the lines of a model folder's ``metrics.jsonl``). Each has ``"step"`` and numeric
        metrics (``loss_energy``, ``loss_generator``, ``energy_real``, ``energy_fake``, ...).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> history = [{"step": s, "loss_energy": 1 / s, "loss_generator": -1 / s} for s in (1, 2)]
    >>> training_report(tempfile.mkdtemp(), history).name
    'index.html'
    """
    records = list(history)
    if not all(isinstance(r, Mapping) and "step" in r for r in records):
        raise ValueError("history must be a list of metric records with a 'step'")
    if not records:  # a fit that trained nothing (n_iter=0: the core-set energy)
        summary = [("iterations", "0"), ("records", "0")]
        note = (
            "<p>This model was not trained (n_iter resolved to 0: the core-set energy needs "
            "no training), so there is nothing to show.</p>"
        )
        return _write_report(
            Path(folder), "training", {}, _page("Training curves", summary, [note])
        )
    keys = []
    for record in records:
        for key, value in record.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if key not in _NOT_PLOTTED and numeric and key not in keys:
                keys.append(key)
    panels = [[k for k in group if k in keys] for group in _PANELS]
    panels = [p for p in panels if p] + [[k] for k in keys if not any(k in g for g in _PANELS)]
    if not panels:
        raise ValueError("history has no numeric metrics to plot")
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = _figure(rows, cols, size=(4.6, 3.2))
    for ax, group in zip(axes.flat, panels, strict=False):
        for key in group:
            points = [(r["step"], r[key]) for r in records if key in r]
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=key, marker="o" if len(points) <= 20 else None)
        ax.set(xlabel="iteration", title=", ".join(group))
        if len(group) > 1:
            ax.legend()
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    last = records[-1]
    summary = [("iterations", str(last["step"])), ("records", str(len(records)))]
    if len(records) < 10:
        summary.append(("note", "few records: fit with a smaller --log-every for a curve"))
    if "seconds" in last:
        summary.append(("training seconds", f"{float(last['seconds']):.1f}"))
    summary += [(k, f"{float(last[k]):.4g}") for k in keys if k in last]
    page = _page(
        "Training curves", summary, [_image_section("training.png", "Metrics over training")]
    )
    return _write_report(Path(folder), "training", {"training.png": fig}, page)
