"""MEG energy GAN: networks, losses and the trainer.

The names below are imported on first use (PEP 562), so that reading the settings
(:mod:`coreset_meg.gan.config`) does not import torch: the command line's ``--help`` starts fast.
"""

from coreset_meg.common.lazy import lazy_exports

#: Public name -> the submodule that defines it.
_SOURCES = {
    **dict.fromkeys(
        ["Batches", "MEGConfig", "Networks", "Objective", "Schedule", "Tickets"], "config"
    ),
    **dict.fromkeys(["AdvAug", "DiffAugment", "WeightMasks", "find_ticket"], "tickets"),
    **dict.fromkeys(
        ["energy_loss", "generator_loss", "input_gradient_sq_norm", "jsd_mutual_information"],
        "losses",
    ),
    **dict.fromkeys(["build_networks", "image_geometry"], "networks"),
    **dict.fromkeys(
        [
            "Callback",
            "Checkpoints",
            "GeneratorSamples",
            "LossTerm",
            "MEGTrainer",
            "MetricsLog",
            "NegativeSource",
            "Snapshots",
            "StepResult",
            "networks_from_config",
            "resolve_device",
            "seed_from",
        ],
        "trainer",
    ),
}

__all__ = [
    "AdvAug",
    "Batches",
    "Callback",
    "Checkpoints",
    "DiffAugment",
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
    "Tickets",
    "WeightMasks",
    "build_networks",
    "energy_loss",
    "find_ticket",
    "generator_loss",
    "image_geometry",
    "input_gradient_sq_norm",
    "jsd_mutual_information",
    "networks_from_config",
    "resolve_device",
    "seed_from",
]

__getattr__, __dir__ = lazy_exports(globals(), _SOURCES, __all__)
