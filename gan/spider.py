"""Spider GAN's input stage: the generator and ``T(x, z)`` take friendly samples, not latents.

A friendly prior (:class:`coreset_meg.coreset.friendly.FriendlyPrior`) draws images ``(B, C, H, W)``
or embeddings ``(B, p)``. An encoder maps them to the latent size, and the generator and the
statistics network of the mutual-information term are the usual ones behind it:
``G(s) = G_0(enc_G(s))`` and ``T(x, s) = T_0(x, enc_T(s))``, each with its own encoder, so the
entropy term is ``I(x; s)``, of the samples and the friendly inputs they came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .networks import _conv_features, _mlp, image_geometry

__all__ = [
    "ImageEncoder",
    "SpiderGenerator",
    "SpiderStatistics",
    "VectorEncoder",
    "input_encoder",
    "with_input_stage",
]


class ImageEncoder(nn.Module):
    """Images to latent vectors: ``(B, C, H, W) -> (B, latent)``, strided convolutions and a
    linear head (the energy network's shape, without normalisation)."""

    def __init__(self, shape: Sequence[int], latent_dim: int, width: int = 32):
        super().__init__()
        stages, base = image_geometry(shape)
        self.features, c = _conv_features(int(shape[0]), width, stages)
        self.head = nn.Linear(c * base * base, latent_dim)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(s).flatten(1))


class VectorEncoder(nn.Module):
    """Embeddings (or any input, flattened) to latent vectors: a learned map, one hidden layer:
    ``(B, *shape) -> (B, latent)``."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: int = 256):
        super().__init__()
        self.net = _mlp([in_dim, hidden, latent_dim])

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s.flatten(1))


def input_encoder(shape: Sequence[int], latent_dim: int, width: int | None = None) -> nn.Module:
    """:class:`ImageEncoder` for 1- or 3-channel square images the conv nets take, else
    :class:`VectorEncoder` on the flattened input. ``width`` (the networks' width setting) caps
    the encoder's base channels at 32 and sets its hidden units (default 256)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        try:
            image_geometry(shape)
            return ImageEncoder(shape, latent_dim, min(width or 32, 32))
        except ValueError:
            pass  # an image the conv stack cannot halve: flattened below
    size = 1
    for s in shape:
        size *= s
    return VectorEncoder(size, latent_dim, width or 256)


class SpiderGenerator(nn.Module):
    """``G(s) = generator(encoder(s))``: a latent-input generator behind an input encoder."""

    def __init__(self, encoder: nn.Module, generator: nn.Module):
        super().__init__()
        self.encoder, self.generator = encoder, generator

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoder(s))  # (B, *shape) -> (B, latent) -> (B, *data)


class SpiderStatistics(nn.Module):
    """``T(x, s) = statistics(x, encoder(s))``: the mutual-information term's network, taking
    the friendly input where it took ``z``."""

    def __init__(self, encoder: nn.Module, statistics: nn.Module):
        super().__init__()
        self.encoder, self.statistics = encoder, statistics

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.statistics(x, self.encoder(s))


def with_input_stage(
    generator: nn.Module,
    stats_net: nn.Module,
    input_shape: Sequence[int],
    latent_dim: int,
    width: int | None = None,
) -> tuple[SpiderGenerator, SpiderStatistics]:
    """The generator and ``T`` of :func:`~coreset_meg.gan.networks.build_networks`, each behind its
    own :func:`input_encoder` of inputs shaped ``input_shape`` (the prior's draws)."""
    return (
        SpiderGenerator(input_encoder(input_shape, latent_dim, width), generator),
        SpiderStatistics(input_encoder(input_shape, latent_dim, width), stats_net),
    )
