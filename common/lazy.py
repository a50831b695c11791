"""Lazy package attributes (PEP 562): a package's public names imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any], sources: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names load on first use.

    ``namespace`` is the package's ``globals()``; ``sources`` maps each lazy name to the
    submodule that defines it; ``public`` is the package's ``__all__``. A name, once imported,
    is kept in ``namespace`` so later lookups are plain attribute reads.
    """
    package = namespace["__name__"]
    public = list(public)

    def __getattr__(name: str) -> Any:
        if name in sources:
            value = getattr(importlib.import_module(f"{package}.{sources[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
