"""The detector's settings: the trainer's groups, inputs, scoring, the run, and the family presets.

Every setting is declared once, in :data:`GROUPS`, with its default, help and valid values;
``anomaly fit``'s options, ``--dry-run``/``--config`` files and the ``settings`` in
``model.json`` are flat or grouped settings. :class:`~coreset_meg.anomaly.MEGDetector` takes the
everyday ones as its own parameters (:data:`DETECTOR_PARAMS`) and the rest, the trainer's research
options, as one :class:`coreset_meg.gan.MEGConfig` (``training``); :func:`detector_params` turns
flat settings into its arguments. The presets are the defaults per data family, shared by the
command line and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coreset_meg.gan.config import (
    TRAINING_GROUPS,
    MEGConfig,
    SettingsGroup,
    setting,
    setting_fields,
)

from .scoring import SCORE_TYPES

__all__ = [
    "DETECTOR_PARAMS",
    "GROUPS",
    "TRAINER_PARAMS",
    "IMAGE_DATASETS",
    "Inputs",
    "PRESETS",
    "Run",
    "Scoring",
    "family",
    "default_settings",
    "detector_params",
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
        "scaling fitted on the training data: per feature (minmax, standard), each sample to "
        "unit length (l2) or none; auto: l2 for image features, minmax for other vectors, none "
        "for pixels, each part to its nearest-neighbour scale for both",
        choices=("auto", "minmax", "standard", "l2", "none"),
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
class Inputs(SettingsGroup):
    """What the networks see of an image: its pixels or pretrained features."""

    view: str = setting(
        "auto",
        "for images: the networks see their pixels, their pretrained features, or both side "
        "by side (each part scaled to the same typical nearest-neighbour distance); auto: "
        "features for colour images, both for grey ones with the core-set energy (pixels with the "
        "other networks; other inputs are taken as they are)",
        choices=("auto", "pixels", "features", "both"),
    )
    image_range: str = setting(
        "auto",
        "range of float images: symmetric ([-1, 1]) or unit ([0, 1], torchvision's ToTensor); "
        "auto: [-1, 1], refusing float images with no negative value, which could be either. "
        "Integer images are scaled by their dtype (uint8 0..255, uint16 0..65535)",
        choices=("auto", "symmetric", "unit"),
    )
    features: str = setting(
        "auto",
        "image feature extractor of the features view: 'efficientnet-lite0[@SIZE]' (128 px), "
        "'efficientnet-lite1[@SIZE]', 'inception[@SIZE]', 'torchscript:PATH[@SIZE]', "
        "'torchvision:ARCH:WEIGHTS[@SIZE]', 'mirror:NAME' (an image and its mirror image) or "
        "'A+B' (side by side); auto: 'mirror:efficientnet-lite0+efficientnet-lite1@240' for "
        "colour images, 'efficientnet-lite0' for grey ones",
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
GROUPS: dict[str, type] = {
    **TRAINING_GROUPS,
    "inputs": Inputs,
    "scoring": Scoring,
    "run": Run,
}

#: Training settings that are :class:`~coreset_meg.anomaly.MEGDetector` parameters (they decide its
#: default score: the core-set energy and how long it trains); the detector copies them into its
#: trainer's config. Every other training setting is a field of its ``training`` config.
TRAINER_PARAMS = {
    "networks": ("network", "coreset_fraction", "gaussian_weight", "max_centres", "temperature"),
    "schedule": ("n_iter",),
}

#: :class:`~coreset_meg.anomaly.MEGDetector`'s parameters besides ``training``, in its signature's
#: order.
DETECTOR_PARAMS = (
    "view",
    "features",
    "image_range",
    "image_shape",
    "scaling",
    *TRAINER_PARAMS["networks"],
    *TRAINER_PARAMS["schedule"],
    "score_type",
    "contamination",
    "random_state",
    "device",
    "cache_dir",
    "checkpoint_path",
    "checkpoint_every",
    "verbose",
)

#: Data sets whose samples are images (convolutional networks).
IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10")

#: Defaults per data family, over the detector's own defaults. Every family scores with the
#: core-set energy (the detector's default network; docs/results/how-defaults-were-chosen.md, on
#: validation splits only); images are seen through EfficientNet-Lite0 features scaled to unit
#: length (the default view). "features": the images' preset for callers that pass image
#: features themselves (the benchmarks embed each data set once).
PRESETS: dict[str, dict[str, Any]] = {
    "images": {},
    "features": {"scaling": "l2", "gaussian_weight": 0.3},
    "vectors": {},
}
#: Quick mode (smoke tests only; the scores mean nothing).
QUICK = {"n_iter": 5, "width": 8}


def family(dataset: str) -> str:
    """``"images"`` for MNIST, Fashion-MNIST and CIFAR-10 (and "images"), ``"features"`` for
    "features" (image features given as vectors); else ``"vectors"``.

    >>> family("CIFAR-10"), family("digits"), family("features")
    ('images', 'vectors', 'features')
    """
    from coreset_meg.datasets.names import dataset_key  # here: settings load for --help

    key = dataset_key(dataset)
    if key == "features":
        return key
    return "images" if key in (*IMAGE_DATASETS, "images") else "vectors"


def preset(dataset: str, quick: bool = False) -> dict[str, Any]:
    """Detector parameters that differ from the defaults for a data set's family.

    Callers add ``random_state`` and ``device``.

    >>> preset("features")["scaling"]
    'l2'
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


def default_settings() -> dict[str, Any]:
    """Every setting of :data:`GROUPS` at its default, flat (``{name: value}``)."""
    return {field.name: field.default for _, field in setting_fields(GROUPS)}


def detector_params(settings: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~coreset_meg.anomaly.MEGDetector`'s keyword arguments from flat settings.

    The detector's own parameters (:data:`DETECTOR_PARAMS`) are passed as given; the other
    training settings that differ from their defaults become its ``training`` config (a
    :class:`coreset_meg.gan.MEGConfig`, checked here), which is left out when there are none.

    >>> params = detector_params({"view": "pixels", "n_iter": 5, "width": 8, "batch_size": 64})
    >>> params["view"], params["n_iter"], params["training"].networks.width
    ('pixels', 5, 8)
    >>> "training" in detector_params({"batch_size": 64})  # the default
    False
    """
    defaults = default_settings()
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise TypeError(f"unknown MEG setting(s): {', '.join(unknown)}")
    params = {name: value for name, value in settings.items() if name in DETECTOR_PARAMS}
    training = {
        name: value
        for name, value in settings.items()
        if name not in DETECTOR_PARAMS and not _same(value, defaults[name])
    }
    if training:
        params["training"] = MEGConfig.from_params(**training)
    return params


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, list | tuple) and isinstance(default, tuple):
        return tuple(value) == default  # JSON gives lists
    return value is default or (value is not None and default is not None and value == default)
