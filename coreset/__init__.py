"""Core-set selection for GAN batches (Small-GAN): greedy k-center, embeddings, samplers."""

from coreset.embeddings import (
    Embedder,
    PixelEmbedder,
    TorchScriptEmbedder,
    compute_embeddings,
    embedding_cache_path,
)
from coreset.kcenter import (
    check_random_state,
    covering_radius,
    greedy_k_center,
    greedy_k_center_many,
    pairwise_k_center_reference,
)
from coreset.projection import GaussianProjection
from coreset.sampler import CoresetSampler, LatentPrior, Prior, make_prior, make_sampler

__all__ = [
    "CoresetSampler",
    "Embedder",
    "GaussianProjection",
    "LatentPrior",
    "PixelEmbedder",
    "Prior",
    "TorchScriptEmbedder",
    "check_random_state",
    "compute_embeddings",
    "covering_radius",
    "embedding_cache_path",
    "greedy_k_center",
    "greedy_k_center_many",
    "make_prior",
    "make_sampler",
    "pairwise_k_center_reference",
]
