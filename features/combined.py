"""Features of an image and its mirror image, and of several extractors side by side.

Two cheap ways to better features from the same pretrained networks, measured on CIFAR-10
one-class validation by ``benchmarks/bench_ensembles.py``:

- :class:`MirrorMean` (``"mirror:NAME"``): the mean of the unit-length features of each image
  and of its mirror image (left-right). A photo's class does not change in a mirror, so the
  mean keeps what the two views share and evens out what depends on the direction the object
  faces. It costs two passes of the network.
- :class:`JoinedFeatures` (``"A+B"``): the unit-length features of each extractor, side by side
  and divided by the square root of their number, so that the row is unit length and every
  extractor weighs alike in a distance.

:func:`coreset_meg.features.make_embedder` builds them from their names
(``"mirror:efficientnet-lite0+mirror:efficientnet-lite1@240"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from coreset_meg.features.embeddings import Embedder, unit_length, unit_rows

__all__ = ["JoinedFeatures", "MirrorMean"]


def _mirrored(batch: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Images (N, C, H, W) or (N, H, W) mirrored left-right (the last axis is the width)."""
    if isinstance(batch, torch.Tensor):
        return batch.flip(-1)
    return np.ascontiguousarray(np.asarray(batch)[..., ::-1])


class MirrorMean:
    """The mean of the unit-length features of each image and of its mirror image.

    Parameters
    ----------
    inner : Embedder
        The extractor run on both (it takes channels-first images, as every embedder does).

    Examples
    --------
    >>> from coreset_meg.features.embeddings import PixelEmbedder
    >>> images = np.array([[[[0.0, 3.0], [4.0, 0.0]]]])  # one 2x2 grey image
    >>> print(MirrorMean(PixelEmbedder())(images).round(2))
    [[0.3 0.3 0.4 0.4]]
    """

    def __init__(self, inner: Embedder):
        self.inner = inner

    @property
    def identity(self) -> str:
        return f"mirror-mean-v1({self.inner.identity})"

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        direct = unit_length(self.inner(batch))
        return (direct + unit_length(self.inner(_mirrored(batch)))) / 2

    def module(self) -> nn.Module:
        """The torch module of the same features (see ``FeatureEmbedder.module``)."""
        return _MirrorModule(self.inner.module())

    def __repr__(self) -> str:
        return f"MirrorMean({self.inner!r})"


class JoinedFeatures:
    """Several extractors' unit-length features side by side, divided by the square root of
    their number (each row is unit length; each extractor weighs alike in a distance).

    Parameters
    ----------
    members : sequence of Embedder
        At least two.
    """

    def __init__(self, members: Sequence[Embedder]):
        if len(members) < 2:
            raise ValueError(f"joined features need at least two extractors, got {len(members)}")
        self.members = list(members)

    @property
    def identity(self) -> str:
        return "joined-v1(" + " + ".join(m.identity for m in self.members) + ")"

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        parts = [unit_length(m(batch)) for m in self.members]
        return np.concatenate(parts, axis=1) / np.float32(math.sqrt(len(parts)))

    def module(self) -> nn.Module:
        """The torch module of the same features (see ``FeatureEmbedder.module``)."""
        return _JoinedModule([m.module() for m in self.members])

    def __repr__(self) -> str:
        return f"JoinedFeatures({self.members!r})"


class _MirrorModule(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (unit_rows(self.inner(x)) + unit_rows(self.inner(x.flip(-1)))) / 2


class _JoinedModule(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [unit_rows(m(x)) for m in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))
