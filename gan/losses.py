"""MEG losses as pure functions of tensors (Kumar et al. 2019, arXiv 1901.08508).

Energy step::

    L_E = mean E(x_real) - mean E(G(z)) + lambda * mean ||grad_x E(x_real)||^2

Generator step (``T`` is trained on the same term)::

    L_G = mean E(G(z)) - I_JSD(G(z); z)

Optional: BigGAN's orthogonal regularisation ``sum_W ||W W^T * (1 - I)||_F^2``
(:func:`orthogonal_penalty`, Brock et al. 2019, arXiv 1809.11096).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "energy_loss",
    "generator_loss",
    "input_gradient_sq_norm",
    "jsd_mutual_information",
    "orthogonal_penalty",
    "weighted_mean",
]


def input_gradient_sq_norm(
    energy_net: nn.Module, x: torch.Tensor, *, create_graph: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies and true per-sample squared norms of ``grad_x E(x)``.

    The norm is taken over every input axis of a sample (not the channel axis alone).

    Returns
    -------
    energy : Tensor, shape (B,)
    sq_norm : Tensor, shape (B,)
    """
    x = x.detach().requires_grad_(True)
    energy = energy_net(x)
    (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
    return energy, grad.flatten(1).pow(2).sum(dim=1)


def weighted_mean(x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``x.mean()``, or with per-sample ``weights`` (B,) the weighted mean ``sum w x / sum w``
    (stratified core-set batches, :class:`coreset_meg.coreset.CoresetSampler`)."""
    if weights is None:
        return x.mean()
    return (weights * x).sum() / weights.sum()


def energy_loss(
    e_real: torch.Tensor,
    e_fake: torch.Tensor,
    grad_sq_norm: torch.Tensor,
    gp_weight: float,
    w_real: torch.Tensor | None = None,
    w_fake: torch.Tensor | None = None,
) -> torch.Tensor:
    """Energy-network loss with a zero-centred gradient penalty on real data; ``w_real`` and
    ``w_fake``: per-sample weights of the two batches (None: equal)."""
    return (
        weighted_mean(e_real, w_real)
        - weighted_mean(e_fake, w_fake)
        + gp_weight * weighted_mean(grad_sq_norm, w_real)
    )


def jsd_mutual_information(
    t_joint: torch.Tensor,
    t_marginal: torch.Tensor,
    w_joint: torch.Tensor | None = None,
    w_marginal: torch.Tensor | None = None,
) -> torch.Tensor:
    """Jensen-Shannon estimate of ``I(x; z)`` (Deep InfoMax).

    ``t_joint = T(G(z), z)`` on matched pairs; ``t_marginal = T(G(z), z_shuffled)`` with ``z``
    permuted across the batch; ``w_joint`` / ``w_marginal``: per-pair weights (None: equal).
    """
    return weighted_mean(-F.softplus(-t_joint), w_joint) - weighted_mean(
        F.softplus(t_marginal), w_marginal
    )


def generator_loss(
    e_fake: torch.Tensor,
    mutual_information: torch.Tensor,
    entropy_weight: float = 1.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generator loss: lower the energy of samples while keeping their entropy high;
    ``weights``: per-sample weights of ``e_fake`` (None: equal)."""
    return weighted_mean(e_fake, weights) - entropy_weight * mutual_information


def orthogonal_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """BigGAN's orthogonal regularisation: ``sum_W ||W W^T * (1 - I)||_F^2``.

    Each ``W`` is a weight reshaped to ``(out, -1)``; only the off-diagonal inner products of
    its rows are penalised (their norms are free), so the term is zero exactly when every
    weight's rows are mutually orthogonal. Multiply by the weight ``beta`` (BigGAN: 1e-4).

    Returns a scalar tensor (0 for no weights).
    """
    total = torch.zeros(())
    for w in weights:
        gram = w @ w.T  # (out, out)
        off = gram - torch.diag_embed(torch.diagonal(gram))
        total = total.to(off) + off.square().sum()
    return total
