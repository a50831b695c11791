"""Embeddings of training images for core-set selection, with a content-keyed disk cache.

Small-GAN embeds every training image once (Inception pool3 features), projects the embeddings
to a low dimension and caches them. An embedder here is any callable mapping a batch of samples
to a float32 matrix, with a stable ``identity`` string that names everything its output depends
on (used in cache keys). Pretrained image networks (EfficientNet-Lite0, the FID Inception, a
user's TorchScript or torchvision model) are in :mod:`coreset_meg.features.pretrained`; they all
take images through :func:`prepare_images`.

The cache writes embeddings in chunks, so an interrupted run continues with the first chunk it
had not finished, and a finished cache is read memory-mapped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from coreset_meg.common import atomic_path, distributed, first_line, progress, write_text_atomic
from coreset_meg.common.io import file_sha256 as common_file_sha256

__all__ = [
    "Embedder",
    "PixelEmbedder",
    "TorchScriptEmbedder",
    "compute_embeddings",
    "data_digest",
    "embedding_cache_path",
    "prepare_images",
    "unit_length",
]

logger = logging.getLogger(__name__)

# Bump when the cache file layout or the meaning of the key changes.
_CACHE_FORMAT = "coreset-embeddings-v2"
# Samples per cache chunk: what an interrupted run may have to recompute.
DEFAULT_CHUNK_SIZE = 2048


def unit_length(X: np.ndarray) -> np.ndarray:
    """``X`` as float32 with each sample (along axis 1) divided by its Euclidean length; a
    sample of zeros stays zero.

    Examples
    --------
    >>> unit_length(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.float32(1e-12))


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """:func:`unit_length` in torch (for modules that are traced or exported): each row of
    ``x`` divided by its Euclidean length; a row of zeros stays zero."""
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)


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


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return common_file_sha256(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, remembered per (path, size, modification time) in this process."""
    stat = os.stat(path)
    return _sha256_cached(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def load_torchscript(path: str | os.PathLike[str], device: str | torch.device = "cpu"):
    """Load a TorchScript module in eval mode, or raise a one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"TorchScript model file not found: {path}")
    try:
        with warnings.catch_warnings():
            # TorchScript is the format of the shared feature extractors; recent torch releases
            # flag torch.jit as deprecated, which users cannot act on here.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors, ...
        raise ValueError(f"could not load TorchScript model {path}: {first_line(exc)}") from None
    return model.eval()


def prepare_images(
    batch: np.ndarray | torch.Tensor, image_size: int, *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Turn a batch of images into float32 RGB values in 0..255 of side ``image_size``.

    Parameters
    ----------
    batch : numpy.ndarray or torch.Tensor of shape (N, C, H, W) with C in {1, 3}, or (N, H, W)
        ``uint8`` images are taken as 0..255; floating-point images as the project's model
        input in [-1, 1] (``x / 127.5 - 1``, see ``coreset_meg.datasets.to_model_input``), mapped
        back by ``(x + 1) * 127.5`` and clipped to 0..255. Channels come first.
    image_size : int
        Side of the square output; other sizes are resized with bilinear, antialiased
        interpolation (``align_corners=False``).
    device : str or torch.device, default="cpu"
        Where the result lives (the conversion and resizing run there).

    Returns
    -------
    torch.Tensor of shape (N, 3, image_size, image_size), float32 in 0..255
        Grey images are repeated to three channels.

    Examples
    --------
    >>> import numpy as np
    >>> x = prepare_images(np.full((2, 1, 8, 8), 255, dtype=np.uint8), 4)
    >>> tuple(x.shape), float(x.min()), float(x.max())
    ((2, 3, 4, 4), 255.0, 255.0)
    >>> float(prepare_images(np.zeros((1, 3, 4, 4), dtype=np.float32), 4)[0, 0, 0, 0])
    127.5
    """
    if isinstance(batch, np.ndarray) and not batch.flags.writeable:
        batch = batch.copy()  # e.g. slices of a read-only memory map: torch wants writable arrays
    x = torch.as_tensor(batch)
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (N, C, H, W) with C in {{1, 3}} or (N, H, W), got "
            f"{tuple(x.shape)} (channels-last arrays need .transpose(0, 3, 1, 2))"
        )
    if x.dtype == torch.uint8:
        x = x.to(device=device, dtype=torch.float32)  # 0..255 already
    elif x.is_floating_point():
        x = symmetric_to_0_255(x.to(device=device, dtype=torch.float32))
    else:
        raise ValueError(
            f"images must be uint8 (0..255) or floating point in [-1, 1], got {x.dtype}"
        )
    return rgb_of_side(x, int(image_size))


def symmetric_to_0_255(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] as 0..255 (clipped); plain tensor operations, so the exported
    feature module (:meth:`~coreset_meg.features.pretrained.FeatureEmbedder.module`) runs
    them as :func:`prepare_images` does."""
    return ((x + 1.0) * 127.5).clamp(0.0, 255.0)


def rgb_of_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) in 0..255 resized to ``size`` (bilinear, antialiased), grey ones
    repeated to three channels: (N, 3, size, size)."""
    if tuple(x.shape[2:]) != (size, size):
        # Resize before repeating grey channels: a third of the work. The weights are
        # non-negative and sum to one, so only rounding leaves 0..255.
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        ).clamp(0.0, 255.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # (N, 3, S, S)


class TorchScriptEmbedder:
    """Embed images with any TorchScript feature extractor (e.g. the FID Inception network).

    Images go through :func:`prepare_images` (``uint8`` 0..255 or floats in [-1, 1], grey
    repeated to three channels, resized bilinearly with antialiasing to ``image_size``), are
    scaled as ``x / 128 - 1`` (the input convention of the FID Inception network) and passed
    through the model; its output is flattened to (N, p). For the FID Inception at sizes other
    than 299 use :func:`coreset_meg.features.pretrained.fid_inception`: that file's own forward only
    takes 299.

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
        self.model = load_torchscript(self.path, self.device)
        self.sha256 = file_sha256(self.path)

    @property
    def identity(self) -> str:
        """``torchscript-v2:sha256=<hash of the file>:image_size=<size>``."""
        # v2: antialiased resizing (v1 did not antialias when shrinking).
        return f"torchscript-v2:sha256={self.sha256}:image_size={self.image_size}"

    def preprocess(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Turn images into the model's input, (N, 3, image_size, image_size)."""
        return prepare_images(batch, self.image_size, device=self.device) / 128.0 - 1.0

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


def data_digest(X: np.ndarray) -> str:
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
        f"{_CACHE_FORMAT}\n{data_digest(_to_numpy(X))}\n{embedder.identity}".encode()
    ).hexdigest()
    return Path(cache_dir) / f"embeddings-{key}.npy"


def _to_numpy(X: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return np.asarray(X)


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    """The finished cache at ``path`` memory-mapped read-only, or None when absent or unusable."""
    if not path.is_file():
        return None
    try:
        emb = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # truncated or garbage file: numpy raises several types
        logger.warning("ignoring unreadable embedding cache %s (%s); recomputing", path, exc)
        return None
    if not _well_formed(emb, n):
        logger.warning("ignoring malformed embedding cache %s; recomputing", path)
        return None
    return emb


def _well_formed(emb: object, n: int, dim: int | None = None) -> bool:
    return (
        isinstance(emb, np.ndarray)
        and emb.ndim == 2
        and emb.shape[0] == n
        and emb.dtype == np.float32
        and (dim is None or emb.shape[1] == dim)
    )


def _write_npy(path: Path, emb: np.ndarray) -> None:
    """Write ``emb`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, emb, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _chunks_dir(path: Path) -> Path:
    """Folder of the finished chunks of an unfinished cache file ``path``."""
    return path.with_name(path.stem + ".parts")


def _open_chunks(folder: Path, manifest: dict[str, object]) -> int:
    """Prepare the chunk folder for ``manifest``; return the chunk size to use.

    A folder left by an interrupted run is kept when its manifest matches in everything but the
    chunk size (the folder's chunk size is then used); otherwise it is emptied and restarted.
    """
    manifest_path = folder / "manifest.json"
    try:
        old = json.loads(manifest_path.read_text())
        if {k: v for k, v in old.items() if k != "chunk_size"} == {
            k: v for k, v in manifest.items() if k != "chunk_size"
        } and int(old["chunk_size"]) >= 1:
            return int(old["chunk_size"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return int(manifest["chunk_size"])


def _chunk_path(folder: Path, index: int) -> Path:
    """The file of chunk ``index`` in a cache's ``.parts`` folder."""
    return folder / f"chunk-{index:06d}.npy"


def _finish_cache(path: Path, folder: Path, emb: np.ndarray) -> None:
    """Write the whole cache file ``path`` (atomically) and remove its chunk folder."""
    _write_npy(path, emb)
    shutil.rmtree(folder, ignore_errors=True)
    logger.info("wrote embedding cache %s", path)


def _read_chunk(path: Path, rows: int, dim: int | None) -> np.ndarray | None:
    """A finished chunk of ``rows`` embeddings, or None when absent or unusable."""
    if not path.is_file():
        return None
    try:
        chunk = np.load(path, allow_pickle=False)
    except Exception as exc:  # see _read_cache
        logger.warning("ignoring unreadable embedding chunk %s (%s)", path, exc)
        return None
    return chunk if _well_formed(chunk, rows, dim) else None


def _embed_rows(
    X: np.ndarray, start: int, stop: int, embedder: Embedder, batch_size: int, bar=None
) -> np.ndarray:
    """Embeddings of ``X[start:stop]``, ``batch_size`` samples per call, as one float32 array;
    ``bar`` (a :func:`~coreset_meg.common.progress` handle), when given, advances as they are
    made."""
    parts = []
    for lo in range(start, stop, batch_size):
        hi = min(lo + batch_size, stop)
        out = np.asarray(embedder(X[lo:hi]), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != hi - lo:
            raise ValueError(
                f"embedder returned shape {out.shape} for a batch of {hi - lo} samples; "
                "expected (batch, p)"
            )
        parts.append(out)
        if bar is not None:
            bar.advance(hi - lo)
    return np.concatenate(parts, axis=0)


def _log_computed(embedder: Embedder, n: int, dim: int) -> None:
    """Say that ``n`` embeddings were computed; only at debug level for the pixel embedder,
    whose "embeddings" are the samples' own values (a table's rows)."""
    level = logging.DEBUG if isinstance(embedder, PixelEmbedder) else logging.INFO
    logger.log(level, "computed %d embeddings of dimension %d with %s", n, dim, embedder.identity)


def compute_embeddings(
    X: np.ndarray | torch.Tensor,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    cache_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    verbose: bool = True,
) -> np.ndarray:
    """Embed every sample of ``X`` in batches, optionally through a content-keyed disk cache.

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_samples, ...)
        The samples (for images: ``uint8`` 0..255 or floats in [-1, 1], (N, C, H, W)).
    embedder : Embedder
        E.g. :class:`PixelEmbedder`, :class:`TorchScriptEmbedder`, or one from
        :func:`coreset_meg.features.pretrained.make_embedder`.
    batch_size : int, default=256
        Samples per call to ``embedder``. Not part of the cache key: embeddings do not depend
        on it (beyond floating-point rounding).
    cache_dir : str or os.PathLike, optional
        Folder of the cache. The file is named by a hash of the data (shape, dtype and bytes)
        and the embedder identity (see :func:`embedding_cache_path`), so a stale cache is never
        read. While embedding, every ``chunk_size`` samples are written (atomically) to a
        ``.parts`` folder beside it, with a small manifest; a run that was interrupted resumes
        after the last finished chunk. The finished array is written atomically and the folder
        removed. An unreadable or malformed file or chunk is recomputed.
    chunk_size : int, default=2048
        Samples per cache chunk (only with ``cache_dir``). A resumed run keeps the chunk size
        of the run it continues.
    verbose : bool, default=True
        Show a progress bar (only on a terminal).

    Returns
    -------
    numpy.ndarray of shape (n_samples, p), float32
        Read from the cache, a read-only memory map of the cache file (replace that file only
        by renaming onto it, as this module does, while such arrays are in use).

    Notes
    -----
    Under torchrun (:mod:`coreset_meg.common.distributed`) every rank calls it with the same
    ``X``: the chunks are shared out among the ranks, every rank gets the whole array, and rank 0
    alone reads and writes the cache (so it need not be on storage the ranks share). The chunks
    and their batches are those of a single process, so the cache file is the same.

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
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    batch_size = int(batch_size)
    n = len(Xn)
    if distributed.world_size() > 1:
        return _compute_shared(Xn, embedder, batch_size, cache_dir, int(chunk_size), verbose)

    if cache_dir is None:
        with progress(n, "Embedding", enabled=verbose) as bar:
            emb = _embed_rows(Xn, 0, n, embedder, batch_size, bar)
        _log_computed(embedder, n, emb.shape[1])
        return emb

    path = embedding_cache_path(Xn, embedder, cache_dir)
    cached = _read_cache(path, n)
    if cached is not None:
        logger.info("read %d embeddings from cache %s", n, path)
        return cached

    folder = _chunks_dir(path)
    manifest = {"format": _CACHE_FORMAT, "n": n, "identity": embedder.identity}
    chunk_size = _open_chunks(folder, {**manifest, "chunk_size": int(chunk_size)})
    parts: list[np.ndarray] = []
    dim = None
    with progress(n, "Embedding", enabled=verbose) as bar:
        for index, start in enumerate(range(0, n, chunk_size)):
            stop = min(start + chunk_size, n)
            chunk_path = _chunk_path(folder, index)
            chunk = _read_chunk(chunk_path, stop - start, dim)
            if chunk is None:
                chunk = _embed_rows(Xn, start, stop, embedder, batch_size, bar)
                _write_npy(chunk_path, chunk)
            else:
                bar.advance(stop - start)
                logger.info("chunk %d (samples %d-%d) read from %s", index, start, stop, folder)
            dim = chunk.shape[1]
            parts.append(chunk)
    emb = np.concatenate(parts, axis=0)
    _log_computed(embedder, n, emb.shape[1])

    _finish_cache(path, folder, emb)
    return emb


def _compute_shared(
    Xn: np.ndarray,
    embedder: Embedder,
    batch_size: int,
    cache_dir: str | os.PathLike[str] | None,
    chunk_size: int,
    verbose: bool,
) -> np.ndarray:
    """:func:`compute_embeddings` under torchrun: rank 0 owns the cache; in each round every
    rank embeds one of the chunks still to do, and all of them receive the round's chunks."""
    n, main = len(Xn), distributed.is_main()
    path = folder = None
    parts: dict[int, np.ndarray] = {}
    if cache_dir is not None:
        cached = None
        if main:
            path = embedding_cache_path(Xn, embedder, cache_dir)
            cached = _read_cache(path, n)
        if distributed.broadcast_object(cached is not None):
            logger.info("read %d embeddings from cache", n)
            return distributed.broadcast_array(None if cached is None else np.asarray(cached))
        if main:
            folder = _chunks_dir(path)
            manifest = {"format": _CACHE_FORMAT, "n": n, "identity": embedder.identity}
            chunk_size = _open_chunks(folder, {**manifest, "chunk_size": chunk_size})
            for index, start in enumerate(range(0, n, chunk_size)):
                stop = min(start + chunk_size, n)
                chunk = _read_chunk(_chunk_path(folder, index), stop - start, None)
                if chunk is not None:
                    parts[index] = chunk
        chunk_size = distributed.broadcast_object(chunk_size)
    bounds = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    done = distributed.broadcast_object(sorted(parts))
    finished = set(done)
    todo = [i for i in range(len(bounds)) if i not in finished]
    size, me = distributed.world_size(), distributed.rank()
    with progress(n, "Embedding", enabled=verbose) as bar:
        bar.advance(sum(bounds[i][1] - bounds[i][0] for i in done))
        for first in range(0, len(todo), size):
            batch = todo[first : first + size]
            mine = None
            if me < len(batch):
                start, stop = bounds[batch[me]]
                mine = _embed_rows(Xn, start, stop, embedder, batch_size)  # bar: gathered
            for index, chunk in zip(batch, distributed.all_gather_arrays(mine), strict=False):
                parts[index] = chunk
                if folder is not None:
                    _write_npy(_chunk_path(folder, index), chunk)
                bar.advance(len(chunk))
        if done:  # the chunks rank 0 read from an interrupted run's folder
            shared = distributed.broadcast_array(
                np.concatenate([parts[i] for i in done]) if main else None
            )
            ends = np.cumsum([bounds[i][1] - bounds[i][0] for i in done])
            for i, chunk in zip(done, np.split(shared, ends[:-1]), strict=True):
                parts[i] = chunk
    emb = np.concatenate([parts[i] for i in range(len(bounds))], axis=0)
    _log_computed(embedder, n, emb.shape[1])
    if path is not None:
        _finish_cache(path, folder, emb)
    distributed.barrier()
    return emb
