"""Anomaly detection with an energy-based GAN (MEG) trained on core-set batches (Small-GAN).

The public names: :class:`MEGDetector` (scikit-learn outlier detector), :func:`save_model` /
:func:`load_model`, and the metrics :func:`auroc`, :func:`average_precision`,
:func:`auprc_trapezoid`, :func:`evaluate`.
"""

from ._meg import MEGDetector, load_model, save_model
from .metrics import auprc_trapezoid, auroc, average_precision, evaluate
from .persistence import ModelFileError

__all__ = [
    "MEGDetector",
    "ModelFileError",
    "auprc_trapezoid",
    "auroc",
    "average_precision",
    "evaluate",
    "load_model",
    "save_model",
]
