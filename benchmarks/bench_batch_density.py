"""Where do core-set data batches come from? Sparse regions of the training set, measured.

For each MNIST one-class training set (the normal class only), every training image gets the
mean distance to its 5 nearest neighbours in pixel space (a density proxy: larger = sparser).
The detector's data sampler then draws ``--batches`` batches of 64 with core-set selection
(data factor 8, the detector's default) and with plain random draws, and the table compares the
images they picked::

    python benchmarks/bench_batch_density.py --classes 0,1 --data-root ../shared/data

Columns: mean 5-NN distance of the picked images (the training set's own mean beside it); the
share of picks from the sparsest 10% of the training set (random draws: about 10%); and the
share of the training set picked at least once.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.neighbors import NearestNeighbors

from coreset_meg.coreset import make_sampler
from coreset_meg.datasets import default_data_root, load_benchmark


def measure(X: np.ndarray, batches: int, seed: int) -> list[list[str]]:
    """Table rows (core-set, random) for one training set of flattened images."""
    flat = X.reshape(len(X), -1).astype(np.float32)
    dist, _ = NearestNeighbors(n_neighbors=6).fit(flat).kneighbors(flat)
    sparsity = dist[:, 1:].mean(axis=1)  # (n,), the point itself excluded
    sparsest = sparsity > np.quantile(sparsity, 0.9)
    rows = []
    for name, factor in [("core-set (data factor 8)", 8), ("random", 1)]:
        sampler = make_sampler(
            X, batch_size=64, latent_dim=2, prior_factor=1, data_factor=factor, random_state=seed
        )
        picked = np.concatenate([sampler.sample_data_indices() for _ in range(batches)])
        rows.append(
            [
                name,
                f"{sparsity[picked].mean():.2f} (set: {sparsity.mean():.2f})",
                f"{100 * sparsest[picked].mean():.1f}",
                f"{100 * len(np.unique(picked)) / len(X):.1f}",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="0,1", help="comma-separated MNIST classes")
    parser.add_argument("--batches", type=int, default=300, help="batches drawn per sampler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="folder holding mnist/")
    args = parser.parse_args()
    root = args.data_root or default_data_root()
    header = ["class", "batches", "mean 5-NN distance", "% from sparsest 10%", "% of set picked"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join([":---", ":---", "---:", "---:", "---:"]) + "|")
    for cls in [int(c) for c in args.classes.split(",")]:
        split = load_benchmark("mnist", "one-class", cls, root=root, random_state=args.seed)
        for row in measure(split.X_train, args.batches, args.seed):
            print(f"| {cls} | " + " | ".join(row) + " |")
    print(f"\n{args.batches} batches of 64 per sampler, seed {args.seed}.")


if __name__ == "__main__":
    main()
