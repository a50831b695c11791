"""MEG energy GAN: networks, losses and the trainer."""

from .config import Batches, MEGConfig, Networks, Objective, Schedule
from .losses import energy_loss, generator_loss, input_gradient_sq_norm, jsd_mutual_information
from .networks import build_networks, image_geometry
from .trainer import (
    Callback,
    Checkpoints,
    GeneratorSamples,
    LossTerm,
    MEGTrainer,
    MetricsLog,
    NegativeSource,
    Snapshots,
    StepResult,
    resolve_device,
    seed_from,
)

__all__ = [
    "Batches",
    "Callback",
    "Checkpoints",
    "GeneratorSamples",
    "LossTerm",
    "MEGConfig",
    "MEGTrainer",
    "MetricsLog",
    "NegativeSource",
    "Networks",
    "Objective",
    "Schedule",
    "Snapshots",
    "StepResult",
    "build_networks",
    "energy_loss",
    "generator_loss",
    "image_geometry",
    "input_gradient_sq_norm",
    "jsd_mutual_information",
    "resolve_device",
    "seed_from",
]
