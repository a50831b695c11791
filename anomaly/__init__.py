"""Anomaly detection with an energy-based GAN (MEG) trained on core-set batches (Small-GAN).

The public names: :class:`MEGDetector` (scikit-learn outlier detector), :func:`save_model` /
:func:`load_model`, :class:`PyODAdapter` (PyOD's conventions), and the metrics :func:`auroc`,
:func:`average_precision`, :func:`auprc_trapezoid`, :func:`evaluate`, and at a threshold
:func:`threshold_metrics`, :func:`best_f1_threshold`, :func:`class_rates`.

The names are imported on first use (PEP 562): ``from coreset_meg import anomaly`` and the command
line's ``--help`` do not import torch or scikit-learn.
"""

from importlib import metadata

from coreset_meg.common.lazy import lazy_exports

try:
    __version__ = metadata.version("coreset-meg")
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "0+unknown"

#: Public name -> the submodule that defines it.
_SOURCES = {
    "MEGDetector": "_meg",
    "load_model": "_meg",
    "save_model": "_meg",
    "PyODAdapter": "_pyod",
    "auprc_trapezoid": "metrics",
    "auroc": "metrics",
    "average_precision": "metrics",
    "evaluate": "metrics",
    "threshold_metrics": "metrics",
    "best_f1_threshold": "metrics",
    "class_rates": "metrics",
    "ModelFileError": "persistence",
    "ModelVersionWarning": "persistence",
    "ExportError": "export",
    "export_model": "export",
}

__all__ = [
    "ExportError",
    "MEGDetector",
    "ModelFileError",
    "ModelVersionWarning",
    "PyODAdapter",
    "__version__",
    "auprc_trapezoid",
    "auroc",
    "average_precision",
    "best_f1_threshold",
    "class_rates",
    "evaluate",
    "export_model",
    "load_model",
    "save_model",
    "threshold_metrics",
]


__getattr__, __dir__ = lazy_exports(globals(), _SOURCES, __all__)
