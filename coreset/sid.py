"""The signed inception distance (SID) of Spider GAN, to rank candidate friendly data sets.

Spider GAN (Asokan and Seelamantula, CVPR 2023) ranks the data sets it could feed a generator
by their SID to the target: the mean, over test points, of the potential of two charge clouds
in an embedding space, each set's samples carrying one sign, through the polyharmonic kernel
``psi_k(rho) = sign(k) rho^k`` (``log rho`` for ``k = 0``):

    ``phi(x) = mean_j psi_k(||x - s_j||) - mean_i psi_k(||x - d_i||)``

for source (candidate) embeddings ``s_j`` and target embeddings ``d_i``. The test points are
drawn uniformly in hypercubes centred on the target's mean with half-sides ``r * sigma``
(``sigma``: the target's mean per-dimension standard deviation) for a range of ``r``; the SID
curve is the mean potential per ``r``, and the SID is its mean over ``r``. ``psi_k`` increases
with the distance for every order, so the SID is positive when the candidate lies farther from
the test points than the target does, zero for the target itself, and negative for a set more
concentrated around the target's centre than the target. Lower ranks friendlier.

The test points, the subsampling and the kernel follow the authors' reference implementation
(``clean-sid``: half-sides ``0.25 r sigma`` for ``r = 1..49``, order 1 by default); the radii
here are a shorter geometric grid over the same span, and each set is used whole up to
``max_samples`` embeddings (one seeded subsample above that) instead of 20 random subsets of 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from coreset_meg.coreset.kcenter import RandomState, check_generator

__all__ = [
    "DEFAULT_RADII",
    "polyharmonic_kernel",
    "rank_by_sid",
    "sid_potential",
    "signed_inception_distance",
]

#: Half-sides of the test hypercubes, in units of the target's mean per-dimension std.
DEFAULT_RADII = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0)


def polyharmonic_kernel(rho: np.ndarray, order: float = 1.0) -> np.ndarray:
    """``sign(order) * rho**order``, or ``log(rho)`` for order 0: increasing in ``rho`` (> 0).

    >>> polyharmonic_kernel(np.array([1.0, 4.0]), 1).tolist()
    [1.0, 4.0]
    >>> polyharmonic_kernel(np.array([2.0]), -1).tolist()
    [-0.5]
    """
    rho = np.maximum(rho, 1e-12)  # a test point never sits on a sample; guard the log and 1/rho
    if order == 0:
        return np.log(rho)
    return np.sign(order) * rho**order


def _mean_kernel(points: np.ndarray, centres: np.ndarray, order: float) -> np.ndarray:
    """``mean_j psi(||x - c_j||)`` for every row ``x`` of ``points``: shape (n_points,)."""
    sq = (points * points).sum(1)[:, None] + (centres * centres).sum(1)[None, :]
    sq -= 2.0 * points @ centres.T
    return polyharmonic_kernel(np.sqrt(np.maximum(sq, 0.0)), order).mean(1)


def sid_potential(
    points: np.ndarray, source: np.ndarray, target: np.ndarray, order: float = 1.0
) -> np.ndarray:
    """The SID potential ``phi(x)`` at each of ``points`` (n, p): source charges minus target
    charges, in float64. Swapping ``source`` and ``target`` flips its sign."""
    points, source, target = (np.asarray(a, dtype=np.float64) for a in (points, source, target))
    return _mean_kernel(points, source, order) - _mean_kernel(points, target, order)


def _subsample(X: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """``X`` as float64, or a subsample of ``max_samples`` rows drawn with ``seed`` (the same
    seed for both sets, so identical sets give identical subsamples)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"embeddings must have shape (n_samples, p), got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("embeddings hold NaN or infinite values")
    if len(X) <= max_samples:
        return X
    rows = np.sort(np.random.default_rng(seed).choice(len(X), max_samples, replace=False))
    return X[rows]


def signed_inception_distance(
    source: np.ndarray,
    target: np.ndarray,
    *,
    order: float = 1.0,
    radii: Sequence[float] = DEFAULT_RADII,
    n_points: int = 256,
    max_samples: int = 1000,
    random_state: RandomState = 0,
    return_curve: bool = False,
) -> float | tuple[float, np.ndarray]:
    """SID of ``source`` (a candidate friendly set) to ``target``, from their embeddings.

    Parameters
    ----------
    source, target : array-like of shape (n_source, p) and (n_target, p)
        Embeddings of the two sets in one feature space.
    order : float, default=1
        Order ``k`` of the polyharmonic kernel ``sign(k) rho^k`` (0: ``log rho``).
    radii : sequence of float, default=DEFAULT_RADII
        Half-sides of the test hypercubes around the target's mean, in units of the target's
        mean per-dimension standard deviation.
    n_points : int, default=256
        Test points drawn uniformly in each hypercube.
    max_samples : int, default=1000
        Each set is used whole up to this many embeddings; larger ones are subsampled once.
    random_state : int, numpy Generator or None, default=0
        Seeds the subsampling and the test points.
    return_curve : bool, default=False
        Also return the mean potential per radius.

    Returns
    -------
    float, or (float, numpy.ndarray of shape (len(radii),))
        The SID (the mean of the curve): 0 for a set against itself, positive when the source
        is farther from the target's neighbourhood than the target. It scales as
        ``c**order`` when both sets are scaled by ``c`` and is unchanged by a common shift.

    References
    ----------
    .. [1] S. Asokan and C. S. Seelamantula, "Spider GAN: Leveraging Friendly Neighbors to
       Accelerate GAN Training", CVPR 2023.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> target = rng.normal(size=(300, 8))
    >>> signed_inception_distance(target, target)
    0.0
    >>> near = signed_inception_distance(target + 0.5, target)
    >>> far = signed_inception_distance(target + 3.0, target)
    >>> 0 < near < far
    True
    """
    if n_points < 1 or max_samples < 1 or len(radii) == 0 or min(radii) <= 0:
        raise ValueError("n_points and max_samples must be positive, radii positive and non-empty")
    rng = check_generator(random_state)
    seed = int(rng.integers(2**63 - 1))
    S, D = _subsample(source, max_samples, seed), _subsample(target, max_samples, seed)
    if S.shape[1] != D.shape[1]:
        raise ValueError(f"source has {S.shape[1]} dimensions, target {D.shape[1]}")
    centre, sigma = D.mean(0), float(D.std(0).mean())
    sigma = sigma if sigma > 0 else 1.0
    curve = np.array(
        [
            sid_potential(
                centre + r * sigma * rng.uniform(-1, 1, (n_points, D.shape[1])), S, D, order
            ).mean()
            for r in radii
        ]
    )
    sid = float(curve.mean())
    return (sid, curve) if return_curve else sid


def rank_by_sid(
    target: np.ndarray, candidates: Mapping[str, np.ndarray], **kwargs
) -> list[tuple[str, float]]:
    """``(name, SID)`` of every candidate set to ``target``, friendliest (lowest SID) first.

    Keyword arguments go to :func:`signed_inception_distance`; every candidate gets the same
    test points (the same ``random_state``).
    """
    sids = {name: signed_inception_distance(X, target, **kwargs) for name, X in candidates.items()}
    return sorted(sids.items(), key=lambda item: item[1])
