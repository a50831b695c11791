"""Per-sample scores from a trained energy network, in batches.

Both scores are higher for more anomalous samples: the energy ``E(x)`` and the squared norm of its
input gradient ``||grad_x E(x)||^2`` (the "score norm" MEG uses on KDDCUP99). Neither depends on
the other samples of a batch, so the batch size and order never change a sample's score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported when scores are computed: the command line starts fast
    import torch
    from torch import nn

__all__ = ["SCORES", "SCORE_TYPES", "energy_scores", "score_columns", "score_kinds"]

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
