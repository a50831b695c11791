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

A factory made with ``view="features"`` gets the split's pretrained image features (see
:mod:`.features`) instead of its pixels: the fair baselines of the detector's feature view are kNN
(:class:`KNNDistance`, on the raw features and on features scaled to unit length) and a Gaussian
with a shrunk covariance (:class:`GaussianDistance`) on the same features. One made with
``view="both"`` gets the flattened pixels and the features side by side and sees them as
``MEGDetector(view="both")`` does (:class:`BothViews`); its fair baseline is kNN on those same
vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer
from sklearn.utils.validation import check_is_fitted

from coreset_meg.anomaly.settings import detector_params, preset
from coreset_meg.features.embeddings import unit_length

from .._meg import MEGDetector
from ..preprocessing import Resolved, resolve_gaussian_weight, scale_images, view_spreads

__all__ = [
    "DETECTORS",
    "BothViews",
    "GaussianDistance",
    "KNNDistance",
    "PCAReconstruction",
    "anomaly_score",
    "flatten",
    "joined_views",
    "meg_detector",
    "outlier_detector",
    "view_of",
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


class GaussianDistance(OutlierMixin, BaseEstimator):
    """Mahalanobis distance under a Gaussian with Ledoit-Wolf shrunk covariance.

    ``score_samples`` is minus the squared distance (higher = more normal).
    """

    def fit(self, X, y=None):
        self.gaussian_ = LedoitWolf().fit(X)
        return self

    def score_samples(self, X) -> np.ndarray:
        return -self.gaussian_.mahalanobis(X).astype(np.float64)


class BothViews(OutlierMixin, BaseEstimator):
    """``detector`` on the pixels and the pretrained features of images side by side, as
    ``MEGDetector(view="both")`` sees them.

    Rows of ``X`` are the flattened pixels (the first ``n_pixels`` columns, in [-1, 1]) followed by
    the raw features. The features are scaled to unit length, and each part is divided by the
    square root of its median nearest-neighbour squared distance on the training rows
    (:func:`coreset_meg.anomaly.preprocessing.view_spreads`), so the two weigh alike.
    ``score_samples`` is the detector's on those vectors.
    """

    def __init__(self, detector=None, n_pixels: int | None = None):
        self.detector = detector
        self.n_pixels = n_pixels

    def _joined(self, X) -> np.ndarray:
        X, n = flatten(X), int(self.n_pixels)
        return np.concatenate([X[:, :n], unit_length(X[:, n:])], axis=1)

    def fit(self, X, y=None):
        if self.n_pixels is None or not 0 < int(self.n_pixels) < flatten(X[:1]).shape[1]:
            raise ValueError(f"n_pixels must split the columns in two, got {self.n_pixels}")
        X = self._joined(X)
        self.spread_ = view_spreads(X, int(self.n_pixels))
        detector = clone(self.detector)
        if isinstance(detector, MEGDetector) and detector.network == "coreset":
            # The energy MEGDetector(view="both") builds on images: the views read apart too.
            detector = _JoinedViews(**detector.get_params())
            detector.split = int(self.n_pixels)
        self.detector_ = detector.fit(X / self.spread_)
        return self

    def score_samples(self, X) -> np.ndarray:
        check_is_fitted(self, "spread_")
        return np.asarray(self.detector_.score_samples(self._joined(X) / self.spread_))


class _JoinedViews(MEGDetector):
    """``MEGDetector`` on rows that :class:`BothViews` joined (the first ``split`` columns the
    pixels): its core-set energy is the :class:`~coreset_meg.gan.networks.ViewsEnergy` that
    ``MEGDetector(view="both")`` builds on the same rows from images."""

    split: int = 0

    def _set_resolved(self, resolved: Resolved) -> None:
        views = self.split  # the settings resolved as for the both view's rows
        weight = resolve_gaussian_weight(self.gaussian_weight, resolved.view, views)
        super()._set_resolved(replace(resolved, views=views, gaussian_weight=weight))


def _outlier(cls, params, unit_length, dataset: str, seed: int, device: str, quick: bool):
    detector = cls(**params)
    if "random_state" in detector.get_params():
        detector.set_params(random_state=seed)
    steps = [FunctionTransformer(flatten)] + ([Normalizer()] if unit_length else [])
    return make_pipeline(*steps, detector)


def _both(build, dataset: str, seed: int, device: str, quick: bool) -> BothViews:
    return BothViews(build(dataset, seed, device, quick))


@dataclass(frozen=True)
class ViewFactory:
    """A factory and the view of an image its detector gets (picklable for ``jobs > 1``; an
    attribute set on a ``functools.partial`` does not reach spawned workers)."""

    build: Callable[[str, int, str, bool], Any]
    view: str = "pixels"

    def __call__(self, dataset: str, seed: int, device: str, quick: bool) -> Any:
        return self.build(dataset, seed, device, quick)


def _with_view(factory: partial, view: str) -> Factory:
    if view not in ("pixels", "features", "both"):
        raise ValueError(f"view must be 'pixels', 'features' or 'both', got {view!r}")
    if view == "both":
        return ViewFactory(partial(_both, factory), view)
    return factory if view == "pixels" else ViewFactory(factory, view)


def view_of(factory: Factory) -> str:
    """What a factory's detector gets of an image: ``"pixels"``, ``"features"`` (pretrained
    features) or ``"both"`` (the pixels, then the features: :class:`BothViews`)."""
    return getattr(factory, "view", "pixels")


def joined_views(pixels: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The rows a ``view="both"`` detector gets: the flattened pixels in [-1, 1] (integer images
    are read as 0..255, as the detector reads them), then the features."""
    flat = scale_images(flatten(pixels), np.asarray(pixels).dtype, "symmetric")
    return np.concatenate([flat, flatten(features)], axis=1)


def outlier_detector(
    cls: type, *, view: str = "pixels", unit_length: bool = False, **params: Any
) -> Factory:
    """Factory of a scikit-learn or PyOD detector on flattened samples (each scaled to unit
    length when ``unit_length``), seeded when it takes ``random_state`` (picklable, so it runs in
    ``jobs > 1`` workers too); ``view``: what it sees of an image."""
    return _with_view(partial(_outlier, cls, params, unit_length), view)


def _meg(changes, view, dataset: str, seed: int, device: str, quick: bool) -> MEGDetector:
    # The feature view gets the features as vectors (the "features" preset scales them as the
    # detector's own feature view does); the pixel view gets the images; the both view gets
    # vectors that BothViews has scaled as the detector's both view scales them.
    params = preset("features", quick) if view == "features" else preset(dataset, quick)
    if view == "pixels":
        params["view"] = "pixels"
    if view == "both":
        params["scaling"] = "none"
    settings = {**params, **changes, "random_state": seed, "device": device}
    return MEGDetector(**detector_params(settings))


def meg_detector(*, view: str = "pixels", **changes: Any) -> Factory:
    """Factory of the MEG detector with the data set's preset
    (:func:`coreset_meg.anomaly.settings.preset`; the ``"features"`` preset for the feature view),
    overridden by ``changes``."""
    return _with_view(partial(_meg, changes, view), view)


def anomaly_score(detector: Any, X: np.ndarray) -> np.ndarray:
    """Higher = more anomalous: minus ``score_samples``, or a PyOD ``decision_function``."""
    if hasattr(detector, "score_samples"):
        return -np.asarray(detector.score_samples(X), dtype=np.float64)
    return np.asarray(detector.decision_function(X), dtype=np.float64)


#: Column name -> factory, in table order.
DETECTORS: dict[str, Factory] = {
    "MEG core-set energy (features)": meg_detector(view="features"),
    "kNN distance (features)": outlier_detector(KNNDistance, view="features", k=5),
    "kNN distance, unit length (features)": outlier_detector(
        KNNDistance, view="features", unit_length=True, k=5
    ),
    "Gaussian (features)": outlier_detector(GaussianDistance, view="features"),
    "MEG core-set energy (both views)": meg_detector(view="both"),
    "kNN distance (both views)": outlier_detector(KNNDistance, view="both", k=5),
    "Gaussian (both views)": outlier_detector(GaussianDistance, view="both"),
    "MEG core-set energy (pixels)": meg_detector(view="pixels"),
    "kNN distance": outlier_detector(KNNDistance, k=5),
    "Isolation Forest": outlier_detector(IsolationForest, n_estimators=100),
    "PCA reconstruction": outlier_detector(PCAReconstruction, variance=0.9),
}
