"""Train/test splits for the two anomaly-detection protocols, and the named benchmarks.

* Held-out class (MNIST protocol, Zenati et al. 2018): one class is the anomaly; the normal
  images are shuffled with a fixed seed, the first 80% train, and the test set is the other 20%
  plus every anomaly. Unlike the published code, train and test never share an image.
* One-class (Deep SVDD protocol, Ruff et al. 2018): train on one normal class of the official
  train split; test on the whole official test split, every other class being an anomaly.

Labels of a :class:`Split`'s test set are 1 for an anomaly and 0 for a normal sample.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.model_selection import train_test_split

from ._paths import default_data_root
from .cifar import CIFAR10_CLASSES, _load_cifar10_with_source
from .digits import load_digits_data
from .errors import DataError
from .mnist import FASHION_MNIST_CLASSES, load_mnist
from .names import dataset_key

__all__ = [
    "BENCHMARKS",
    "PROTOCOLS",
    "Split",
    "default_data_root",
    "heldout_split",
    "load_benchmark",
    "one_class_split",
    "to_model_input",
]

logger = logging.getLogger(__name__)

#: Benchmark names :func:`load_benchmark` knows.
BENCHMARKS = ("digits", "mnist", "fashion-mnist", "cifar10")
#: Protocol names :func:`load_benchmark` knows.
PROTOCOLS = ("heldout", "one-class", "heldout-published")

_CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
}


@dataclass
class Split:
    """A train/test split for anomaly detection.

    Attributes
    ----------
    X_train : numpy.ndarray
        Training samples (all normal).
    X_test : numpy.ndarray
        Test samples.
    y_test : numpy.ndarray
        ``int64`` test labels: 1 = anomaly, 0 = normal.
    train_index : numpy.ndarray
        ``int64`` row of each training sample in the source array(s) it was taken from.
    test_index : numpy.ndarray
        ``int64`` row of each test sample in its source array.
    description : str
        One line saying what the split is.
    """

    X_train: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    train_index: np.ndarray = field(repr=False)
    test_index: np.ndarray = field(repr=False)
    description: str = ""

    @property
    def anomaly_fraction(self) -> float:
        """Share of anomalies in the test set."""
        return float(np.mean(self.y_test)) if len(self.y_test) else 0.0


def _check_class(y: np.ndarray, cls: object, what: str) -> None:
    classes = np.unique(y).tolist()
    if cls not in classes:
        raise DataError(f"unknown {what} {cls!r}; the labels hold {classes}")


def _check_xy(X: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(X) != len(y):
        raise DataError(f"{what}: {len(X)} samples but labels of shape {y.shape}")
    return y


def heldout_split(
    X: np.ndarray,
    y: np.ndarray,
    anomaly_class: int,
    *,
    train_fraction: float = 0.8,
    random_state: int | None = 0,
) -> Split:
    """Split pooled data by the held-out-class protocol, with no overlap between train and test.

    Parameters
    ----------
    X : numpy.ndarray
        All samples, pooled (for MNIST: the official train and test images together).
    y : numpy.ndarray
        Class label of each sample, shape (n,).
    anomaly_class : int
        Label of the anomaly class.
    train_fraction : float, optional
        Share of the normal samples used for training.
    random_state : int or None, optional
        Seed of the :func:`numpy.random.default_rng` that shuffles the normal samples.

    Returns
    -------
    Split
        Train: the first ``round(train_fraction * n_normal)`` shuffled normal samples. Test: the
        remaining normal samples and every anomaly, labelled 1. Indices are sorted rows of ``X``.

    Raises
    ------
    DataError
        For an unknown class, mismatched lengths or a fraction outside (0, 1).
    """
    y = _check_xy(X, y, "heldout_split")
    _check_class(y, anomaly_class, "anomaly class")
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}")
    normal = np.flatnonzero(y != anomaly_class)
    anomalies = np.flatnonzero(y == anomaly_class)
    shuffled = np.random.default_rng(random_state).permutation(normal)
    n_train = int(round(train_fraction * len(shuffled)))
    train_index = np.sort(shuffled[:n_train]).astype(np.int64)
    test_index = np.sort(np.concatenate([shuffled[n_train:], anomalies])).astype(np.int64)
    y_test = (y[test_index] == anomaly_class).astype(np.int64)
    description = (
        f"heldout: anomaly class {anomaly_class}; {len(train_index)} train, "
        f"{len(test_index)} test ({y_test.mean():.1%} anomalies); seed {random_state}"
    )
    return Split(X[train_index], X[test_index], y_test, train_index, test_index, description)


def published_pool(n_train: int, n_test: int) -> np.ndarray:
    """Rows of the official pool (training images, then test images) in the order the published
    MNIST loaders concatenate them: their ``mnist.npz`` holds ``x_train`` (55,000), ``x_test``
    and ``x_valid`` (5,000: the first official training images, as TensorFlow's MNIST reader
    splits them), in that order.

    >>> published_pool(7000, 2).tolist()[:2], published_pool(7000, 2).tolist()[-1]
    ([5000, 5001], 4999)
    """
    valid = min(5000, n_train)
    return np.r_[np.arange(valid, n_train), np.arange(n_train, n_train + n_test), np.arange(valid)]


def published_heldout_split(X: np.ndarray, y: np.ndarray, anomaly_class: int) -> Split:
    """The held-out-class split as the published MEG and Efficient-GAN code draws it (leaky).

    Those loaders shuffle the normal samples with one ``numpy.random.RandomState(42)`` shared by
    two calls: the call that returns the training set draws a permutation (and a second one to
    shuffle its test set), and the call that returns the test set draws a new permutation of
    the normal samples, so its 20% of "unseen" normal samples are mostly training samples (about
    80% of them, by chance). The anomalies are all in the test set. This reproduces that draw on
    ``X`` (the pooled samples in the order those loaders concatenate them); the result is the
    same for every seed. Use it only to compare with the published figures, and report the
    leak-free :func:`heldout_split` beside it.

    Returns
    -------
    Split
        Test indices may repeat training indices (``train_index`` and ``test_index`` overlap).
    """
    y = _check_xy(X, y, "published_heldout_split")
    _check_class(y, anomaly_class, "anomaly class")
    normal = np.flatnonzero(y != anomaly_class)
    anomalies = np.flatnonzero(y == anomaly_class)
    rng = np.random.RandomState(42)  # noqa: NPY002 - the published loaders' generator
    n_train = int(len(normal) * 0.8)
    train_index = np.sort(normal[rng.permutation(len(normal))[:n_train]]).astype(np.int64)
    rng.permutation(len(normal) - n_train + len(anomalies))  # the training call's test shuffle
    test_normal = normal[rng.permutation(len(normal))[n_train:]]  # the test call: a new draw
    test_index = np.sort(np.concatenate([test_normal, anomalies])).astype(np.int64)
    y_test = (y[test_index] == anomaly_class).astype(np.int64)
    split = Split(X[train_index], X[test_index], y_test, train_index, test_index, "")
    split.description = (
        f"heldout-published: anomaly class {anomaly_class}; {len(train_index)} train, "
        f"{len(test_index)} test ({y_test.mean():.1%} anomalies); the published loaders' draw "
        f"(RandomState(42)): {leaked_share(split):.0%} of the normal test samples are training "
        "samples"
    )
    return split


def leaked_share(split: Split) -> float:
    """The share of a split's normal test samples that are training samples too (0 for the
    leak-free splits, about 0.8 for :func:`published_heldout_split`)."""
    return float(np.isin(split.test_index[split.y_test == 0], split.train_index).mean())


def one_class_split(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    normal_class: int,
) -> Split:
    """Split official train/test data by the one-class protocol.

    Parameters
    ----------
    X_train, y_train : numpy.ndarray
        The official training samples and their class labels.
    X_test, y_test : numpy.ndarray
        The official test samples and their class labels.
    normal_class : int
        Label of the normal class.

    Returns
    -------
    Split
        Train: the samples of ``normal_class`` in the training data (``train_index`` indexes
        ``X_train``). Test: all of ``X_test`` (``test_index`` indexes ``X_test``), labelled 1
        where the class is not ``normal_class``.

    Raises
    ------
    DataError
        For an unknown class or mismatched lengths.
    """
    y_train = _check_xy(X_train, y_train, "one_class_split training data")
    y_test = _check_xy(X_test, y_test, "one_class_split test data")
    _check_class(y_train, normal_class, "normal class")
    train_index = np.flatnonzero(y_train == normal_class).astype(np.int64)
    test_index = np.arange(len(X_test), dtype=np.int64)
    labels = (y_test != normal_class).astype(np.int64)
    description = (
        f"one-class: normal class {normal_class}; {len(train_index)} train, "
        f"{len(test_index)} test ({labels.mean():.1%} anomalies)"
    )
    return Split(X_train[train_index], X_test, labels, train_index, test_index, description)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Turn ``uint8`` images into ``float32`` network input in [-1, 1], channels first.

    Parameters
    ----------
    images : numpy.ndarray
        ``uint8`` array of shape (N, H, W) (one channel) or (N, H, W, C).

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape (N, C, H, W) holding ``x / 127.5 - 1``.

    Raises
    ------
    DataError
        When the array is not ``uint8`` or not 3-D or 4-D.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"to_model_input expects uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"to_model_input expects (N, H, W) or (N, H, W, C), got {images.shape}")
    out = np.empty(images.shape, dtype=np.float32)
    np.multiply(images, np.float32(1 / 127.5), out=out)
    out -= 1.0
    return out


def _class_index(name: str, cls: int | str) -> int:
    names = _CLASS_NAMES[name]
    if isinstance(cls, str) and cls in names:
        return names.index(cls)
    if isinstance(cls, int | np.integer) and not isinstance(cls, bool) and 0 <= cls < 10:
        return int(cls)
    raise DataError(f"unknown class {cls!r} for {name}; choose 0..9 or one of {names}")


def _normalise(value: str, choices: tuple[str, ...], what: str) -> str:
    key = dataset_key(value)
    key = {"oneclass": "one-class", "held-out": "heldout"}.get(key, key)  # protocol names
    if key not in choices:
        raise DataError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return key


def _images_to_model_input(split: Split) -> Split:
    return replace(
        split, X_train=to_model_input(split.X_train), X_test=to_model_input(split.X_test)
    )


def load_benchmark(
    name: str,
    protocol: str = "heldout",
    cls: int | str = 0,
    *,
    root: str | os.PathLike[str] | None = None,
    random_state: int | None = 0,
    download: bool = True,
) -> Split:
    """Load a named benchmark as an anomaly-detection split.

    Parameters
    ----------
    name : {"digits", "mnist", "fashion-mnist", "cifar10"}
        The data set. ``"digits"`` is scikit-learn's bundled 8x8 digits and needs no files.
    protocol : {"heldout", "one-class", "heldout-published"}, optional
        ``"heldout"``: ``cls`` is the anomaly; official train and test data are pooled
        (:func:`heldout_split`, indices into the pool: train rows first, then test rows).
        ``"heldout-published"``: the published MEG / Efficient-GAN loaders' leaky draw of the
        same protocol (:func:`published_heldout_split`; ``random_state`` is not used), for
        comparing with the published figures only.
        ``"one-class"``: ``cls`` is the normal class; official splits are used
        (:func:`one_class_split`). The digits have no official split, so a stratified 70/30
        split seeded by ``random_state`` stands in for one, and indices refer to the full
        1797-sample array of :func:`load_digits_data`.
    cls : int or str, optional
        Class index 0..9, or a class name (``"cat"`` for CIFAR-10, say).
    root : str or os.PathLike, optional
        Data folder for the downloaded data sets; defaults to :func:`default_data_root`.
    random_state : int or None, optional
        Seed of the shuffle (held-out protocol) or of the digits' stratified split.
    download : bool, optional
        Download missing files.

    Returns
    -------
    Split
        Images as ``float32`` (N, C, H, W) arrays in [-1, 1] (1x28x28 for MNIST and
        Fashion-MNIST, 3x32x32 for CIFAR-10); digits as ``float32`` (N, 64) vectors in [-1, 1].

    Raises
    ------
    DataError
        For an unknown name, protocol or class (the message lists the valid ones), or data that
        cannot be found or downloaded.
    """
    name = _normalise(name, BENCHMARKS, "benchmark")
    protocol = _normalise(protocol, PROTOCOLS, "protocol")
    c = _class_index(name, cls)
    root = root if root is not None else default_data_root()
    note = ""

    if name == "digits":
        X, y = load_digits_data()
        if protocol == "heldout":
            split = heldout_split(X, y, c, random_state=random_state)
        elif protocol == "heldout-published":
            split = published_heldout_split(X, y, c)
        else:
            rows = np.arange(len(y))
            tr, te = train_test_split(rows, test_size=0.3, stratify=y, random_state=random_state)
            tr, te = np.sort(tr), np.sort(te)
            split = one_class_split(X[tr], y[tr], X[te], y[te], c)
            split = replace(
                split,
                train_index=tr[split.train_index],
                test_index=te[split.test_index],
            )
            note = f"; stratified 70/30 split of the digits, seed {random_state}"
    else:
        if name == "cifar10":
            arrays, source = _load_cifar10_with_source(root, download=download)
            if source == "jpeg":
                note = (
                    "; JPEG-compressed copy of CIFAR-10: not exactly comparable with published "
                    "results"
                )
        else:
            arrays = load_mnist(root, kind=name, download=download)
        X_train, y_train, X_test, y_test = arrays
        if protocol == "heldout":
            X = np.concatenate([X_train, X_test])
            y = np.concatenate([y_train, y_test])
            split = heldout_split(X, y, c, random_state=random_state)
        elif protocol == "heldout-published":
            order = published_pool(len(X_train), len(X_test))  # indices refer to this pool
            X = np.concatenate([X_train, X_test])[order]
            y = np.concatenate([y_train, y_test])[order]
            split = published_heldout_split(X, y, c)
        else:
            split = one_class_split(X_train, y_train, X_test, y_test, c)
        split = _images_to_model_input(split)

    class_name = _CLASS_NAMES[name][c]
    label = f" ({class_name})" if class_name != str(c) else ""
    role = "normal" if protocol == "one-class" else "anomaly"
    seed = f"; seed {random_state}" if protocol == "heldout" else ""
    if protocol == "heldout-published":
        seed = (
            f"; the published loaders' leaky draw: {leaked_share(split):.0%} of the normal test "
            "samples are training samples"
        )
    split.description = (
        f"{name} {protocol}: {role} class {c}{label}; {len(split.train_index)} train, "
        f"{len(split.test_index)} test ({split.anomaly_fraction:.1%} anomalies){seed}{note}"
    )
    logger.info("benchmark: %s", split.description)
    return split
