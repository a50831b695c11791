"""Internal helpers every other package may use: atomic writes, progress bars, error text.

This package imports nothing from the project, so ``datasets``, ``coreset``, ``gan`` and
``anomaly`` can all depend on it without cycles.
"""

from .cpu import available_cores
from .errors import first_line, write_failure
from .io import atomic_path, read_regular_text, write_text_atomic
from .progress import progress

__all__ = [
    "atomic_path",
    "available_cores",
    "first_line",
    "progress",
    "read_regular_text",
    "write_failure",
    "write_text_atomic",
]
