"""Internal helpers every other package may use: atomic writes and progress bars.

This package imports nothing from the project, so ``datasets``, ``coreset``, ``gan`` and
``anomaly`` can all depend on it without cycles.
"""

from .io import atomic_path, write_text_atomic
from .progress import progress

__all__ = ["atomic_path", "progress", "write_text_atomic"]
