"""Pretrained image features for the benchmarks: one embedding of each data set, cached.

The detectors of the feature view get the features of the split's images instead of their pixels.
Every image of a data set is embedded once (the official training images, then the test images)
into a content-keyed disk cache, and each split takes its rows, so ten classes and three seeds
embed the data once. The embedding time is measured here, apart from every detector's fit time.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from coreset_meg.datasets import Split
from coreset_meg.datasets.splits import published_pool
from coreset_meg.features.builtin import DEFAULT_CACHE, dataset_features, dataset_images

__all__ = ["DEFAULT_CACHE", "FeatureView", "dataset_features", "dataset_images"]


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
            from coreset_meg.features.embeddings import compute_embeddings
            from coreset_meg.features.pretrained import make_embedder

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
