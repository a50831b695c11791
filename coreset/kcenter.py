"""Greedy k-center selection (Sener & Savarese, 2018), the core of Small-GAN's core-set batches.

The greedy algorithm starts from one point and repeatedly adds the point whose distance to its
nearest chosen point is largest. Its covering radius is within a factor 2 of the optimal k-center
radius. The implementation keeps a running vector of squared distances to the nearest chosen
point, so it costs O(n * k * d) time and never builds an n x n matrix.

References
----------
.. [1] O. Sener and S. Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
   Approach", ICLR 2018.
.. [2] S. Sinha, H. Zhang, A. Goyal, Y. Bengio, H. Larochelle and A. Odena, "Small-GAN: Speeding
   up GAN Training using Core-Sets", ICML 2020.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from coreset_meg.common.lazy import moved_names

__all__ = [
    "RandomState",
    "check_generator",
    "covering_radius",
    "greedy_k_center",
    "greedy_k_center_many",
    "pairwise_k_center_reference",
]

logger = logging.getLogger(__name__)

RandomState = int | np.random.Generator | np.random.SeedSequence | None
"""Anything :func:`numpy.random.default_rng` accepts: ``None``, an int, a ``SeedSequence`` or a
``Generator`` (used as is, so its state advances)."""

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# Row blocks of the chunked distance computations hold at most this many entries.
_CHUNK_ENTRIES = 1 << 20


def check_generator(random_state: RandomState) -> np.random.Generator:
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    Not scikit-learn's ``check_random_state``, which gives a legacy ``RandomState`` (the
    detector's ``fit`` uses that one): the core-set code draws from numpy ``Generator`` streams.

    Parameters
    ----------
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        ``None`` draws fresh entropy, an int or a ``SeedSequence`` seeds a new generator, and a
        ``Generator`` is returned unchanged (so callers share its stream). Global seeds are never
        touched.

    Returns
    -------
    numpy.random.Generator
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, np.random.SeedSequence):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int, a numpy SeedSequence or a numpy Generator, "
        f"got {type(random_state).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    """Return ``value`` as an int after checking ``low <= value <= high``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value}")
    return value


def _as_float32_matrix(X: Any) -> np.ndarray:
    """Validate a 2-D finite numeric array and return it as float32 (no copy when possible)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X must contain at least one sample, got 0")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.issubdtype(
        X.dtype, np.complexfloating
    ):
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    X = np.asarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values (or values too large for float32)")
    return X


def _check_tensor(X: torch.Tensor) -> torch.Tensor:
    """Torch counterpart of :func:`_as_float32_matrix` (stays on the tensor's device)."""
    if X.dim() != 2:
        raise ValueError(
            f"X must be a 2-D tensor (n_samples, n_features), got shape {tuple(X.shape)}"
        )
    if X.shape[0] == 0:
        raise ValueError("X must contain at least one sample, got 0")
    if X.is_complex():
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    X = X.detach().to(torch.float32)
    if not bool(torch.isfinite(X).all()):
        raise ValueError("X contains NaN or infinite values (or values too large for float32)")
    return X


def _start_index(n: int, first: int | None, random_state: RandomState) -> int:
    if first is None:
        return int(check_generator(random_state).integers(n))
    return _check_int(first, "first", 0, n - 1)


# --------------------------------------------------------------------------------------------
# BLAS threading
# --------------------------------------------------------------------------------------------

_blas_controller: Any = None
_blas_controller_failed = False


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run the enclosed block with one BLAS thread, where threadpoolctl is available.

    The greedy loop issues many small matrix-vector products; waking BLAS worker threads for each
    costs more than it saves (several times more when the cores are busy, e.g. with a training
    loop), so one thread is both faster and kinder to the rest of the process.
    """
    global _blas_controller, _blas_controller_failed
    if _blas_controller is None and not _blas_controller_failed:
        try:
            from threadpoolctl import ThreadpoolController

            _blas_controller = ThreadpoolController()
        except Exception:  # threadpoolctl missing or unable to inspect the process
            _blas_controller_failed = True
            logger.debug("threadpoolctl unavailable; BLAS keeps its default thread count")
    if _blas_controller is None:
        yield
        return
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


# --------------------------------------------------------------------------------------------
# Greedy k-center
# --------------------------------------------------------------------------------------------


def _greedy_numpy(X: np.ndarray, k: int, first: int) -> np.ndarray:
    """Greedy k-center on a validated float32 matrix; returns int64 indices.

    Squared distances come from one matrix-vector product per step on augmented matrices:
    with ``A = [-2 X, ||x||^2]`` (stored transposed, shape (d + 1, n)) and ``b_c = [x_c, 1]``,
    ``b_c . A = ||x||^2 - 2 x . x_c``; subtracting the entry of ``c`` itself (which equals
    ``-||x_c||^2`` up to rounding) gives ``||x - x_c||^2`` with an exact zero at ``c`` (and, as
    BLAS kernels compute identical columns identically, at every row identical to ``x_c``).

    The running minimum is not clamped at zero in the loop; instead, the clamped semantics are
    reproduced exactly: while the largest running distance is positive, ``argmax`` of the clamped
    and unclamped vectors agree, and once it is <= 0 every unchosen point is at distance 0, so the
    remaining picks are the unchosen indices in increasing order.
    """
    n, d = X.shape
    out = np.empty(k, dtype=np.int64)
    out[0] = first
    if k == 1:
        return out

    X = X - X.mean(axis=0, dtype=np.float64).astype(np.float32)  # centring reduces cancellation
    A_T = np.empty((d + 1, n), dtype=np.float32)  # (d + 1, n)
    np.multiply(X.T, -2.0, out=A_T[:d])
    np.einsum("ij,ij->i", X, X, out=A_T[d])
    B = np.empty((n, d + 1), dtype=np.float32)  # (n, d + 1)
    B[:, :d] = X
    B[:, d] = 1.0
    del X

    min_dist = np.full(n, np.inf, dtype=np.float32)
    buf = np.empty(n, dtype=np.float32)
    dot, minimum = np.dot, np.minimum
    c = first
    with _single_threaded_blas():
        for i in range(1, k):
            dot(B[c], A_T, out=buf)
            buf -= buf[c]
            minimum(min_dist, buf, out=min_dist)
            c = min_dist.argmax()
            if not min_dist[c] > 0.0:
                # Every point is covered exactly: take the first unchosen indices.
                unchosen = np.ones(n, dtype=bool)
                unchosen[out[:i]] = False
                out[i:] = np.flatnonzero(unchosen)[: k - i]
                break
            out[i] = c
    return out


def _greedy_numpy_many(X: np.ndarray, k: int, firsts: np.ndarray) -> np.ndarray:
    """:func:`_greedy_numpy` on ``S`` independent problems at once; returns (S, k) int64.

    Each step is one stacked vector-matrix product and a handful of (S, n) array operations for
    all problems, so numpy's per-call overhead, which dominates the single loop at the sizes of a
    training step, is paid once per step rather than once per problem. The arithmetic of each
    problem is that of :func:`_greedy_numpy`, so the picks are identical.
    """
    S, n, d = X.shape
    if S == 1:  # the single loop has less overhead per pick (about 3x at n = 512)
        return _greedy_numpy(X[0], k, int(firsts[0]))[None]
    out = np.empty((S, k), dtype=np.int64)
    out[:, 0] = firsts
    if k == 1:
        return out

    A_T = np.empty((S, d + 1, n), dtype=np.float32)  # (S, d + 1, n)
    B = np.empty((S, n, d + 1), dtype=np.float32)  # (S, n, d + 1)
    for s in range(S):  # set-up per problem, exactly as in the single version
        Xs = X[s] - X[s].mean(axis=0, dtype=np.float64).astype(np.float32)
        np.multiply(Xs.T, -2.0, out=A_T[s, :d])
        np.einsum("ij,ij->i", Xs, Xs, out=A_T[s, d])
        B[s, :, :d] = Xs
        B[s, :, d] = 1.0

    rows = np.arange(S)
    min_dist = np.full((S, n), np.inf, dtype=np.float32)
    buf = np.empty((S, 1, n), dtype=np.float32)
    flat = buf[:, 0, :]  # (S, n) view
    finished = np.zeros(S, dtype=bool)
    c = np.asarray(firsts, dtype=np.int64)
    with _single_threaded_blas():
        for i in range(1, k):
            np.matmul(B[rows, c][:, None, :], A_T, out=buf)  # (S, 1, n)
            flat -= flat[rows, c][:, None]
            np.minimum(min_dist, flat, out=min_dist)
            c = min_dist.argmax(axis=1)
            covered = ~(min_dist[rows, c] > 0.0) & ~finished
            for s in np.flatnonzero(covered):
                # Every point of problem s is covered exactly: take the first unchosen indices.
                unchosen = np.ones(n, dtype=bool)
                unchosen[out[s, :i]] = False
                out[s, i:] = np.flatnonzero(unchosen)[: k - i]
                finished[s] = True
            out[~finished, i] = c[~finished]
    return out


def greedy_k_center_many(
    X: np.ndarray | torch.Tensor,
    k: int,
    *,
    random_state: RandomState = None,
    first: Any = None,
) -> np.ndarray:
    """Greedy k-center on a stack of independent point sets, in one pass.

    The same picks as ``[greedy_k_center(X[s], k, first=first[s]) for s in range(S)]``, several
    times faster for the small problems of a training step (hundreds of candidates), where
    numpy's per-call overhead rather than arithmetic sets the time.

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_sets, n_samples, n_features)
        Finite real values (a tensor is copied to the CPU).
    k : int
        Points to choose in each set, ``1 <= k <= n_samples``.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, default=None
        Draws the starting indices when ``first`` is None: one call to ``integers`` per set, in
        order, as the same number of :func:`greedy_k_center` calls would.
    first : sequence of int, optional
        Starting index of each set; overrides ``random_state``.

    Returns
    -------
    numpy.ndarray of int64, shape (n_sets, k)

    Raises
    ------
    ValueError
        If ``X`` is not 3-D, is empty or holds NaN/inf, or if ``k`` or ``first`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[[0.0, 0.0], [0.1, 0.0], [5.0, 0.0]], [[0.0, 0.0], [3.0, 0.0], [3.1, 0.0]]])
    >>> greedy_k_center_many(X, 2, first=[0, 0]).tolist()
    [[0, 2], [0, 2]]
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"X must be 3-D (n_sets, n_samples, n_features), got shape {X.shape}")
    S, n, d = X.shape
    if S == 0 or n == 0 or d == 0:
        raise ValueError(f"X must not be empty, got shape {X.shape}")
    Xf = _as_float32_matrix(X.reshape(S * n, d)).reshape(S, n, d)
    k = _check_int(k, "k", 1, n)
    if first is None:
        rng = check_generator(random_state)
        firsts = np.array([int(rng.integers(n)) for _ in range(S)], dtype=np.int64)
    else:
        firsts = np.asarray(first).reshape(-1)
        if len(firsts) != S:
            raise ValueError(f"first must hold one index per set ({S}), got {len(firsts)}")
        firsts = np.array([_check_int(f, "first", 0, n - 1) for f in firsts], dtype=np.int64)
    return _greedy_numpy_many(Xf, k, firsts)


def _greedy_torch(X: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """Greedy k-center in torch on the tensor's device, without host synchronisation.

    Same arithmetic and tie-breaking as :func:`_greedy_numpy`, written with explicit clamping
    and ``-inf`` markers for chosen points so that no step needs to read a value on the host.
    """
    n, d = X.shape
    device = X.device
    out = torch.empty(k, dtype=torch.long, device=device)
    out[0] = first
    if k == 1:
        return out

    X = X - X.mean(dim=0)
    A = torch.empty((n, d + 1), dtype=torch.float32, device=device)  # (n, d + 1)
    torch.mul(X, -2.0, out=A[:, :d])
    A[:, d] = (X * X).sum(dim=1)
    B = torch.empty((n, d + 1), dtype=torch.float32, device=device)  # (n, d + 1)
    B[:, :d] = X
    B[:, d] = 1.0
    del X

    min_dist = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
    buf = torch.empty((n, 1), dtype=torch.float32, device=device)
    idx = out[0:1]
    for i in range(1, k):
        torch.mm(A, B.index_select(0, idx).T, out=buf)  # (n, 1)
        buf -= buf.index_select(0, idx)
        buf.clamp_(min=0.0)
        torch.minimum(min_dist, buf.view(-1), out=min_dist)
        min_dist.index_fill_(0, idx, float("-inf"))
        out[i] = min_dist.argmax()
        idx = out[i : i + 1]
    return out


def greedy_k_center(
    X: ArrayT,
    k: int,
    *,
    random_state: RandomState = None,
    first: int | None = None,
) -> ArrayT:
    """Choose ``k`` rows of ``X`` with the greedy k-center algorithm.

    Starting from ``first`` (or a random index drawn from ``random_state``), the algorithm
    repeatedly adds the row whose Euclidean distance to its nearest chosen row is largest. The
    covering radius of the result is at most twice the optimal k-center radius.

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_samples, n_features)
        Finite real values. Computation is in float32 on centred data. A numpy array and a CPU
        tensor are processed with numpy (one BLAS thread); other tensors (CUDA) stay on their
        device and the loop never synchronises with the host.
    k : int
        Number of points to choose, ``1 <= k <= n_samples``. ``k == n_samples`` returns a
        permutation of all indices.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, default=None
        Draws the starting index when ``first`` is None (one call to ``integers``).
    first : int, optional
        Index of the first chosen point; overrides ``random_state``.

    Returns
    -------
    indices : numpy.ndarray of int64 or torch.LongTensor, shape (k,)
        Distinct row indices in the order they were chosen: a numpy array for numpy input, a
        LongTensor on ``X``'s device for tensor input. Once every point is at distance zero from
        the chosen set (duplicate rows), the remaining picks are the unchosen indices in
        increasing order.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D, is empty or holds NaN/inf, or if ``k`` or ``first`` is out of range.

    Notes
    -----
    Time O(n * k * d). Memory: one centred float32 copy of ``X`` in two layouts plus a few
    length-n vectors; never an n x n matrix. Squared distances are computed as
    ``||x||^2 - 2 x . c + ||c||^2`` with one matrix-vector product per step and clamped at 0.

    References
    ----------
    .. [1] O. Sener and S. Savarese, "Active Learning for Convolutional Neural Networks: A
       Core-Set Approach", ICLR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0]])
    >>> greedy_k_center(X, 3, first=0).tolist()
    [0, 2, 3]
    """
    if isinstance(X, torch.Tensor):
        Xt = _check_tensor(X)
        n = Xt.shape[0]
        k = _check_int(k, "k", 1, n)
        start = _start_index(n, first, random_state)
        if Xt.device.type == "cpu":
            return torch.from_numpy(_greedy_numpy(Xt.numpy(), k, start))
        return _greedy_torch(Xt, k, start)
    Xn = _as_float32_matrix(X)
    n = Xn.shape[0]
    k = _check_int(k, "k", 1, n)
    start = _start_index(n, first, random_state)
    return _greedy_numpy(Xn, k, start)


def _as_float64_numpy(X: Any) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = _check_tensor(X).cpu().numpy()
    return _as_float32_matrix(X).astype(np.float64)


def covering_radius(X: np.ndarray | torch.Tensor, indices: Any) -> float:
    """Largest Euclidean distance from a row of ``X`` to its nearest chosen row.

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_samples, n_features)
        The points (tensors are copied to the host).
    indices : array-like of int, shape (n_chosen,)
        Indices of the chosen rows (repeats are allowed).

    Returns
    -------
    float
        ``max_i min_j ||X[i] - X[indices[j]]||``, computed in float64, in row chunks so that
        memory stays O(chunk * n_chosen). The nearest centre of each row is found with the
        ``||c||^2 - 2 x . c`` expansion and its distance recomputed from the difference, so a
        chosen row (or a duplicate of one) contributes exactly 0.

    Examples
    --------
    >>> import numpy as np
    >>> covering_radius(np.array([[0.0], [1.0], [3.0]]), [0, 2])
    1.0
    """
    Xd = _as_float64_numpy(X)
    n = Xd.shape[0]
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("indices must be a non-empty 1-D array of integers")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"indices must lie in [0, {n - 1}]")
    Xd = Xd - Xd.mean(axis=0)
    centres = Xd[idx]  # (m, d)
    centre_sq = np.einsum("ij,ij->i", centres, centres)
    chunk = max(1, _CHUNK_ENTRIES // idx.size)
    worst = 0.0
    for start in range(0, n, chunk):
        block = Xd[start : start + chunk]  # (b, d)
        d2 = block @ centres.T  # (b, m); ||c||^2 - 2 x . c ranks the centres for each row
        d2 *= -2.0
        d2 += centre_sq
        nearest = centres[d2.argmin(axis=1)]  # (b, d)
        # Exact distance to the nearest centre (no cancellation: 0 for a chosen row).
        diff = block - nearest
        worst = max(worst, float(np.einsum("ij,ij->i", diff, diff).max()))
    return float(np.sqrt(worst))


def pairwise_k_center_reference(
    X: ArrayT,
    k: int,
    *,
    random_state: RandomState = None,
    first: int | None = None,
) -> ArrayT:
    """Greedy k-center from the full n x n distance matrix: the textbook version, for checks.

    Builds every pairwise squared distance in float64 (``||x||^2 + ||y||^2 - 2 x . y`` on centred
    data, clamped at 0, exactly 0 between identical rows), then runs the same greedy loop as
    :func:`greedy_k_center` with the same tie-breaking (chosen points excluded, first index
    wins ties). It uses O(n^2) memory and time and exists to validate and benchmark
    :func:`greedy_k_center`: for the same start both choose the same points (up to float32
    rounding in near ties).

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_samples, n_features)
        Finite real values (tensors are processed on the host).
    k : int
        Number of points to choose, ``1 <= k <= n_samples``.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, default=None
        Draws the starting index when ``first`` is None, exactly as in :func:`greedy_k_center`.
    first : int, optional
        Index of the first chosen point.

    Returns
    -------
    indices : numpy.ndarray of int64 or torch.LongTensor, shape (k,)
        Same type (and device) convention as :func:`greedy_k_center`.
    """
    is_tensor = isinstance(X, torch.Tensor)
    device = X.device if is_tensor else None
    Xd = _as_float64_numpy(X)
    n = Xd.shape[0]
    k = _check_int(k, "k", 1, n)
    start = _start_index(n, first, random_state)

    Xd = Xd - Xd.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xd, Xd)
    dist = Xd @ Xd.T  # (n, n)
    dist *= -2.0
    dist += sq[:, None]
    dist += sq[None, :]
    np.maximum(dist, 0.0, out=dist)
    # Identical rows (and each row with itself) are at distance exactly 0; the expansion above
    # leaves rounding noise there.
    np.fill_diagonal(dist, 0.0)
    _, group, counts = np.unique(Xd, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    for g in np.flatnonzero(counts > 1):
        members = np.flatnonzero(group == g)
        dist[np.ix_(members, members)] = 0.0

    out = np.empty(k, dtype=np.int64)
    min_dist = np.full(n, np.inf)
    c = start
    for i in range(k):
        out[i] = c
        np.minimum(min_dist, dist[c], out=min_dist)
        min_dist[c] = -np.inf
        c = int(min_dist.argmax())
    if is_tensor:
        return torch.from_numpy(out).to(device)
    return out


#: ``check_random_state``, this module's old name of :func:`check_generator`, warns when read.
__getattr__, __dir__ = moved_names(
    globals(), {"check_random_state": "coreset_meg.coreset.kcenter:check_generator"}
)
