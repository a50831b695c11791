"""The simple baselines every detector is compared with, as anomaly scores (higher = anomalous).

* :func:`knn_scores`: Euclidean distance to the k-th nearest training sample, on raw pixels.
* :func:`iforest_scores`: scikit-learn's Isolation Forest, minus its ``score_samples``.
* :func:`pca_scores`: squared error of the reconstruction from the principal components that
  keep 90% of the training variance.

All take training samples (assumed normal) and test samples of any shape; both are flattened to
``float32`` rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

__all__ = ["flatten", "iforest_scores", "knn_scores", "pca_scores"]


def flatten(X: np.ndarray) -> np.ndarray:
    """Rows of ``float32`` values: ``(n, ...) -> (n, prod(...))``."""
    X = np.asarray(X)
    return np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.float32)


def knn_scores(X_train: np.ndarray, X_test: np.ndarray, k: int = 5) -> np.ndarray:
    """Distance of each test sample to its ``k``-th nearest training sample.

    Parameters
    ----------
    X_train, X_test : numpy.ndarray
        Samples of the same shape after the first axis.
    k : int, optional
        Neighbour rank (at most the number of training samples).

    Returns
    -------
    numpy.ndarray of float64, shape (n_test,)
        Higher = more anomalous.
    """
    train = flatten(X_train)
    k = max(1, min(int(k), len(train)))
    nn = NearestNeighbors(n_neighbors=k).fit(train)
    dist, _ = nn.kneighbors(flatten(X_test))  # (n_test, k), ascending
    return dist[:, -1].astype(np.float64)


def iforest_scores(
    X_train: np.ndarray, X_test: np.ndarray, random_state: int | None = 0
) -> np.ndarray:
    """Isolation Forest (100 trees) anomaly score: minus ``score_samples``.

    Returns
    -------
    numpy.ndarray of float64, shape (n_test,)
        Higher = more anomalous.
    """
    forest = IsolationForest(n_estimators=100, random_state=random_state)
    forest.fit(flatten(X_train))
    return -forest.score_samples(flatten(X_test)).astype(np.float64)


def pca_scores(
    X_train: np.ndarray, X_test: np.ndarray, variance: float = 0.9, random_state: int | None = 0
) -> np.ndarray:
    """Squared reconstruction error from the principal components of the training data.

    Parameters
    ----------
    X_train, X_test : numpy.ndarray
        Samples of the same shape after the first axis.
    variance : float, optional
        Share of the training variance the kept components explain.
    random_state : int or None, optional
        Seed of the solver, where scikit-learn's choice of solver uses one.

    Returns
    -------
    numpy.ndarray of float64, shape (n_test,)
        Higher = more anomalous.
    """
    train, test = flatten(X_train), flatten(X_test)
    pca = PCA(n_components=variance, random_state=random_state).fit(train)
    recon = pca.inverse_transform(pca.transform(test))
    return ((test - recon).astype(np.float64) ** 2).sum(axis=1)
