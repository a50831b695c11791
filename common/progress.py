"""One place for progress bars: a thin wrapper over rich, on stderr, off when not wanted.

Library code calls :func:`progress` with ``enabled=verbose``; the bar is also hidden when stderr is
not a terminal, so logs and CI output stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .distributed import is_main


class _Bar:
    """Handle returned by :func:`progress`: ``advance`` it and optionally ``set_postfix`` text."""

    def __init__(self, progress: Progress | None, task: int | None):
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_postfix(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, postfix=text)


@contextmanager
def progress(total: int, description: str, enabled: bool = True) -> Iterator[_Bar]:
    """Context manager yielding a progress bar on stderr of ``total`` steps.

    The bar is drawn only when ``enabled``, stderr is a terminal and this process is rank 0 of
    a torchrun job (or alone); otherwise the handle's methods do nothing.
    """
    if not enabled or not sys.stderr.isatty() or not is_main():
        yield _Bar(None, None)
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
        console=Console(stderr=True),
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, postfix="")
        yield _Bar(bar, task)
