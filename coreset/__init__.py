"""Core-set selection for GAN batches (Small-GAN): greedy k-center, projections, samplers, SID.

The pretrained image features and their cache moved to :mod:`coreset_meg.features`; their old
names here (``coreset_meg.coreset.make_embedder``, ...) still work and warn, as does
``check_random_state``, now :func:`check_generator` (it gives a numpy ``Generator``, unlike
scikit-learn's function of that name).
"""

from coreset_meg.common.lazy import moved_names
from coreset_meg.coreset.kcenter import (
    check_generator,
    covering_radius,
    greedy_k_center,
    greedy_k_center_many,
    pairwise_k_center_reference,
)
from coreset_meg.coreset.projection import GaussianProjection
from coreset_meg.coreset.sampler import (
    CoresetSampler,
    LatentPrior,
    Prior,
    TruncatedPrior,
    make_prior,
    make_sampler,
    truncate,
)

__all__ = [
    "CoresetSampler",
    "GaussianProjection",
    "LatentPrior",
    "Prior",
    "TruncatedPrior",
    "check_generator",
    "covering_radius",
    "greedy_k_center",
    "greedy_k_center_many",
    "make_prior",
    "make_sampler",
    "pairwise_k_center_reference",
    "truncate",
]

#: Old names, read through a FutureWarning: the features moved to coreset_meg.features.
_MOVED = {
    **dict.fromkeys(
        ("Embedder", "PixelEmbedder", "TorchScriptEmbedder", "compute_embeddings")
        + ("embedding_cache_path", "prepare_images"),
        "coreset_meg.features.embeddings",
    ),
    **dict.fromkeys(
        ("EfficientNetLite0", "FIDInceptionFeatures", "FeatureEmbedder", "MissingWeightsError")
        + ("efficientnet_lite0", "fid_inception", "make_embedder", "torchvision_embedder"),
        "coreset_meg.features.pretrained",
    ),
    "check_random_state": "coreset_meg.coreset.kcenter:check_generator",
}
__getattr__, __dir__ = moved_names(globals(), _MOVED)
