"""Published figures shown beside the measured ones: copied from the papers, never measured here.

Held-out-digit AUPRC on MNIST (trapezoidal area, anomaly = positive) from the MEG paper's table,
which also lists the VAE and BiGAN-sigma baselines; the Small-GAN paper's MEG + core-set figures
could not be checked against its text and are marked unverified. The published runs used a split
in which most "normal" test images were also training images (see the project background), so
they are reference points, not like-for-like comparisons.

One-class CIFAR-10 mean AUROC of well-known methods (Deep SVDD, AnoGAN, GEOM, CSI), rounded.
"""

from __future__ import annotations

__all__ = [
    "PUBLISHED_HELDOUT_AUPRC",
    "PUBLISHED_MEG",
    "PUBLISHED_NOTE",
    "PUBLISHED_ONE_CLASS_AUROC",
    "TARGET_DIGITS",
]

#: Digits with published held-out figures.
TARGET_DIGITS = (1, 4, 5, 7, 9)

#: Name of the published MEG column (the figure the targets compare against).
PUBLISHED_MEG = "MEG"

#: Held-out MNIST AUPRC per digit, by method (published, not measured).
PUBLISHED_HELDOUT_AUPRC: dict[str, dict[int, float]] = {
    "VAE": {1: 0.063, 4: 0.337, 5: 0.325, 7: 0.148, 9: 0.104},
    "MEG": {1: 0.281, 4: 0.401, 5: 0.402, 7: 0.290, 9: 0.342},
    "BiGAN-σ": {1: 0.287, 4: 0.443, 5: 0.514, 7: 0.347, 9: 0.307},
    "MEG + core-set, unverified": {1: 0.35, 4: 0.45, 5: 0.42, 7: 0.34, 9: 0.36},
}

#: One-class mean AUROC over the ten classes, by data set and method (published, not measured).
PUBLISHED_ONE_CLASS_AUROC: dict[str, dict[str, float]] = {
    "cifar10": {"Deep SVDD": 0.65, "AnoGAN": 0.62, "GEOM": 0.86, "CSI": 0.94},
}

#: The words that mark every published figure in a table.
PUBLISHED_NOTE = "published, not measured"
