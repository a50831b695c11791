"""The model folder's file format; :meth:`MEGDetector.save` / ``load`` fill and read it.

``weights.safetensors``
    Every tensor of the energy networks and the generator, in the safetensors format (no
    pickle): nested state dicts flattened to dotted keys (``energy_nets.0.centres``,
    ``generator.net.0.weight``); ``model.json``'s ``weights_layout`` says how to nest them again.
``model.json``
    The settings by group, the fitted state (input shape, preprocessing, standardisation,
    ``offset_``), a training summary and library versions.
``metrics.jsonl``
    The training metrics, one JSON object per line.

Formats 1 and 2 kept the weights in ``weights.pt`` (``torch.save``); they are still read, with
``torch.load(weights_only=True)``. ``docs/model-format.md`` documents every key.

The folder is written beside the destination and swapped in by renames, so a crash mid-save leaves
any previous model at the destination intact. This module knows files, not detectors: it never
imports the estimator.
"""

from __future__ import annotations

import json
import os
import re
import stat
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import sklearn
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from coreset_meg.common.errors import first_line, write_failure
from coreset_meg.common.io import atomic_path, file_sha256, follow_umask, read_regular_text

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFileError",
    "ModelVersionWarning",
    "check_model_destination",
    "check_versions",
    "is_model_folder",
    "model_folder_above",
    "first_line",
    "flatten_weights",
    "read_model",
    "unflatten_weights",
    "versions",
    "write_model",
]

FORMAT = "coreset-meg-model"
#: 3: weights in safetensors (``weights.safetensors`` and ``weights_layout``).
#: 2: settings grouped as in coreset_meg.anomaly.settings. 1: a flat "params" dict. 1 and 2 are
#: still read.
FORMAT_VERSION = 3
WEIGHTS, CONFIG, METRICS = "weights.safetensors", "model.json", "metrics.jsonl"
#: The weights file of formats 1 and 2 (``torch.save``), read with ``weights_only=True``.
LEGACY_WEIGHTS = "weights.pt"
#: Libraries whose major.minor version is compared with the one a model was saved with.
CHECKED_LIBRARIES = ("coreset-meg", "torch", "numpy", "scikit-learn")
#: The largest ``model.json`` read (settings, fitted state and training history: kilobytes to
#: a few megabytes); anything larger is not one of ours.
MAX_CONFIG_BYTES = 256 * 2**20


class ModelFileError(ValueError):
    """A model folder that is missing, corrupt, or not one of ours."""


class ModelVersionWarning(UserWarning):
    """A model file saved with another major.minor version of this package or of a library it
    depends on; it loads, but scores may differ slightly."""


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


def _major_minor(version) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(match[1]), int(match[2])) if match else None


def check_versions(recorded, *, source="the model", stacklevel: int = 2) -> list[str]:
    """Warn (:class:`ModelVersionWarning`) when ``recorded`` library versions differ in
    major.minor from the running ones.

    Parameters
    ----------
    recorded : dict or None
        Library name to version, as :func:`versions` wrote it into ``model.json``.
    source : str, default="the model"
        What was saved with those versions, for the message.
    stacklevel : int, default=2
        Passed to :func:`warnings.warn` (2: the caller of this function).

    Returns
    -------
    list of str
        The libraries that differ (unknown or unparsable versions are not compared).
    """
    if not isinstance(recorded, dict):
        return []
    running = versions()
    differ = [
        name
        for name in CHECKED_LIBRARIES
        if _major_minor(recorded.get(name)) is not None
        and _major_minor(running[name]) is not None
        and _major_minor(recorded.get(name)) != _major_minor(running[name])
    ]
    if differ:
        listed = ", ".join(f"{n} {recorded[n]} (running {running[n]})" for n in differ)
        warnings.warn(
            f"{source} was saved with {listed}; it loads, but scores may differ slightly "
            "(save it again with these versions to silence this warning)",
            ModelVersionWarning,
            stacklevel=stacklevel + 1,
        )
    return differ


def flatten_weights(weights: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, layout)``: nested weights as one flat dict with dotted keys, and the
    JSON-ready description :func:`unflatten_weights` nests them again from.

    ``weights`` is a dict of state dicts (a dict whose values are all tensors, such as
    ``module.state_dict()``), single tensors, and lists or dicts of these. Each tensor's key is
    the path that leads to it, list indices included: ``energy_nets.0.centres``. ``layout``
    maps the path of each state dict to ``"state_dict"`` and of each single tensor to
    ``"tensor"``.

    Examples
    --------
    >>> import torch
    >>> weights = {"nets": [{"w": torch.ones(2)}], "g": {"b.c": torch.ones(1)}, "s": torch.ones(3)}
    >>> flat, layout = flatten_weights(weights)
    >>> sorted(flat)
    ['g.b.c', 'nets.0.w', 's']
    >>> layout
    {'nets.0': 'state_dict', 'g': 'state_dict', 's': 'tensor'}
    """
    flat: dict[str, torch.Tensor] = {}
    layout: dict[str, str] = {}

    def tensor(value: torch.Tensor) -> torch.Tensor:
        # safetensors wants contiguous CPU tensors that share no memory.
        return value.detach().cpu().contiguous().clone()

    def walk(node, path: str) -> None:
        if isinstance(node, torch.Tensor):
            flat[path], layout[path] = tensor(node), "tensor"
        elif isinstance(node, dict) and all(isinstance(v, torch.Tensor) for v in node.values()):
            # A state dict (an empty one too: a module without parameters or buffers).
            flat.update({f"{path}.{key}": tensor(value) for key, value in node.items()})
            layout[path] = "state_dict"
        elif isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str) or not key or "." in key or key.isdigit():
                    raise ValueError(f"weights key {key!r} must be a name without dots")
                walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list | tuple) and path:
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")
        else:
            raise TypeError(f"cannot store {type(node).__name__} at {path or 'the top'} of weights")

    if not isinstance(weights, dict) or all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise TypeError("weights must be a dict of state dicts, tensors, lists and dicts")
    walk(weights, "")
    return flat, layout


class _Container(dict):
    """A dict or list of the weights while :func:`unflatten_weights` rebuilds them."""


def unflatten_weights(tensors: dict[str, torch.Tensor], layout: dict[str, str]) -> dict:
    """The nested weights :func:`flatten_weights` flattened into ``tensors`` and ``layout``.

    Raises
    ------
    ValueError
        When the layout is malformed, names a missing tensor, or leaves a tensor out.
    """
    if not isinstance(layout, dict):
        raise ValueError("weights_layout must be an object")
    root, used = _Container(), set()
    for path, kind in layout.items():
        parts = str(path).split(".")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, _Container())
            if not isinstance(node, _Container):
                raise ValueError(f"weights_layout nests {path!r} inside a tensor")
        if kind == "tensor" and path in tensors:
            node[parts[-1]] = tensors[path]
            used.add(path)
        elif kind == "state_dict":
            start = f"{path}."
            state = {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
            node[parts[-1]] = state
            used.update(start + k for k in state)
        else:
            raise ValueError(f"weights_layout entry {path!r}: {kind!r} is missing or unknown")
    extra = sorted(set(tensors) - used)
    if extra:
        raise ValueError(f"the weights file holds tensors weights_layout does not name: {extra[0]}")

    def build(node):
        if not isinstance(node, _Container):
            return node  # a tensor or a state dict
        if node and all(k.isdigit() for k in node):  # a list
            if sorted(int(k) for k in node) != list(range(len(node))):
                raise ValueError("weights_layout has a list with missing indices")
            return [build(node[str(i)]) for i in range(len(node))]
        return {key: build(value) for key, value in node.items()}

    return build(root)


def _read_config_text(path: Path) -> str:
    """The text of the folder's ``model.json``: a regular file of at most MAX_CONFIG_BYTES."""
    return read_regular_text(path / CONFIG, limit=MAX_CONFIG_BYTES)


def is_model_folder(path) -> bool:
    """Whether ``path`` is a folder whose ``model.json`` says it is one of our model folders."""
    path = Path(path)
    try:
        return path.is_dir() and json.loads(_read_config_text(path)).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError, ModelFileError):
        return False


def model_folder_above(path) -> Path | None:
    """The model folder that ``path`` is or lies inside (links resolved), or None."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        if (folder / CONFIG).exists() and is_model_folder(folder):
            return folder
    return None


#: The files a save writes into a model folder (formats 1 and 2 had ``weights.pt``).
MODEL_FILES = (CONFIG, WEIGHTS, METRICS, LEGACY_WEIGHTS)


def check_model_destination(path) -> Path:
    """Raise unless ``path`` is free, an empty folder, or a model folder this program wrote
    that holds only the files a save writes.

    Saving replaces the destination whole, so anything else there (a user's data, a working
    folder, a file kept beside the model) is refused, before any training is spent.
    """
    path = Path(path)
    if not path.exists():
        return path
    if not path.is_dir():
        raise ModelFileError(f"{path} exists and is not a model folder; refusing to overwrite it")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return path
    if not is_model_folder(path):
        raise ModelFileError(
            f"{path} is a folder that is not a model folder; refusing to replace it "
            "(choose a new or empty folder)"
        )
    foreign = [name for name in entries if name not in MODEL_FILES]
    if foreign:
        raise ModelFileError(
            f"{path} holds {foreign[0]}, which no save wrote; refusing to replace the folder "
            "and lose it (move it out, or choose another folder)"
        )
    return path


def write_model(path, config: dict, weights: dict, history: list[dict]) -> Path:
    """Write ``model.json`` (``config`` plus format and versions), the weights and the metrics
    to the folder ``path``, created or atomically replaced (see :func:`check_model_destination`).
    """
    path = check_model_destination(path)
    tensors, layout = flatten_weights(weights)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **config,
        "weights_layout": layout,
        "versions": versions(),
    }
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    try:
        with atomic_path(path, directory=True) as tmp:
            save_file(tensors, tmp / WEIGHTS, metadata=header)
            follow_umask(tmp / WEIGHTS)  # safetensors makes it private
            config["weights_sha256"] = file_sha256(tmp / WEIGHTS)
            (tmp / CONFIG).write_text(json.dumps(config, indent=1))
            # The training metrics once more as JSON lines, for tools that read logs.
            (tmp / METRICS).write_text("".join(json.dumps(record) + "\n" for record in history))
    except (OSError, SafetensorError) as err:
        raise OSError(
            getattr(err, "errno", None),
            f"cannot save the model to {path}: {write_failure(err, path)}",
        ) from None
    return path


def read_model(path) -> tuple[dict, dict]:
    """``(config, weights)`` of a model folder, checked to be ours and readable.

    A model saved with another major.minor version of coreset-meg, torch, numpy or scikit-learn
    loads with a :class:`ModelVersionWarning`.

    Raises
    ------
    ModelFileError
        When the folder or a file in it is missing, corrupt, or from another program.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"model folder not found: {path}")
    try:
        config = json.loads(_read_config_text(path))
    except FileNotFoundError:
        raise ModelFileError(f"{path} is not a model folder: {CONFIG} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path / CONFIG} is corrupt: {err}") from None
    except RecursionError:
        raise ModelFileError(f"{path / CONFIG} is corrupt: nested too deeply") from None
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path / CONFIG} is not a model file: {first_line(err)}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{path / CONFIG} is not a {FORMAT} file")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path / CONFIG} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was saved by a newer version (format {config['format_version']}); upgrade"
        )
    if version >= 3:
        weights = _read_safetensors(
            path, config.get("weights_layout"), config.get("weights_sha256")
        )
    else:
        weights = _read_legacy(path)
    check_versions(config.get("versions"), source=str(path), stacklevel=3)
    return config, weights


def _read_safetensors(path: Path, layout, checksum) -> dict:
    file = path / WEIGHTS
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):
            raise ModelFileError(f"{file} is not a regular file")
        if checksum is not None and file_sha256(file) != checksum:
            raise ModelFileError(
                f"{file} is corrupt: its checksum differs from the weights_sha256 in {CONFIG}"
            )
        tensors = load_file(file, device="cpu")
    except FileNotFoundError:
        raise ModelFileError(f"{path} is incomplete: {WEIGHTS} is missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(
            f"{path / WEIGHTS} is corrupt or not a weights file: {first_line(err)}"
        ) from None
    if layout is None:
        raise ModelFileError(f"{path / CONFIG} has no weights_layout")
    try:
        return unflatten_weights(tensors, layout)
    except ValueError as err:
        raise ModelFileError(
            f"{path} does not hold a consistent model: {first_line(err)}"
        ) from None


def _read_legacy(path: Path) -> dict:
    """The ``weights.pt`` of formats 1 and 2, loaded without unpickling arbitrary objects."""
    try:
        return torch.load(path / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path} is incomplete: {LEGACY_WEIGHTS} is missing") from None
    except Exception as err:  # torch raises many kinds on a damaged or foreign file
        raise ModelFileError(
            f"{path / LEGACY_WEIGHTS} is corrupt or not a weights file: {first_line(err)}"
        ) from None
