"""PyOD's detector conventions for :class:`~coreset_meg.anomaly.MEGDetector`.

PyOD's detectors (``pyod.models.base.BaseDetector``) score the other way round from
scikit-learn's: ``decision_function`` is **higher for anomalies**, ``predict`` gives 0 (inlier) /
1 (outlier), and a fitted detector keeps its training scores as ``decision_scores_``, the
threshold on them as ``threshold_`` and the training labels as ``labels_``. ``MEGDetector`` keeps
scikit-learn's convention; :class:`PyODAdapter` gives it PyOD's, so it can stand where PyOD code
expects a PyOD detector. This module imports the detector (its default), never the other way.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ._meg import MEGDetector
from .scoring import check_method, outlier_probability

__all__ = ["PyODAdapter", "outlier_probability"]


class PyODAdapter(BaseEstimator):
    """A detector with PyOD's conventions: higher scores and label 1 for anomalies.

    ``fit`` trains a clone of ``detector`` (a :class:`~coreset_meg.anomaly.MEGDetector` by default)
    as ``detector_``; the methods translate its scikit-learn convention (``score_samples`` higher
    for normal samples, ``predict`` +1 / -1) into PyOD's (``pyod.models.base.BaseDetector``).
    To wrap a detector that is already fitted, or loaded with
    :func:`~coreset_meg.anomaly.load_model`, without training it again, use :meth:`from_fitted`.

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
        Anomaly scores of the training samples (higher = more anomalous),
        ``-detector_.train_scores_``: at most 10,000 of them (a seeded subsample on larger
        training sets), those the threshold was set from.
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
    >>> clf = PyODAdapter(MEGDetector(random_state=0)).fit(X)
    >>> clf.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
    [0, 1]
    >>> bool(clf.decision_function([[8.0, 8.0]])[0] > clf.threshold_)
    True
    """

    def __init__(self, detector=None):
        self.detector = detector

    @classmethod
    def from_fitted(cls, detector: MEGDetector) -> PyODAdapter:
        """A fitted (or loaded) detector with PyOD's conventions, without training it again.

        Parameters
        ----------
        detector : MEGDetector
            A fitted detector; it becomes ``detector_`` (not a copy).

        Returns
        -------
        PyODAdapter
        """
        check_is_fitted(detector)
        adapter = cls(detector)
        adapter.detector_ = detector
        return adapter

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
        detector = MEGDetector() if self.detector is None else clone(self.detector)
        self.detector_ = detector.fit(X)
        return self

    @property
    def decision_scores_(self) -> np.ndarray:
        check_is_fitted(self)
        train_scores = getattr(self.detector_, "train_scores_", None)
        if train_scores is None:
            raise AttributeError(
                "the detector has no training scores: its model file was saved without them; "
                "fit it again to get decision_scores_, labels_ and predict_proba"
            )
        return -train_scores

    @property
    def threshold_(self) -> float:
        check_is_fitted(self)
        return -self.detector_.offset_

    @property
    def labels_(self) -> np.ndarray:
        scores = self.decision_scores_
        return np.where(np.isfinite(scores) & (scores <= self.threshold_), 0, 1)

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
        """Probability of being normal and of being an outlier, as PyOD computes it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or images
        method : {"linear", "unify"}, default="linear"
            ``"linear"``: the anomaly score ``decision_function(X)`` min-max scaled by the range
            of ``decision_scores_`` and clipped to [0, 1]. ``"unify"`` (Kriegel et al., 2011):
            ``erf`` of the anomaly score standardised by the mean and standard deviation of
            ``decision_scores_``, clipped to [0, 1]. Scores that are not numbers give 1.

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Column 0 is P(normal), column 1 is P(outlier), as PyOD's ``predict_proba``;
            P(outlier) grows with the anomaly score. These are rescaled scores, not calibrated
            probabilities, and P(outlier) > 0.5 is not ``predict``'s rule (use ``threshold_``).

        References
        ----------
        Kriegel, Kröger, Schubert, Zimek. Interpreting and Unifying Outlier Scores. SDM 2011.
        """
        check_is_fitted(self)
        check_method(method)  # before scoring
        return outlier_probability(self.decision_scores_, self.decision_function(X), method)
