"""Core-set selection for GAN batches (Small-GAN): greedy k-center, embeddings, samplers."""

from coreset_meg.coreset.embeddings import (
    Embedder,
    PixelEmbedder,
    TorchScriptEmbedder,
    compute_embeddings,
    embedding_cache_path,
    prepare_images,
)
from coreset_meg.coreset.features import (
    EfficientNetLite0,
    FeatureEmbedder,
    FIDInceptionFeatures,
    MissingWeightsError,
    efficientnet_lite0,
    fid_inception,
    make_embedder,
    torchvision_embedder,
)
from coreset_meg.coreset.kcenter import (
    check_random_state,
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
    "EfficientNetLite0",
    "Embedder",
    "FIDInceptionFeatures",
    "FeatureEmbedder",
    "GaussianProjection",
    "LatentPrior",
    "MissingWeightsError",
    "PixelEmbedder",
    "Prior",
    "TorchScriptEmbedder",
    "TruncatedPrior",
    "check_random_state",
    "compute_embeddings",
    "covering_radius",
    "efficientnet_lite0",
    "embedding_cache_path",
    "fid_inception",
    "greedy_k_center",
    "greedy_k_center_many",
    "make_embedder",
    "make_prior",
    "make_sampler",
    "pairwise_k_center_reference",
    "prepare_images",
    "torchvision_embedder",
    "truncate",
]
