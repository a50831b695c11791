"""Deprecated: this module moved to :mod:`coreset_meg.features.builtin`.

Its old names warn (FutureWarning) and give the objects from there.
"""

from coreset_meg.common.lazy import moved_names

__getattr__, __dir__ = moved_names(
    globals(),
    {
        name: "coreset_meg.features.builtin"
        for name in ("DEFAULT_CACHE", "dataset_features", "dataset_images")
    },
)
