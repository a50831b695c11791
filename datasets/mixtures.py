"""2-D Gaussian mixtures (grid and ring) and the mode-coverage metrics used to judge a generator.

A sample is *high quality* when it lies within ``n_std`` standard deviations of a mode's centre;
a mode is *recovered* when at least ``min_count`` samples (1 by default) lie that close to it.
``kl_uniform`` is the KL divergence from the uniform distribution over modes to the histogram of
high-quality samples over their nearest modes (0 when every mode gets the same share), the
reverse KL of the PacGAN paper; ``kl_weights`` is the same against the mixture's own weights (the
two agree for an equal-weight mixture).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .tabular import check_finite_2d

__all__ = [
    "GaussianMixture",
    "grid_mixture",
    "mode_coverage",
    "ring_mixture",
    "unequal_weights",
]

_CHUNK = 4096  # samples per block of the (block, m) distance matrix


@dataclass
class GaussianMixture:
    """Mixture of isotropic 2-D Gaussians, of equal weights unless ``weights`` are given.

    Attributes
    ----------
    centers : numpy.ndarray
        ``float32`` mode centres, shape (m, 2).
    std : float
        Standard deviation of every mode along each axis.
    weights : numpy.ndarray or None
        Probability of each mode, shape (m,), normalised to sum 1 (None: equal weights).
    """

    centers: np.ndarray
    std: float
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        centers = np.asarray(self.centers, dtype=np.float32)
        if centers.ndim != 2 or centers.shape[1] != 2 or len(centers) == 0:
            raise DataError(f"mixture centers must have shape (m, 2), got {centers.shape}")
        if not np.isfinite(centers).all():
            raise DataError("mixture centers must be finite")
        if not (np.isfinite(self.std) and self.std > 0):
            raise DataError(f"mixture std must be a positive number, got {self.std}")
        self.centers = centers
        self.std = float(self.std)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (len(centers),) or not np.isfinite(w).all() or (w < 0).any():
                raise DataError(f"mixture weights must be {len(centers)} numbers >= 0")
            if w.sum() <= 0:
                raise DataError("mixture weights must not all be 0")
            self.weights = w / w.sum()

    @property
    def probabilities(self) -> np.ndarray:
        """Probability of each mode, shape (m,) (``weights``, or equal shares)."""
        if self.weights is None:
            return np.full(self.n_modes, 1.0 / self.n_modes)
        return self.weights

    @property
    def n_modes(self) -> int:
        """Number of modes."""
        return len(self.centers)

    def sample(
        self, n: int, random_state: int | np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples, each from a mode picked at random by the mixture's weights.

        Parameters
        ----------
        n : int
            Number of samples.
        random_state : int, numpy.random.Generator or None, optional
            Seed or generator.

        Returns
        -------
        X : numpy.ndarray
            ``float32`` samples, shape (n, 2).
        modes : numpy.ndarray
            ``int64`` index of the mode each sample came from, shape (n,).
        """
        if n < 0:
            raise DataError(f"number of samples must be >= 0, got {n}")
        rng = np.random.default_rng(random_state)
        if self.weights is None:  # (the stream equal-weight mixtures always drew)
            modes = rng.integers(0, self.n_modes, size=n, dtype=np.int64)
        else:
            modes = rng.choice(self.n_modes, size=n, p=self.weights).astype(np.int64)
        noise = rng.standard_normal((n, 2))
        X = (self.centers[modes] + self.std * noise).astype(np.float32)
        return X, modes


def unequal_weights(n_modes: int, ratio: float = 10.0, seed: int = 0) -> np.ndarray:
    """Unequal mode weights: log-evenly spaced from 1 down to ``1 / ratio``, in an order
    shuffled by ``seed`` (so that light modes lie inside a grid as well as on its border),
    normalised to sum 1.

    >>> w = unequal_weights(25)
    >>> round(float(w.max() / w.min()), 6), round(float(w.sum()), 6)
    (10.0, 1.0)
    """
    if n_modes < 1 or not ratio >= 1:
        raise DataError(f"need n_modes >= 1 and ratio >= 1, got {n_modes}, {ratio}")
    w = np.geomspace(1.0, 1.0 / ratio, n_modes) if n_modes > 1 else np.ones(1)
    w = w[np.random.default_rng(seed).permutation(n_modes)]
    return w / w.sum()


def grid_mixture(
    side: int = 5, spacing: float = 2.0, std: float = 0.05, weights: np.ndarray | None = None
) -> GaussianMixture:
    """Mixture with ``side`` x ``side`` modes on a square grid centred on the origin.

    Parameters
    ----------
    side : int, optional
        Modes per row and column (25 modes by default, at -4, -2, 0, 2, 4 on each axis).
    spacing : float, optional
        Distance between neighbouring modes.
    std : float, optional
        Standard deviation of each mode.
    weights : numpy.ndarray, optional
        Probability of each mode, in the centres' order (None: equal; see
        :func:`unequal_weights`).

    Returns
    -------
    GaussianMixture
        Centres ordered row by row (first coordinate slowest).
    """
    if side < 1:
        raise DataError(f"grid side must be >= 1, got {side}")
    coords = (np.arange(side) - (side - 1) / 2.0) * spacing
    a, b = np.meshgrid(coords, coords, indexing="ij")
    return GaussianMixture(np.stack([a.ravel(), b.ravel()], axis=1), std, weights)


def ring_mixture(n_modes: int = 8, radius: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """Mixture with ``n_modes`` modes evenly spaced on a circle around the origin.

    Parameters
    ----------
    n_modes : int, optional
        Number of modes; the first lies at (radius, 0).
    radius : float, optional
        Radius of the circle.
    std : float, optional
        Standard deviation of each mode.

    Returns
    -------
    GaussianMixture
        The mixture.
    """
    if n_modes < 1:
        raise DataError(f"number of modes must be >= 1, got {n_modes}")
    angles = 2.0 * np.pi * np.arange(n_modes) / n_modes
    return GaussianMixture(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1), std)


def mode_coverage(
    samples: np.ndarray, mixture: GaussianMixture, n_std: float = 4.0, min_count: int = 1
) -> dict[str, float | int]:
    """Measure how well samples cover the modes of a mixture.

    Parameters
    ----------
    samples : numpy.ndarray
        Generated points, shape (n, 2).
    mixture : GaussianMixture
        The target mixture.
    n_std : float, optional
        A sample counts as close to a centre within ``n_std * mixture.std`` (the project's
        benchmarks: 4; VEEGAN and PacGAN: 3).
    min_count : int, optional
        A mode is recovered when at least this many samples are close to its centre.

    Returns
    -------
    dict
        ``n_modes`` (int): number of modes. ``modes_recovered`` (int): modes with at least
        ``min_count`` samples close to their centre. ``high_quality_fraction`` (float): share
        of samples close to their nearest centre. ``kl_uniform`` (float):
        ``sum_k p_k log(p_k * n_modes)``, where ``p`` is the histogram of high-quality samples
        over their nearest modes (terms with ``p_k = 0`` count 0); ``nan`` when no sample is
        high quality. ``kl_weights`` (float): ``sum_k p_k log(p_k / w_k)`` against the
        mixture's weights ``w``.
    """
    X = check_finite_2d(samples, source="samples").astype(np.float64)
    if X.shape[1] != 2:
        raise DataError(f"samples must have shape (n, 2), got {X.shape}")
    centers = mixture.centers.astype(np.float64)
    m = len(centers)
    threshold2 = (n_std * mixture.std) ** 2

    close = np.zeros(m, dtype=np.int64)  # samples within the threshold of each centre
    nearest = np.empty(len(X), dtype=np.int64)
    nearest_d2 = np.empty(len(X), dtype=np.float64)
    for start in range(0, len(X), _CHUNK):
        block = X[start : start + _CHUNK]
        d2 = ((block[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)  # (block, m)
        close += (d2 <= threshold2).sum(axis=0)
        idx = d2.argmin(axis=1)
        nearest[start : start + len(block)] = idx
        nearest_d2[start : start + len(block)] = d2[np.arange(len(block)), idx]

    high_quality = nearest_d2 <= threshold2
    counts = np.bincount(nearest[high_quality], minlength=m).astype(np.float64)
    kl = kl_w = float("nan")
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p > 0
        kl = float(np.sum(p[nz] * np.log(p[nz] * m)))
        kl_w = float(np.sum(p[nz] * np.log(p[nz] / mixture.probabilities[nz])))
    return {
        "n_modes": int(m),
        "modes_recovered": int((close >= min_count).sum()),
        "high_quality_fraction": float(high_quality.mean()),
        "kl_uniform": kl,
        "kl_weights": kl_w,
    }
