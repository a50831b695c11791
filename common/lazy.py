"""Lazy package attributes (PEP 562): a package's public names imported on first use."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports", "moved_names"]


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


def moved_names(
    namespace: dict[str, Any], moves: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a module whose public names moved elsewhere.

    ``moves`` maps each old name to ``"new.module"`` (same name there) or ``"new.module:new"``
    (renamed). Reading an old name warns with a :class:`FutureWarning` that says where it is now,
    and returns the object from there; nothing is imported until a name is read.
    """
    module = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name not in moves:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new_name = moves[name].partition(":")
        new_name = new_name or name
        warnings.warn(
            f"{module}.{name} is deprecated and will be removed: use {target}.{new_name}",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(target), new_name)

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(moves))

    return __getattr__, __dir__
