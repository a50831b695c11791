"""Shared test fixtures: where the shared copies of real data sets live. And a check that the
tests import this checkout's code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    """The tests import ``coreset_meg``: refuse to run on another copy of it (an install of
    another checkout, or none)."""
    hint = "install this checkout (pip install -e .) or put it on PYTHONPATH"
    try:
        import coreset_meg.anomaly
    except ImportError as err:
        raise pytest.UsageError(f"{err}: {hint}") from None
    for module in (coreset_meg, coreset_meg.anomaly):
        if not Path(module.__file__).resolve().is_relative_to(ROOT):
            raise pytest.UsageError(
                f"{module.__name__} is imported from {Path(module.__file__).parent}, not from "
                f"this checkout ({ROOT}): {hint}"
            )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding the shared data copies (``mnist/``, ``cifar10-jpeg/``); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_dir(shared_data: Path) -> Path:
    """Folder with the four original MNIST ``.gz`` files; skip if absent."""
    folder = shared_data / "mnist"
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST copy not found in {folder}")
    return folder


@pytest.fixture(scope="session")
def cifar_jpeg_dir(shared_data: Path) -> Path:
    """Folder with the image-folder copy of CIFAR-10; skip if absent."""
    folder = shared_data / "cifar10-jpeg"
    if not (folder / "train").is_dir():
        pytest.skip(f"CIFAR-10 JPEG copy not found in {folder}")
    return folder


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread: the tests' tiny networks run faster so on a two-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
