"""Which pretrained network and image size: validation quality against embedding speed.

CIFAR-10 one-class validation splits (inside the official *training* set, as in
``bench_adaptation.py``; the test set is never read): for each class, a seeded subsample of
``--n-train`` of its training images is the normal data and ``--n-val`` images of the
validation part (all classes) are scored. Every backbone embeds the same images (cached,
``--cache-dir``) and is scored by the detector's default energy (the core-set mixture plus the
0.3 Gaussian term on unit-length features) and by kNN (5th neighbour) on the same vectors.
Embedding speed is measured in the same run on the same 128 images for every backbone, and
reported beside Lite0 at 128 px (the default)::

    python benchmarks/bench_backbones.py --classes 0,1,2,3,4 --data-root DATA \\
        --out docs/results/backbones
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_adaptation import default_energy_scores, split_rows
from bench_coreset_energy import training_set
from bench_views import knn

from coreset_meg.anomaly import auroc
from coreset_meg.anomaly.benchmarks.features import DEFAULT_CACHE
from coreset_meg.datasets import to_model_input
from coreset_meg.features.embeddings import compute_embeddings, unit_length
from coreset_meg.features.pretrained import make_embedder

BACKBONES = (
    "efficientnet-lite0@128",
    "efficientnet-lite0@224",
    "efficientnet-lite1@128",
    "efficientnet-lite1@240",
    "efficientnet-lite2@128",
    "efficientnet-lite2@260",
    "inception@128",
    "inception@224",
)


def images_per_second(embedder, images: np.ndarray, repeats: int = 2) -> float:
    embedder(images[:16])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        embedder(images)
        best = min(best, time.perf_counter() - started)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--classes", default="0,1,2,3,4")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(vars(args), indent=1) + "\n")
    images, _ = training_set("cifar10", args.data_root)
    classes = [int(c) for c in args.classes.split(",")]
    splits = {}
    for cls in classes:
        train, val, y = split_rows("cifar10", cls, args.data_root, args.n_val)
        train = np.sort(np.random.default_rng(cls).choice(train, args.n_train, replace=False))
        splits[cls] = (train, val, y)
    val = splits[classes[0]][1]  # the same validation rows for every class
    rows_needed = np.unique(np.concatenate([val, *(s[0] for s in splits.values())]))
    X = to_model_input(images[rows_needed])
    position = {row: i for i, row in enumerate(rows_needed)}
    timing = to_model_input(images[:128])
    rows = []
    for name in args.backbones.split(","):
        embedder = make_embedder(name)
        speed = images_per_second(embedder, timing)
        started = time.perf_counter()
        F = unit_length(compute_embeddings(X, embedder, cache_dir=args.cache_dir, verbose=True))
        seconds = time.perf_counter() - started
        for cls, (train, val_rows, y) in splits.items():
            F_train = F[[position[r] for r in train]]
            F_val = F[[position[r] for r in val_rows]]
            rows.append(
                {
                    "backbone": name,
                    "class": cls,
                    "energy": auroc(
                        y, default_energy_scores(F_train, F_val, 0), higher="anomalous"
                    ),
                    "knn": auroc(y, knn(F_train, F_val), higher="anomalous"),
                    "images_per_second": speed,
                    "embed_seconds": seconds,
                }
            )
        print(
            name,
            f"{speed:.1f} img/s",
            pd.DataFrame(rows)
            .query("backbone == @name")[["energy", "knn"]]
            .mean()
            .round(4)
            .to_dict(),
            flush=True,
        )
        pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    table = (
        pd.DataFrame(rows)
        .groupby("backbone", sort=False)[["energy", "knn", "images_per_second"]]
        .mean()
    )
    table["speed vs lite0@128"] = table["images_per_second"] / table["images_per_second"].iloc[0]
    print(table.round(4).to_string())
    (out / "table.txt").write_text(table.round(4).to_string() + "\n")


if __name__ == "__main__":
    main()
