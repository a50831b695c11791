"""Deprecated: this module moved to :mod:`coreset_meg.features.pretrained`.

Its old names warn (FutureWarning) and give the objects from there.
"""

from coreset_meg.common.lazy import moved_names

__getattr__, __dir__ = moved_names(
    globals(),
    {
        name: "coreset_meg.features.pretrained"
        for name in (
            "EMBEDDER_NAMES",
            "EfficientNetLite0",
            "FIDInceptionFeatures",
            "FeatureEmbedder",
            "MissingWeightsError",
            "efficientnet_lite",
            "efficientnet_lite0",
            "fid_inception",
            "make_embedder",
            "torchvision_embedder",
            "torchscript_file",
            "with_torchscript_file",
        )
    },
)
