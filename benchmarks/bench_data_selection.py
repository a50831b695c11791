"""Which batches should be core-sets: data, latents, both or neither? One-class MNIST AUROC.

Fits the benchmark's MNIST detector (``coreset_meg.anomaly.settings.preset("mnist")``) on
one-class MNIST splits with four batch settings, all else equal, and prints AUROC side by side::

    python benchmarks/bench_data_selection.py --classes 1,3,8,9 --seeds 0 --jobs 2

Settings (prior factor, data factor): core-set data and latents (4, 8), the detector's default;
core-set latents only (4, 1); core-set data only (1, 8); plain random batches (1, 1).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

SETTINGS = {
    "data + latents (4, 8)": (4, 8),
    "latents only (4, 1)": (4, 1),
    "data only (1, 8)": (1, 8),
    "random (1, 1)": (1, 1),
}


def fit_one(args: tuple[int, int, str, str]) -> tuple[int, int, str, float, float]:
    """AUROC and fit seconds of one (class, seed, setting)."""
    cls, seed, setting, root = args
    import torch

    from coreset_meg.anomaly import MEGDetector, evaluate
    from coreset_meg.anomaly.settings import preset
    from coreset_meg.datasets import load_benchmark

    torch.set_num_threads(1)
    split = load_benchmark("mnist", "one-class", cls, root=root, random_state=seed)
    prior_factor, data_factor = SETTINGS[setting]
    params = {**preset("mnist"), "prior_factor": prior_factor, "data_factor": data_factor}
    start = time.perf_counter()
    det = MEGDetector(**params, random_state=seed).fit(split.X_train)
    seconds = time.perf_counter() - start
    auroc = evaluate(split.y_test, det.score_samples(split.X_test), higher="normal")["auroc"]
    return cls, seed, setting, auroc, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="1,3,8,9")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--data-root", default=None, help="folder holding mnist/")
    args = parser.parse_args()
    from coreset_meg.datasets import default_data_root

    root = str(args.data_root or default_data_root())
    classes = [int(c) for c in args.classes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = [(c, s, name, root) for c in classes for s in seeds for name in SETTINGS]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(fit_one, tasks))
    auroc = {(c, s, name): a for c, s, name, a, _ in results}
    seconds = [t for *_, t in results]
    names = list(SETTINGS)
    print("| class | " + " | ".join(names) + " |")
    print("|:---|" + "---:|" * len(names))
    for c in classes:
        cells = [np.mean([auroc[(c, s, n)] for s in seeds]) for n in names]
        print(f"| {c} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    means = [np.mean([auroc[(c, s, n)] for c in classes for s in seeds]) for n in names]
    print("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in means) + " |")
    print(
        f"\nAUROC, one-class MNIST, seeds {args.seeds}, mean over seeds; "
        f"{len(tasks)} fits, {np.mean(seconds):.0f} s each on average "
        f"({os.cpu_count()} CPUs, {args.jobs} at a time, one torch thread each)."
    )


if __name__ == "__main__":
    main()
