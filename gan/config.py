"""Settings of an MEG run, grouped by concern: one typed dataclass field per setting.

Each field is declared once, with :func:`setting`: its default, one line of help and its valid
range. Everything else is derived from these declarations: :class:`MEGConfig` (what the trainer
reads), :class:`~coreset_meg.anomaly.MEGDetector`'s parameters, their validation and docstring, the
options of ``anomaly fit``, the ``settings`` of a saved ``model.json`` and the family presets.
Adding a setting means adding a field here (or to a group in :mod:`coreset_meg.anomaly.settings`)
and using it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Batches",
    "MEGConfig",
    "Networks",
    "Objective",
    "Schedule",
    "SettingsGroup",
    "Tickets",
    "check_setting",
    "setting",
    "setting_fields",
]


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    choices: tuple | None = None,
    kind: type | tuple[type, ...] | None = None,
    none: bool = False,
    option: str | None = "",
) -> Any:
    """Declare one setting: a dataclass field carrying its help text and valid values.

    Parameters
    ----------
    default
        Default value (immutable).
    help : str
        One line: what the setting does. Shown in docstrings and ``--help``.
    low, high : number, optional
        Bounds of a numeric setting, closed unless ``open_low`` / ``open_high``.
    choices : tuple, optional
        The allowed values of a categorical setting.
    kind : type or tuple of types, optional
        Required type; by default that of ``default`` (int, float, bool or str).
    none : bool, default=False
        Whether ``None`` is allowed.
    option : str or None, default=""
        Name of the command-line option: "" derives it from the field name, None hides the
        setting from the command line.
    """
    if kind is None and default is not None and not isinstance(default, tuple):
        kind = numbers.Real if type(default) is float else type(default)
    metadata = dict(
        help=help,
        low=low,
        high=high,
        open_low=open_low,
        open_high=open_high,
        choices=choices,
        kind=kind,
        none=none,
        option=option,
    )
    return dataclasses.field(default=default, metadata=metadata)


def check_setting(field: dataclasses.Field, value: Any, owner: str = "setting") -> None:
    """Raise ``ValueError`` naming the setting when ``value`` is not valid for ``field``."""
    meta = field.metadata

    def fail(why: str) -> None:
        raise ValueError(f"invalid {owner} {field.name}={value!r}: {why}")

    if value is None:
        if not meta["none"]:
            fail("must not be None")
        return
    kind = meta["kind"]
    if kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        fail("must be an integer")
    if kind is bool and not isinstance(value, bool | numbers.Integral):
        fail("must be true or false")
    if kind in (numbers.Real, float) and (
        isinstance(value, bool) or not isinstance(value, numbers.Real)
    ):
        fail("must be a number")
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if real and not math.isfinite(value):  # NaN compares false with every bound below
        fail("must be a finite number")
    if kind is tuple and not isinstance(value, tuple | list):
        fail("must be a list of numbers")
    if kind is str and not isinstance(value, str):
        fail("must be a string")
    if meta["choices"] is not None and value not in meta["choices"]:
        fail(f"must be one of {', '.join(map(repr, meta['choices']))}")
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["open_low"] else value < low):
        fail(f"must be {'>' if meta['open_low'] else '>='} {low}")
    if high is not None and (value >= high if meta["open_high"] else value > high):
        fail(f"must be {'<' if meta['open_high'] else '<='} {high}")


class SettingsGroup:
    """Base of the settings dataclasses: every field is checked when the group is built."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_setting(field, getattr(self, field.name), "MEG setting")

    @classmethod
    def pick(cls, params: Mapping[str, Any]):
        """The group built from the entries of a flat mapping that are its fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


@dataclass
class Networks(SettingsGroup):
    """Which networks are built, and how large."""

    network: str = setting(
        "coreset",
        "energy network: coreset (a mixture energy on a k-center core-set of the training "
        "samples, times a Gaussian), mlp or conv; auto: conv for images, mlp otherwise",
        choices=("coreset", "auto", "mlp", "conv"),
    )
    coreset_fraction: float = setting(
        1.0,
        "coreset network: share of the training samples kept as its centres (greedy k-center)",
        low=0,
        high=1,
        open_low=True,
    )
    gaussian_weight: float | None = setting(
        None,
        "coreset network: weight of its shrunk-covariance Gaussian term (0: none), in units "
        "of the temperature's scale per input dimension; None: 0.3 for image features, else 0",
        kind=float,
        low=0,
        none=True,
    )
    max_centres: int = setting(
        10_000,
        "coreset network: at most this many centres (memory and time; at least 2: one centre "
        "leaves the energy without a scale)",
        low=2,
    )
    temperature: float = setting(
        0.05,
        "coreset network: initial temperature, times the median squared distance from a "
        "training sample to its nearest other one",
        low=0,
        open_low=True,
    )
    width: int | None = setting(
        None,
        "MLP hidden units (256) or conv base channels (32) when None",
        kind=int,
        low=1,
        none=True,
    )
    latent_dim: int = setting(32, "size of the generator's latent input z", low=1)
    bounded_output: bool | None = setting(
        None,
        "end the generator with tanh (data in [-1, 1]); None: for images only",
        kind=bool,
        none=True,
    )
    spectral_norm: str = setting(
        "none",
        "spectral normalisation (BigGAN) of the linear and conv layers of the energy network, "
        "the generator or both (the coreset energy has none)",
        choices=("none", "energy", "generator", "both"),
    )


@dataclass
class Objective(SettingsGroup):
    """What the energy and the generator are trained to do, and the optimiser's steps."""

    n_energy_steps: int = setting(5, "energy updates per generator update (MEG: 5)", low=1)
    learning_rate: float = setting(2e-4, "Adam step size of every network", low=0, open_low=True)
    betas: tuple[float, float] = setting((0.5, 0.9), "Adam betas (MEG: 0.5, 0.9)", kind=tuple)
    gp_weight: float = setting(
        1.0, "weight of the zero-centred gradient penalty on real data", low=0
    )
    entropy_weight: float = setting(
        1.0, "weight of the generator's entropy term I(x; z) (MEG: 1)", low=0
    )
    orthogonal_reg: float = setting(
        0.0,
        "weight beta of BigGAN's orthogonal regularisation beta ||W W^T (1 - I)||_F^2 on every "
        "weight of E, G and T reshaped to (out, -1) (0: none; BigGAN: 1e-4)",
        low=0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"invalid MEG setting betas={self.betas!r}: two numbers in [0, 1)")


@dataclass
class Batches(SettingsGroup):
    """How each batch of data and of latents is drawn: Small-GAN's core-set selection."""

    batch_size: int = setting(64, "samples (and latents) the networks see per step", low=2)
    prior_factor: int = setting(
        4,
        "draw this many times the batch of latents, keep a k-center subset (1: plain draws)",
        low=1,
    )
    data_factor: int = setting(
        8,
        "draw this many times the batch of data, keep a k-center subset (1: plain random batches)",
        low=1,
    )
    projection_dim: int = setting(
        32, "random-projection size of the data embeddings that k-center selects on", low=1
    )
    embedding: str = setting(
        "pixels",
        "data embedding for the selection: 'pixels', 'efficientnet-lite0[@SIZE]', "
        "'inception[@SIZE]', 'torchscript:PATH[@SIZE]', 'torchvision:ARCH:WEIGHTS[@SIZE]' "
        "or a TorchScript feature extractor file",
    )
    prior: str = setting(
        "normal",
        "generator input: normal or uniform latents, or friendly: samples of the friendly set "
        "(Spider GAN)",
        choices=("normal", "uniform", "friendly"),
    )
    friendly: str | None = setting(
        None,
        "prior friendly: the friendly set, NAME[:CLASSES] (mnist, fashion-mnist, cifar10, "
        "digits; e.g. mnist:3 or cifar10:0,1), an image folder, or model:FOLDER (cascading: a "
        "saved detector's generator samples)",
        kind=str,
        none=True,
    )
    stratified: bool = setting(
        False,
        "core-set batches as strata: keep one random candidate of each k-center cell (the "
        "candidates nearest each pick), weighted by the cell's size in every loss, instead of "
        "the picks themselves, which over-represent the draw's outskirts (the latent box's "
        "faces, the data modes' tails); the weighted batch is an unbiased estimate of the prior "
        "and of the data",
        kind=bool,
    )
    truncation: float | None = setting(
        None,
        "truncation trick (BigGAN): latent entries beyond this magnitude are drawn again, for "
        "the energy step's negatives and generated samples, never the generator step (None "
        "or 0: none)",
        kind=float,
        low=0,
        none=True,
    )


@dataclass
class Schedule(SettingsGroup):
    """How long training runs, and what of it is kept."""

    n_iter: int | None = setting(
        None,
        "generator updates, each after n_energy_steps energy updates (None: 0 for the core-set "
        "energy, whose score MEG training does not move, 100 for the networks with weights)",
        kind=int,
        low=0,
        none=True,
    )
    ema_decay: float = setting(
        0.99,
        "decay of the weight average of E used to score (0: last iterate)",
        low=0,
        high=1,
        open_high=True,
    )
    lr_decay_start: float | None = setting(
        None,
        "share of n_iter after which every learning rate decays linearly towards 0 at n_iter "
        "(None: constant)",
        kind=float,
        low=0,
        high=1,
        open_high=True,
        none=True,
    )
    generator_ema: float = setting(
        0.0,
        "decay of a weight average of G used to draw generated samples, not negatives "
        "(0: none, the last G; BigGAN: 0.9999)",
        low=0,
        high=1,
        open_high=True,
    )
    n_snapshots: int = setting(
        1,
        "averaged energy nets kept evenly over the second half of "
        "training; their standardised scores are averaged",
        low=1,
    )
    log_every: int = setting(50, "iterations between metric records", low=1)


@dataclass
class Tickets(SettingsGroup):
    """Lottery tickets and augmentation for small data sets (Chen et al. 2021; Zhao et al. 2020)."""

    prune_rounds: int = setting(
        0,
        "rounds of iterative magnitude pruning of G before the final training (0: dense); each "
        "trains, removes prune_rate of the remaining weights, rewinds the rest to their initial "
        "values and resets E",
        low=0,
    )
    prune_rate: float = setting(
        0.2,
        "share of the remaining weights removed per pruning round (Chen et al.: 0.2)",
        low=0,
        high=1,
        open_low=True,
        open_high=True,
    )
    prune_energy: bool = setting(False, "prune E as well as G (mlp and conv energies only)")
    diffaugment: str = setting(
        "none",
        "DiffAugment of real and generated images before E in both updates: 'none' or a comma "
        "list of color, translation, cutout",
    )
    advaug: float = setting(
        0.0,
        "AdvAug: one signed-gradient step of this size (max-norm) on intermediate features of E "
        "and G, each loss averaged over clean and perturbed passes (0: off; Chen et al.: 0.01)",
        low=0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        parts = [p.strip() for p in self.diffaugment.split(",")]
        known = ("color", "translation", "cutout")
        if self.diffaugment != "none" and not (parts and all(p in known for p in parts)):
            raise ValueError(
                f"invalid MEG setting diffaugment={self.diffaugment!r}: 'none' or a comma list "
                f"of {', '.join(known)}"
            )


#: The trainer's groups, in the order they are shown.
TRAINING_GROUPS = {
    "networks": Networks,
    "objective": Objective,
    "batches": Batches,
    "schedule": Schedule,
    "tickets": Tickets,
}


def setting_fields(groups: Mapping[str, type]) -> Iterator[tuple[str, dataclasses.Field]]:
    """``(group name, field)`` for every setting of ``groups``, in declaration order."""
    for name, group in groups.items():
        for field in dataclasses.fields(group):
            yield name, field


@dataclass(slots=True)  # slots: a misspelt or flat name (config.n_iter = 4) is an error
class MEGConfig:
    """Everything that defines one MEG training run: the four groups of settings."""

    networks: Networks = dataclasses.field(default_factory=Networks)
    objective: Objective = dataclasses.field(default_factory=Objective)
    batches: Batches = dataclasses.field(default_factory=Batches)
    schedule: Schedule = dataclasses.field(default_factory=Schedule)
    tickets: Tickets = dataclasses.field(default_factory=Tickets)

    def __post_init__(self) -> None:
        for name, group in TRAINING_GROUPS.items():  # dicts (read from JSON) become groups
            value = getattr(self, name)
            if isinstance(value, Mapping):
                setattr(self, name, group(**value))
        coreset = self.networks.network == "coreset"
        if self.schedule.n_iter is None:  # resolved here, once: the trainer reads an int
            self.schedule = dataclasses.replace(self.schedule, n_iter=0 if coreset else 100)
        elif self.schedule.n_iter == 0 and not coreset:
            raise ValueError(
                f"n_iter=0 trains nothing, which only network='coreset' can score with "
                f"(network={self.networks.network!r} needs n_iter >= 1)"
            )

    @classmethod
    def from_params(cls, **params: Any) -> MEGConfig:
        """Build from flat settings (``n_iter=..., width=...``); unknown names are an error.

        >>> MEGConfig.from_params(n_iter=10, width=8).schedule.n_iter
        10
        """
        known = {field.name for _, field in setting_fields(TRAINING_GROUPS)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TypeError(f"unknown MEG setting(s): {', '.join(unknown)}")
        return cls(**{name: group.pick(params) for name, group in TRAINING_GROUPS.items()})

    def bounded_output(self, input_shape: tuple[int, ...]) -> bool:
        """Whether an MLP generator ends with tanh: as set, or (None) for images only."""
        bounded = self.networks.bounded_output
        return len(input_shape) == 3 if bounded is None else bool(bounded)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The settings as ``{group: {name: value}}``, ready for JSON."""
        out = {name: dataclasses.asdict(getattr(self, name)) for name in TRAINING_GROUPS}
        out["objective"]["betas"] = list(out["objective"]["betas"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MEGConfig:
        """Inverse of :meth:`to_dict`; a flat mapping (older checkpoints) is accepted too."""
        if set(data) <= set(TRAINING_GROUPS):
            return cls(**data)
        return cls.from_params(**{k: v for k, v in data.items() if k != "extra"})
