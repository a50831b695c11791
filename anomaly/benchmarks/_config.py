"""The shared settings of the benchmarks: one set of detector defaults per data-set family.

Every benchmark that trains a :class:`~anomaly.MEGDetector` takes its parameters from
:func:`detector_params`, so the core-set and random-batch variants (and every class and seed)
differ only where the comparison says they should. Change the defaults here, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anomaly.settings import IMAGE_DATASETS, family, preset

__all__ = [
    "IMAGE_DATASETS",
    "MIXTURE_SETTINGS",
    "QUICK_N_TEST",
    "QUICK_N_TRAIN",
    "BatchSetting",
    "detector_params",
    "family",
    "mixture_params",
]


#: Quick mode keeps this many training samples ...
QUICK_N_TRAIN = 600
#: ... and this many test samples (stratified, so both labels stay).
QUICK_N_TEST = 400


def detector_params(dataset: str, quick: bool = False) -> dict[str, Any]:
    """The product's preset for a data set's family (:func:`anomaly.settings.preset`)."""
    return preset(dataset, quick)


@dataclass(frozen=True)
class BatchSetting:
    """How the batches of one mixture / cost setting are drawn."""

    name: str  # label in tables and plots
    batch_size: int  # samples (and latents) the networks see per step
    prior_factor: int  # latent candidates per kept latent (1 = no selection)
    data_factor: int  # data candidates per kept sample (1 = no selection)

    @property
    def coreset(self) -> bool:
        """Whether any k-center selection happens."""
        return self.prior_factor > 1 or self.data_factor > 1


#: The three settings of the mixture benchmark (Small-GAN's comparison).
MIXTURE_SETTINGS = (
    BatchSetting("random 64", 64, 1, 1),
    BatchSetting("core-set 64", 64, 4, 8),
    BatchSetting("random 512", 512, 1, 1),
)


def mixture_params(quick: bool = False) -> dict[str, Any]:
    """Training settings of the Gaussian-mixture benchmark.

    Returns
    -------
    dict
        ``n_train`` (samples drawn from the mixture to train on), ``n_generated`` (samples
        drawn from the generator to measure coverage) and ``config``: the
        :class:`~gan.MEGConfig` fields shared by the three batch settings (an MLP with a uniform
        latent prior and an unbounded output, as in the third-party reproduction).
    """
    config: dict[str, Any] = {
        "n_iter": 2000,
        "n_energy_steps": 5,
        "latent_dim": 2,
        "network": "mlp",
        "width": 256,
        "learning_rate": 2e-4,
        "gp_weight": 0.1,
        "projection_dim": 32,
        "prior": "uniform",
        "bounded_output": False,
    }
    n_train, n_generated = 20_000, 10_000
    if quick:
        config.update(n_iter=5, width=16)
        n_train, n_generated = 2_000, 1_000
    return {"n_train": n_train, "n_generated": n_generated, "config": config}
