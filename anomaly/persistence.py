"""Save and load a fitted :class:`~anomaly.MEGDetector` as a folder of two files.

``weights.pt``
    The energy and generator state dicts, loaded with ``torch.load(weights_only=True)``.
``model.json``
    Parameters, preprocessing, ``offset_``, input shape, training summary and library versions.
``metrics.jsonl``
    The training metrics, one JSON object per line.

The folder is written beside the destination and swapped in by renames, so a crash mid-save leaves
any previous model at the destination intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import sklearn
import torch

from .scoring import score_kinds

__all__ = ["FORMAT", "ModelFileError", "first_line", "load_model", "save_model"]

FORMAT = "coreset-meg-model"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, METRICS = "weights.pt", "model.json", "metrics.jsonl"


class ModelFileError(ValueError):
    """A model folder that is missing, corrupt, or not one of ours."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _versions() -> dict[str, str]:
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


def save_model(detector, path) -> Path:
    """Write a fitted detector to the folder ``path`` (created or atomically replaced)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(detector)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelFileError(f"{path} exists and is not a model folder; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    params = detector.get_params()
    if params.get("image_shape") is not None:
        params["image_shape"] = list(params["image_shape"])
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(detector).__name__,
        "params": params,
        "input_shape": list(detector.input_shape_),
        "n_features_in": int(detector.n_features_in_),
        "offset": float(detector.offset_),
        "energy_mean": detector.energy_mean_.tolist(),
        "energy_std": detector.energy_std_.tolist(),
        "preprocessing": {
            "shift": None if detector.shift_ is None else detector.shift_.tolist(),
            "scale": None if detector.scale_ is None else detector.scale_.tolist(),
        },
        "training": {
            "seconds": float(detector.train_seconds_),
            "selection_seconds": float(detector.selection_seconds_),
            "history": detector.history_,
        },
        "versions": _versions(),
    }
    weights = {
        "energy_nets": [
            {k: v.cpu() for k, v in net.state_dict().items()} for net in detector.energy_nets_
        ],
        "generator": {k: v.cpu() for k, v in detector.generator_.state_dict().items()},
    }
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        torch.save(weights, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))
        # The training metrics once more as JSON lines, for tools that read logs.
        lines = [json.dumps(record) for record in detector.history_]
        (tmp / METRICS).write_text("".join(line + "\n" for line in lines))
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / "model")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model(path, *, device="cpu"):
    """Load a detector written by :func:`save_model` onto ``device`` (CPU by default).

    Raises
    ------
    ModelFileError
        When the folder or a file in it is missing, corrupt, or from another program.
    """
    from gan import resolve_device

    from ._meg import MEGDetector

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
    if config.get("format_version", 0) > FORMAT_VERSION:
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

    try:
        params = dict(config["params"])
        if params.get("image_shape") is not None:
            params["image_shape"] = tuple(params["image_shape"])
        det = MEGDetector(**params)
        det.input_shape_ = tuple(config["input_shape"])
        det.n_features_in_ = int(config["n_features_in"])
        det.offset_ = float(config["offset"])
        pre = config["preprocessing"]
        det.shift_ = None if pre["shift"] is None else np.asarray(pre["shift"], dtype=np.float32)
        det.scale_ = None if pre["scale"] is None else np.asarray(pre["scale"], dtype=np.float32)
        det.history_ = config["training"]["history"]
        det.train_seconds_ = config["training"]["seconds"]
        det.selection_seconds_ = config["training"]["selection_seconds"]
        det.device_ = resolve_device(device)
        n_nets, n_kinds = len(weights["energy_nets"]), len(score_kinds(det.score_type))
        for name in ("energy_mean", "energy_std"):
            values = np.asarray(config[name], dtype=np.float64)
            if values.size != n_nets * n_kinds:
                raise ValueError("weights and model.json disagree on the number of snapshots")
            setattr(det, f"{name}_", values.reshape(n_nets, n_kinds))
        det._rebuild_networks(n_nets)
        for net, state in zip(det.energy_nets_, weights["energy_nets"], strict=True):
            net.load_state_dict(state)
        det.generator_.load_state_dict(weights["generator"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(
            f"{path} does not hold a consistent model: {first_line(err)}"
        ) from None
    return det
