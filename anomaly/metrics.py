"""Detection metrics with the anomaly as the positive class (label 1).

``auprc_trapezoid`` is the trapezoidal area under the precision-recall curve, the figure the
published MEG / BiGAN numbers use; ``average_precision`` is scikit-learn's step-wise estimate,
which does not interpolate and is usually a little lower.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

__all__ = ["auprc_trapezoid", "auroc", "average_precision", "evaluate"]


def _check(y_true, anomaly_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(anomaly_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    if len(np.unique(y)) < 2:
        raise ValueError("labels need both classes (0 = normal, 1 = anomaly) to compute a metric")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y.astype(int), s


def auroc(y_true, anomaly_score) -> float:
    """Area under the ROC curve; ``anomaly_score`` is higher for more anomalous samples."""
    y, s = _check(y_true, anomaly_score)
    return float(roc_auc_score(y, s))


def average_precision(y_true, anomaly_score) -> float:
    """Average precision (step-wise area under the PR curve), anomaly = positive."""
    y, s = _check(y_true, anomaly_score)
    return float(average_precision_score(y, s))


def auprc_trapezoid(y_true, anomaly_score) -> float:
    """Trapezoidal area under the precision-recall curve, anomaly = positive (as published)."""
    y, s = _check(y_true, anomaly_score)
    precision, recall, _ = precision_recall_curve(y, s)
    return float(auc(recall, precision))


def evaluate(y_true, anomaly_score) -> dict[str, float]:
    """All three metrics in one dict: ``auroc``, ``auprc`` (trapezoidal), ``average_precision``."""
    return {
        "auroc": auroc(y_true, anomaly_score),
        "auprc": auprc_trapezoid(y_true, anomaly_score),
        "average_precision": average_precision(y_true, anomaly_score),
    }
