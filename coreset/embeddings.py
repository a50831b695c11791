"""Embeddings of training images for core-set selection, with a content-keyed disk cache.

Small-GAN embeds every training image once (Inception pool3 features), projects the embeddings
to a low dimension and caches them. An embedder here is any callable mapping a batch of samples
to a float32 matrix, with a stable ``identity`` string that names everything its output depends
on (used in cache keys).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from common import atomic_path, progress

__all__ = [
    "Embedder",
    "PixelEmbedder",
    "TorchScriptEmbedder",
    "compute_embeddings",
    "embedding_cache_path",
]

logger = logging.getLogger(__name__)

# Bump when the cache file layout or the meaning of the key changes.
_CACHE_FORMAT = "coreset-embeddings-v1"


@runtime_checkable
class Embedder(Protocol):
    """What :func:`compute_embeddings` needs from an embedder."""

    @property
    def identity(self) -> str:
        """Stable string naming everything the output depends on (model, settings, version)."""
        ...

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Embed a batch of shape (b, ...) into a float32 matrix of shape (b, p)."""
        ...


class PixelEmbedder:
    """Flatten each sample to a float32 vector (the raw pixels as the embedding).

    Examples
    --------
    >>> import numpy as np
    >>> PixelEmbedder()(np.zeros((2, 1, 4, 4))).shape
    (2, 16)
    """

    @property
    def identity(self) -> str:
        """Stable name of this embedder."""
        return "pixels-v1"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Return ``batch`` reshaped to (b, -1) as float32."""
        batch = np.asarray(batch)
        return np.asarray(batch.reshape(len(batch), -1), dtype=np.float32)

    def __repr__(self) -> str:
        return "PixelEmbedder()"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TorchScriptEmbedder:
    """Embed images with any TorchScript feature extractor (e.g. the FID Inception network).

    Images arrive as floats in [-1, 1] of shape (N, C, H, W) with C in {1, 3} (or (N, H, W) for
    grey images). Each batch is mapped to 0..255, grey images are repeated to three channels,
    resized bilinearly to ``image_size`` x ``image_size``, scaled as ``x / 128 - 1`` (the input
    convention of the FID Inception network) and passed through the model; its output is
    flattened to (N, p).

    Parameters
    ----------
    path : str or os.PathLike
        TorchScript file; it is loaded (onto ``device``) and hashed when the embedder is built.
    image_size : int, default=299
        Side of the square images fed to the model.
    device : str or torch.device, default="cpu"
        Where the model runs.

    Attributes
    ----------
    sha256 : str
        Hex SHA-256 of the model file, part of :attr:`identity`.

    Raises
    ------
    ValueError
        If the file is missing or is not a loadable TorchScript module (one-line message).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        image_size: int = 299,
        device: str | torch.device = "cpu",
    ):
        self.path = Path(path)
        if int(image_size) < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.image_size = int(image_size)
        self.device = torch.device(device)
        if not self.path.is_file():
            raise ValueError(f"TorchScript model file not found: {self.path}")
        try:
            with warnings.catch_warnings():
                # TorchScript is the format of the shared feature extractors; recent torch
                # releases flag torch.jit as deprecated, which users cannot act on here.
                warnings.filterwarnings(
                    "ignore", "`torch.jit.load` is deprecated", DeprecationWarning
                )
                model = torch.jit.load(str(self.path), map_location=self.device)
        except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors, ...
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(
                f"could not load TorchScript model {self.path}: {first_line}"
            ) from None
        self.model = model.eval()
        self.sha256 = _sha256_file(self.path)

    @property
    def identity(self) -> str:
        """``torchscript-v1:sha256=<hash of the file>:image_size=<size>``."""
        return f"torchscript-v1:sha256={self.sha256}:image_size={self.image_size}"

    def preprocess(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Turn images in [-1, 1] into the model's input, (N, 3, image_size, image_size)."""
        x = torch.as_tensor(batch).to(device=self.device, dtype=torch.float32)
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"images must have shape (N, C, H, W) with C in {{1, 3}}, got {tuple(x.shape)}"
            )
        x = ((x + 1.0) * 127.5).clamp_(0.0, 255.0)  # [-1, 1] -> 0..255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x / 128.0 - 1.0  # (N, 3, S, S)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed a batch of images; returns float32 of shape (N, p) on the host."""
        out = self.model(self.preprocess(batch))
        return out.reshape(out.shape[0], -1).float().cpu().numpy()

    def __repr__(self) -> str:
        return (
            f"TorchScriptEmbedder({str(self.path)!r}, image_size={self.image_size}, "
            f"device={str(self.device)!r})"
        )


def _data_digest(X: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes."""
    X = np.ascontiguousarray(X)
    if X.dtype.hasobject:
        raise ValueError("cannot hash an array of Python objects; pass a numeric array")
    digest = hashlib.sha256()
    digest.update(f"shape={X.shape};dtype={X.dtype.str};".encode())
    digest.update(X.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def embedding_cache_path(
    X: np.ndarray | torch.Tensor, embedder: Embedder, cache_dir: str | os.PathLike[str]
) -> Path:
    """Path of the cache file :func:`compute_embeddings` uses for ``X`` and ``embedder``.

    The file name is the SHA-256 of the cache format version, the data (shape, dtype and bytes)
    and the embedder's identity, so changing any of them selects another file.
    """
    key = hashlib.sha256(
        f"{_CACHE_FORMAT}\n{_data_digest(_to_numpy(X))}\n{embedder.identity}".encode()
    ).hexdigest()
    return Path(cache_dir) / f"embeddings-{key}.npy"


def _to_numpy(X: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return np.asarray(X)


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    """Cached embeddings at ``path``, or None when absent or unusable (logged)."""
    if not path.is_file():
        return None
    try:
        emb = np.load(path, allow_pickle=False)
    except Exception as exc:  # truncated or garbage file: numpy raises several types
        logger.warning("ignoring unreadable embedding cache %s (%s); recomputing", path, exc)
        return None
    if (
        not isinstance(emb, np.ndarray)
        or emb.ndim != 2
        or emb.shape[0] != n
        or emb.dtype != np.float32
        or not np.isfinite(emb).all()
    ):
        logger.warning("ignoring malformed embedding cache %s; recomputing", path)
        return None
    return emb


def _write_cache(path: Path, emb: np.ndarray) -> None:
    """Write ``emb`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, emb, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def compute_embeddings(
    X: np.ndarray | torch.Tensor,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    cache_dir: str | os.PathLike[str] | None = None,
    verbose: bool = True,
) -> np.ndarray:
    """Embed every sample of ``X`` in batches, optionally through a content-keyed disk cache.

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_samples, ...)
        The samples (for images: floats in [-1, 1], (N, C, H, W)).
    embedder : Embedder
        E.g. :class:`PixelEmbedder` or :class:`TorchScriptEmbedder`.
    batch_size : int, default=256
        Samples per call to ``embedder``. Not part of the cache key: embeddings do not depend
        on it (beyond floating-point rounding).
    cache_dir : str or os.PathLike, optional
        Folder of the cache. The file is named by a hash of the data (shape, dtype and bytes)
        and the embedder identity (see :func:`embedding_cache_path`), so a stale cache is never
        read; it is written atomically, and an unreadable or malformed file is recomputed.
    verbose : bool, default=True
        Show a progress bar (only on a terminal).

    Returns
    -------
    numpy.ndarray of shape (n_samples, p), float32

    Examples
    --------
    >>> import numpy as np
    >>> compute_embeddings(np.ones((3, 2, 2)), PixelEmbedder(), verbose=False).shape
    (3, 4)
    """
    Xn = _to_numpy(X)
    if Xn.ndim < 1 or len(Xn) == 0:
        raise ValueError("X must contain at least one sample")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    n = len(Xn)

    path = None
    if cache_dir is not None:
        path = embedding_cache_path(Xn, embedder, cache_dir)
        cached = _read_cache(path, n)
        if cached is not None:
            logger.info("read %d embeddings from cache %s", n, path)
            return cached

    with progress(n, "Embedding", enabled=verbose) as bar:
        parts = []
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out = np.asarray(embedder(Xn[start:stop]), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != stop - start:
                raise ValueError(
                    f"embedder returned shape {out.shape} for a batch of {stop - start} samples; "
                    "expected (batch, p)"
                )
            parts.append(out)
            bar.advance(stop - start)
    emb = np.concatenate(parts, axis=0)
    logger.info("computed %d embeddings of dimension %d", n, emb.shape[1])

    if path is not None:
        _write_cache(path, emb)
        logger.info("wrote embedding cache %s", path)
    return emb
