"""The pixel and feature views combined: does ``view="both"`` beat each of its parts?

On the validation splits of ``bench_coreset_energy.py`` (the reported test sets are never
read), per class, the core-set energy as the detector initialises it (MEG training moves its
scores by less than 2e-4 AUROC at the defaults: docs/results/how-defaults-were-chosen.md) on

- ``pixels``: the flattened images, temperature 0.05, no Gaussian term (the pixel view);
- ``features``: the unit-length EfficientNet-Lite0 features, with the 0.3 Gaussian term (the
  features view);
- ``both``: the two side by side, each part divided by the square root of its median
  nearest-neighbour squared distance, as ``MEGDetector(view="both")`` builds its input
  (``tests/test_coreset_energy.py`` checks the detector against these vectors), without and
  with the 0.3 Gaussian term;
- ``sum``: the two views' energies added, each in units of its own scale (a score-level
  combination, for comparison), and ``max``, the larger of the two (an anomaly in either view);
- ``both, features x w``: the both view with its features' part multiplied by ``w``;

and kNN (5th neighbour) on the pixels and on the unit-length features for reference. A
combination counts only where it beats each of its parts::

    python benchmarks/bench_views.py --protocol one-class --dataset cifar10 --data-root DATA
    python benchmarks/bench_views.py --protocol heldout --dataset mnist --data-root DATA

Features come from the benchmarks' embedding cache (``--cache-dir``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_coreset_energy import classes_and_metric, energy_scores, print_table, validation_split

from coreset_meg.anomaly.benchmarks.features import DEFAULT_CACHE
from coreset_meg.features.embeddings import unit_length
from coreset_meg.gan import MEGConfig
from coreset_meg.gan.networks import CoresetEnergy
from coreset_meg.gan.trainer import coreset_energy_parts, nearest_neighbour_sq_distance

FEATURES_GAUSSIAN = 0.3  # the features view's default Gaussian weight
FEATURE_WEIGHTS = (0.5, 0.7, 1.4, 2.0)  # weights of the features' part tried in the both view


def coreset_energy(X_train, gaussian_weight: float, seed: int) -> CoresetEnergy:
    """The initial core-set energy (default temperature) fitted on ``X_train``."""
    config = MEGConfig.from_params(gaussian_weight=gaussian_weight)
    net = CoresetEnergy(X_train.shape[1])
    net.set_centres(**coreset_energy_parts(torch.from_numpy(X_train), config, seed))
    return net.eval()


def energy(X_train, X_test, gaussian_weight: float, seed: int) -> np.ndarray:
    """The initial core-set energy (default temperature) fitted on ``X_train``, at ``X_test``."""
    return energy_scores(coreset_energy(X_train, gaussian_weight, seed), X_test)


def knn(X_train, X_test, k: int = 5) -> np.ndarray:
    d2 = torch.cdist(torch.from_numpy(X_test), torch.from_numpy(X_train)).square()
    return d2.topk(k, largest=False).values[:, -1].numpy()


def scale(X: np.ndarray) -> float:
    """Square root of the median nearest-neighbour squared distance (the detector's)."""
    return float(np.sqrt(nearest_neighbour_sq_distance(torch.from_numpy(X), random_state=0)))


def measure(split_pixels, split_features, metric, seed: int) -> dict[str, float]:
    """Every score of one split."""
    P_train, P_test, y = split_pixels
    F_train, F_test, y_features = split_features
    if not np.array_equal(y, y_features):
        raise RuntimeError("the pixel and feature splits disagree")
    P_train, P_test = (
        np.asarray(a, dtype=np.float32).reshape(len(a), -1) for a in (P_train, P_test)
    )
    F_train, F_test = unit_length(F_train), unit_length(F_test)
    s_p, s_f = scale(P_train), scale(F_train)
    B_train = np.concatenate([P_train / s_p, F_train / s_f], axis=1)
    B_test = np.concatenate([P_test / s_p, F_test / s_f], axis=1)
    e_p = energy(P_train, P_test, 0.0, seed)
    e_f = energy(F_train, F_test, FEATURES_GAUSSIAN, seed)
    scores = {
        "kNN, pixels": knn(P_train, P_test),
        "kNN, unit-length features": knn(F_train, F_test),
        "pixels": e_p,
        "features": e_f,
        "both": energy(B_train, B_test, 0.0, seed),
        f"both + {FEATURES_GAUSSIAN} Gaussian": energy(B_train, B_test, FEATURES_GAUSSIAN, seed),
        "sum of the two energies": e_p / s_p**2 + e_f / s_f**2,
        "max of the two energies": np.maximum(e_p / s_p**2, e_f / s_f**2),
    }
    for weight in FEATURE_WEIGHTS:  # the both view with the features' part weighted
        B_train[:, P_train.shape[1] :] = weight * F_train / s_f
        B_test[:, P_test.shape[1] :] = weight * F_test / s_f
        scores[f"both, features x {weight}"] = energy(B_train, B_test, 0.0, seed)
    return {name: metric(y, s, higher="anomalous") for name, s in scores.items()}


def per_class(measure, dataset, protocol, classes, metric, args) -> list[dict]:
    """``{"class": c, **measure(pixel split, feature split, metric)}`` for each class of the
    validation split of seed ``args.seed`` (``args.data_root``, ``args.cache_dir``)."""
    rows = []
    for cls in classes:
        started = time.perf_counter()
        splits = [
            validation_split(
                dataset, protocol, cls, args.seed, args.data_root, view, args.cache_dir
            )
            for view in ("pixels", "features")
        ]
        rows.append({"class": cls, **measure(*splits, metric, seed=0)})
        print(f"class {cls}: {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("one-class", "heldout"), default="one-class")
    parser.add_argument("--dataset", choices=("cifar10", "mnist"), default="cifar10")
    parser.add_argument("--classes", help="comma-separated [default: all; heldout: 0,2,3,6,8]")
    parser.add_argument("--seed", type=int, default=10, help="seed of the validation split")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--out", default=None, help="CSV of the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    classes, metric = classes_and_metric(args.protocol, args.classes)
    rows = per_class(measure, args.dataset, args.protocol, classes, metric, args)
    name = "AUPRC" if args.protocol == "heldout" else "AUROC"
    title = f"{name}, {args.dataset} {args.protocol} validation, split seed {args.seed}"
    print_table(rows, title, args.out, digits=4)


if __name__ == "__main__":
    main()
