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
>>> from anomaly import auroc
>>> y = [0, 0, 1]
>>> auroc(y, [0.1, 0.2, 0.9], higher="anomalous")
1.0
>>> auroc(y, [-0.1, -0.2, -0.9], higher="normal")  # e.g. score_samples
1.0
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

__all__ = ["auprc_trapezoid", "auroc", "average_precision", "evaluate"]

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
        ``score_samples`` and ``decision_function``. Required: see :mod:`anomaly.metrics`.
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
