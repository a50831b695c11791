"""Detection metrics with the anomaly as the positive class (label 1).

Every metric takes the labels, the scores, and ``higher``: what a higher score means, either
``"anomalous"`` (anomaly scores: PyOD's ``decision_scores_`` and ``decision_function``, the
command line's ``anomaly_score``) or ``"normal"`` (scikit-learn's ``score_samples`` and
``decision_function``). The argument has no default on purpose: scikit-learn's outlier detectors
score normal samples higher while PyOD's and most papers' score anomalies higher, and a score of
the wrong direction does not fail, it quietly turns a perfect detector's AUROC into 0.0.

``auprc_trapezoid`` is the trapezoidal area under the precision-recall curve, the figure the
published MEG / BiGAN numbers use; ``average_precision`` is scikit-learn's step-wise estimate,
which does not interpolate and is usually a little lower.

Examples
--------
>>> from coreset_meg.anomaly import auroc
>>> y = [0, 0, 1]
>>> auroc(y, [0.1, 0.2, 0.9], higher="anomalous")
1.0
>>> auroc(y, [-0.1, -0.2, -0.9], higher="normal")  # e.g. score_samples
1.0
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

__all__ = [
    "auprc_trapezoid",
    "auroc",
    "average_precision",
    "best_f1_threshold",
    "class_rates",
    "evaluate",
    "threshold_metrics",
    "threshold_summary",
]

#: The values of ``higher``, and the sign that turns such a score into an anomaly score.
_DIRECTIONS = {"anomalous": 1.0, "normal": -1.0}


def _check(y_true, y_score, higher) -> tuple[np.ndarray, np.ndarray]:
    """Labels as ints and the scores as anomaly scores (higher = more anomalous)."""
    if not isinstance(higher, str) or higher not in _DIRECTIONS:
        raise ValueError(
            f"higher must be 'anomalous' (anomaly scores, as PyOD's decision_function) or "
            f"'normal' (as scikit-learn's score_samples), got {higher!r}"
        )
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    if len(np.unique(y)) < 2:
        raise ValueError("labels need both classes (0 = normal, 1 = anomaly) to compute a metric")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y.astype(int), _DIRECTIONS[higher] * s


_PARAMETERS = """
    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        1 for anomalies, 0 for normal samples.
    y_score : array-like of shape (n_samples,)
        Scores of the same samples.
    higher : {"anomalous", "normal"}
        What a higher score means: ``"anomalous"`` for anomaly scores (PyOD's
        ``decision_function`` and ``decision_scores_``), ``"normal"`` for scikit-learn's
        ``score_samples`` and ``decision_function``. Required: see
        :mod:`coreset_meg.anomaly.metrics`.
"""


def _doc(func):
    func.__doc__ = func.__doc__.replace("{parameters}", _PARAMETERS.strip())
    return func


@_doc
def auroc(y_true, y_score, *, higher: str) -> float:
    """Area under the ROC curve, anomaly = positive.

    {parameters}

    Returns
    -------
    float
    """
    y, s = _check(y_true, y_score, higher)
    return float(roc_auc_score(y, s))


@_doc
def average_precision(y_true, y_score, *, higher: str) -> float:
    """Average precision (step-wise area under the PR curve), anomaly = positive.

    {parameters}

    Returns
    -------
    float
    """
    y, s = _check(y_true, y_score, higher)
    return float(average_precision_score(y, s))


@_doc
def auprc_trapezoid(y_true, y_score, *, higher: str) -> float:
    """Trapezoidal area under the precision-recall curve, anomaly = positive (as published).

    {parameters}

    Returns
    -------
    float
    """
    y, s = _check(y_true, y_score, higher)
    precision, recall, _ = precision_recall_curve(y, s)
    return float(auc(recall, precision))


@_doc
def evaluate(y_true, y_score, *, higher: str) -> dict[str, float]:
    """All three metrics in one dict: ``auroc``, ``auprc`` (trapezoidal), ``average_precision``.

    {parameters}

    Returns
    -------
    dict of str to float
    """
    return {
        "auroc": auroc(y_true, y_score, higher=higher),
        "auprc": auprc_trapezoid(y_true, y_score, higher=higher),
        "average_precision": average_precision(y_true, y_score, higher=higher),
    }


def _counts(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1, false-positive rate and the four counts of a flagging."""
    tp = int((flagged & (y == 1)).sum())
    fp = int((flagged & (y == 0)).sum())
    fn = int((~flagged & (y == 1)).sum())
    tn = int((~flagged & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "false_positive_rate": fpr,
            "true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "true_negatives": tn}  # fmt: skip


@_doc
def threshold_metrics(y_true, y_score, threshold: float, *, higher: str) -> dict[str, float]:
    """Precision, recall, F1 and false-positive rate of flagging the samples beyond
    ``threshold``, anomaly = positive, with the counts (``true_positives``, ``false_positives``
    (false alarms), ``false_negatives`` (missed anomalies), ``true_negatives``).

    {parameters}
    threshold : float
        On the scale of ``y_score``: with ``higher="anomalous"`` samples scoring above it are
        flagged (``MEGDetector.threshold_``); with ``higher="normal"`` samples scoring below it
        (``MEGDetector.offset_``), as ``predict`` does.

    Returns
    -------
    dict of str to float

    Examples
    --------
    >>> m = threshold_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, higher="anomalous")
    >>> m["precision"], m["recall"], m["false_positive_rate"]
    (0.5, 0.5, 0.5)
    """
    y, s = _check(y_true, y_score, higher)
    return _counts(y, s > _DIRECTIONS[higher] * float(threshold))


@_doc
def best_f1_threshold(y_true, y_score, *, higher: str) -> tuple[float, dict[str, float]]:
    """The threshold that maximises F1 on these labels, and :func:`threshold_metrics` there.

    Chosen on the labels it is measured on, so its F1 is an optimistic figure: a threshold to
    compare with, or to use on new data of the same kind.

    {parameters}

    Returns
    -------
    threshold : float
        On the scale of ``y_score`` (flagged beyond it, as in :func:`threshold_metrics`).
    metrics : dict of str to float

    Examples
    --------
    >>> threshold, m = best_f1_threshold([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], higher="anomalous")
    >>> round(m["f1"], 3), threshold  # half-way between 0.1 and 0.4, the lowest flagged
    (0.8, 0.25)
    """
    y, s = _check(y_true, y_score, higher)
    precision, recall, cuts = precision_recall_curve(y, s)  # flagged: s >= cut
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    cut = float(cuts[int(np.argmax(f1[:-1]))])
    # Half-way to the next lower score (flagging the same samples, with a margin on both
    # sides for new data); s > nextafter(cut) is s >= cut when no score lies below.
    below = s[s < cut]
    threshold = (float(below.max()) + cut) / 2 if len(below) else cut
    if not threshold < cut:
        threshold = float(np.nextafter(cut, -np.inf))
    return _DIRECTIONS[higher] * threshold, _counts(y, s > threshold)


def class_rates(classes, flagged, normal: str) -> list[dict]:
    """Per class: how many samples, how many flagged, and the share flagged, which is the
    recall of an anomaly class and the false-positive rate of the ``normal`` class.

    Parameters
    ----------
    classes : sequence of str
        The class of each sample (an image folder's sub-folder names).
    flagged : array-like of bool
        Whether each sample is flagged as an anomaly.
    normal : str
        The normal class.

    Returns
    -------
    list of dict
        ``{"class", "normal", "samples", "flagged", "rate"}`` per class, the normal class
        first, then the anomaly classes from the most missed (lowest rate).

    Examples
    --------
    >>> [(r["class"], r["rate"]) for r in class_rates(["ok", "a", "b", "b"], [0, 1, 1, 0], "ok")]
    [('ok', 0.0), ('b', 0.5), ('a', 1.0)]
    """
    classes = np.asarray(classes).astype(str)
    flagged = np.asarray(flagged).astype(bool)
    rows = []
    for name in np.unique(classes):
        members = flagged[classes == name]
        rows.append({"class": str(name), "normal": bool(name == normal),
                     "samples": int(len(members)), "flagged": int(members.sum()),
                     "rate": float(members.mean())})  # fmt: skip
    return sorted(rows, key=lambda r: (not r["normal"], r["rate"], r["class"]))


def threshold_summary(y_true, anomaly_score, threshold: float, classes=None, normal=None) -> dict:
    """What a threshold does on labelled anomaly scores (higher = more anomalous), in one dict:

    * ``"at_threshold"``: :func:`threshold_metrics` at ``threshold`` (when both classes occur);
    * ``"best_f1"``: :func:`best_f1_threshold`'s ``threshold`` and metrics, chosen on these
      labels (when both classes occur);
    * ``"classes"``: :func:`class_rates` when each sample's ``classes`` and the ``normal`` one
      are given (an image folder's sub-folders).

    Shared by the command line's output and the HTML report, so both say the same.
    """
    y = np.asarray(y_true).ravel()
    score = np.asarray(anomaly_score, dtype=np.float64).ravel()
    out: dict = {}
    if len(np.unique(y)) == 2 and np.isfinite(score).all():
        out["at_threshold"] = threshold_metrics(y, score, threshold, higher="anomalous")
        best, metrics = best_f1_threshold(y, score, higher="anomalous")
        out["best_f1"] = {"threshold": best, **metrics}
    if classes is not None and normal is not None:
        out["classes"] = class_rates(classes, ~(score <= threshold), normal)
    return out
