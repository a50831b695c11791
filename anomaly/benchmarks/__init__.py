"""Benchmarks of the MEG detector: one entry point per benchmark, each writing to a folder.

Every entry point takes ``classes``, ``seeds``, ``device``, ``quick``, ``data_root``, ``out_dir``
and ``verbose`` (plus ``dataset`` or ``sides`` where they apply), writes a CSV of raw results,
``table.md``, PNG plots and ``meta.json`` into ``out_dir``, and returns the Markdown report.

* :data:`run_heldout`: held-out class protocol (MNIST), AUPRC beside the published figures.
* :data:`run_heldout_published`: the same on the published loaders' leaky split.
* :data:`run_one_class`: one-class protocol (MNIST, CIFAR-10), AUROC.
* :func:`run_mixture`: mode coverage of the generator on 2-D Gaussian grids.
* :func:`run_cost`: time per training step with and without core-set selection.

The detectors compared by the first two are the registry :data:`DETECTORS`.
"""

from collections.abc import Callable

from .cost import run_cost
from .detectors import DETECTORS, outlier_detector
from .mixture import run_mixture
from .protocols import run_heldout, run_heldout_published, run_one_class

__all__ = [
    "BENCHMARKS",
    "DETECTORS",
    "outlier_detector",
    "run_cost",
    "run_heldout",
    "run_heldout_published",
    "run_mixture",
    "run_one_class",
]

#: Benchmark name -> entry point.
BENCHMARKS: dict[str, Callable[..., str]] = {
    "heldout": run_heldout,
    "heldout-published": run_heldout_published,
    "one-class": run_one_class,
    "mixture": run_mixture,
    "cost": run_cost,
}
