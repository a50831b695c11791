"""The detector's settings: the trainer's groups, scoring, the run, and the family presets.

:class:`~anomaly.MEGDetector`'s parameters, their validation and docstring, ``anomaly fit``'s
options, ``--dry-run``/``--config`` files and the ``settings`` in ``model.json`` all come from
:data:`GROUPS`. The presets are the defaults per data family, shared by the command line and the
benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gan.config import TRAINING_GROUPS, SettingsGroup, setting, setting_fields

from .scoring import SCORE_TYPES

__all__ = [
    "GROUPS",
    "IMAGE_DATASETS",
    "PRESETS",
    "Run",
    "Scoring",
    "family",
    "group_params",
    "preset",
]


@dataclass
class Scoring(SettingsGroup):
    """How samples are scored and where the threshold goes."""

    score_type: str = setting(
        "energy",
        "anomaly score: E(x), the squared norm of its input gradient, or both standardised "
        "and added",
        choices=SCORE_TYPES,
        option="score",
    )
    contamination: str | float = setting(
        "auto",
        "share of training samples called outliers, in (0, 0.5]; 'auto': 3 scaled MADs "
        "below the median training score",
        kind=(str, float),
        option=None,
    )
    scaling: str = setting(
        "auto",
        "per-feature scaling fitted on the training data; auto: "
        "minmax for vectors, none for images",
        choices=("auto", "minmax", "standard", "none"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.contamination
        ok = value == "auto" if isinstance(value, str) else 0 < value <= 0.5
        if not ok:
            raise ValueError(
                f"invalid MEG setting contamination={value!r}: must be 'auto' or in (0, 0.5]"
            )


@dataclass
class Run(SettingsGroup):
    """Where and how a fit runs; none of it changes what is learned, but the seed."""

    image_shape: tuple | None = setting(
        None, "(C, H, W): read each row of a 2-D X as an image", kind=tuple, none=True, option=None
    )
    device: str = setting("auto", "auto (CUDA when available), cpu, cuda, cuda:1, ...")
    checkpoint_path: str | None = setting(
        None,
        "training checkpoint file: fit continues from it when it exists (same settings and "
        "seed), and writes it every checkpoint_every iterations and at the end",
        kind=str,
        none=True,
        option=None,
    )
    checkpoint_every: int = setting(0, "iterations between checkpoints (0: only at the end)", low=0)
    cache_dir: str | None = setting(None, "folder for cached data embeddings", kind=str, none=True)
    random_state: Any = setting(
        None,
        "seeds everything in fit; global random states are left alone",
        kind=object,
        none=True,
        option=None,
    )
    verbose: bool = setting(False, "progress bar on stderr", option=None)


#: Every group of detector settings, by name, in the order shown.
GROUPS: dict[str, type] = {**TRAINING_GROUPS, "scoring": Scoring, "run": Run}

#: Data sets whose samples are images (convolutional networks).
IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10")

#: Defaults per data family, over the detector's own defaults. Images: width 16 and 600
#: iterations keep an MNIST fit to about 2 minutes on one CPU core; core-set latents with random
#: data batches (selecting the data over-samples the sparse edge of the class and biases the
#: energy, benchmarks/bench_batch_density.py); the energy and its gradient norm fail on different
#: digits, their sum on none (README, "How the defaults were chosen"). Vectors: chosen on the
#: digits data set.
PRESETS: dict[str, dict[str, Any]] = {
    "images": {
        "n_iter": 600,
        "network": "conv",
        "width": 16,
        "latent_dim": 64,
        "data_factor": 1,
        "score_type": "energy+gradnorm",
    },
    "vectors": {"n_iter": 1000, "network": "mlp"},
}
#: Quick mode (smoke tests only; the scores mean nothing).
QUICK = {"n_iter": 5, "width": 8}


def family(dataset: str) -> str:
    """``"images"`` for MNIST, Fashion-MNIST and CIFAR-10 (and "images"); else ``"vectors"``.

    >>> family("CIFAR-10"), family("digits")
    ('images', 'vectors')
    """
    key = str(dataset).lower().replace("_", "-")
    key = {"cifar-10": "cifar10", "fashion": "fashion-mnist"}.get(key, key)
    return "images" if key in (*IMAGE_DATASETS, "images") else "vectors"


def preset(dataset: str, quick: bool = False) -> dict[str, Any]:
    """Detector parameters that differ from the defaults for a data set's family.

    The random-batch variant of the benchmarks is the same with ``prior_factor=1,
    data_factor=1``; callers add ``random_state`` and ``device``.

    >>> preset("mnist")["network"]
    'conv'
    >>> preset("digits", quick=True)["n_iter"]
    5
    """
    params = dict(PRESETS[family(dataset)])
    if quick:
        params.update(QUICK)
    return params


def group_params(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat detector parameters as ``{group: {name: value}}`` (unknown names are dropped)."""
    out: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
    for group, field in setting_fields(GROUPS):
        if field.name in params:
            out[group][field.name] = params[field.name]
    return out
