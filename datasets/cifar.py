"""CIFAR-10 from the official python pickles, with an image-folder copy as a fallback."""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from ._download import download_file, md5sum
from ._paths import default_data_root
from .errors import DataError
from .images import load_image_folder

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URLS",
    "load_cifar10",
    "read_cifar_batch",
]

logger = logging.getLogger(__name__)

#: Where the official archive is downloaded from (tried in order). Tests replace these.
CIFAR10_URLS: list[str] = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
#: Published md5 of ``cifar-10-python.tar.gz``.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
#: Class names of CIFAR-10, by label.
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

_ARCHIVE = "cifar-10-python.tar.gz"
_FOLDER = "cifar-10-batches-py"
_JPEG_FOLDER = "cifar10-jpeg"
_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
_TEST_BATCH = "test_batch"

# The only globals a CIFAR pickle needs: numpy arrays and their dtypes (under numpy 1 and 2 names),
# and the str-to-bytes helper that protocol-2 pickles written by Python 3 use for raw data.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only plain containers and numpy arrays, never arbitrary objects."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        if module.startswith("numpy.core"):
            # numpy >= 2 renamed numpy.core to numpy._core (and warns on the old name).
            try:
                return super().find_class(module.replace("numpy.core", "numpy._core"), name)
            except ImportError:
                pass
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file of the official CIFAR-10 python version.

    Parameters
    ----------
    path : str or os.PathLike
        A pickle holding a dict with ``b"data"`` (N, 3072) ``uint8`` rows in channel-major order
        and ``b"labels"`` (N integers).

    Returns
    -------
    X : numpy.ndarray
        ``uint8`` images, shape (N, 32, 32, 3).
    y : numpy.ndarray
        ``int64`` labels, shape (N,).

    Raises
    ------
    DataError
        When the file is missing, is not such a pickle, or holds inconsistent data.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR batch {path}: {exc}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"CIFAR batch {path} is not a dict with keys b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR batch {path} has data of shape {data.shape} and dtype {data.dtype}, "
            "expected (N, 3072) uint8"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"CIFAR batch {path} has {labels.size} labels of dtype {labels.dtype} for "
            f"{len(data)} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR batch {path} has labels outside 0..9")
    X = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(X), labels.astype(np.int64)


def _read_official(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train = [read_cifar_batch(folder / name) for name in _TRAIN_BATCHES]
    X_test, y_test = read_cifar_batch(folder / _TEST_BATCH)
    X_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return X_train, y_train, X_test, y_test


def _has_official(folder: Path) -> bool:
    return all((folder / name).is_file() for name in [*_TRAIN_BATCHES, _TEST_BATCH])


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract the batch folder from the archive, refusing links and paths that leave ``dest``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise DataError(f"archive {archive} has an unsafe member path {member.name!r}")
                if not (member.isfile() or member.isdir()):
                    raise DataError(
                        f"archive {archive} has a link or special file {member.name!r}; refused"
                    )
                if parts and parts[0] == _FOLDER:
                    members.append(member)
            if not members:
                raise DataError(f"archive {archive} holds no {_FOLDER}/ folder")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: the checks above already rule out unsafe members.
                tar.extractall(dest, members=members)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from exc


def _download_official(root: Path, verbose: bool) -> Path:
    archive = root / _ARCHIVE
    if not (archive.is_file() and md5sum(archive) == CIFAR10_MD5):
        download_file(CIFAR10_URLS, archive, CIFAR10_MD5, verbose=verbose)
    logger.info("extracting %s", archive)
    _safe_extract(archive, root)
    folder = root / _FOLDER
    if not _has_official(folder):
        raise DataError(f"archive {archive} did not contain all CIFAR-10 batch files")
    return folder


def _load_jpeg_copy(
    folder: Path, verbose: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    out = {}
    for split in ("train", "test"):
        X, y, names = load_image_folder(folder / split, grayscale=False, verbose=verbose)
        if names != CIFAR10_CLASSES:
            raise DataError(
                f"{folder / split} has class folders {names}, expected {CIFAR10_CLASSES}"
            )
        if X.shape[1:] != (32, 32, 3):
            raise DataError(f"{folder / split} holds images of shape {X.shape[1:]}, not 32x32x3")
        out[split] = (X, y)
    return (*out["train"], *out["test"])


def _load_cifar10_with_source(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verbose: bool = True,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], str]:
    """Like :func:`load_cifar10`, also returning ``"official"`` or ``"jpeg"`` for the source."""
    root = Path(root).expanduser() if root is not None else default_data_root()
    folder = root / _FOLDER
    if not _has_official(folder) and _has_official(root):
        folder = root  # root points at the batch folder itself
    if _has_official(folder):
        logger.info("reading CIFAR-10 from %s", folder)
        return _read_official(folder), "official"

    problem = "download=False"
    if download:
        try:
            return _read_official(_download_official(root, verbose)), "official"
        except DataError as exc:
            problem = f"download failed: {exc}"

    jpeg = root / _JPEG_FOLDER
    if (jpeg / "train").is_dir() and (jpeg / "test").is_dir():
        logger.warning(
            "official CIFAR-10 files not found in %s (%s); reading the JPEG-compressed copy in %s "
            "instead: pixels differ from the originals, so results are not exactly comparable "
            "with published CIFAR-10 numbers",
            folder,
            problem,
            jpeg,
        )
        return _load_jpeg_copy(jpeg, verbose), "jpeg"
    raise DataError(f"CIFAR-10 not found in {folder} and {problem}")


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verbose: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load CIFAR-10 from the official python version.

    Reads ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` from
    ``root/cifar-10-batches-py`` (or from ``root`` itself when it is that folder). When they are
    missing and ``download`` is true, ``cifar-10-python.tar.gz`` is downloaded from
    :data:`CIFAR10_URLS` into ``root``, checked against :data:`CIFAR10_MD5` and extracted
    (refusing links and paths outside ``root``). When that is impossible but an image-folder copy
    ``root/cifar10-jpeg/{train,test}/<class>/`` exists, that copy is read instead and a warning is
    logged: it is JPEG-compressed, so results on it are close to but not exactly comparable with
    published CIFAR-10 numbers.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Data folder; defaults to :func:`default_data_root`.
    download : bool, optional
        Download the official archive when the batch files are missing.
    verbose : bool, optional
        Show progress bars.

    Returns
    -------
    X_train : numpy.ndarray
        ``uint8`` images, shape (50000, 32, 32, 3).
    y_train : numpy.ndarray
        ``int64`` labels 0..9 (see :data:`CIFAR10_CLASSES`), shape (50000,).
    X_test : numpy.ndarray
        ``uint8`` images, shape (10000, 32, 32, 3).
    y_test : numpy.ndarray
        ``int64`` labels, shape (10000,).

    Raises
    ------
    DataError
        When no copy can be read; the message says where it looked and why the download failed.
    """
    arrays, _ = _load_cifar10_with_source(root, download=download, verbose=verbose)
    return arrays
