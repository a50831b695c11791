"""Pretrained image features for the benchmarks: one embedding of each data set, cached.

The detectors of the feature view get the features of the split's images instead of their pixels.
Every image of a data set is embedded once (the official training images, then the test images)
into a content-keyed disk cache, and each split takes its rows, so ten classes and three seeds
embed the data once. The embedding time is measured here, apart from every detector's fit time.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from datasets import Split, load_cifar10, load_mnist
from datasets.splits import published_pool

__all__ = ["DEFAULT_CACHE", "FeatureView", "dataset_features", "dataset_images"]

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
    from coreset.embeddings import compute_embeddings
    from coreset.features import make_embedder

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


class FeatureView:
    """Turns a benchmark split of images into the same split of their pretrained features."""

    def __init__(self, features: str, cache_dir=DEFAULT_CACHE, verbose: bool = False):
        self.features = features
        self.cache_dir = cache_dir
        self.verbose = verbose

    def __call__(
        self, split: Split, dataset: str, protocol: str, root, quick: bool = False
    ) -> tuple[Split, float]:
        """``(split of features, seconds spent embedding or reading the cache)``. Quick runs
        embed only the split's own images, without the cache."""
        if quick:
            from coreset.embeddings import compute_embeddings
            from coreset.features import make_embedder

            started, embedder = time.perf_counter(), make_embedder(self.features)
            X_train, X_test = (
                np.asarray(compute_embeddings(X, embedder, verbose=False))
                for X in (split.X_train, split.X_test)
            )
            return replace(split, X_train=X_train, X_test=X_test), time.perf_counter() - started
        F, seconds, n_train = dataset_features(
            dataset, self.features, root=root, cache_dir=self.cache_dir, verbose=self.verbose
        )
        # Held-out splits index the pooled data (training images first; the published split,
        # the pool in its loaders' order); one-class splits index the official sets.
        train_rows, test_rows = split.train_index, split.test_index
        if protocol == "one-class":
            test_rows = test_rows + n_train
        elif protocol == "heldout-published":
            order = published_pool(n_train, len(F) - n_train)
            train_rows, test_rows = order[train_rows], order[test_rows]
        return replace(split, X_train=F[train_rows], X_test=F[test_rows]), seconds
