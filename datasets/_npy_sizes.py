"""Sizes a ``.npy`` or ``.npz`` file declares, checked before numpy allocates them.

A ``.npy`` header states the array's shape and dtype, and numpy allocates that much before it
reads a byte of data: a 300-byte file can ask for hundreds of gigabytes. The declared size is
checked against what the file holds (and, for a compressed ``.npz``, against what deflate can
expand its bytes to and the machine's memory) so that such a file is a one-line error.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["check_declared_sizes"]

#: deflate expands at most about 1032:1; more is a lying zip entry.
_MAX_DEFLATE_RATIO = 1100


def _declared(file) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """``(shape, dtype, header bytes)`` of the ``.npy`` stream ``file``; None when the header
    is not one numpy reads (np.load then says so)."""
    try:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(file)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(file)
        return tuple(int(s) for s in shape), np.dtype(dtype), file.tell()
    except (ValueError, OSError, EOFError, TypeError):
        return None


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_declared_sizes(path: str | os.PathLike[str]) -> None:
    """Raise :class:`DataError` when a ``.npy`` / ``.npz`` file declares more data than it
    holds, than its compressed bytes can expand to, or than the machine's memory."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with open(path, "rb") as file:
            found = _declared(file)
        if found is None:
            return
        shape, dtype, offset = found
        held = os.path.getsize(path) - offset
        if _nbytes(shape, dtype) > held:
            raise DataError(
                f"{path} declares a {shape} {dtype} array ({_nbytes(shape, dtype):,} bytes) but "
                f"holds {held:,} bytes of data: the file is damaged or not what it claims"
            )
        return
    if suffix != ".npz":
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # np.load says what is wrong
    total = 0
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            if (
                info.compress_type != zipfile.ZIP_STORED
                and info.file_size > _MAX_DEFLATE_RATIO * max(info.compress_size, 1)
            ):
                raise DataError(
                    f"{path}: {info.filename} claims to expand from {info.compress_size:,} to "
                    f"{info.file_size:,} bytes, more than compression allows; the archive is "
                    "damaged or not what it claims"
                )
            try:
                with archive.open(info) as file:
                    found = _declared(file)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError):
                return
            if found is None:
                continue
            shape, dtype, offset = found
            nbytes = _nbytes(shape, dtype)
            if nbytes > info.file_size - offset:
                raise DataError(
                    f"{path}: {info.filename} declares a {shape} {dtype} array ({nbytes:,} "
                    f"bytes) but holds {max(info.file_size - offset, 0):,}: the archive is "
                    "damaged or not what it claims"
                )
            total += nbytes
    memory = _memory_bytes()
    if memory is not None and total > memory:
        raise DataError(f"{path} expands to {total:,} bytes, more than this machine's memory")
