"""Pretrained features of the built-in data sets (MNIST, Fashion-MNIST, CIFAR-10): every image
embedded once, training images first, into a content-keyed disk cache.

The library's friendly sets (:mod:`coreset_meg.anomaly.friendly`) and the benchmarks' feature view
(:mod:`coreset_meg.anomaly.benchmarks.features`) both read them from here, so that nothing in the
library imports the benchmark harness.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from coreset_meg.datasets import load_cifar10, load_mnist

__all__ = ["DEFAULT_CACHE", "dataset_features", "dataset_images"]

#: Default folder of the embedding cache.
DEFAULT_CACHE = Path("results") / "embeddings"

# A worker's embedded data sets: {(dataset, root, features, cache): (features, seconds, n_train)}.
_FEATURES: dict[tuple, tuple[np.ndarray, float, int]] = {}


def dataset_images(dataset: str, root: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Every image of ``dataset`` as its loader reads them (uint8, (N, H, W) grey or
    (N, H, W, 3)), training images first; their labels; the number of training images."""
    if dataset == "cifar10":
        X_train, y_train, X_test, y_test = load_cifar10(root, download=False, verbose=False)
    else:
        X_train, y_train, X_test, y_test = load_mnist(
            root, kind=dataset, download=False, verbose=False
        )
    images = np.concatenate([X_train, X_test])
    return images, np.concatenate([y_train, y_test]), len(X_train)


def _images(dataset: str, root: str | None) -> tuple[np.ndarray, int]:
    """Every image of ``dataset`` as uint8, (N, H, W) grey or (N, 3, H, W), training images
    first; and their number."""
    images, _, n_train = dataset_images(dataset, root)
    if images.ndim == 4:  # channels last -> first
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), n_train


def dataset_features(
    dataset: str,
    features: str,
    *,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE,
    verbose: bool = False,
) -> tuple[np.ndarray, float, int]:
    """Features of every image of ``dataset`` (training images first).

    Returns
    -------
    (features, seconds, n_train)
        ``features``: float32 (N, p); ``seconds``: wall-clock time of this call (reading the
        cache takes a second; embedding, minutes); ``n_train``: the number of official training
        images, the first rows.
    """
    from coreset_meg.features.embeddings import compute_embeddings
    from coreset_meg.features.pretrained import make_embedder

    root = None if root is None else str(root)
    key = (dataset, root, features, None if cache_dir is None else str(cache_dir))
    if key not in _FEATURES:
        started = time.perf_counter()
        images, n_train = _images(dataset, root)
        emb = compute_embeddings(
            images, make_embedder(features), cache_dir=cache_dir, verbose=verbose
        )
        _FEATURES.clear()  # one data set per worker at a time
        _FEATURES[key] = (np.asarray(emb), time.perf_counter() - started, n_train)
    return _FEATURES[key]
