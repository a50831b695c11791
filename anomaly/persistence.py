"""The model folder's file format; :meth:`MEGDetector.save` / ``load`` fill and read it.

``weights.pt``
    The energy and generator state dicts, loaded with ``torch.load(weights_only=True)``.
``model.json``
    The settings by group, the fitted state (input shape, preprocessing, standardisation,
    ``offset_``), a training summary and library versions.
``metrics.jsonl``
    The training metrics, one JSON object per line.

The folder is written beside the destination and swapped in by renames, so a crash mid-save leaves
any previous model at the destination intact. This module knows files, not detectors: it never
imports the estimator.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import sklearn
import torch

from common import atomic_path, first_line

__all__ = [
    "FORMAT",
    "ModelFileError",
    "check_model_destination",
    "first_line",
    "read_model",
    "write_model",
]

FORMAT = "coreset-meg-model"
#: 2: settings grouped as in anomaly.settings (1: a flat "params" dict, still read).
FORMAT_VERSION = 2
WEIGHTS, CONFIG, METRICS = "weights.pt", "model.json", "metrics.jsonl"


class ModelFileError(ValueError):
    """A model folder that is missing, corrupt, or not one of ours."""


def versions() -> dict[str, str]:
    """Versions of this package and of the libraries a model file depends on."""
    try:
        ours = metadata.version("coreset-meg")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        ours = "unknown"
    return {
        "coreset-meg": ours,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def check_model_destination(path) -> Path:
    """Raise unless ``path`` is free, an empty folder, or a model folder this program wrote.

    Saving replaces the destination, so anything else there (a user's data, a working folder) is
    refused, before any training is spent.
    """
    path = Path(path)
    if not path.exists():
        return path
    if not path.is_dir():
        raise ModelFileError(f"{path} exists and is not a model folder; refusing to overwrite it")
    if not any(path.iterdir()):
        return path
    try:
        ours = json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ModelFileError(
            f"{path} is a folder that is not a model folder; refusing to replace it "
            "(choose a new or empty folder)"
        )
    return path


def write_model(path, config: dict, weights: dict, history: list[dict]) -> Path:
    """Write ``model.json`` (``config`` plus format and versions), the weights and the metrics
    to the folder ``path``, created or atomically replaced (see :func:`check_model_destination`).
    """
    path = check_model_destination(path)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **config, "versions": versions()}
    with atomic_path(path, directory=True) as tmp:
        torch.save(weights, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))
        # The training metrics once more as JSON lines, for tools that read logs.
        (tmp / METRICS).write_text("".join(json.dumps(record) + "\n" for record in history))
    return path


def read_model(path) -> tuple[dict, dict]:
    """``(config, weights)`` of a model folder, checked to be ours and readable.

    Raises
    ------
    ModelFileError
        When the folder or a file in it is missing, corrupt, or from another program.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"model folder not found: {path}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path} is not a model folder: {CONFIG} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path / CONFIG} is corrupt: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{path / CONFIG} is not a {FORMAT} file")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path / CONFIG} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was saved by a newer version (format {config['format_version']}); upgrade"
        )
    try:
        weights = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path} is incomplete: {WEIGHTS} is missing") from None
    except Exception as err:  # torch raises many kinds on a damaged or foreign file
        raise ModelFileError(
            f"{path / WEIGHTS} is corrupt or not a weights file: {first_line(err)}"
        ) from None
    return config, weights
