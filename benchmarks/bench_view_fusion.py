"""Grey images: how the both view's energy should read the pixels and the features.

On the MNIST validation splits of ``bench_coreset_energy.py`` (the reported test sets are never
read), per class: the core-set energy on the pixels alone, on the unit-length features alone
(with the 0.3 Gaussian term), and on both side by side (the joint energy, each part divided by
the square root of its median nearest-neighbour squared distance); then
:class:`~coreset_meg.gan.networks.ViewsEnergy`, which reads each of the three against its own
training energies (a smoothed tail score, leave one out) and combines them, and the other
combinations of the same three tail scores for comparison:

- ``s_uv + max(s_u, s_v)``: the joint view plus the more surprised single view (ViewsEnergy's);
- ``max(s_u, s_v, s_uv)``, ``max(s_u, s_v)``, ``s_u + s_v``, ``s_u + s_v + s_uv``.

A combination counts where it keeps every class within 0.10 of the better single view (the
detector issue's "no class at chance") and where its mean is highest::

    python benchmarks/bench_view_fusion.py --protocol heldout --data-root DATA \\
        --out docs/results/views/fusion-heldout-mnist.csv
    python benchmarks/bench_view_fusion.py --protocol one-class --data-root DATA \\
        --out docs/results/views/fusion-one-class-mnist.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_coreset_energy import classes_and_metric, print_table
from bench_views import FEATURES_GAUSSIAN, energy, per_class, scale

from coreset_meg.anomaly.benchmarks.features import DEFAULT_CACHE
from coreset_meg.features.embeddings import unit_length
from coreset_meg.gan import MEGConfig
from coreset_meg.gan.networks import ViewsEnergy
from coreset_meg.gan.trainer import place_views


def tail_scores(net: ViewsEnergy, X: np.ndarray) -> np.ndarray:
    """``(3, n)``: each view's smoothed tail score (first block, second, whole row)."""
    with torch.no_grad():
        parts = []
        for rows in np.array_split(X, max(1, len(X) // 256)):
            parts.append(net.tail_scores(net.view_energies(torch.from_numpy(rows))))
    return torch.cat(parts, dim=1).numpy()


def measure(split_pixels, split_features, metric, seed: int = 0) -> dict[str, float]:
    P_train, P_test, y = split_pixels
    F_train, F_test, _ = split_features
    P_train, P_test = (np.asarray(a, np.float32).reshape(len(a), -1) for a in (P_train, P_test))
    F_train, F_test = unit_length(F_train), unit_length(F_test)
    s_p, s_f = scale(P_train), scale(F_train)
    B_train = np.concatenate([P_train / s_p, F_train / s_f], axis=1)
    B_test = np.concatenate([P_test / s_p, F_test / s_f], axis=1)
    net = ViewsEnergy(B_train.shape[1], P_train.shape[1]).eval()
    config = MEGConfig.from_params(gaussian_weight=FEATURES_GAUSSIAN)
    place_views(net, torch.from_numpy(B_train), config, seed)
    with torch.no_grad():
        chunks = np.array_split(B_test, 20)
        views = np.concatenate([net(torch.from_numpy(b)).numpy() for b in chunks])
    s_u, s_v, s_uv = tail_scores(net, B_test)
    scores = {
        "pixels": energy(P_train, P_test, 0.0, seed),
        "features": energy(F_train, F_test, FEATURES_GAUSSIAN, seed),
        "both (joint energy)": energy(B_train, B_test, 0.0, seed),
        "ViewsEnergy: s_uv + max(s_u, s_v)": views,
        "max(s_u, s_v, s_uv)": np.maximum.reduce([s_u, s_v, s_uv]),
        "max(s_u, s_v)": np.maximum(s_u, s_v),
        "s_u + s_v": s_u + s_v,
        "s_u + s_v + s_uv": s_u + s_v + s_uv,
    }
    return {name: metric(y, s, higher="anomalous") for name, s in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("one-class", "heldout"), default="heldout")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--seed", type=int, default=10, help="seed of the validation split")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--out", default=None, help="CSV of the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    classes, metric = classes_and_metric(args.protocol, args.classes)
    rows = per_class(measure, "mnist", args.protocol, classes, metric, args)
    name = "AUPRC" if args.protocol == "heldout" else "AUROC"
    title = f"{name}, mnist {args.protocol} validation, split seed {args.seed}"
    print_table(rows, title, args.out, digits=4)
    best = np.maximum([r["pixels"] for r in rows], [r["features"] for r in rows])
    print("\nworst shortfall against the better of pixels and features:")
    for method in rows[0]:
        if method != "class":
            shortfall = np.min(np.array([r[method] for r in rows]) - best)
            print(f"  {method}: {shortfall:+.3f}")


if __name__ == "__main__":
    main()
