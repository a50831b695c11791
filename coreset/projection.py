"""Gaussian random projection (Johnson-Lindenstrauss) of embeddings to a low dimension.

Small-GAN projects the 2048-d Inception embeddings of the training images to a few dimensions
before running greedy k-center on them; a Gaussian matrix scaled by ``1 / sqrt(n_components)``
preserves squared distances in expectation.
"""

from __future__ import annotations

import logging
import numbers
from typing import TypeVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from coreset_meg.coreset.kcenter import RandomState, check_generator

__all__ = ["GaussianProjection"]

logger = logging.getLogger(__name__)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _n_features(X: np.ndarray | torch.Tensor) -> int:
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    return int(X.shape[1])


class GaussianProjection(BaseEstimator):
    """Project rows onto ``n_components`` random Gaussian directions.

    ``transform(X) = X @ R`` with ``R`` of shape (n_features, n_components) and entries drawn
    i.i.d. from ``N(0, 1 / n_components)``, so that ``E ||x R||^2 = ||x||^2``
    (Johnson-Lindenstrauss).

    Parameters
    ----------
    n_components : int, default=32
        Output dimension.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, default=None
        Seeds the matrix drawn in :meth:`fit`. A ``Generator`` is used as is (its state advances).

    Attributes
    ----------
    components_ : numpy.ndarray of shape (n_features_in_, n_components_), float32
        The projection matrix. When ``n_features_in_ <= n_components`` projecting cannot reduce
        the dimension, so the matrix is the identity and :meth:`transform` passes the data
        through unchanged (as float32); ``n_components_`` is then ``n_features_in_``.
    n_components_ : int
        Output dimension actually used.
    n_features_in_ : int
        Number of input features seen in :meth:`fit`.
    passthrough_ : bool
        Whether the identity pass-through was used.

    References
    ----------
    .. [1] W. B. Johnson and J. Lindenstrauss, "Extensions of Lipschitz mappings into a Hilbert
       space", Contemporary Mathematics 26, 1984.
    .. [2] S. Sinha et al., "Small-GAN: Speeding up GAN Training using Core-Sets", ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 256))
    >>> GaussianProjection(n_components=8, random_state=0).fit_transform(X).shape
    (100, 8)
    """

    def __init__(self, n_components: int = 32, *, random_state: RandomState = None):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X: np.ndarray | torch.Tensor, y: None = None) -> GaussianProjection:
        """Draw the projection matrix for ``X``'s number of features.

        Parameters
        ----------
        X : numpy.ndarray or torch.Tensor of shape (n_samples, n_features)
            Only its number of features is used.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        k = self.n_components
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"n_components must be a positive integer, got {k!r}")
        d = _n_features(X)
        self.n_features_in_ = d
        if d <= k:
            logger.debug("n_features=%d <= n_components=%d: identity pass-through", d, k)
            self.components_ = np.eye(d, dtype=np.float32)
            self.n_components_ = d
            self.passthrough_ = True
            return self
        rng = check_generator(self.random_state)
        self.components_ = (rng.standard_normal((d, k)) / np.sqrt(k)).astype(np.float32)
        self.n_components_ = int(k)
        self.passthrough_ = False
        return self

    def transform(self, X: ArrayT) -> ArrayT:
        """Project ``X``.

        Parameters
        ----------
        X : numpy.ndarray or torch.Tensor of shape (n_samples, n_features_in_)

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (n_samples, n_components_), float32
            Same type as ``X``; a tensor stays on its device. Always a new array.
        """
        if not hasattr(self, "components_"):
            raise NotFittedError("GaussianProjection is not fitted yet; call fit first")
        d = _n_features(X)
        if d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but GaussianProjection was fitted with "
                f"{self.n_features_in_} features"
            )
        if isinstance(X, torch.Tensor):
            Xt = X.detach().to(torch.float32)
            if self.passthrough_:
                return Xt.clone()
            return Xt @ torch.from_numpy(self.components_).to(Xt.device)
        Xn = np.asarray(X, dtype=np.float32)
        if self.passthrough_:
            return Xn.copy()
        return Xn @ self.components_

    def fit_transform(self, X: ArrayT, y: None = None) -> ArrayT:
        """Fit to ``X`` and project it; see :meth:`fit` and :meth:`transform`."""
        return self.fit(X).transform(X)
