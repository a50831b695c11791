"""Download a file from a list of mirrors, verify its md5 and only then move it into place.

The file is streamed into a hidden temporary file in the destination folder and renamed onto the
destination with :func:`os.replace` only after its md5 matches, so an interrupted or corrupted
download never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from coreset_meg.common import atomic_path, progress

from .errors import DataError

__all__ = ["download_file", "md5sum"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SCHEMES = ("http", "https", "file")


def md5sum(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """Return the hexadecimal md5 digest of a file.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.
    chunk_size : int, optional
        Bytes read at a time.

    Returns
    -------
    str
        32 lowercase hexadecimal digits.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, md5: str | None, *, timeout: float, verbose: bool) -> None:
    """Stream ``url`` into a temporary file next to ``dest``; rename it once the md5 matches."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise DataError(f"unsupported URL scheme {scheme!r} in {url} (use http, https or file)")
    with atomic_path(dest, suffix=".part") as tmp:
        digest = hashlib.md5(usedforsecurity=False)
        with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else 0
            with progress(total, f"Downloading {dest.name}", enabled=verbose and total > 0) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.advance(len(block))
        got = digest.hexdigest()
        if md5 is not None and got != md5.lower():
            raise DataError(
                f"md5 mismatch for {dest.name} from {url}: got {got}, expected {md5.lower()}"
            )


def download_file(
    urls: str | Sequence[str],
    dest: str | os.PathLike[str],
    md5: str | None,
    *,
    timeout: float = 60.0,
    verbose: bool = True,
) -> Path:
    """Download a file, trying each mirror in turn, and check its md5.

    Parameters
    ----------
    urls : str or sequence of str
        Full URLs of the file (``http``, ``https`` or ``file``), tried in order until one
        succeeds.
    dest : str or os.PathLike
        Final path of the file. Its folder is created when missing. An existing file there is
        replaced only by a download whose md5 matches.
    md5 : str or None
        Expected hexadecimal md5 digest; ``None`` skips the check.
    timeout : float, optional
        Seconds to wait on each network operation.
    verbose : bool, optional
        Draw a progress bar on stderr (only when it is a terminal).

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DataError
        When every mirror fails; the message lists each URL with its error (an md5 mismatch
        included). No partial file is left behind.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise DataError(f"no download URL given for {Path(dest).name}")
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create folder {dest.parent}: {exc}") from exc
    errors = []
    for url in urls:
        logger.info("downloading %s from %s", dest.name, url)
        try:
            _fetch(url, dest, md5, timeout=timeout, verbose=verbose)
        except DataError as exc:
            errors.append(str(exc))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            errors.append(f"{url}: {reason}")
        else:
            logger.info("saved %s", dest)
            return dest
        logger.warning("download failed: %s", errors[-1])
    raise DataError(f"could not download {dest.name}: " + "; ".join(errors))
