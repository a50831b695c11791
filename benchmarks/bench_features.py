"""Throughput and detection quality of the pretrained feature extractors against resolution.

    python benchmarks/bench_features.py --threads 1    # throughput table (200 CIFAR images)
    python benchmarks/bench_features.py --skip-throughput --quality cat,ship,automobile

Throughput: the fastest batch of 64 (after a warm-up), in images per wall-clock and per CPU
second, and the minutes to embed 60,000 images (target: under 40 on two cores). On cores shared
with other work two threads lose most of their time waiting for each other: compare --threads 1.
Quality: one-class 1-NN AUROC on L2-normalised features, on a validation split inside the
CIFAR-10 *training* folder: the first --train images of the normal class against the last --test
images of every class (never the test folder). The JPEG copy of CIFAR-10 makes the numbers close
to, not equal to, results on the original files.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from coreset_meg.features import compute_embeddings, make_embedder

SIZES = {
    "efficientnet-lite0": (32, 64, 96, 128, 160, 224),
    "inception": (75, 96, 128, 160, 224, 299),
}
N_FULL = 60_000  # images in a whole small-image data set (MNIST, CIFAR-10 train + test)


def load(folder: Path, cls: str, start: int, count: int) -> np.ndarray:
    """``count`` uint8 images (N, 3, 32, 32) of one class, from the ``start``-th in name order."""
    files = sorted((folder / cls).iterdir())[start : start + count]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]).transpose(0, 3, 1, 2)


def throughput(images: np.ndarray, names: list[str], threads: int) -> None:
    # Other work on shared cores slows some batches: the fastest batch of 64 is reported, in
    # wall-clock and in CPU seconds of this process (all threads).
    print("| extractor | size | images/s | images/CPU-s | minutes for 60k |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        for size in SIZES[name]:
            embedder = make_embedder(f"{name}@{size}")
            embedder(images[:8])  # warm-up
            walls, cpus = [], []
            for lo in range(0, len(images) - 63, 64):
                wall, cpu = time.perf_counter(), time.process_time()
                embedder(images[lo : lo + 64])
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            rate, minutes = 64 / min(walls), N_FULL * min(walls) / 64 / 60
            row = f"| {name} | {size} | {rate:.1f} | {64 / min(cpus):.1f} | {minutes:.0f} |"
            print(row, flush=True)


def knn_auroc(train: np.ndarray, test: np.ndarray, is_anomaly: np.ndarray) -> float:
    """AUROC of the 1-NN distance on unit vectors (squared: 2 - 2 x the largest cosine)."""
    train, test = (a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12) for a in (train, test))
    return float(roc_auc_score(is_anomaly, -(test @ train.T).max(axis=1)))


def quality(folder: Path, classes: list[str], args: argparse.Namespace, names: list[str]) -> None:
    all_classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    start = 5000 - args.test  # the last images of each class: never among the training ones
    test = np.concatenate([load(folder, c, start, args.test) for c in all_classes])
    labels = np.repeat(all_classes, args.test)
    trains = {c: load(folder, c, 0, args.train) for c in classes}
    print(f"\n| extractor | size | {' | '.join(classes)} | mean |")
    print("|---|---:|" + "---:|" * (len(classes) + 1))
    for name in names:
        for size in SIZES[name]:
            embedder = make_embedder(f"{name}@{size}")
            emb = {c: compute_embeddings(x, embedder, cache_dir=args.cache_dir)
                   for c, x in [("test", test), *trains.items()]}  # fmt: skip
            aurocs = [knn_auroc(emb[c], emb["test"], labels != c) for c in classes]
            cells = " | ".join(f"{a:.3f}" for a in aurocs)
            print(f"| {name} | {size} | {cells} | {np.mean(aurocs):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--data", type=Path, default=Path("../shared/data/cifar10-jpeg/train"))
    add("--images", type=int, default=200, help="images timed per setting")
    add("--threads", type=int, default=2)
    add("--sizes", default="", help="replace SIZES, e.g. 'inception=75,96;efficientnet-lite0=64'")
    add("--quality", default="", help="normal classes for the kNN table (none: no table)")
    add("--train", type=int, default=1000, help="training images of the normal class")
    add("--test", type=int, default=200, help="test images per class")
    add("--cache-dir", default=None, help="embedding cache for --quality")
    add("--skip-throughput", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for item in filter(None, args.sizes.split(";")):
        name, sizes = item.split("=")
        SIZES[name] = tuple(int(v) for v in sizes.split(","))
    names = list(SIZES)
    classes = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    per_class = -(-args.images // len(classes))
    images = np.concatenate([load(args.data, c, 0, per_class) for c in classes])[: args.images]
    if not args.skip_throughput:
        print(f"{len(images)} CIFAR-10 images, {args.threads} threads, load average", end=" ")
        print("/".join(f"{v:.1f}" for v in os.getloadavg()), "(1/5/15 min)\n")
        throughput(images, names, args.threads)
    if args.quality:
        quality(args.data, args.quality.split(","), args, names)


if __name__ == "__main__":
    main()
