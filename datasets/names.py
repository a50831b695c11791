"""Data-set names as users write them, and the one canonical form the code compares."""

from __future__ import annotations

__all__ = ["dataset_key"]

#: Other spellings of the built-in data sets' names (after lower case and ``_`` -> ``-``).
_ALIASES = {"cifar-10": "cifar10", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist"}


def dataset_key(name: str) -> str:
    """The canonical name of a data set: lower case, ``_`` read as ``-``, and the other
    spellings of the built-in sets' names mapped to theirs. Other names pass through so.

    >>> dataset_key("CIFAR-10"), dataset_key("Fashion_MNIST"), dataset_key("fashion")
    ('cifar10', 'fashion-mnist', 'fashion-mnist')
    >>> dataset_key("My_Table")
    'my-table'
    """
    key = str(name).lower().replace("_", "-")
    return _ALIASES.get(key, key)
