"""Lottery tickets and augmentation for small data sets: pruning masks, DiffAugment, AdvAug.

Three techniques of data-efficient GAN training, each an option of
:class:`~coreset_meg.gan.MEGTrainer` (settings group :class:`~coreset_meg.gan.config.Tickets`) and
of :class:`~coreset_meg.anomaly.MEGDetector`:

- **Lottery tickets** (:func:`find_ticket`, :class:`WeightMasks`): iterative magnitude pruning.
  Each round trains, removes ``prune_rate`` of the remaining weights of ``G`` (and of ``E`` with
  ``prune_energy``) by global magnitude, and rewinds the survivors to their initial values; ``E``
  is reset to its initial weights every round. The sparse network (the "ticket") is then trained
  on the same, small data set. Masks are kept through training by zeroing the gradients of
  pruned weights (Adam then never moves them) and re-applied after every iteration.
- **DiffAugment** (:class:`DiffAugment`): colour, translation and cutout, differentiable, drawn
  afresh for every batch, applied to real and generated images before ``E`` in both updates
  (the trainer's ``augment`` seam).
- **AdvAug** (:class:`AdvAug`): one signed-gradient step of size ``step`` in the max-norm on
  intermediate features of ``E`` (energy update) and ``G`` (generator update), in the direction
  that raises that player's loss; each player's loss is the average of its clean and perturbed
  passes (loss terms of the trainer).

E is the detector here, where a GAN's discriminator is thrown away: an augmentation that E
learns to call normal (a shifted or partly erased digit) is normal to the detector as well.

References
----------
Chen, Cheng, Gan, Liu, Wang. Data-Efficient GAN Training Beyond (Just) Augmentations: A Lottery
Ticket Perspective. NeurIPS 2021, arXiv:2103.00397.
Zhao, Liu, Lin, Zhu, Han. Differentiable Augmentation for Data-Efficient GAN Training.
NeurIPS 2020, arXiv:2006.10738.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .losses import generator_loss, jsd_mutual_information

if TYPE_CHECKING:
    from .config import MEGConfig
    from .trainer import MEGTrainer, StepResult

__all__ = [
    "AUGMENTATIONS",
    "AdvAug",
    "DiffAugment",
    "WeightMasks",
    "advaug_terms",
    "feature_module",
    "find_ticket",
    "magnitude_prune",
    "prunable_weights",
    "signed_gradient_step",
]

#: Layers whose weights are pruned (biases and normalisation layers are kept).
PRUNABLE = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


# ------------------------------------------------------------------------ lottery tickets
def prunable_weights(net: nn.Module) -> dict[str, nn.Parameter]:
    """The weight tensors of ``net``'s linear and convolutional layers, by ``"<module>.weight"``
    (the original weight of a spectrally normalised layer)."""
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, PRUNABLE):
            if parametrize.is_parametrized(module, "weight"):
                out[f"{name}.weight"] = module.parametrizations.weight.original
            else:
                out[f"{name}.weight"] = module.weight
    return out


def magnitude_prune(
    weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None, rate: float
) -> dict[str, torch.Tensor]:
    """Global magnitude pruning: the masks with ``round(rate * kept)`` more weights removed.

    Among the weights the masks still keep (all of them when ``masks`` is None), those of the
    smallest magnitude over all tensors together are removed. Returns new boolean masks.
    """
    if masks is None:
        masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()}
    names = list(weights)
    flat_masks = torch.cat([masks[k].flatten() for k in names])
    scores = torch.cat([weights[k].detach().abs().flatten() for k in names])
    scores = scores.masked_fill(~flat_masks, float("inf"))  # a pruned weight is never picked
    n_remove = int(round(rate * int(flat_masks.sum())))
    flat_masks = flat_masks.clone()
    if n_remove:
        flat_masks[torch.topk(scores, n_remove, largest=False).indices] = False
    out, start = {}, 0
    for k in names:
        n = weights[k].numel()
        out[k] = flat_masks[start : start + n].view_as(weights[k])
        start += n
    return out


# A net of the trainer and the weight averages that follow it.
_FOLLOWERS = {"generator": ("generator_avg",), "energy_net": ("energy_avg",)}


class WeightMasks:
    """Pruning masks of the trainer's networks; a :class:`~coreset_meg.gan.Callback` once attached.

    Parameters
    ----------
    masks : dict, optional
        ``{"generator" | "energy_net": {weight name: bool mask}}`` (:func:`prunable_weights`'
        names); empty: nothing is pruned.
    """

    def __init__(self, masks: dict[str, dict[str, torch.Tensor]] | None = None):
        self.masks = masks or {}

    def pruned(self, trainer: MEGTrainer, rate: float, nets=("generator",)) -> WeightMasks:
        """New masks removing ``rate`` of the weights still kept in each of ``nets``, by the
        magnitude of ``trainer``'s trained weights."""
        masks = {}
        for name in nets:
            weights = prunable_weights(getattr(trainer, name))
            old = self.masks.get(name)
            old = None if old is None else {k: m.to(weights[k].device) for k, m in old.items()}
            masks[name] = {k: m.cpu() for k, m in magnitude_prune(weights, old, rate).items()}
        return WeightMasks(masks)

    def _nets(self, trainer: MEGTrainer) -> Iterator[tuple[nn.Module, dict, bool]]:
        """``(network, its masks, whether it is trained)`` for the masked networks and their
        weight averages."""
        for name, masks in self.masks.items():
            yield getattr(trainer, name), masks, True
            for follower in _FOLLOWERS.get(name, ()):
                net = getattr(trainer, follower, None)
                if net is not None:
                    yield net, masks, False

    def attach(self, trainer: MEGTrainer) -> None:
        """Zero the pruned weights of ``trainer``'s networks (and their averages), keep them at
        zero through training (their gradients are masked) and add this as a callback."""
        for net, masks, trained in self._nets(trainer):
            for key, weight in prunable_weights(net).items():
                mask = masks[key].to(weight.device, weight.dtype)
                with torch.no_grad():
                    weight.mul_(mask)
                if trained:
                    weight.register_hook(lambda grad, m=mask: grad * m)
        if self.masks and self not in trainer.callbacks:
            trainer.callbacks.append(self)

    @torch.no_grad()
    def on_step_end(self, trainer: MEGTrainer, result: StepResult) -> None:
        """Zero the pruned weights again (they stay zero; this guards other seams)."""
        for net, masks, _ in self._nets(trainer):
            for key, weight in prunable_weights(net).items():
                weight.mul_(masks[key].to(weight.device, weight.dtype))

    def sparsity(self, name: str = "generator") -> float:
        """Share of the prunable weights of net ``name`` that are removed (0 when unmasked)."""
        masks = self.masks.get(name)
        if not masks:
            return 0.0
        kept = sum(int(m.sum()) for m in masks.values())
        return 1.0 - kept / sum(m.numel() for m in masks.values())


def find_ticket(
    trainer: MEGTrainer,
    X: np.ndarray,
    *,
    on_round: Callable[[int, MEGTrainer, WeightMasks], None] | None = None,
) -> WeightMasks:
    """Find a lottery ticket for ``trainer`` (untrained) on ``X`` and attach its masks.

    ``config.tickets.prune_rounds`` rounds: each trains a fresh trainer like ``trainer`` (same
    config with DiffAugment and AdvAug off, same seed, hence the same initial weights: the
    survivors are rewound and ``E`` is reset), then removes ``prune_rate`` of the remaining
    weights of ``G`` (and ``E`` with ``prune_energy``). ``trainer`` then holds the initial
    weights with the final masks, ready to ``fit``. The rounds use the built-in seams only
    (no custom prior, negatives, terms or callbacks), write no log or checkpoint, and add
    their training seconds to ``trainer.ticket_seconds``.

    ``on_round(round, trained_trainer, masks)`` is called after each round's training.
    """
    tickets = trainer.config.tickets
    if tickets.prune_energy and not prunable_weights(trainer.energy_net):
        raise ValueError("prune_energy needs an energy network with weights: network mlp or conv")
    nets = ("generator", "energy_net") if tickets.prune_energy else ("generator",)
    plain = dataclasses.replace(
        trainer.config, tickets=dataclasses.replace(tickets, diffaugment="none", advaug=0.0)
    )
    masks, seconds = WeightMasks(), 0.0
    for round_ in range(tickets.prune_rounds):
        start = time.perf_counter()
        rewound = type(trainer)(  # this module is imported by the trainer's: no import back
            plain, trainer.input_shape, device=trainer.device, random_state=trainer.seed,
            cache_dir=trainer.cache_dir,
        )  # fmt: skip
        masks.attach(rewound)
        rewound.fit(X)
        seconds += time.perf_counter() - start
        if on_round is not None:
            on_round(round_, rewound, masks)
        masks = masks.pruned(rewound, tickets.prune_rate, nets)
    masks.attach(trainer)
    trainer.ticket_seconds = seconds
    return masks


# ------------------------------------------------------------------------------ DiffAugment
def _brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + (_rand(x, gen) - 0.5)


def _saturation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, gen) * 2) + mean


def _contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, gen) + 0.5) + mean


def _rand(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(len(x), 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)


def _translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side, zero-padded (Zhao et al.'s code)."""
    b, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, (b, 1, 1), generator=gen, device=x.device)
    ty = torch.randint(-sy, sy + 1, (b, 1, 1), generator=gen, device=x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (B, H + 2, W + 2, C)
    return padded[gb, gx, gy].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the side at a random place in each image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen, device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen, device=x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


#: DiffAugment's policies: name -> the operations applied in order.
AUGMENTATIONS: dict[str, tuple[Callable[[torch.Tensor, torch.Generator], torch.Tensor], ...]] = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
}


class _RandomStream:
    """The state of an object's own random stream ``_gen`` (created on first use), saved in
    checkpoints so that a resumed fit draws what it would have."""

    _gen: torch.Generator | None

    def rng_state(self) -> torch.Tensor | None:
        """The stream's state, or None before its first draw."""
        return None if self._gen is None else self._gen.get_state()

    def set_rng_state(self, state: torch.Tensor, device: torch.device | str = "cpu") -> None:
        """Continue from ``state`` (:meth:`rng_state`), drawing on ``device``."""
        self._gen = torch.Generator(device=device)
        self._gen.set_state(state)


class DiffAugment(_RandomStream):
    """Differentiable augmentation of a batch of images ``(B, C, H, W)`` in [-1, 1].

    ``color``: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2)) and contrast (x U(0.5, 1.5));
    ``translation``: a shift of up to 1/8 of the side, zero-padded; ``cutout``: a zeroed
    square of half the side. Each image gets its own draw, from a generator seeded with
    ``random_state`` (global random states are left alone). Every operation is differentiable
    in the images; with an empty policy the batch is returned as it is.

    Parameters
    ----------
    policy : str, default="color,translation,cutout"
        Comma list of :data:`AUGMENTATIONS`' names; "" or "none": no augmentation.
    random_state : int, default=0
    shape : tuple of int, optional
        ``(C, H, W)``: batches given as rows (an MLP generator's output) are augmented as
        images of this shape and returned as rows.
    """

    def __init__(
        self,
        policy: str = "color,translation,cutout",
        random_state: int = 0,
        shape: tuple[int, ...] | None = None,
    ):
        names = [] if policy in ("", "none") else [p.strip() for p in policy.split(",")]
        unknown = [n for n in names if n not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown}: use {list(AUGMENTATIONS)}")
        self.policy = tuple(names)
        self.random_state = int(random_state)
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self._gen: torch.Generator | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy:
            return x
        if x.dim() == 2 and self.shape is not None:  # rows -> images -> rows
            return self(x.view(len(x), *self.shape)).flatten(1)
        if x.dim() != 4:
            raise ValueError(f"DiffAugment takes images (B, C, H, W), got shape {tuple(x.shape)}")
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device).manual_seed(self.random_state)
        for name in self.policy:
            for op in AUGMENTATIONS[name]:
                x = op(x, self._gen)
        return x.contiguous()


# ---------------------------------------------------------------------------------- AdvAug
def feature_module(net: nn.Module) -> nn.Module | None:
    """The module whose output AdvAug perturbs: a conv energy's feature stack, a conv
    generator's projection, else the middle activation of an MLP's layers; None when the net
    has no intermediate features (the core-set energy)."""
    for name in ("features", "project"):
        module = getattr(net, name, None)
        if isinstance(module, nn.Module):
            return module
    layers = getattr(net, "net", None)
    if isinstance(layers, nn.Sequential):
        acts = [m for m in layers if isinstance(m, nn.ReLU | nn.LeakyReLU)]
        if acts:
            return acts[(len(acts) - 1) // 2] if len(acts) > 1 else acts[0]
    return None


def signed_gradient_step(grad: torch.Tensor, step: float) -> torch.Tensor:
    """``step * sign(grad)``: every entry moves by ``step`` (max-norm ``step``; entries with a
    zero gradient stay)."""
    return step * grad.detach().sign()


class _Probe:
    """A forward hook on ``module``: keeps its output (``features``), or adds ``delta`` to it."""

    def __init__(self):
        self.features: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None

    def __call__(self, module, inputs, output):
        if self.delta is None:
            self.features = output
            return None
        return output + self.delta


@contextmanager
def _probe(module: nn.Module) -> Iterator[_Probe]:
    probe = _Probe()
    handle = module.register_forward_hook(probe)
    try:
        yield probe
    finally:
        handle.remove()


class AdvAug(_RandomStream):
    """AdvAug as a loss term of ``phase``: ``0.5 * (L(perturbed) - L(clean))`` is added to the
    trainer's loss, which makes it the average of the clean and perturbed losses.

    Both passes run on the same inputs (one fresh draw of the trainer's augmentation): a clean
    pass gives the gradient of the player's loss with respect to the intermediate features
    ``h`` (:func:`feature_module`), then a pass with ``h + step * sign(grad)``. Energy phase:
    ``E`` on the real and negative batches, loss ``mean E(real) - mean E(fake)`` (the gradient
    penalty stays on the clean pass); generator phase: ``G`` from the step's latents, loss
    :func:`~coreset_meg.gan.losses.generator_loss`. A net without intermediate features (the
    core-set energy) adds nothing.

    Attributes
    ----------
    last_delta : Tensor or None
        The last perturbation added to the features.
    """

    def __init__(self, step: float = 0.01, phase: str = "energy", random_state: int = 0):
        self.step, self.phase = float(step), phase
        self.random_state = int(random_state)
        self.last_delta: torch.Tensor | None = None
        self._gen: torch.Generator | None = None

    def __call__(self, trainer: MEGTrainer, **tensors: torch.Tensor) -> torch.Tensor:
        net = trainer.energy_net if self.phase == "energy" else trainer.generator
        module = feature_module(net)
        if module is None:
            return torch.zeros((), device=trainer.device)
        if self.phase == "energy":
            real = trainer.augmented(tensors["x_real"])
            fake = trainer.augmented(tensors["x_fake"])
            x = torch.cat([real, fake.reshape(len(fake), *real.shape[1:])]).detach()
            n = len(tensors["x_real"])

            def loss() -> torch.Tensor:
                e = net(x)  # (2B,)
                return e[:n].mean() - e[n:].mean()
        else:
            z = tensors["z"]
            if self._gen is None or self._gen.device != z.device:
                self._gen = torch.Generator(device=z.device).manual_seed(self.random_state)
            perm = torch.randperm(len(z), generator=self._gen, device=z.device)
            weight = trainer.config.objective.entropy_weight

            def loss() -> torch.Tensor:
                x_gen = net(z)
                mi = jsd_mutual_information(
                    trainer.stats_net(x_gen, z), trainer.stats_net(x_gen, z.index_select(0, perm))
                )
                return generator_loss(trainer.energy_net(trainer.augmented(x_gen)), mi, weight)

        with _probe(module) as probe:
            clean = loss()
            (grad,) = torch.autograd.grad(clean, probe.features, retain_graph=True)
            probe.delta = signed_gradient_step(grad, self.step)
            perturbed = loss()
        self.last_delta = probe.delta
        return 0.5 * (perturbed - clean)


def advaug_terms(config: MEGConfig, seed: int) -> list[AdvAug]:
    """The AdvAug loss terms of ``config`` (none when ``config.tickets.advaug`` is 0)."""
    step = config.tickets.advaug
    if not step:
        return []
    seed = int(np.random.SeedSequence([seed, 4]).generate_state(1)[0])
    return [AdvAug(step, "energy", seed), AdvAug(step, "generator", seed)]


def diff_augment(config: MEGConfig, input_shape: tuple[int, ...], seed: int) -> DiffAugment | None:
    """The trainer's DiffAugment of ``config`` (None when off); images only."""
    policy = config.tickets.diffaugment
    if policy in ("", "none"):
        return None
    if len(input_shape) != 3:
        raise ValueError(
            f"diffaugment={policy!r} needs images (C, H, W) seen as pixels, got samples of shape "
            f"{tuple(input_shape)}"
        )
    seed = int(np.random.SeedSequence([seed, 3]).generate_state(1)[0])
    return DiffAugment(policy, seed, shape=tuple(input_shape))
