"""Where a pretrained feature network runs: PyTorch, or ONNX Runtime on a CPU.

A *runner* maps a normalised float32 batch ``(N, 3, S, S)`` to ``(N, p)`` float32 features on
the host and may be called from several threads at once.
:class:`~coreset_meg.features.pretrained.FeatureEmbedder` splits a batch into small micro-batches
and runs them on ``workers`` threads, each single-threaded: on a CPU, one independent worker per
core never waits on the others, where intra-op threads meet at a barrier after every layer, so one
core taken by other work stalls them all (on a shared two-core machine, PyTorch ran Lite0 about 5x
slower on two intra-op threads in batches of 64 than on two single-threaded workers in batches
of 8: ``docs/results/embedding-speed.md``).

Backends, by name (:func:`make_runner`):

- ``"torch"`` (:class:`TorchRunner`): the network itself, channels-last on a CPU.
- ``"onnxruntime"`` (:class:`OnnxRuntimeRunner`): the network's ONNX graph (its
  ``to_onnx(image_size)``, e.g.
  :meth:`~coreset_meg.features.pretrained.EfficientNetLite0.to_onnx`) in ONNX Runtime, one thread
  per call; needs ``pip install 'coreset-meg[onnx]'``.
- ``"auto"``: ``"onnxruntime"`` on a CPU when it is installed and the network can be written as
  ONNX, ``"torch"`` otherwise.

Both compute the same float32 function: the features agree within rounding (about 1e-6 after
unit length), so an embedder's identity, and its embedding cache, do not depend on the backend.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "BACKENDS",
    "MissingBackendError",
    "OnnxRuntimeRunner",
    "Runner",
    "TorchRunner",
    "make_runner",
    "onnxruntime_available",
    "resolve_backend",
]

_ONNX_HINT = "pip install 'coreset-meg[onnx]'"


class MissingBackendError(ImportError):
    """The packages a backend needs (onnxruntime and onnx) are not installed."""


class Runner(Protocol):
    """What :class:`~coreset_meg.features.pretrained.FeatureEmbedder` needs from a backend."""

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """Features of a normalised batch (N, 3, S, S): float32 (N, p) on the host. Safe to call
        from several threads at once."""
        ...

    def parallel(self) -> contextlib.AbstractContextManager[None]:
        """Context in which concurrent calls, one per worker thread, each use one thread."""
        ...


class TorchRunner:
    """Run a network with PyTorch (channels-last on a CPU unless ``channels_last=False``).

    Parameters
    ----------
    network : torch.nn.Module
        Maps (N, 3, S, S) to (N, p) or anything that flattens to it; put in eval mode and moved
        to ``device``.
    device : str or torch.device, default="cpu"
    channels_last : bool, default=True
        EfficientNet-Lite0 runs about 1.7x faster in channels-last memory format on a CPU; the
        output changes only by rounding.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
    ):
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = network.to(self.device, memory_format=self.memory_format).eval()

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():  # thread-local: set in each worker thread
            out = self.network(x.to(self.device).contiguous(memory_format=self.memory_format))
            return out.reshape(out.shape[0], -1).float().cpu().numpy()

    @contextlib.contextmanager
    def parallel(self) -> Iterator[None]:
        """Set torch's intra-op threads to one while the workers run, then restore them (torch
        keeps one process-wide setting; threads started inside take it when they start)."""
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def __repr__(self) -> str:
        return f"TorchRunner(device={str(self.device)!r})"


def onnxruntime_available() -> bool:
    """Whether the ``"onnxruntime"`` backend can run here (onnxruntime and onnx installed)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class OnnxRuntimeRunner:
    """Run a network's ONNX graph in ONNX Runtime on the CPU, one thread per call.

    Parameters
    ----------
    model : bytes
        A serialised ONNX model with one float32 input (N, 3, S, S) and one output (N, p).

    Raises
    ------
    MissingBackendError
        When onnxruntime is not installed.
    """

    def __init__(self, model: bytes):
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError:
            raise MissingBackendError(
                f"the onnxruntime backend needs the packages onnxruntime and onnx: {_ONNX_HINT}"
            ) from None
        options = ort.SessionOptions()
        # One thread per call: the embedder runs one call per core on its worker threads.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.version = ort.__version__
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().to("cpu", torch.float32).contiguous().numpy()  # (N, 3, S, S)
        (out,) = self.session.run(None, {self._input: x})
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)

    def parallel(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the session already runs each call on one thread

    def __repr__(self) -> str:
        return f"OnnxRuntimeRunner(onnxruntime={self.version})"


def _torch(
    network: nn.Module, image_size: int, device: torch.device, *, channels_last: bool = True
) -> Runner:
    return TorchRunner(network, device=device, channels_last=channels_last)


def _onnxruntime(network: nn.Module, image_size: int, device: torch.device, **_) -> Runner:
    if device.type != "cpu":
        raise ValueError(f"the onnxruntime backend runs on the CPU only, not on {device}")
    to_onnx = getattr(network, "to_onnx", None)
    if to_onnx is None:
        raise ValueError(
            f"the onnxruntime backend needs a network with to_onnx(image_size) (as "
            f"EfficientNet-Lite has); {type(network).__name__} has none: use backend='torch'"
        )
    if not onnxruntime_available():
        raise MissingBackendError(
            f"the onnxruntime backend needs the packages onnxruntime and onnx: {_ONNX_HINT}"
        )
    return OnnxRuntimeRunner(to_onnx(image_size))


#: Backends by name: name -> factory(network, image_size, device, **options) returning a
#: :class:`Runner`; options: ``channels_last`` (used by "torch").
BACKENDS: dict[str, Callable[..., Runner]] = {
    "torch": _torch,
    "onnxruntime": _onnxruntime,
}


def resolve_backend(backend: str, network: nn.Module, device: str | torch.device) -> str:
    """The backend name ``"auto"`` stands for with this network and device (other names as
    they are)."""
    if backend != "auto":
        return backend
    usable = (
        torch.device(device).type == "cpu"
        and hasattr(network, "to_onnx")
        and onnxruntime_available()
    )
    return "onnxruntime" if usable else "torch"


def make_runner(
    backend: str | Callable[..., Runner],
    network: nn.Module,
    *,
    image_size: int,
    device: str | torch.device = "cpu",
    **options,
) -> Runner:
    """A runner for ``network`` at ``image_size`` from a backend name (``"auto"``, ``"torch"``,
    ``"onnxruntime"``) or a factory ``(network, image_size, device, **options) -> Runner``;
    ``options`` (``channels_last``) go to the factory.

    Raises
    ------
    ValueError
        Unknown name, or a backend that cannot run this network or device.
    MissingBackendError
        ``"onnxruntime"`` without onnxruntime or onnx installed.
    """
    device = torch.device(device)
    if callable(backend):
        return backend(network, image_size, device, **options)
    name = resolve_backend(backend, network, device)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](network, image_size, device, **options)
