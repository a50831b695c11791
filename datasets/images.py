"""Read a folder of image files into one ``uint8`` array."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from coreset_meg.common import available_cores, progress

from .errors import DataError

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_SIDE", "load_image_folder"]

logger = logging.getLogger(__name__)

#: File name endings read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# PIL modes that hold one grey channel; everything else is read as RGB.
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# PIL modes of 16-bit grey files (a 16-bit PNG opens as "I;16", or "I" in older Pillow): their
# values are 0..65535 and are scaled to 0..255, not clipped.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
#: Largest side ``image_size`` may ask for (a 4096 x 4096 RGB image is 48 MiB).
MAX_IMAGE_SIDE = 4096


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _normalise_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int | np.integer):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    if max(size) > MAX_IMAGE_SIDE:
        raise DataError(
            f"image_size {image_size!r} is larger than {MAX_IMAGE_SIDE} pixels a side; "
            "give a smaller size"
        )
    return size


def _eight_bit(im: Image.Image, path: Path) -> Image.Image:
    """A 16-bit grey image as 8-bit grey (mode L), scaled by the bit depth (65535 -> 255)."""
    wide = np.asarray(im).astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise DataError(
            f"cannot read image {path}: mode {im.mode} values in [{wide.min()}, {wide.max()}] "
            "are not 16-bit"
        )
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")


def _read_one(path: Path, grayscale: bool | None, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one file to (H, W) for grey or (H, W, 3) for colour, resized when asked."""
    try:
        with Image.open(path) as im:
            grey = im.mode in _GREY_MODES if grayscale is None else grayscale
            if im.mode in _WIDE_MODES:
                im = _eight_bit(im, path)
            if grey:
                im = im.convert("L") if im.mode != "L" else im
            else:
                im = im.convert("RGB") if im.mode != "RGB" else im
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


@contextlib.contextmanager
def _closing(pool: ThreadPoolExecutor) -> Iterator[ThreadPoolExecutor]:
    """Shut ``pool`` down on leaving, dropping the files not started yet (after an error)."""
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    verbose: bool = False,
    return_paths: bool = False,
    workers: int | None = None,
) -> (
    tuple[np.ndarray, np.ndarray, list[str]] | tuple[np.ndarray, np.ndarray, list[str], list[Path]]
):
    """Load every image under a folder, with one class per sub-folder.

    Two layouts are read: ``root/<class>/<image>`` (classes are the sorted sub-folder names,
    images within a class are sorted by file name) or a flat ``root/<image>`` folder, read as one
    class named after the folder. Files ending in ``.png``, ``.jpg``, ``.jpeg`` or ``.bmp`` are
    images; other files and hidden entries are ignored.

    Parameters
    ----------
    root : str or os.PathLike
        The folder.
    image_size : int or (int, int), optional
        Resize every image to this (height, width) (bicubic); an int means a square, at most
        :data:`MAX_IMAGE_SIDE` (4096). Without it all images must have the same size.
    grayscale : bool, optional
        ``True`` reads one grey channel, ``False`` three RGB channels. By default the images are
        grey when every file is grey, and RGB otherwise (a warning names the first colour
        file of a folder that is mostly grey). 16-bit grey files are scaled to 0..255 by their
        bit depth.
    verbose : bool, optional
        Show a progress bar.
    return_paths : bool, optional
        Also return the file of each image.
    workers : int, optional
        Threads that decode files at once (Pillow decodes without holding the GIL); by default
        one per CPU core available to this process. The result does not depend on it.

    Returns
    -------
    X : numpy.ndarray
        ``uint8`` array of shape (N, H, W, C) with C = 1 (grey) or 3 (RGB): channels last.
        :class:`~coreset_meg.anomaly.MEGDetector` takes it as it is (an array whose last axis is 1
        or 3 and whose second is not is read channels last); ``coreset_meg.datasets.to_model_input``
        turns it into float (N, C, H, W) in [-1, 1].
    y : numpy.ndarray
        ``int64`` class index of each image, shape (N,).
    class_names : list of str
        Name of each class index.
    paths : list of pathlib.Path
        Only with ``return_paths``: the file of each image, in the order of ``X``.

    Raises
    ------
    DataError
        When the folder is missing or holds no images, when it mixes loose images with class
        folders, when a class folder is empty, when an image cannot be decoded (the message names
        the file), or when sizes differ and ``image_size`` is not given (the message names a file
        and both sizes).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    size = _normalise_size(image_size)
    workers = available_cores() if workers is None else int(workers)
    if workers < 1:
        raise DataError(f"workers must be a positive integer, got {workers!r}")
    class_names, per_class, nested = _list_classes(root)
    files = [f for fs in per_class for f in fs]
    y = np.repeat(np.arange(len(per_class), dtype=np.int64), [len(fs) for fs in per_class])
    arrays = _decode_all(root, files, grayscale, size, workers, verbose)
    X = _stack(root, files, arrays)
    if nested:
        logger.info(
            "read %d images in %d classes (%s) from %s",
            len(X), len(class_names), ", ".join(class_names), root,
        )  # fmt: skip
    else:
        logger.info("read %d images from %s", len(X), root)
    if return_paths:
        return X, y, class_names, files
    return X, y, class_names


def _list_classes(root: Path) -> tuple[list[str], list[list[Path]], bool]:
    """``(class_names, files per class, nested)`` of an image folder: one class per sub-folder
    (``nested``), or the folder's loose images as one class named after it."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = _list_images(root)
    if class_dirs and loose:
        raise DataError(
            f"image folder {root} holds both loose images ({loose[0].name}, ...) and class "
            f"folders ({class_dirs[0].name}, ...); use one layout"
        )
    if not class_dirs:
        if not loose:
            raise DataError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return [root.name], [loose], False
    per_class = [_list_images(d) for d in class_dirs]
    for d, files in zip(class_dirs, per_class, strict=True):
        if not files:
            raise DataError(f"class folder {d} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return [d.name for d in class_dirs], per_class, True


def _decode_all(
    root: Path,
    files: list[Path],
    grayscale: bool | None,
    size: tuple[int, int] | None,
    workers: int,
    verbose: bool,
) -> list[np.ndarray]:
    """Every file decoded (``workers`` threads, in order); DataError naming the first file
    whose size differs from the first file's."""
    arrays: list[np.ndarray] = []
    first_shape: tuple[int, int] | None = None
    pool = ThreadPoolExecutor(workers)
    with progress(len(files), f"Reading {root.name}", enabled=verbose) as bar, _closing(pool):
        decoded = pool.map(functools.partial(_read_one, grayscale=grayscale, size=size), files)
        for path, arr in zip(files, decoded, strict=True):  # in order
            if first_shape is None:
                first_shape = arr.shape[:2]
            elif arr.shape[:2] != first_shape:
                h0, w0 = first_shape
                raise DataError(
                    f"image {path} is {arr.shape[0]}x{arr.shape[1]} (HxW) but {files[0]} is "
                    f"{h0}x{w0}; pass image_size to resize"
                )
            arrays.append(arr)
            bar.advance()
    return arrays


def _stack(root: Path, files: list[Path], arrays: list[np.ndarray]) -> np.ndarray:
    """The decoded images as one (N, H, W, C) array; grey ones promoted to RGB (with a
    warning) when some files are colour."""
    colour = [f for f, a in zip(files, arrays, strict=True) if a.ndim == 3]
    if colour and len(colour) < len(arrays):
        # Auto mode met grey and colour files: promote the grey ones to RGB, and say so (one
        # stray colour file turns a grey data set into a colour one).
        logger.warning(
            "%s mixes grey and colour images: %d of %d are colour (first: %s), so all are read "
            "as RGB (images are grey only when every file is); convert the colour files, or "
            "pass grayscale=True, to read them grey",
            root,
            len(colour),
            len(arrays),
            colour[0],
        )
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    X = np.stack(arrays)
    return X[..., None] if X.ndim == 3 else X
