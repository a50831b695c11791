"""Atomic writes: a file or a folder appears at its destination whole, or not at all.

Everything is written under a hidden temporary name beside the destination (same file system)
and renamed onto it at the end; an error or a kill before that leaves the destination as it was.
New files and folders get the permissions the umask gives (``mkstemp``/``mkdtemp`` alone would
make them private).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

__all__ = ["atomic_path", "file_sha256", "follow_umask", "read_regular_text", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike[str], mode: int = 0o666) -> None:
    """Give ``path`` the permissions ``mode`` less the umask, as a plain ``open`` would (for
    files that libraries create private)."""
    os.chmod(path, mode & ~_umask())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _recover(path: Path) -> None:
    """Clean up after a save that was killed: put a moved-aside folder back if ``path`` is
    missing, and remove the temporary and old copies left beside it."""
    leftovers = sorted(path.parent.glob(f".{path.name}.old-*")) + sorted(
        path.parent.glob(f".{path.name}.tmp-*")
    )
    for old in leftovers:
        kept = old / path.name
        if not path.exists() and old.name.startswith(f".{path.name}.old-") and kept.is_dir():
            os.replace(kept, path)
        shutil.rmtree(old, ignore_errors=True)


def _replace_folder(tmp: Path, path: Path) -> None:
    """Put the folder ``tmp`` at ``path``: swapped in one step where the system can, else by two
    renames (a kill between them leaves the old folder aside, and the next save restores it)."""
    if not path.exists():
        os.replace(tmp, path)
    elif _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
    else:
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        os.replace(path, old / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, directory: bool = False, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Final location; its parent folders are created. A symbolic link is followed: its
        target is replaced, and the link stays.
    directory : bool, default=False
        Yield an empty folder rather than a file name. An existing folder at ``path`` is
        swapped with the new one in one step (Linux; elsewhere moved aside first), then removed;
        what an interrupted earlier save left beside ``path`` is recovered or removed first.
        Saves into one parent folder take turns (an advisory lock on the folder).
        A temporary file that a killed writer of ``path`` left is removed.
    suffix : str, default=".tmp"
        Suffix of a temporary file (matplotlib, for one, picks the format from it).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    if path.is_symlink():  # write to the link's target; the link stays a link
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if directory:
            # One save at a time into a folder: the next save's clean-up would otherwise take
            # this one's temporary folder for a leftover.
            stack.enter_context(_folder_lock(path.parent))
            _recover(path)
        else:
            _sweep_files(path)
        prefix = f".{path.name}.tmp-{os.getpid()}-"
        tmp = None
        # The temporary path is made inside the ``try``: a signal turned into an exception
        # (the CLI's SIGTERM) just after it exists still removes it.
        try:
            if directory:
                tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
                os.chmod(tmp, 0o777 & ~_umask())
            else:
                fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
                tmp = Path(name)
                os.close(fd)
                os.chmod(tmp, 0o666 & ~_umask())
            yield tmp
            if directory:
                _replace_folder(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            if tmp is not None and tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp is not None and tmp.exists():
                tmp.unlink()


#: Seconds a folder save waits for another save into the same folder before giving up.
LOCK_WAIT_SECONDS = 600.0


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an advisory lock (``flock``) on ``folder`` itself: no file is left behind. Waits up
    to LOCK_WAIT_SECONDS for another holder, then raises OSError naming the folder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(
                        f"another save into {folder} has been in progress for over "
                        f"{LOCK_WAIT_SECONDS:g} s; try again when it has finished"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sweep_files(path: Path) -> None:
    """Remove the temporary files that writers killed before they finished left in ``path``'s
    folder (any destination's: their process is gone); those of live writers are left alone."""
    for old in path.parent.glob(".*.tmp-*"):
        match = _TEMPORARY_FILE.match(old.name)
        if match is None or int(match[1]) == os.getpid() or _alive(int(match[1])):
            continue
        if old.is_file() and not old.is_symlink():
            old.unlink(missing_ok=True)


#: A temporary file of :func:`atomic_path`: ``.NAME.tmp-PID-XXXXXXXX[SUFFIX]`` (mkstemp's 8).
_TEMPORARY_FILE = re.compile(r"^\..+\.tmp-(\d+)-[a-z0-9_]{8}(\.[^.]*)?$")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_regular_text(path: str | os.PathLike[str], *, limit: int) -> str:
    """The UTF-8 text of the regular file ``path`` (links followed), of at most ``limit`` bytes.

    A FIFO, a device (a link to ``/dev/zero``, say) or a folder is refused without waiting on
    it or reading it, and so is a file larger than ``limit``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When it is not a regular file, is too large, or is not UTF-8 text
        (:class:`UnicodeDecodeError`).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO does not wait for a writer
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit:,} bytes")
    return data.decode("utf-8")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex (read in blocks of 1 MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
