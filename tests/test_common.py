"""The internal helpers: atomic writes."""

from __future__ import annotations

import os
import stat

import pytest

from coreset_meg.common import atomic_path, write_text_atomic


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


def test_folder_swap_is_one_step_and_a_killed_save_is_recovered(tmp_path, monkeypatch):
    import coreset_meg.common.io as cio

    target = tmp_path / "model"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "w.txt").write_text("old")
    # Where the system cannot swap in one step, a kill between the two renames leaves the old
    # folder aside; the next save puts it back before anything else, and removes leftovers.
    monkeypatch.setattr(cio, "_exchange", lambda a, b: False)
    real_replace, calls = os.replace, []

    def killed_after_first_rename(src, dst):
        calls.append(dst)
        real_replace(src, dst)
        if len(calls) == 1:
            raise KeyboardInterrupt  # stands in for the kill

    monkeypatch.setattr(cio.os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt), atomic_path(target, directory=True) as tmp:
        (tmp / "w.txt").write_text("new")
    monkeypatch.setattr(cio.os, "replace", real_replace)
    assert not target.exists()  # the dangerous moment
    cio._recover(target)
    assert (target / "w.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    monkeypatch.undo()
    with atomic_path(target, directory=True) as tmp:  # the one-step swap where available
        (tmp / "w.txt").write_text("newer")
    assert (target / "w.txt").read_text() == "newer"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


_SAVER = """
import os, sys, time, pathlib
import coreset_meg.common.io as cio
target, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
if mode == "two-renames":  # no one-step swap: stop between the renames until killed
    cio._exchange = lambda a, b: False
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        (target.parent / "between").touch()
        time.sleep(60)
    cio.os.replace = replace
    with cio.atomic_path(target, directory=True) as tmp:
        (tmp / "w.txt").write_text("new")
else:  # save versions 1, 2, 3, ... as fast as possible until killed
    for i in range(1, 10**9):
        with cio.atomic_path(target, directory=True) as tmp:
            (tmp / "w.txt").write_text(str(i) * 1000)
        if i == 1:  # the test kills it only after this, however slowly it started
            (target.parent / "saved").touch()
"""


def _saver(target, mode):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", _SAVER, str(target), mode])


def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_folder(tmp_path):
    import random
    import signal
    import time

    target = tmp_path / "model"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "w.txt").write_text("0" * 1000)
    rng, seen = random.Random(0), set()
    for _ in range(5):
        proc = _saver(target, "loop")
        while not (tmp_path / "saved").exists() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.random() * 0.5)  # then at any moment of a later save
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        text = (target / "w.txt").read_text()  # always one whole version, never none
        unit = text[: len(text) // 1000]
        assert unit.isdigit() and text == unit * 1000
        seen.add(unit)
        (tmp_path / "saved").unlink()
    assert len(seen - {"0"}) >= 1  # the saves did run before the kills
    with atomic_path(target, directory=True) as tmp:  # the next save clears the leftovers
        (tmp / "w.txt").write_text("last")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_save_killed_between_two_renames_is_recovered_by_the_next(tmp_path):
    import signal
    import time

    target = tmp_path / "model"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "w.txt").write_text("old")
    proc = _saver(target, "two-renames")
    while not (tmp_path / "between").exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the old folder is moved aside, the new one not yet in
    assert proc.wait() == -signal.SIGKILL and not target.exists()
    (tmp_path / "between").unlink()
    with atomic_path(target, directory=True) as tmp:
        assert (target / "w.txt").read_text() == "old"  # put back before anything else
        (tmp / "w.txt").write_text("next")
    assert (target / "w.txt").read_text() == "next"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
