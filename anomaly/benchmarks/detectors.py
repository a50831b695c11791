"""The detectors the held-out and one-class benchmarks compare: a registry of named factories.

:data:`DETECTORS` maps a column name of the tables to a factory ``(dataset, seed, device, quick)
-> estimator``. Every estimator follows scikit-learn's outlier-detector convention: ``fit(X)`` on
normal samples, ``score_samples(X)`` higher for more normal samples; a PyOD detector (no
``score_samples``, ``decision_function`` higher for anomalies) works too. Images are flattened to
rows for everything but MEG. Any such detector becomes a column with one line::

    from sklearn.neighbors import LocalOutlierFactor
    DETECTORS["LOF"] = outlier_detector(LocalOutlierFactor, novelty=True)

The baselines: the distance to the 5th nearest training sample (:class:`KNNDistance`),
scikit-learn's Isolation Forest, and the reconstruction error from the principal components that
keep 90% of the training variance (:class:`PCAReconstruction`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from anomaly.settings import preset

from .._meg import MEGDetector

__all__ = [
    "DETECTORS",
    "KNNDistance",
    "PCAReconstruction",
    "anomaly_score",
    "flatten",
    "meg_detector",
    "outlier_detector",
]

#: ``(dataset, seed, device, quick) -> unfitted estimator``.
Factory = Callable[[str, int, str, bool], Any]


def flatten(X: np.ndarray) -> np.ndarray:
    """Rows of ``float32`` values: ``(n, ...) -> (n, prod(...))``."""
    X = np.asarray(X)
    return np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.float32)


class KNNDistance(OutlierMixin, BaseEstimator):
    """Distance to the ``k``-th nearest training sample.

    ``score_samples`` is minus that distance (higher = more normal).
    """

    def __init__(self, k: int = 5):
        self.k = k

    def fit(self, X, y=None):
        self.k_ = max(1, min(int(self.k), len(X)))
        self.nn_ = NearestNeighbors(n_neighbors=self.k_).fit(X)
        return self

    def score_samples(self, X) -> np.ndarray:
        dist, _ = self.nn_.kneighbors(X)  # (n, k), ascending
        return -dist[:, -1].astype(np.float64)


class PCAReconstruction(OutlierMixin, BaseEstimator):
    """Squared error of the reconstruction from the principal components of the training data.

    ``score_samples`` is minus that error (higher = more normal); ``variance`` is the share of
    the training variance the kept components explain.
    """

    def __init__(self, variance: float = 0.9, random_state: int | None = None):
        self.variance = variance
        self.random_state = random_state

    def fit(self, X, y=None):
        self.pca_ = PCA(n_components=self.variance, random_state=self.random_state).fit(X)
        return self

    def score_samples(self, X) -> np.ndarray:
        recon = self.pca_.inverse_transform(self.pca_.transform(X))
        return -((X - recon).astype(np.float64) ** 2).sum(axis=1)


def _outlier(cls, params, dataset: str, seed: int, device: str, quick: bool) -> Pipeline:
    detector = cls(**params)
    if "random_state" in detector.get_params():
        detector.set_params(random_state=seed)
    return make_pipeline(FunctionTransformer(flatten), detector)


def outlier_detector(cls: type, **params: Any) -> Factory:
    """Factory of a scikit-learn or PyOD detector on flattened samples, seeded when it takes
    ``random_state`` (picklable, so it runs in ``jobs > 1`` workers too)."""
    return partial(_outlier, cls, params)


def _meg(changes, dataset: str, seed: int, device: str, quick: bool) -> MEGDetector:
    return MEGDetector(**{**preset(dataset, quick), **changes}, random_state=seed, device=device)


def meg_detector(**changes: Any) -> Factory:
    """Factory of the MEG detector with the data set's preset (:func:`anomaly.settings.preset`),
    overridden by ``changes``."""
    return partial(_meg, changes)


def anomaly_score(detector: Any, X: np.ndarray) -> np.ndarray:
    """Higher = more anomalous: minus ``score_samples``, or a PyOD ``decision_function``."""
    if hasattr(detector, "score_samples"):
        return -np.asarray(detector.score_samples(X), dtype=np.float64)
    return np.asarray(detector.decision_function(X), dtype=np.float64)


#: Column name -> factory, in table order.
DETECTORS: dict[str, Factory] = {
    "MEG + core-set": meg_detector(),
    "MEG + random batches": meg_detector(prior_factor=1, data_factor=1),
    "kNN distance": outlier_detector(KNNDistance, k=5),
    "Isolation Forest": outlier_detector(IsolationForest, n_estimators=100),
    "PCA reconstruction": outlier_detector(PCAReconstruction, variance=0.9),
}
