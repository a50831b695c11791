"""PyOD's detector conventions for :class:`~coreset_meg.anomaly.MEGDetector`.

PyOD's detectors (``pyod.models.base.BaseDetector``) score the other way round from
scikit-learn's: ``decision_function`` is **higher for anomalies**, ``predict`` gives 0 (inlier) /
1 (outlier), and a fitted detector keeps its training scores as ``decision_scores_``, the
threshold on them as ``threshold_`` and the training labels as ``labels_``. ``MEGDetector`` has
those attributes and ``predict_proba`` itself; :class:`PyODAdapter` also gives it PyOD's
``decision_function`` and ``predict``, so it can stand where PyOD code expects a PyOD detector.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

__all__ = ["PyODAdapter", "check_method", "outlier_probability"]

_METHODS = ("linear", "unify")


def check_method(method) -> None:
    """Raise ValueError unless ``method`` is a probability method PyOD knows."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def outlier_probability(train_scores, scores, method: str = "linear") -> np.ndarray:
    """``[P(normal), P(anomalous)]`` per sample from anomaly scores, as PyOD computes them.

    ``"linear"``: the score min-max scaled by the training scores' range (zero range: divided by
    1, as scikit-learn's ``MinMaxScaler``) and clipped to [0, 1]. ``"unify"`` (Kriegel et al.,
    2011): ``erf((score - mean) / (std * sqrt(2)))`` with the training scores' mean and
    (population) standard deviation, clipped to [0, 1], so scores at or below the training mean
    get 0. A score that is not a number gets P(anomalous) = 1, as ``predict`` calls it an
    outlier.

    Parameters
    ----------
    train_scores : ndarray of shape (n_train,)
        Anomaly scores of the training samples (``decision_scores_``).
    scores : ndarray of shape (n_samples,)
        Anomaly scores to turn into probabilities (higher = more anomalous).
    method : {"linear", "unify"}, default="linear"

    Returns
    -------
    ndarray of shape (n_samples, 2)
        Column 0 is P(normal), column 1 is P(anomalous); the rows sum to 1.
    """
    check_method(method)
    train = np.asarray(train_scores, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if method == "linear":
        low, span = train.min(), train.max() - train.min()
        anomalous = (scores - low) / (span if span > 0 else 1.0)
    else:
        spread = max(float(train.std()), np.finfo(np.float64).tiny)
        with np.errstate(over="ignore"):
            anomalous = erf((scores - train.mean()) / (spread * np.sqrt(2.0)))
    anomalous = np.where(np.isnan(anomalous), 1.0, np.clip(anomalous, 0.0, 1.0))
    return np.column_stack([1.0 - anomalous, anomalous])


class PyODAdapter(BaseEstimator):
    """A detector with PyOD's conventions: higher scores and label 1 for anomalies.

    ``fit`` trains a clone of ``detector`` (a :class:`~coreset_meg.anomaly.MEGDetector` by default)
    as ``detector_``; the methods translate its scikit-learn convention (``score_samples`` higher
    for normal samples, ``predict`` +1 / -1) into PyOD's (``pyod.models.base.BaseDetector``).
    To wrap a detector that is already fitted, or loaded with
    :func:`~coreset_meg.anomaly.load_model`, without training it again, use
    :meth:`MEGDetector.as_pyod`.

    Parameters
    ----------
    detector : MEGDetector, default=None
        The detector to train; None means ``MEGDetector()``. Its ``contamination`` sets
        ``threshold_``.

    Attributes
    ----------
    detector_ : MEGDetector
        The fitted detector.
    decision_scores_ : ndarray of shape (n_train,)
        Anomaly scores of the training samples (higher = more anomalous); at most 10,000 of them
        (a seeded subsample on larger training sets), those the threshold was set from.
    threshold_ : float
        Samples scoring above it are outliers: ``-detector_.offset_``.
    labels_ : ndarray of shape (n_train,)
        1 where ``decision_scores_ > threshold_`` (outlier), 0 elsewhere.
    n_features_in_ : int
        Number of features seen in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from coreset_meg.anomaly import MEGDetector, PyODAdapter
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> clf = PyODAdapter(MEGDetector(n_iter=100, width=32, random_state=0)).fit(X)
    >>> clf.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
    [0, 1]
    >>> bool(clf.decision_function([[8.0, 8.0]])[0] > clf.threshold_)
    True
    """

    def __init__(self, detector=None):
        self.detector = detector

    def fit(self, X, y=None):
        """Train a clone of ``detector`` on ``X`` (assumed normal).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or images
            Training samples, as :meth:`MEGDetector.fit` takes them.
        y : ignored

        Returns
        -------
        self
        """
        if self.detector is None:
            from ._meg import MEGDetector

            detector = MEGDetector()
        else:
            detector = clone(self.detector)
        self.detector_ = detector.fit(X)
        return self

    @property
    def decision_scores_(self) -> np.ndarray:
        check_is_fitted(self)
        return self.detector_.decision_scores_

    @property
    def threshold_(self) -> float:
        check_is_fitted(self)
        return self.detector_.threshold_

    @property
    def labels_(self) -> np.ndarray:
        check_is_fitted(self)
        return self.detector_.labels_

    @property
    def n_features_in_(self) -> int:
        check_is_fitted(self)
        return self.detector_.n_features_in_

    def decision_function(self, X) -> np.ndarray:
        """Anomaly scores, **higher for anomalies** (PyOD): ``-detector_.score_samples(X)``.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return -self.detector_.score_samples(X)

    def predict(self, X) -> np.ndarray:
        """1 for outliers (``decision_function(X) > threshold_``, or not finite), 0 for inliers.

        Returns
        -------
        ndarray of shape (n_samples,) of int
        """
        check_is_fitted(self)
        return (self.detector_.predict(X) == -1).astype(int)

    def predict_proba(self, X, method: str = "linear") -> np.ndarray:
        """``[P(normal), P(anomalous)]`` per sample; see :meth:`MEGDetector.predict_proba`.

        Returns
        -------
        ndarray of shape (n_samples, 2)
        """
        check_is_fitted(self)
        return self.detector_.predict_proba(X, method=method)
