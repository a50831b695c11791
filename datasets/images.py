"""Read a folder of image files into one ``uint8`` array."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from common import progress

from .errors import DataError

__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]

logger = logging.getLogger(__name__)

#: File name endings read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# PIL modes that hold one grey channel; everything else is read as RGB.
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


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
    return size


def _read_one(path: Path, grayscale: bool | None, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one file to (H, W) for grey or (H, W, 3) for colour, resized when asked."""
    try:
        with Image.open(path) as im:
            grey = im.mode in _GREY_MODES if grayscale is None else grayscale
            if grey:
                im = im.convert("L") if im.mode != "L" else im
            else:
                im = im.convert("RGB") if im.mode != "RGB" else im
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    verbose: bool = False,
    return_paths: bool = False,
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
        Resize every image to this (height, width) (bicubic); an int means a square. Without it
        all images must have the same size.
    grayscale : bool, optional
        ``True`` reads one grey channel, ``False`` three RGB channels. By default the images are
        grey when every file is grey, and RGB otherwise.
    verbose : bool, optional
        Show a progress bar.
    return_paths : bool, optional
        Also return the file of each image.

    Returns
    -------
    X : numpy.ndarray
        ``uint8`` array of shape (N, H, W, C) with C = 1 (grey) or 3 (RGB).
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

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = _list_images(root)
    if class_dirs and loose:
        raise DataError(
            f"image folder {root} holds both loose images ({loose[0].name}, ...) and class "
            f"folders ({class_dirs[0].name}, ...); use one layout"
        )
    if class_dirs:
        class_names = [d.name for d in class_dirs]
        per_class = [_list_images(d) for d in class_dirs]
        for d, files in zip(class_dirs, per_class, strict=True):
            if not files:
                raise DataError(f"class folder {d} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    else:
        class_names = [root.name]
        per_class = [loose]
    files = [f for fs in per_class for f in fs]
    if not files:
        raise DataError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    y = np.repeat(np.arange(len(per_class), dtype=np.int64), [len(fs) for fs in per_class])

    arrays: list[np.ndarray] = []
    first_shape: tuple[int, int] | None = None
    with progress(len(files), f"Reading {root.name}", enabled=verbose) as bar:
        for path in files:
            arr = _read_one(path, grayscale, size)
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

    if any(a.ndim == 3 for a in arrays) and any(a.ndim == 2 for a in arrays):
        # Auto mode met grey and colour files: promote the grey ones to RGB.
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    X = np.stack(arrays)
    if X.ndim == 3:
        X = X[..., None]
    logger.info("read %d images in %d classes from %s", len(X), len(class_names), root)
    if return_paths:
        return X, y, class_names, files
    return X, y, class_names
