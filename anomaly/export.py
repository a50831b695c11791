"""Export a fitted detector's ``score_samples`` as one TorchScript or ONNX file.

The exported file takes what the detector takes, as float32, and does the detector's own work:
the image feature extractor (``view_`` "features" or "both"), the per-feature scaling or unit
length, every snapshot's energy, their standardisation and mean. Its output is
``score_samples`` (**higher = more normal**) within 1e-5 of the detector's.

Input ``x``: float32 of shape ``(N, *input_shape_)``; vectors ``(N, d)`` as given to ``fit``
(columns in the training order), images ``(N, C, H, W)`` in [-1, 1] (``uint8`` images ``u`` as
``u / 127.5 - 1``); flat rows of ``n_features_in_`` values are also taken by the TorchScript file.
Output ``score_samples``: float64 of shape ``(N,)``. ``score_samples - offset < 0`` marks an
outlier, as ``predict`` does; the offset and these conventions are in the file's metadata
(:func:`read_export_metadata`): the TorchScript archive's extra file ``metadata.json``, the
ONNX model's metadata property ``metadata.json``.

ONNX export needs the optional extra ``onnx`` (``pip install 'coreset-meg[onnx]'``).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coreset_meg.common import atomic_path, first_line

from .persistence import versions
from .preprocessing import FeatureTransformer, NetworkInput
from .scoring import score_kinds

__all__ = ["EXPORT_FORMATS", "ExportError", "export_model", "read_export_metadata"]

#: The file formats :func:`export_model` writes.
EXPORT_FORMATS = ("torchscript", "onnx")
#: Name of the metadata in the TorchScript archive (extra file) and the ONNX model (property).
METADATA = "metadata.json"
_FORMAT, _FORMAT_VERSION = "coreset-meg-export", 1
_ONNX_HINT = "pip install 'coreset-meg[onnx]'"
# Samples the export is traced with, and checked on (another batch size: the batch is free).
_TRACE_SAMPLES, _CHECK_SAMPLES = 2, 7
_TOLERANCE = 1e-5


class ExportError(ValueError):
    """A detector that cannot be exported, or an exported file that does not score as it does."""


# ----------------------------------------------------------------------------------- modules
class ScoreModule(nn.Module):
    """A fitted detector's ``score_samples`` as one module: float32 ``(N, *input_shape)`` ->
    float64 ``(N,)``, higher = more normal.

    Parameters
    ----------
    detector : MEGDetector
        A fitted detector with ``score_type="energy"``; its networks are copied to the CPU.
    embed : torch.nn.Module, optional
        The view of the features and both views
        (:meth:`~coreset_meg.anomaly.preprocessing.FeatureTransformer.module`).
    """

    def __init__(self, detector, embed: nn.Module | None = None):
        super().__init__()
        self.input_shape = tuple(int(s) for s in detector.input_shape_)
        self.network_input = NetworkInput(detector.scaler_, embed)  # view and scaling
        # A sample off a feature that was exactly constant in training scores at most
        # offset_ - 1, as MEGDetector.score_samples gives it.
        constant = getattr(detector, "constant_", None)
        index = [] if constant is None else np.flatnonzero(constant).tolist()
        self.checks_constants = bool(index)
        self.register_buffer("constant_index", torch.as_tensor(index, dtype=torch.long))
        self.outlier_ceiling = float(detector.offset_) - 1.0
        nets = [copy.deepcopy(net).cpu().eval() for net in detector.energy_nets_]
        self.energy_nets = nn.ModuleList(nets)
        mean, std = detector.energy_mean_, detector.energy_std_  # (n_snapshots, 1)
        self.register_buffer("energy_mean", torch.as_tensor(mean, dtype=torch.float64).reshape(-1))
        self.register_buffer("energy_std", torch.as_tensor(std, dtype=torch.float64).reshape(-1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)  # (N, *input_shape)
        x = self.network_input(x)  # (N, *network_shape)
        energies = torch.stack([net(x) for net in self.energy_nets], dim=1)  # (N, n_snapshots)
        score = -((energies.double() - self.energy_mean) / self.energy_std).mean(dim=1)  # (N,)
        if self.checks_constants:
            kept = x.reshape(x.shape[0], -1).index_select(1, self.constant_index)  # (N, k)
            off = kept.abs().amax(dim=1) > 0
            score = torch.where(off, score.clamp(max=self.outlier_ceiling), score)
        return score


def _embed_module(detector):
    """``(module, embedder)`` of the features or both view (``(None, None)`` for the pixel
    view)."""
    if detector.view_ not in ("features", "both"):
        return None, None
    from coreset_meg.features.embeddings import PixelEmbedder
    from coreset_meg.features.pretrained import make_embedder

    name = str(detector.features_)
    if name.startswith("torchscript:") or Path(name).is_file():
        raise ExportError(
            f"cannot export a detector whose features come from a TorchScript file ({name}): "
            "only the built-in and torchvision extractors can be exported"
        )
    embedder = make_embedder(name, device="cpu")
    if not (isinstance(embedder, PixelEmbedder) or callable(getattr(embedder, "module", None))):
        raise ExportError(f"cannot export a detector with the feature extractor {name!r}")
    return detector.feature_transformer_.module(embedder), embedder


def score_module(detector) -> tuple[ScoreModule, object]:
    """``(module, embedder)``: :class:`ScoreModule` of a fitted detector, and the CPU feature
    extractor it holds (None for the pixel view).

    Raises
    ------
    ExportError
        For score types with the input gradient and for TorchScript feature extractors.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(detector)
    if score_kinds(detector.score_type) != ("energy",):
        raise ExportError(
            f"cannot export score_type={detector.score_type!r}: the input gradient is not "
            "exported; only score_type='energy' is"
        )
    embed, embedder = _embed_module(detector)
    return ScoreModule(detector, embed), embedder


# ---------------------------------------------------------------------------------- metadata
def export_metadata(detector, fmt: str) -> dict:
    """The JSON-ready description written into an exported file."""
    shape = [int(s) for s in detector.input_shape_]
    names = getattr(detector, "feature_names_in_", None)
    image = len(shape) == 3
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "file_format": fmt,
        "input": {
            "name": "x",
            "dtype": "float32",
            "shape": ["N", *shape],
            "convention": (
                "images (N, C, H, W) in [-1, 1] (uint8 images u as u / 127.5 - 1)"
                if image
                else "vectors (N, d), columns in the training order, unscaled"
            ),
            "feature_names": None if names is None else [str(c) for c in names],
        },
        "output": {
            "name": "score_samples",
            "dtype": "float64",
            "shape": ["N"],
            "convention": "higher = more normal; score_samples - offset < 0 marks an outlier",
        },
        "offset": float(detector.offset_),
        "view": detector.view_,
        "features": detector.features_ if detector.view_ in ("features", "both") else None,
        "score_type": detector.score_type,
        "versions": versions(),
    }


def read_export_metadata(path) -> dict:
    """The metadata of a file written by :func:`export_model` (TorchScript or ONNX).

    The TorchScript file is read as the zip archive it is (nothing is loaded); the ONNX file
    needs the ``onnx`` package.

    Raises
    ------
    ExportError
        When the file holds no such metadata.
    """
    path = Path(path)
    text = None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{METADATA}")]
            if names:
                text = archive.read(names[0]).decode()
    else:
        try:
            import onnx
        except ImportError:
            raise ExportError(
                f"reading an ONNX file needs the package onnx: {_ONNX_HINT}"
            ) from None
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # protobuf raises several kinds on a foreign file
            raise ExportError(f"{path} is not an ONNX file: {first_line(err)}") from None
        text = {p.key: p.value for p in model.metadata_props}.get(METADATA)
    if text is None:
        raise ExportError(f"{path} holds no {METADATA}: it was not written by anomaly export")
    return json.loads(text)


# ------------------------------------------------------------------------------------ export
def export_model(detector, path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Write one file that computes ``detector.score_samples`` (higher = more normal).

    Parameters
    ----------
    detector : MEGDetector
        A fitted detector with ``score_type="energy"`` (the default).
    path : str or os.PathLike
        The file to write (atomically: it appears whole or not at all).
    format : {"torchscript", "onnx"}, default="torchscript"
        TorchScript (``torch.jit.load``), or ONNX (needs ``pip install 'coreset-meg[onnx]'``).
    check : bool, default=True
        Score a few made-up samples with the written file and the detector, and raise when
        they differ by more than 1e-5 (for ONNX when onnxruntime is installed).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ExportError
        An unsupported detector (``score_type`` with the gradient norm, TorchScript features),
        a missing ONNX package, or a file that fails the check (one-line message).

    Examples
    --------
    >>> import numpy as np, tempfile, torch
    >>> from coreset_meg.anomaly import MEGDetector
    >>> X = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    >>> det = MEGDetector(n_iter=2, random_state=0).fit(X)
    >>> path = export_model(det, tempfile.mkdtemp() + "/model.pt")
    >>> scores = torch.jit.load(path)(torch.from_numpy(X)).numpy()
    >>> bool(np.allclose(scores, det.score_samples(X), atol=1e-5))
    True
    """
    if format not in EXPORT_FORMATS:
        raise ExportError(
            f"export format must be one of {', '.join(EXPORT_FORMATS)}, not {format!r}"
        )
    if format == "onnx":
        _import_onnx()
    module, embedder = score_module(detector)
    metadata = json.dumps(export_metadata(detector, format), indent=1)
    trace_x = torch.from_numpy(_made_up_input(detector, _TRACE_SAMPLES, seed=0))
    check_x = _made_up_input(detector, _CHECK_SAMPLES, seed=1)
    suffix = ".pt" if format == "torchscript" else ".onnx"
    with atomic_path(path, suffix=suffix) as tmp:
        if format == "torchscript":
            _write_torchscript(module, trace_x, tmp, metadata)
            run = _torchscript_runner(tmp) if check else None
        else:
            _write_onnx(module, trace_x, tmp, metadata)
            run = _onnx_runner(tmp) if check else None
        if run is not None:
            _check(run(check_x), _reference_scores(detector, embedder, check_x), path)
    return Path(path)


#: Recent torch releases warn that TorchScript is deprecated at every trace, save and load;
#: the file this writes is TorchScript on purpose (any torch runs it without this package).
_JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"


def _write_torchscript(module: nn.Module, x: torch.Tensor, path: Path, metadata: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", _JIT_DEPRECATED, category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, x, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA: metadata})


def _torchscript_runner(path: Path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", _JIT_DEPRECATED, category=FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    return run


def _import_onnx():
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 5):
        raise ExportError(f"ONNX export needs torch 2.5 or newer (this is {torch.__version__})")
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the packages of the onnx extra ({err.name} is missing): "
            f"{_ONNX_HINT}"
        ) from None
    return onnx


def _write_onnx(module: nn.Module, x: torch.Tensor, path: Path, metadata: str) -> None:
    onnx = _import_onnx()
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs notes on operators of packages this model does not use (torchvision).
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (x,),
                dynamo=True,
                input_names=["x"],
                output_names=["score_samples"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    except Exception as err:  # the exporter raises many kinds on what it cannot convert
        raise ExportError(f"ONNX export failed: {first_line(err)}") from None
    finally:
        logger.setLevel(level)
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA, metadata
    onnx.save(model, str(path))


def _onnx_runner(path: Path):
    try:
        import onnxruntime
    except ImportError:
        return None  # written, but not checked: onnxruntime is not installed
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def _made_up_input(detector, n: int, seed: int) -> np.ndarray:
    """Float32 samples of the detector's input shape, inside its training range where known."""
    rng = np.random.default_rng(seed)
    shape = (n, *detector.input_shape_)
    if len(detector.input_shape_) == 3:  # images in [-1, 1]
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    if detector.shift_ is not None:
        spread = rng.uniform(-1.0, 1.0, size=shape)
        return (detector.shift_ + detector.scale_ * spread).astype(np.float32)
    return rng.normal(size=shape).astype(np.float32)


def _reference_scores(detector, embedder, X: np.ndarray) -> np.ndarray:
    """``detector.score_samples(X)`` without writing to its embedding cache or progress bar."""
    reference = copy.copy(detector)
    reference.cache_dir, reference.verbose = None, False
    reference.feature_transformer_ = FeatureTransformer(
        view=detector.view_, features=detector.features_
    ).set_up(embedder)
    return reference.score_samples(X)


def _check(got: np.ndarray, want: np.ndarray, path) -> None:
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    if got.shape != want.shape or not np.allclose(got, want, rtol=_TOLERANCE, atol=_TOLERANCE):
        worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        raise ExportError(
            f"the exported {path} does not score as the detector does (largest difference "
            f"{worst:.3g}); nothing was written"
        )
