"""Deprecated: this module moved to :mod:`coreset_meg.features.backends`.

Its old names warn (FutureWarning) and give the objects from there.
"""

from coreset_meg.common.lazy import moved_names

__getattr__, __dir__ = moved_names(
    globals(),
    {
        name: "coreset_meg.features.backends"
        for name in (
            "BACKENDS",
            "MissingBackendError",
            "OnnxRuntimeRunner",
            "Runner",
            "TorchRunner",
            "make_runner",
            "onnxruntime_available",
            "resolve_backend",
        )
    },
)
