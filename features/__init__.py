"""Pretrained image features: the extractors, where they run, and their content-keyed disk cache.

- :mod:`~coreset_meg.features.embeddings`: the :class:`Embedder` protocol, the pixel and
  TorchScript embedders, :func:`prepare_images` and the cache (:func:`compute_embeddings`);
- :mod:`~coreset_meg.features.pretrained`: EfficientNet-Lite, the FID Inception, torchvision
  models, and :func:`make_embedder`, which names them;
- :mod:`~coreset_meg.features.combined`: an image with its mirror image, and several
  extractors side by side (``"mirror:NAME"``, ``"A+B"``);
- :mod:`~coreset_meg.features.backends`: PyTorch or ONNX Runtime;
- :mod:`~coreset_meg.features.builtin`: every image of MNIST, Fashion-MNIST and CIFAR-10 embedded
  once (the friendly sets and the benchmarks read them).

The core-set sampler (:mod:`coreset_meg.coreset`) and the detector
(:mod:`coreset_meg.anomaly`) use them; nothing here imports either.
"""

from coreset_meg.features.combined import JoinedFeatures, MirrorMean
from coreset_meg.features.embeddings import (
    Embedder,
    PixelEmbedder,
    TorchScriptEmbedder,
    compute_embeddings,
    embedding_cache_path,
    prepare_images,
    unit_length,
)
from coreset_meg.features.pretrained import (
    EfficientNetLite0,
    FeatureEmbedder,
    FIDInceptionFeatures,
    MissingWeightsError,
    efficientnet_lite0,
    fid_inception,
    make_embedder,
    torchvision_embedder,
)

__all__ = [
    "EfficientNetLite0",
    "Embedder",
    "FIDInceptionFeatures",
    "FeatureEmbedder",
    "JoinedFeatures",
    "MirrorMean",
    "MissingWeightsError",
    "PixelEmbedder",
    "TorchScriptEmbedder",
    "compute_embeddings",
    "efficientnet_lite0",
    "embedding_cache_path",
    "fid_inception",
    "make_embedder",
    "prepare_images",
    "torchvision_embedder",
    "unit_length",
]
