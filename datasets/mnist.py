"""MNIST and Fashion-MNIST from the original IDX files, downloaded with md5 checks when missing."""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from ._download import download_file
from ._paths import default_data_root
from .errors import DataError
from .names import dataset_key

__all__ = ["FASHION_MNIST_CLASSES", "MD5", "MIRRORS", "MNIST_FILES", "load_mnist", "read_idx"]

logger = logging.getLogger(__name__)

#: The four IDX files of each data set, by role, in the order train images, train labels, test
#: images, test labels.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: Base URLs tried in order for each kind; a file's URL is the base followed by its name.
#: Tests replace these with ``file://`` URLs.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

#: Published md5 digests of the compressed files.
MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: Class names of Fashion-MNIST, by label.
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_DISPLAY = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
# Sub-folders that other tools use for the same files (torchvision's layout).
_ALT_FOLDERS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) holding unsigned bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The file; a name ending in ``.gz`` is decompressed.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of the shape the file's header gives.

    Raises
    ------
    DataError
        When the file cannot be read, is truncated, has a wrong magic number or its size does not
        match its header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated ({len(raw)} bytes)")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise DataError(
            f"IDX file {path} has a bad magic number 0x{raw[:4].hex()} "
            "(expected 0x000008NN: unsigned bytes, NN dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"IDX file {path} holds {len(raw) - header} data bytes but its header "
            f"{dims} needs {expected} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find(folder: Path, name: str) -> Path | None:
    """Return ``folder/name`` or its uncompressed twin, whichever exists."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path} holds an array of shape {images.shape}, not (n, 28, 28)")
    if labels.ndim != 1:
        raise DataError(f"{labels_path} holds an array of shape {labels.shape}, not (n,)")
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path} has label {int(labels.max())}; labels must be 0..9")
    return images, labels.astype(np.int64)


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    kind: str = "mnist",
    download: bool = True,
    verbose: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from the four original IDX files.

    The files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; uncompressed copies are accepted
    too) are looked for in ``root/<kind>``, then in ``root`` itself, then in torchvision's
    ``root/MNIST/raw`` (``root/FashionMNIST/raw``). Files still missing are downloaded into
    ``root/<kind>`` from :data:`MIRRORS`, each checked against its published md5 in :data:`MD5`.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Data folder; defaults to :func:`default_data_root`.
    kind : {"mnist", "fashion-mnist"}, optional
        Which data set.
    download : bool, optional
        Download missing files.
    verbose : bool, optional
        Show a download progress bar.

    Returns
    -------
    X_train : numpy.ndarray
        ``uint8`` images, shape (60000, 28, 28).
    y_train : numpy.ndarray
        ``int64`` labels 0..9, shape (60000,).
    X_test : numpy.ndarray
        ``uint8`` images, shape (10000, 28, 28).
    y_test : numpy.ndarray
        ``int64`` labels 0..9, shape (10000,).

    Raises
    ------
    DataError
        For an unknown ``kind``, a corrupt file, or files that are neither present nor
        downloadable.
    """
    kind = dataset_key(kind)
    if kind not in MIRRORS:
        raise DataError(f"unknown MNIST kind {kind!r}; choose one of {sorted(MIRRORS)}")
    root = Path(root).expanduser() if root is not None else default_data_root()
    names = list(MNIST_FILES.values())
    target = root / kind
    folders = [target, root, root / _ALT_FOLDERS[kind]]

    folder = next((d for d in folders if all(_find(d, n) for n in names)), None)
    if folder is None:
        display = _DISPLAY[kind]
        if not download:
            raise DataError(
                f"{display} not found in {target} (nor in {root}) and download=False; "
                f"put the four IDX files ({', '.join(names)}) there"
            )
        try:
            for name in names:
                if _find(target, name) is None:
                    urls = [base.rstrip("/") + "/" + name for base in MIRRORS[kind]]
                    download_file(urls, target / name, MD5[kind][name], verbose=verbose)
        except DataError as exc:
            raise DataError(f"{display} not found in {target} and download failed: {exc}") from exc
        folder = target

    logger.info("reading %s from %s", kind, folder)
    paths = {role: _find(folder, name) for role, name in MNIST_FILES.items()}
    X_train, y_train = _read_pair(paths["train_images"], paths["train_labels"])
    X_test, y_test = _read_pair(paths["test_images"], paths["test_labels"])
    return X_train, y_train, X_test, y_test
