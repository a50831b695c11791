"""BigGAN's techniques on the detector's validation splits: each one on and off, same cells.

For each protocol's validation split (the reported test sets are never read; see
``bench_coreset_energy.py``), normal class and seed, the detector is fitted with its defaults
and with one technique switched on, and scores the validation test set:

- ``truncation``: the energy step's negatives from latents truncated at 1.0;
- ``orthogonal_reg``: BigGAN's orthogonal regularisation, beta 1e-4, on E, G and T;
- ``spectral_norm``: spectral normalisation of G (the core-set energy has no weights to
  normalise; with ``--network mlp`` or ``conv`` also of E and G together);
- ``generator_ema``: G's weight average, decay 0.999, drawing the generated samples.

Prints the mean metric per setting and its paired difference from the defaults (mean ± standard
deviation over the cells)::

    python benchmarks/bench_biggan_detector.py --quick
    python benchmarks/bench_biggan_detector.py --protocol one-class --dataset mnist \\
        --classes 0,1,2 --seeds 0,1,2 --out docs/results/biggan/detector-mnist --resume
    python benchmarks/bench_biggan_detector.py --network mlp --classes 0,1,2 --seeds 0,1,2 \
        --out docs/results/biggan/detector-mnist-mlp --resume   # an energy with weights

Writes ``results.csv`` (rewritten after every cell: ``--resume`` continues) and ``table.md``.
"""

from __future__ import annotations

import argparse
import logging
import time
from functools import partial

import pandas as pd

#: Each technique, as the detector's settings that switch it on.
SETTINGS = {
    "defaults": {},
    "truncation 1.0": {"truncation": 1.0},
    "orthogonal_reg 1e-4": {"orthogonal_reg": 1e-4},
    "spectral_norm G": {"spectral_norm": "generator"},
    "generator_ema 0.999": {"generator_ema": 0.999},
}
#: Only for energies with weights (``--network`` mlp or conv).
WEIGHTED_SETTINGS = {"spectral_norm E and G": {"spectral_norm": "both"}}
COLUMNS = (
    "protocol",
    "dataset",
    "view",
    "network",
    "cls",
    "seed",
    "setting",
    "metric",
    "value",
    "fit_seconds",
)


def measure(
    cls, seed, *, protocol, dataset, view, network, data_root, cache_dir, split_seed, quick
):
    """Every setting on the validation split of one class and seed: one grid cell."""
    import numpy as np
    import torch
    from bench_coreset_energy import validation_split

    from coreset_meg.anomaly import MEGDetector, auprc_trapezoid, auroc
    from coreset_meg.anomaly.benchmarks._grid import Cell
    from coreset_meg.anomaly.settings import preset

    torch.set_num_threads(1)
    X_train, X_test, y = validation_split(
        dataset, protocol, cls, split_seed, data_root, view, cache_dir
    )
    if quick:  # a seeded sample of the test rows (they may be sorted by class)
        rows = np.random.default_rng(0).permutation(len(y))[:400]
        X_train, X_test, y = X_train[:300], X_test[rows], y[rows]
    metric, name = (auprc_trapezoid, "auprc") if protocol == "heldout" else (auroc, "auroc")
    # The features view gets the cached features as vectors, with the preset that scales them as
    # the detector's own features view does; the pixel view gets the images.
    base = preset("features" if view == "features" else dataset, quick=quick)
    base.update(network=network, **({"view": "pixels"} if view == "pixels" else {}))
    rows = []
    for setting, changes in settings_for(network).items():
        start = time.perf_counter()
        det = MEGDetector(**{**base, **changes}, random_state=seed).fit(X_train)
        seconds = time.perf_counter() - start
        value = metric(y, det.score_samples(X_test), higher="normal")
        rows.append(
            dict(protocol=protocol, dataset=dataset, view=view, network=network, cls=cls, seed=seed,
                 setting=setting, metric=name, value=value, fit_seconds=seconds)
        )  # fmt: skip
        logging.info("class %d seed %d %s: %s %.4f", cls, seed, setting, name, value)
    return Cell((cls, seed), rows)


def settings_for(network: str) -> dict:
    """The settings measured with this energy network."""
    return SETTINGS if network == "coreset" else {**SETTINGS, **WEIGHTED_SETTINGS}


def report(results: pd.DataFrame) -> str:
    """Mean per setting and the paired difference from the defaults over the cells."""
    from coreset_meg.anomaly.benchmarks._io import markdown_table

    wide = results.pivot_table(index=["cls", "seed"], columns="setting", values="value")
    name = results["metric"].iloc[0].upper()
    lines = []
    for setting in {**SETTINGS, **WEIGHTED_SETTINGS}:
        if setting not in wide:
            continue
        diff = wide[setting] - wide["defaults"]
        seconds = results[results.setting == setting]["fit_seconds"].mean()
        spread = f"{diff.mean():+.1e} ± {diff.std(ddof=1) if len(diff) > 1 else 0:.1e}"
        lines.append([setting, f"{wide[setting].mean():.4f}", spread,
                      f"{diff.abs().max():.1e}", f"{seconds:.0f}"])  # fmt: skip
    head = f"mean {name} over {len(wide)} cells (classes x seeds)"
    header = [
        "setting",
        head,
        "paired difference from defaults",
        "largest absolute difference",
        "fit s",
    ]
    return markdown_table(header, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("one-class", "heldout"), default="one-class")
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument(
        "--view", choices=("auto", "features", "pixels"), default="auto",
        help="auto: features for CIFAR-10, pixels for MNIST (as the detector chooses)",
    )  # fmt: skip
    parser.add_argument(
        "--network", choices=("coreset", "mlp", "conv"), default="coreset",
        help="the energy network (coreset: the detector's default)",
    )  # fmt: skip
    parser.add_argument("--classes", help="comma-separated [default: 0,1,2; heldout: 0,2,3]")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--split-seed", type=int, default=10, help="seed of the validation split")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default="results/embeddings")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=None, help="output folder (results/benchmarks/...)")
    parser.add_argument("--resume", action="store_true", help="keep the cells already in --out")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 cell, small data")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from coreset_meg.anomaly.benchmarks._grid import run_grid
    from coreset_meg.anomaly.benchmarks._io import prepare_out_dir, write_text

    view = args.view
    if view == "auto":
        view = "features" if args.dataset == "cifar10" else "pixels"
    default = "0,2,3" if args.protocol == "heldout" else "0,1,2"
    classes = [int(c) for c in (args.classes or default).split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        classes, seeds = classes[:1], seeds[:1]
    out = prepare_out_dir(args.out, "biggan-detector")
    settings = {
        "protocol": args.protocol, "dataset": args.dataset, "view": view,
        "network": args.network, "split_seed": args.split_seed, "quick": args.quick,
        "settings": settings_for(args.network),
    }  # fmt: skip
    cells = run_grid(
        out, settings, {"cls": classes, "seed": seeds},
        partial(measure, protocol=args.protocol, dataset=args.dataset, view=view,
                network=args.network, data_root=args.data_root, cache_dir=args.cache_dir,
                split_seed=args.split_seed, quick=args.quick),
        columns=COLUMNS, resume=args.resume, jobs=args.jobs, label="biggan", verbose=True,
    )  # fmt: skip
    results = pd.DataFrame([r for c in cells for r in c.rows], columns=list(COLUMNS))
    text = (
        f"{args.dataset} {args.protocol} validation ({view}, {args.network} energy), "
        f"split seed {args.split_seed}, classes {classes}, seeds {seeds}\n\n{report(results)}\n"
    )
    write_text(text, out / "table.md")
    print(text)


if __name__ == "__main__":
    main()
