"""Data sets for the anomaly detector: loaders, protocol splits and toy mixtures.

Every problem with input data raises :class:`DataError` with a one-line message.
"""

from ._paths import default_data_root
from .cifar import CIFAR10_CLASSES, load_cifar10, read_cifar_batch
from .digits import load_digits_data
from .errors import DataError
from .images import load_image_folder
from .mixtures import (
    GaussianMixture,
    grid_mixture,
    mode_coverage,
    ring_mixture,
    unequal_weights,
)
from .mnist import FASHION_MNIST_CLASSES, load_mnist, read_idx
from .names import dataset_key
from .splits import (
    BENCHMARKS,
    PROTOCOLS,
    Split,
    heldout_split,
    load_benchmark,
    one_class_split,
    published_heldout_split,
    to_model_input,
)
from .tabular import (
    CHUNK_ROWS,
    TableChunks,
    check_finite,
    check_finite_2d,
    check_labels,
    csv_feature_names,
    load_table,
)

__all__ = [
    "BENCHMARKS",
    "CHUNK_ROWS",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "PROTOCOLS",
    "DataError",
    "GaussianMixture",
    "Split",
    "TableChunks",
    "check_finite",
    "check_finite_2d",
    "check_labels",
    "csv_feature_names",
    "dataset_key",
    "default_data_root",
    "grid_mixture",
    "heldout_split",
    "published_heldout_split",
    "load_benchmark",
    "load_cifar10",
    "load_digits_data",
    "load_image_folder",
    "load_mnist",
    "load_table",
    "mode_coverage",
    "one_class_split",
    "read_cifar_batch",
    "read_idx",
    "ring_mixture",
    "to_model_input",
    "unequal_weights",
]
