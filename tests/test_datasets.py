"""Tests of the datasets package: loaders, downloads, protocol splits and mixtures."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coreset_meg import datasets
from coreset_meg.datasets import (
    DataError,
    GaussianMixture,
    check_finite_2d,
    grid_mixture,
    heldout_split,
    load_benchmark,
    load_cifar10,
    load_digits_data,
    load_image_folder,
    load_mnist,
    load_table,
    mode_coverage,
    one_class_split,
    read_idx,
    ring_mixture,
    to_model_input,
    unequal_weights,
)
from coreset_meg.datasets import cifar as cifar_module
from coreset_meg.datasets import mnist as mnist_module
from coreset_meg.datasets._download import download_file, md5sum

MNIST_NAMES = list(mnist_module.MNIST_FILES.values())


# ----------------------------------------------------------------------------------------------
# MNIST


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path) -> tuple[np.ndarray, ...]:
    return load_mnist(mnist_dir.parent, download=False)


def test_load_mnist_shared_copy(mnist: tuple[np.ndarray, ...]) -> None:
    X_train, y_train, X_test, y_test = mnist
    assert X_train.shape == (60000, 28, 28) and X_test.shape == (10000, 28, 28)
    assert X_train.dtype == np.uint8 and X_test.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    assert X_train.max() == 255 and X_train.min() == 0
    # Well-known facts about MNIST: 6742 ones in the training set, first test label is a 7.
    assert (y_train == 1).sum() == 6742 and y_test[0] == 7


def test_load_mnist_accepts_the_folder_itself(mnist_dir: Path, tmp_path: Path) -> None:
    # root is the folder holding the four files (links to the shared copy), not its parent.
    for name in MNIST_NAMES:
        os.symlink(mnist_dir / name, tmp_path / name)
    _, y_train, _, y_test = load_mnist(tmp_path, download=False)
    assert len(y_train) == 60000 and len(y_test) == 10000


def test_load_mnist_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"MNIST not found in .* and download=False"):
        load_mnist(tmp_path, download=False)


def test_load_mnist_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown MNIST kind 'kmnist'.*fashion-mnist"):
        load_mnist(tmp_path, kind="kmnist")


def test_mnist_download_from_file_mirror(
    mnist_dir: Path, mnist: tuple[np.ndarray, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first mirror does not exist, so the second must be used.
    missing = (tmp_path / "no-such-mirror").as_uri() + "/"
    monkeypatch.setitem(mnist_module.MIRRORS, "mnist", [missing, mnist_dir.as_uri() + "/"])
    root = tmp_path / "data"
    X_train, y_train, X_test, y_test = load_mnist(root, verbose=False)
    folder = root / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MNIST_NAMES)  # no temp files
    for name in MNIST_NAMES:
        assert md5sum(folder / name) == mnist_module.MD5["mnist"][name]
    np.testing.assert_array_equal(X_test, mnist[2])
    np.testing.assert_array_equal(y_train, mnist[1])
    assert X_train.shape == (60000, 28, 28) and y_test.shape == (10000,)


def test_mnist_corrupt_download_is_refused(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_NAMES:
        (mirror / name).write_bytes(b"not the real file")
    monkeypatch.setitem(mnist_module.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"MNIST not found in .* download failed: .*md5 mismatch"):
        load_mnist(root, verbose=False)
    assert list((root / "mnist").iterdir()) == []  # nothing half-written left behind


def test_fashion_mnist_checks_its_own_md5s(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mirror serving the MNIST files under the Fashion-MNIST names fails the md5 check.
    monkeypatch.setitem(mnist_module.MIRRORS, "fashion-mnist", [mnist_dir.as_uri()])
    with pytest.raises(DataError, match=r"Fashion-MNIST not found .*md5 mismatch for train-images"):
        load_mnist(tmp_path, kind="fashion-mnist", verbose=False)
    assert list((tmp_path / "fashion-mnist").iterdir()) == []


def test_download_file_md5_and_errors(mnist_dir: Path, tmp_path: Path) -> None:
    src = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / "sub" / "labels.gz"
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    assert download_file(src.as_uri(), dest, md5, verbose=False) == dest
    assert dest.read_bytes() == src.read_bytes()

    other = tmp_path / "other.gz"
    with pytest.raises(DataError, match=r"md5 mismatch for other.gz .* expected 0{32}"):
        download_file(src.as_uri(), other, "0" * 32, verbose=False)
    assert not other.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sub"]

    with pytest.raises(DataError, match=r"unsupported URL scheme 'ftp'"):
        download_file("ftp://example.invalid/x", other, None, verbose=False)


def _write_idx_gz(path: Path, header: bytes, payload: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(header + payload)
    return path


def test_read_idx_good_and_corrupt(mnist_dir: Path, tmp_path: Path) -> None:
    ok = _write_idx_gz(
        tmp_path / "ok.gz", b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") * 2, b"abcd"
    )
    np.testing.assert_array_equal(read_idx(ok), np.frombuffer(b"abcd", np.uint8).reshape(2, 2))

    bad_magic = _write_idx_gz(tmp_path / "magic.gz", b"\x00\x00\x0d\x01" + bytes(4), b"")
    with pytest.raises(DataError, match=r"magic.gz has a bad magic number 0x00000d01"):
        read_idx(bad_magic)

    short = _write_idx_gz(
        tmp_path / "short.gz", b"\x00\x00\x08\x01" + (5).to_bytes(4, "big"), b"ab"
    )
    with pytest.raises(DataError, match=r"short.gz holds 2 data bytes but its header"):
        read_idx(short)

    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()[:2000])
    with pytest.raises(DataError, match=r"cannot read IDX file .*truncated.gz"):
        read_idx(truncated)


# ----------------------------------------------------------------------------------------------
# Splits


def test_heldout_split_mnist_is_disjoint(mnist: tuple[np.ndarray, ...]) -> None:
    X = np.concatenate([mnist[0], mnist[2]])
    y = np.concatenate([mnist[1], mnist[3]])
    split = heldout_split(X, y, 1, random_state=0)
    n_anomalies = int((y == 1).sum())
    n_normal = len(y) - n_anomalies
    assert not np.intersect1d(split.train_index, split.test_index).size
    assert len(split.train_index) + len(split.test_index) == len(y)
    assert len(split.train_index) == round(0.8 * n_normal)
    assert (y[split.train_index] != 1).all()  # only normal images train
    np.testing.assert_array_equal(split.y_test, (y[split.test_index] == 1).astype(np.int64))
    assert split.y_test.sum() == n_anomalies  # every anomaly is in the test set
    assert 0.33 < split.anomaly_fraction < 0.39
    np.testing.assert_array_equal(split.X_train[:5], X[split.train_index[:5]])
    assert split.y_test.dtype == np.int64 and "anomaly class 1" in split.description


def test_heldout_split_seed_reproducible() -> None:
    X, y = load_digits_data()
    a = heldout_split(X, y, 4, random_state=7)
    b = heldout_split(X, y, 4, random_state=7)
    c = heldout_split(X, y, 4, random_state=8)
    np.testing.assert_array_equal(a.train_index, b.train_index)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert not np.array_equal(a.train_index, c.train_index)
    assert sorted(np.concatenate([a.train_index, a.test_index])) == list(range(len(y)))


def test_heldout_split_bad_input() -> None:
    X, y = np.zeros((6, 2)), np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(DataError, match=r"unknown anomaly class 5; the labels hold \[0, 1, 2\]"):
        heldout_split(X, y, 5)
    with pytest.raises(DataError, match=r"train_fraction must be in \(0, 1\)"):
        heldout_split(X, y, 1, train_fraction=1.0)
    with pytest.raises(DataError, match=r"6 samples but labels of shape \(5,\)"):
        heldout_split(X, y[:5], 1)


def test_one_class_split() -> None:
    X_train = np.arange(10)[:, None] * np.ones((1, 3))
    y_train = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    X_test = -np.arange(4)[:, None] * np.ones((1, 3))
    y_test = np.array([2, 0, 1, 0])
    split = one_class_split(X_train, y_train, X_test, y_test, 0)
    np.testing.assert_array_equal(split.train_index, [0, 3, 6, 9])
    np.testing.assert_array_equal(split.X_train[:, 0], [0, 3, 6, 9])
    np.testing.assert_array_equal(split.test_index, [0, 1, 2, 3])
    np.testing.assert_array_equal(split.y_test, [1, 0, 1, 0])
    np.testing.assert_array_equal(split.X_test, X_test)
    with pytest.raises(DataError, match=r"unknown normal class 3"):
        one_class_split(X_train, y_train, X_test, y_test, 3)


def test_to_model_input() -> None:
    grey = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # (1, 2, 2)
    out = to_model_input(grey)
    assert out.shape == (1, 1, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [[-1.0, 1.0], [-0.6, -0.2]], atol=1e-6)
    rgb = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    out = to_model_input(rgb)
    assert out.shape == (2, 3, 4, 5)
    assert (out[:, 2] == 1.0).all() and (out[:, :2] == -1.0).all()
    with pytest.raises(DataError, match=r"expects uint8 images, got float64"):
        to_model_input(np.zeros((1, 2, 2)))
    with pytest.raises(DataError, match=r"expects \(N, H, W\) or \(N, H, W, C\)"):
        to_model_input(np.zeros((4, 4), dtype=np.uint8))


def test_load_benchmark_digits() -> None:
    split = load_benchmark("digits", "heldout", 1)
    assert split.X_train.shape[1] == 64 and split.X_train.dtype == np.float32
    assert split.X_train.min() >= -1.0 and split.X_train.max() <= 1.0
    X, y = load_digits_data()
    assert (y[split.train_index] != 1).all()
    np.testing.assert_array_equal(split.X_test, X[split.test_index])

    oc = load_benchmark("digits", "one-class", 2, random_state=3)
    assert (y[oc.train_index] == 2).all()
    assert not np.intersect1d(oc.train_index, oc.test_index).size
    np.testing.assert_array_equal(oc.y_test, (y[oc.test_index] != 2).astype(np.int64))
    assert len(oc.test_index) == math.ceil(0.3 * len(y))
    assert "stratified 70/30" in oc.description


def test_load_benchmark_mnist_one_class(mnist_dir: Path, mnist: tuple[np.ndarray, ...]) -> None:
    split = load_benchmark("mnist", "one-class", 3, root=mnist_dir.parent, download=False)
    assert split.X_train.shape == (int((mnist[1] == 3).sum()), 1, 28, 28)
    assert split.X_test.shape == (10000, 1, 28, 28) and split.X_test.dtype == np.float32
    assert split.X_train.min() == -1.0 and split.X_train.max() == 1.0
    np.testing.assert_array_equal(split.y_test, (mnist[3] != 3).astype(np.int64))
    np.testing.assert_allclose(split.X_test[0, 0], mnist[2][0] / 127.5 - 1, atol=1e-6)


def test_load_benchmark_bad_choices() -> None:
    with pytest.raises(DataError, match=r"unknown benchmark 'svhn'; choose one of digits, mnist"):
        load_benchmark("svhn")
    with pytest.raises(
        DataError, match=r"unknown protocol 'loo'; choose one of heldout, one-class"
    ):
        load_benchmark("digits", "loo")
    with pytest.raises(DataError, match=r"unknown class 10 for digits; choose 0..9"):
        load_benchmark("digits", "heldout", 10)
    with pytest.raises(DataError, match=r"unknown class 'dog' for mnist"):
        load_benchmark("mnist", "heldout", "dog")


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANOMALY_DATA_ROOT", str(tmp_path))
    assert datasets.default_data_root() == tmp_path
    monkeypatch.delenv("ANOMALY_DATA_ROOT")
    assert datasets.default_data_root() == Path.home() / ".cache" / "coreset-meg" / "data"


def test_load_digits_data() -> None:
    X, y = load_digits_data()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == -1.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    assert X[0, 0] == -1.0 and X[0, 2] == pytest.approx(5 / 8 - 1)  # first digit's pixels 0, 5


# ----------------------------------------------------------------------------------------------
# CIFAR-10


def _write_cifar_batches(folder: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, list]]:
    """Write tiny batch files in the official format; return what each holds."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in [*((f"data_batch_{i}", 3) for i in range(1, 6)), ("test_batch", 4)]:
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # rows: R plane, G plane, B plane
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
        if name == "test_batch":
            # Like the official files: pickle protocol 2 naming numpy 1's module numpy.core.
            blob = pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")
        else:
            blob = pickle.dumps(batch)
        (folder / name).write_bytes(blob)
        written[name] = (images, labels)
    return written


def test_load_cifar10_official_format(tmp_path: Path) -> None:
    written = _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    X_train, y_train, X_test, y_test = load_cifar10(tmp_path, download=False)
    assert X_train.shape == (15, 32, 32, 3) and X_train.dtype == np.uint8
    assert y_train.dtype == np.int64 and X_test.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(X_train[:3], written["data_batch_1"][0])
    np.testing.assert_array_equal(X_train[12:], written["data_batch_5"][0])
    np.testing.assert_array_equal(X_test, written["test_batch"][0])
    np.testing.assert_array_equal(y_test, written["test_batch"][1])
    # root may also be the batch folder itself
    np.testing.assert_array_equal(load_cifar10(tmp_path / "cifar-10-batches-py")[3], y_test)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_cifar_pickle_with_code_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_batches(folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match=r"test_batch: global posix.getcwd is not allowed"):
        load_cifar10(tmp_path, download=False)


def _cifar_archive(tmp_path: Path, extra: tarfile.TarInfo | None = None) -> Path:
    src = tmp_path / "src"
    _write_cifar_batches(src / "cifar-10-batches-py")
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    return archive


def test_cifar_download_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _cifar_archive(tmp_path)
    monkeypatch.setattr(cifar_module, "CIFAR10_URLS", [archive.as_uri()])
    monkeypatch.setattr(cifar_module, "CIFAR10_MD5", md5sum(archive))
    root = tmp_path / "data"
    X_train, _, X_test, _ = load_cifar10(root, verbose=False)
    assert X_train.shape == (15, 32, 32, 3) and X_test.shape == (4, 32, 32, 3)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()

    monkeypatch.setattr(cifar_module, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(DataError, match=r"CIFAR-10 not found in .* download failed: .*md5"):
        load_cifar10(tmp_path / "other", verbose=False)


def test_cifar_archive_with_unsafe_path_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tarfile.TarInfo("../escaped.txt")
    evil.size = 3
    archive = _cifar_archive(tmp_path, evil)
    monkeypatch.setattr(cifar_module, "CIFAR10_URLS", [archive.as_uri()])
    monkeypatch.setattr(cifar_module, "CIFAR10_MD5", md5sum(archive))
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"unsafe member path '../escaped.txt'"):
        load_cifar10(root, verbose=False)
    assert not (tmp_path / "escaped.txt").exists()


@pytest.fixture
def small_cifar_jpeg(cifar_jpeg_dir: Path, tmp_path: Path) -> Path:
    """A CIFAR-10 JPEG copy with two images per class and split, under ``tmp_path``."""
    for split in ("train", "test"):
        for cls in datasets.CIFAR10_CLASSES:
            dest = tmp_path / "cifar10-jpeg" / split / cls
            dest.mkdir(parents=True)
            for name in ("0000.jpg", "0001.jpg"):
                shutil.copy(cifar_jpeg_dir / split / cls / name, dest / name)
    return tmp_path


def test_cifar_falls_back_to_jpeg_copy(
    small_cifar_jpeg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="coreset_meg.datasets.cifar"):
        X_train, y_train, X_test, y_test = load_cifar10(small_cifar_jpeg, download=False)
    assert "JPEG-compressed copy" in caplog.text
    assert X_train.shape == (20, 32, 32, 3) and X_test.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(y_train, np.repeat(np.arange(10), 2))
    split = load_benchmark("cifar10", "one-class", "cat", root=small_cifar_jpeg, download=False)
    assert split.X_train.shape == (2, 3, 32, 32) and split.X_test.shape == (20, 3, 32, 32)
    assert split.y_test.sum() == 18 and "JPEG-compressed" in split.description


def test_cifar_missing_everything(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"CIFAR-10 not found in .*cifar-10-batches-py"):
        load_cifar10(tmp_path, download=False)


# ----------------------------------------------------------------------------------------------
# Image folders


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_classes_and_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    b1 = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    a0 = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    a1 = rng.integers(0, 256, (4, 5), dtype=np.uint8)  # grey: promoted to RGB
    _png(tmp_path / "b" / "x.png", b1)
    _png(tmp_path / "a" / "2.png", a1)
    _png(tmp_path / "a" / "1.png", a0)
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    X, y, names = load_image_folder(tmp_path)
    assert names == ["a", "b"] and X.shape == (3, 4, 5, 3) and X.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 1])
    np.testing.assert_array_equal(X[0], a0)
    np.testing.assert_array_equal(X[1], np.repeat(a1[..., None], 3, axis=2))
    np.testing.assert_array_equal(X[2], b1)

    grey, _, _ = load_image_folder(tmp_path, grayscale=True, image_size=(2, 3))
    assert grey.shape == (3, 2, 3, 1)

    # Decoded on several threads or one: the same array, in file order.
    for workers in (1, 3):
        again, _, _ = load_image_folder(tmp_path, workers=workers)
        np.testing.assert_array_equal(again, X)
    with pytest.raises(DataError, match="workers"):
        load_image_folder(tmp_path, workers=0)


def test_image_folder_flat_grey(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "imgs" / f"{i}.png", np.full((6, 6), 10 * i, dtype=np.uint8))
    X, y, names = load_image_folder(tmp_path / "imgs")
    assert X.shape == (3, 6, 6, 1) and names == ["imgs"]
    np.testing.assert_array_equal(y, [0, 0, 0])
    np.testing.assert_array_equal(X[:, 0, 0, 0], [0, 10, 20])


def test_image_folder_mixed_sizes(tmp_path: Path) -> None:
    _png(tmp_path / "c" / "a.png", np.zeros((4, 5), dtype=np.uint8))
    _png(tmp_path / "c" / "b.png", np.zeros((7, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"image .*b.png is 7x5 .* but .*a.png is 4x5.*image_size"):
        load_image_folder(tmp_path)
    X, _, _ = load_image_folder(tmp_path, image_size=8)
    assert X.shape == (2, 8, 8, 1)


def test_image_folder_corrupt_and_empty(cifar_jpeg_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "good" / "c"
    good.mkdir(parents=True)
    shutil.copy(cifar_jpeg_dir / "test" / "cat" / "0000.jpg", good / "0000.jpg")
    X, _, _ = load_image_folder(tmp_path / "good")
    assert X.shape == (1, 32, 32, 3)

    (good / "0001.png").write_bytes(b"\x89PNG definitely not an image")
    with pytest.raises(DataError, match=r"cannot read image .*0001.png"):
        load_image_folder(tmp_path / "good")

    cut = tmp_path / "cut" / "c"
    cut.mkdir(parents=True)
    data = (cifar_jpeg_dir / "test" / "cat" / "0000.jpg").read_bytes()
    (cut / "half.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*half.jpg"):
        load_image_folder(tmp_path / "cut")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"image folder .*empty holds no .png"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DataError, match=r"class folder .*cls holds no"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match=r"does not exist"):
        load_image_folder(tmp_path / "absent")


def test_image_folder_mixed_layout(tmp_path: Path) -> None:
    _png(tmp_path / "loose.png", np.zeros((2, 2), dtype=np.uint8))
    _png(tmp_path / "cls" / "x.png", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"both loose images \(loose.png"):
        load_image_folder(tmp_path)


# ----------------------------------------------------------------------------------------------
# Tables


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_load_csv_good(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b,label\n1,2.5,0\n\n3, 4,1\n")
    X, y = load_table(path, label_column="label")
    assert X.dtype == np.float32 and X.shape == (2, 2)
    np.testing.assert_array_equal(X, [[1, 2.5], [3, 4]])
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [0, 1])
    X2, y2 = load_table(path, label_column=-1)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    X3, y3 = load_table(path)
    assert X3.shape == (2, 3) and y3 is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,color\n1,red\n2,blue\n", r"d.csv column 'color' is not numeric \(line 2: 'red'\)"),
        ("a,b\n1,2\n3,4,5\n", r"d.csv has ragged rows: .*line 3"),
        ("a,b\n1,2\n3\n", r"d.csv has ragged rows: line 3 has 1 fields but the header has 2"),
        ("a,b\n1,2\n3,nan\n", r"missing or NaN value at line 3, column 'b'"),
        ("a,b\n1,2\n\n3,\n", r"missing or NaN value at line 4, column 'b'"),
        ("a,b\n1,inf\n", r"infinite value inf at line 2, column 'b'"),
        ("", r"d.csv is empty"),
        ("a,b\n", r"d.csv has a header \(a, b\) but no data rows"),
    ],
)
def test_load_csv_bad(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_table(_write(tmp_path / "d.csv", text))


def test_load_csv_bad_labels(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,y\n1,0\n2,0.5\n")
    with pytest.raises(DataError, match=r"column 'y' has a non-integer label 0.5 at row 1"):
        load_table(path, label_column="y")
    with pytest.raises(DataError, match=r"has no column 'z'; columns are \['a', 'y'\]"):
        load_table(path, label_column="z")


def test_load_table_missing_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file .*nope.csv not found"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"unsupported data file .*d.txt: extension '.txt'"):
        load_table(_write(tmp_path / "d.txt", "1,2\n"))


def test_load_npy(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "t.npy", data)
    X, y = load_table(tmp_path / "t.npy")
    assert X.dtype == np.float32 and y is None
    np.testing.assert_array_equal(X, data)
    X, y = load_table(tmp_path / "t.npy", label_column=0)
    np.testing.assert_array_equal(y, [0, 3, 6, 9])
    assert X.shape == (4, 2)

    images = np.zeros((5, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "img.npy", images)
    assert load_table(tmp_path / "img.npy")[0].shape == (5, 3, 8, 8)

    np.save(tmp_path / "flat.npy", np.arange(3.0))
    with pytest.raises(DataError, match=r"flat.npy has shape \(3,\); expected a 2-D table"):
        load_table(tmp_path / "flat.npy")
    data[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(DataError, match=r"nan.npy has a non-finite value .*nan at row 1, column 2"):
        load_table(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj.npy is not a plain numeric .npy array"):
        load_table(tmp_path / "obj.npy")


def test_load_npz(tmp_path: Path) -> None:
    X0 = np.ones((3, 2))
    np.savez(tmp_path / "xy.npz", X=X0, y=np.array([0, 1, 0]))
    X, y = load_table(tmp_path / "xy.npz")
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, [0, 1, 0])

    np.savez(tmp_path / "single.npz", data=X0)
    X, y = load_table(tmp_path / "single.npz")
    assert X.shape == (3, 2) and y is None

    np.savez(tmp_path / "two.npz", a=X0, b=X0)
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; name the data 'X'"):
        load_table(tmp_path / "two.npz")
    np.savez(tmp_path / "short.npz", X=X0, y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"short.npz\['y'\] has shape \(2,\); expected \(3,\)"):
        load_table(tmp_path / "short.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match=r"broken.npz"):
        load_table(tmp_path / "broken.npz")


def test_check_finite_2d() -> None:
    out = check_finite_2d(np.array([[1, 2], [3, 4]], dtype=np.int64))
    assert out.dtype == np.float32
    with pytest.raises(DataError, match=r"x has a non-finite value 1e\+300 at row 0, column 'b'"):
        check_finite_2d(np.array([[0.0, 1e300]]), source="x", column_names=["a", "b"])
    with pytest.raises(DataError, match=r"x is empty"):
        check_finite_2d(np.zeros((0, 3)), source="x")
    with pytest.raises(DataError, match=r"holds <U1 values, not real numbers"):
        check_finite_2d(np.array([["a"]]))


# ----------------------------------------------------------------------------------------------
# Gaussian mixtures


def test_grid_and_ring_mixtures() -> None:
    grid = grid_mixture()
    assert grid.centers.shape == (25, 2) and grid.centers.dtype == np.float32
    np.testing.assert_allclose(grid.centers.mean(axis=0), [0, 0], atol=1e-6)
    assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    ring = ring_mixture(n_modes=8, radius=2.0)
    np.testing.assert_allclose(np.linalg.norm(ring.centers, axis=1), 2.0, rtol=1e-6)
    np.testing.assert_allclose(ring.centers[0], [2.0, 0.0], atol=1e-6)
    with pytest.raises(DataError, match=r"centers must have shape \(m, 2\)"):
        GaussianMixture(np.zeros((3, 3)), 0.1)


def test_mixture_sampling() -> None:
    grid = grid_mixture(std=0.05)
    X, modes = grid.sample(5000, random_state=0)
    assert X.shape == (5000, 2) and X.dtype == np.float32 and modes.shape == (5000,)
    assert np.abs(X - grid.centers[modes]).max() < 6 * 0.05
    counts = np.bincount(modes, minlength=25)
    assert counts.min() > 120 and counts.max() < 280  # uniform: 200 each
    X2, _ = grid.sample(5000, random_state=0)
    np.testing.assert_array_equal(X, X2)

    stats = mode_coverage(X, grid)
    assert stats["n_modes"] == 25 and stats["modes_recovered"] == 25
    assert stats["high_quality_fraction"] > 0.99
    assert 0 <= stats["kl_uniform"] < 0.01


def test_mode_coverage_known_samples() -> None:
    grid = grid_mixture(side=5, spacing=2.0, std=0.05)
    c = grid.centers
    samples = np.stack([c[0], c[0], c[7], c[7] + [0.15, 0.0], c[24], [1.0, 1.0]])
    stats = mode_coverage(samples, grid, n_std=4.0)  # radius 0.2
    assert stats["modes_recovered"] == 3
    assert stats["high_quality_fraction"] == pytest.approx(5 / 6)
    p = np.array([2, 2, 1]) / 5
    assert stats["kl_uniform"] == pytest.approx(float(np.sum(p * np.log(p * 25))))

    tight = mode_coverage(samples, grid, n_std=2.0)  # radius 0.1: the shifted sample is out
    assert tight["modes_recovered"] == 3 and tight["high_quality_fraction"] == pytest.approx(4 / 6)

    none = mode_coverage(np.array([[1.0, 1.0]]), grid)
    assert none["modes_recovered"] == 0 and none["high_quality_fraction"] == 0.0
    assert math.isnan(none["kl_uniform"])


def test_unequal_weights_are_drawn_and_measured_against() -> None:
    w = unequal_weights(25, ratio=10.0)
    assert w.sum() == pytest.approx(1.0) and w.max() / w.min() == pytest.approx(10.0)
    grid = grid_mixture(5, weights=w)
    border = np.abs(grid.centers).max(axis=1) == 4
    light = np.argsort(w)[:8]  # the eight lightest modes lie inside the grid and on its border
    assert border[light].any() and (~border[light]).any()
    X, modes = grid.sample(20_000, random_state=0)
    share = np.bincount(modes, minlength=25) / len(modes)
    np.testing.assert_allclose(share, w, atol=0.005)
    stats = mode_coverage(X, grid)
    assert stats["modes_recovered"] == 25
    assert stats["kl_weights"] < 0.01 < 0.1 < stats["kl_uniform"]  # right against its weights
    equal = grid_mixture(5)
    Xe, _ = equal.sample(5000, random_state=0)
    same = mode_coverage(Xe, equal)
    assert same["kl_weights"] == pytest.approx(same["kl_uniform"])
    with pytest.raises(DataError, match="weights"):
        grid_mixture(3, weights=np.ones(4))
    with pytest.raises(DataError, match="weights"):
        grid_mixture(2, weights=[1.0, -1.0, 1.0, 1.0])


def test_mode_coverage_min_count() -> None:
    grid = grid_mixture(side=5, spacing=2.0, std=0.05)
    c = grid.centers
    samples = np.stack([c[0], c[0], c[0], c[7], c[7], c[24]])
    assert mode_coverage(samples, grid)["modes_recovered"] == 3
    assert mode_coverage(samples, grid, min_count=2)["modes_recovered"] == 2
    assert mode_coverage(samples, grid, min_count=3)["modes_recovered"] == 1


def test_csv_rows_longer_than_the_header_are_refused_not_indexed(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text("a,b\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="line 2 has 3 fields but the header has 2"):
        load_table(path)


def test_semicolon_csv_with_decimal_commas_is_read_as_such(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("a;b;c\n1,5;2,25;3\n4,0;5,5;6\n")
    X, _ = load_table(path)
    np.testing.assert_array_equal(X, [[1.5, 2.25, 3.0], [4.0, 5.5, 6.0]])
    tabs = tmp_path / "tab.csv"
    tabs.write_text("a\tb\n1.5\t2\n")
    np.testing.assert_array_equal(load_table(tabs)[0], [[1.5, 2.0]])
