"""Error text helpers."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

__all__ = ["first_line", "write_failure"]


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty).

    >>> first_line(ValueError("bad value\\nmore detail")), first_line(KeyError())
    ('bad value', 'KeyError')
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def write_failure(err: BaseException, path) -> str:
    """Why writing ``path`` failed, in a few words: "no space left on device" when the disk is
    full (safetensors and torch hide the errno in their own messages), else the error's first
    line."""
    chain, cause = [], err
    while cause is not None and len(chain) < 50:  # torch chains the OSError under its own
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    full = (errno.ENOSPC, errno.EDQUOT)
    if any(getattr(one, "errno", None) in full or "No space left" in str(one) for one in chain):
        return "no space left on device"
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if shutil.disk_usage(folder).free < 2**20:
            return f"no space left on device ({first_line(err)})"
    except OSError:
        pass
    return first_line(err)
