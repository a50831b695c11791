"""The internal helpers: atomic writes."""

from __future__ import annotations

import os
import stat

import pytest

from common import atomic_path, write_text_atomic


def test_atomic_file_follows_the_umask_and_replaces(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a" / "x.txt", "one")
        write_text_atomic(path, "two")
    finally:
        os.umask(old)
    assert path.read_text() == "two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.txt"]


def test_an_error_leaves_the_destination_and_no_leftovers(tmp_path):
    path = write_text_atomic(tmp_path / "x.txt", "kept")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "model"
    for content in ("first", "second"):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "w.txt").write_text(content)
    assert (target / "w.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "other", directory=True):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "other").stat().st_mode) == 0o750
