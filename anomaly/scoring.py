"""Per-sample scores from a trained energy network, in batches.

Both scores are higher for more anomalous samples: the energy ``E(x)`` and the squared norm of its
input gradient ``||grad_x E(x)||^2`` (the "score norm" MEG uses on KDDCUP99). Neither depends on
the other samples of a batch, so the batch size and order never change a sample's score.

:func:`outlier_probability` turns such anomaly scores into PyOD's ``[P(normal), P(anomalous)]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported when scores are computed: the command line starts fast
    import torch
    from torch import nn

__all__ = [
    "SCORES",
    "SCORE_TYPES",
    "check_method",
    "energy_scores",
    "outlier_probability",
    "score_columns",
    "score_kinds",
]

SCORES = ("energy", "gradnorm")
#: The detector's score types: each single score, and their sum ("energy+gradnorm": the two
#: scores of each sample, each standardised on the training data, added).
SCORE_TYPES = (*SCORES, "energy+gradnorm")


def score_kinds(score_type: str) -> tuple[str, ...]:
    """The single scores a detector score type is made of.

    >>> score_kinds("energy+gradnorm")
    ('energy', 'gradnorm')
    """
    if score_type not in SCORE_TYPES:
        raise ValueError(f"score type must be one of {SCORE_TYPES}, got {score_type!r}")
    return tuple(score_type.split("+"))


def energy_scores(
    energy_net: nn.Module,
    X: np.ndarray,
    *,
    score: str = "energy",
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Anomaly scores (higher = more anomalous) of the samples ``X``, shape ``(n,)`` float64."""
    return score_columns(energy_net, X, (score,), batch_size=batch_size, device=device)[:, 0]


def score_columns(
    energy_net: nn.Module,
    X: np.ndarray,
    kinds: tuple[str, ...],
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Several single scores of the samples ``X`` in one pass, shape ``(n, len(kinds))`` float64.

    The gradient norm's pass computes the energy as well, so asking for both costs one pass.
    """
    import torch

    from coreset_meg.gan.losses import input_gradient_sq_norm

    for kind in kinds:
        if kind not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {kind!r}")
    energy_net.eval()
    out = np.empty((len(X), len(kinds)), dtype=np.float64)
    for start in range(0, len(X), batch_size):
        xb = torch.as_tensor(X[start : start + batch_size], dtype=torch.float32, device=device)
        if "gradnorm" in kinds:
            with torch.enable_grad():
                energy, sq_norm = input_gradient_sq_norm(energy_net, xb, create_graph=False)
            values = {"energy": energy, "gradnorm": sq_norm}
        else:
            with torch.no_grad():
                values = {"energy": energy_net(xb)}
        for j, kind in enumerate(kinds):
            out[start : start + len(xb), j] = values[kind].detach().double().cpu().numpy()
    return out


#: The methods of PyOD's outlier probabilities (``predict_proba``).
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
        Anomaly scores of the training samples (PyOD's ``decision_scores_``).
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
        from scipy.special import erf

        spread = max(float(train.std()), np.finfo(np.float64).tiny)
        with np.errstate(over="ignore"):
            anomalous = erf((scores - train.mean()) / (spread * np.sqrt(2.0)))
    anomalous = np.where(np.isnan(anomalous), 1.0, np.clip(anomalous, 0.0, 1.0))
    return np.column_stack([1.0 - anomalous, anomalous])
