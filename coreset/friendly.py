"""Spider GAN's generator inputs: samples of a friendly data set, or a trained generator's output.

Spider GAN (Asokan and Seelamantula, CVPR 2023) feeds the generator images of a related
("friendly") data set instead of Gaussian noise; cascading feeds it the samples of a generator
trained before. Both are :class:`~coreset_meg.coreset.Prior` objects, so the core-set sampler
selects among their draws (flattened) exactly as among latent vectors, and the trainer feeds them to
the generator's input stage (:mod:`coreset_meg.gan.spider`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from coreset_meg.coreset.sampler import Prior

__all__ = ["FriendlyPrior", "GeneratorPrior"]


class FriendlyPrior:
    """Draw samples of a fixed friendly set, uniformly with replacement.

    Parameters
    ----------
    samples : array-like of shape (n_samples, ...)
        The friendly set: images (N, C, H, W) in [-1, 1] or embeddings (N, p), as the
        generator's input stage expects them. Copied to float32 once.
    name : str, default="friendly"
        What the set is (shown in ``repr``).

    Attributes
    ----------
    shape : tuple of int
        Shape of one draw, ``samples.shape[1:]``.

    Notes
    -----
    ``draw(n, generator)`` takes ``n`` indices from ``torch.randint`` on ``generator`` (its
    only randomness), so a seeded generator gives the same draws; each draw is a uniform pick, so
    every sample is drawn once about ``n_samples * log(n_samples)`` draws have been made.

    Examples
    --------
    >>> prior = FriendlyPrior(np.arange(12.0).reshape(6, 2), name="toy")
    >>> x = prior.draw(4, torch.Generator().manual_seed(0))
    >>> tuple(x.shape), prior.shape
    ((4, 2), (2,))
    """

    def __init__(self, samples, *, name: str = "friendly"):
        values = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        if values.ndim < 2 or len(values) == 0:
            raise ValueError(
                f"a friendly set needs shape (n_samples, ...), got {tuple(values.shape)}"
            )
        if not bool(torch.isfinite(values).all()):
            raise ValueError("the friendly set holds NaN or infinite values")
        self.samples = values.contiguous()  # (N, *shape), on the CPU
        self.shape = tuple(int(s) for s in values.shape[1:])
        self.name = name
        self._copies: dict[torch.device, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _on(self, device: torch.device) -> torch.Tensor:
        if device.type == "cpu":
            return self.samples
        if device not in self._copies:
            self._copies[device] = self.samples.to(device)
        return self._copies[device]

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        index = torch.randint(len(self.samples), (n,), generator=generator, device=device)
        return self._on(device).index_select(0, index)  # (n, *shape)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_copies": {}}  # device copies are rebuilt where needed

    def __repr__(self) -> str:
        return f"FriendlyPrior({self.name!r}, {len(self)} samples of shape {self.shape})"


class GeneratorPrior:
    """Cascading: a trained generator's samples as the next generator's input.

    Parameters
    ----------
    generator : torch.nn.Module
        The trained generator; it is put in eval mode and frozen (no gradient reaches it).
    prior : Prior
        What ``generator`` takes (its own training prior: latent vectors or a friendly set).

    Attributes
    ----------
    shape : tuple of int
        Shape of one of the generator's samples.

    Examples
    --------
    >>> from coreset_meg.coreset import LatentPrior
    >>> prior = GeneratorPrior(nn.Linear(3, 5), LatentPrior(3))
    >>> tuple(prior.draw(4, torch.Generator().manual_seed(0)).shape), prior.shape
    ((4, 5), (5,))
    """

    def __init__(self, generator: nn.Module, prior: Prior):
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a Prior, got {prior!r}")
        self.generator = generator.eval().requires_grad_(False)
        self.prior = prior
        probe = self.draw(2, torch.Generator().manual_seed(0))
        self.shape = tuple(int(s) for s in probe.shape[1:])

    def _device(self) -> torch.device:
        param = next(self.generator.parameters(), None)
        return torch.device("cpu") if param is None else param.device

    @torch.no_grad()
    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = self.prior.draw(n, generator)  # (n, *prior.shape)
        return self.generator(z.to(self._device())).to(generator.device)  # (n, *shape)

    def __repr__(self) -> str:
        return f"GeneratorPrior({type(self.generator).__name__}, {self.prior!r})"
