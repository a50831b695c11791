"""The 8x8 handwritten digits bundled with scikit-learn: a default that needs no download."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

__all__ = ["load_digits_data"]


def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's bundled 8x8 digits, scaled to [-1, 1].

    Returns
    -------
    X : numpy.ndarray
        ``float32`` array of shape (1797, 64): each row an 8x8 image flattened row by row, its
        pixel values 0..16 mapped to ``x / 8 - 1``.
    y : numpy.ndarray
        ``int64`` digit labels 0..9, shape (1797,).
    """
    bunch = load_digits()
    X = (bunch.data / 8.0 - 1.0).astype(np.float32)
    return X, bunch.target.astype(np.int64)
