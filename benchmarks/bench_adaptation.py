"""Does MEG's generator earn its place? Adapting the pretrained features, with and without it.

The default energy is a Gaussian kernel density over frozen EfficientNet-Lite0 features, which
MEG training cannot move (a normalised mixture needs no generator). This benchmark gives the
energy a learned part, the backbone's last MBConv block and 1x1 head, adapted to the normal
class as PANDA does (Reiss et al. 2021: a compactness loss towards the class's mean feature and
a pull towards the pretrained weights), and asks whether negatives help, and whether MEG's
generator helps more than fixed negatives:

- ``frozen``: today's default energy on the pretrained features (no training);
- ``compact``: compactness + pull-back, no negatives;
- ``gaussian``: the same, and Gaussian negatives in the cached activation space (per-dimension
  mean and spread of the class's activations) pushed away from the class's mean;
- ``meg``: the same, with negatives from a generator trained as MEG trains it (low energy, high
  entropy through the ``I(x; z)`` estimator), and MEG's zero-centred gradient penalty;
- ``residual-gaussian``, ``residual-meg``: the frozen features, and a residual energy on top of
  the default one (a learned weighting of squared whitened coordinates on 64 principal
  directions, ``coreset_meg.gan.adaptation.ResidualQuadratic``) trained against broad Gaussian
  negatives or MEG's generator sampling the whole energy (twice ``--steps`` updates).

Every variant is scored by the detector's default energy (the core-set mixture plus the
Gaussian term, on unit-length features) in its adapted space; the rank correlation with the
frozen energy shows how far it moved. Validation splits only: the one-class split inside the
official *training* set (``bench_coreset_energy.validation_split``, seed 10), with a seeded
subsample of ``--n-val`` validation images; or, with ``--protocol heldout``, MNIST's held-out
validation split (the split of seed 10; the class is the anomaly; AUPRC). The backbone's
activations before its last block are computed once and cached (``--cache-dir``; an
interrupted run resumes from its chunks)::

    python benchmarks/bench_adaptation.py --dataset cifar10 --classes 0,1,2 --seeds 0,1,2 \\
        --data-root DATA --out docs/results/adaptation/cifar10 --resume
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_coreset_energy import (
    N_HELDOUT_TEST,
    classes_and_metric,
    energy_scores,
    one_class_rows,
    training_set,
)
from bench_views import FEATURES_GAUSSIAN, coreset_energy, energy
from scipy.stats import spearmanr
from torch import nn

from coreset_meg.anomaly.benchmarks.features import DEFAULT_CACHE
from coreset_meg.datasets import load_benchmark, to_model_input
from coreset_meg.features.embeddings import compute_embeddings
from coreset_meg.features.pretrained import FeatureEmbedder, efficientnet_lite0
from coreset_meg.gan.adaptation import FeatureAdapter, adapted_features, fit_residual

VARIANTS = ("frozen", "compact", "gaussian", "meg", "residual-gaussian", "residual-meg")
IMAGE_SIZE = 128


def backbone_parts(image_size: int = IMAGE_SIZE) -> tuple[FeatureEmbedder, nn.Module]:
    """The frozen trunk as a cached embedder (activations before the last block, flat) and the
    trainable tail (last MBConv block, 1x1 head, average pool): ``tail(trunk(x))`` is the
    detector's feature."""
    full = efficientnet_lite0(image_size=image_size)
    net = full.network
    trunk = nn.Sequential(net.stem, net.blocks[:-1])
    embedder = FeatureEmbedder(
        trunk,
        name="efficientnet-lite0-trunk15-v1",
        weights_sha256=full.weights_sha256,
        image_size=image_size,
        mean=127.0,
        std=128.0,
    )
    side = -(-image_size // 32)

    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = copy.deepcopy(net.blocks[-1]), copy.deepcopy(net.head)

        def forward(self, a: torch.Tensor) -> torch.Tensor:  # (B, 192 * side^2) -> (B, 1280)
            a = a.reshape(len(a), 192, side, side)
            return self.head(self.block(a)).mean(dim=(2, 3))

    return embedder, Tail().float()


def split_rows(dataset, cls, root, n_val, seed=10):
    """Training rows of the normal class, validation rows and their labels (1 = anomaly)."""
    _, labels = training_set(dataset, root)
    fit, val = one_class_rows(len(labels), seed)
    val = np.sort(np.random.default_rng(seed + 1).choice(val, n_val, replace=False))
    train = np.sort(fit[labels[fit] == cls])
    return train, val, (labels[val] != cls).astype(int)


def split_activations(dataset, protocol, cls, root, n_val, embedder, cache_dir, seed=10):
    """The trunk's activations ``(A_train, A_val)`` of the validation split and its labels
    ``y_val`` (1 = anomaly).

    One-class: :func:`split_rows`, the split's images embedded together (one cache entry per
    class). Held-out: the leak-free held-out split of seed ``seed``
    (``bench_coreset_energy.validation_split``'s), ``cls`` the anomaly, a seeded
    ``N_HELDOUT_TEST`` of its test images scored (``n_val`` is not used); the pooled official
    train and test images are embedded once (one cache entry for every class)."""
    if protocol == "heldout":
        split = load_benchmark(dataset, "heldout", cls, root=root, random_state=seed)
        pool = np.empty((len(split.train_index) + len(split.test_index), *split.X_train.shape[1:]),
                        dtype=split.X_train.dtype)  # fmt: skip
        pool[split.train_index], pool[split.test_index] = split.X_train, split.X_test
        A = compute_embeddings(pool, embedder, cache_dir=cache_dir, verbose=True)
        rows = np.sort(np.random.default_rng(0).choice(len(split.y_test), N_HELDOUT_TEST, False))
        return A[split.train_index], A[split.test_index[rows]], split.y_test[rows]
    images, _ = training_set(dataset, root)
    train, val, y = split_rows(dataset, cls, root, n_val, seed)
    X = to_model_input(images[np.concatenate([train, val])])
    A = compute_embeddings(X, embedder, cache_dir=cache_dir, verbose=True)
    return A[: len(train)], A[len(train) :], y


def default_energy_scores(F_train: np.ndarray, F_test: np.ndarray, seed: int) -> np.ndarray:
    """The detector's default energy on features (the core-set mixture plus the 0.3 Gaussian
    term) fitted on ``F_train``, at ``F_test`` (anomaly scores)."""
    return energy(F_train, F_test, FEATURES_GAUSSIAN, seed)


def residual_scores(F_train, F_test, negatives, seed, steps) -> np.ndarray:
    """The default energy plus a :class:`~coreset_meg.gan.adaptation.ResidualQuadratic` trained on
    top of it with ``negatives``, at ``F_test``."""
    base = coreset_energy(F_train, FEATURES_GAUSSIAN, 0)
    residual = fit_residual(base, F_train, negatives=negatives, steps=steps, random_state=seed)
    return energy_scores(base, F_test) + energy_scores(residual, F_test)


#: Variant -> the adapter's negatives.
NEGATIVES = {"compact": "none", "gaussian": "gaussian", "meg": "generator"}


def adapt(tail0, A, variant, seed, *, steps, lr, pull, gp_weight, log=None):
    """The tail adapted to the class's activations ``A`` (n, d) by ``variant``."""
    adapter = FeatureAdapter(
        tail0,
        negatives=NEGATIVES[variant],
        steps=steps,
        learning_rate=lr,
        pull=pull,
        gp_weight=gp_weight,
        random_state=seed,
    )
    return adapter.fit(A, log=log).tail_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("cifar10", "mnist"), default="cifar10")
    parser.add_argument(
        "--protocol", choices=("one-class", "heldout"), default="one-class",
        help="held-out: the class is the anomaly, AUPRC (MNIST's held-out validation split)",
    )  # fmt: skip
    parser.add_argument("--classes", default="0,1,2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--pull", type=float, default=1e-3)
    parser.add_argument("--gp-weight", type=float, default=0.1)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="table of --out's results")
    args = parser.parse_args()
    if args.report_only:
        print(summarise(pd.read_csv(Path(args.out) / "results.csv")))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    rows = pd.read_csv(path).to_dict("records") if args.resume and path.exists() else []
    done = {(r["class"], r["seed"], r["variant"]) for r in rows}
    (out / "meta.json").write_text(json.dumps(vars(args), indent=1) + "\n")

    embedder, tail0 = backbone_parts()
    classes, metric = classes_and_metric(args.protocol, args.classes)
    value = "auprc" if args.protocol == "heldout" else "auroc"
    for cls in classes:
        t0 = time.perf_counter()
        A_train, A_val, y = split_activations(
            args.dataset, args.protocol, cls, args.data_root, args.n_val, embedder, args.cache_dir
        )
        print(f"class {cls}: activations of {len(A_train) + len(A_val)} images, "
              f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        F_train, F_val = adapted_features(tail0, A_train), adapted_features(tail0, A_val)
        frozen = default_energy_scores(F_train, F_val, 0)  # pretrained features: today's
        for seed in (int(s) for s in args.seeds.split(",")):
            for variant in args.variants.split(","):
                if (cls, seed, variant) in done:
                    continue
                t0 = time.perf_counter()
                if variant == "frozen":
                    scores = frozen
                elif variant.startswith("residual-"):  # on the frozen features
                    negatives = {"residual-gaussian": "gaussian", "residual-meg": "generator"}
                    scores = residual_scores(
                        F_train, F_val, negatives[variant], seed, 2 * args.steps
                    )
                else:
                    tail = adapt(tail0, A_train, variant, seed, steps=args.steps, lr=args.lr,
                                 pull=args.pull, gp_weight=args.gp_weight, log=print)  # fmt: skip
                    scores = default_energy_scores(
                        adapted_features(tail, A_train), adapted_features(tail, A_val), 0
                    )
                row = {
                    "class": cls,
                    "seed": seed,
                    "variant": variant,
                    value: metric(y, scores, higher="anomalous"),
                    "rank_corr_frozen": float(spearmanr(scores, frozen).statistic),
                    "seconds": time.perf_counter() - t0,
                }
                print(row, flush=True)
                rows.append(row)
                pd.DataFrame(rows).to_csv(path, index=False)
    report = summarise(pd.DataFrame(rows))
    (out / "table.md").write_text(report)
    print(report)


def summarise(results: pd.DataFrame) -> str:
    """Markdown: AUROC (held-out: AUPRC) per class (mean over seeds), the mean over classes with
    its spread over seeds, each variant against the frozen energy and against ``compact``
    (classes where it is higher / lower by more than the larger seed spread of the two), and the
    rank correlation with the frozen energy."""
    order = [v for v in VARIANTS if v in set(results["variant"])]
    value = "auprc" if "auprc" in results else "auroc"
    by_class = results.pivot_table(index="variant", columns="class", values=value).loc[order]
    spread = results.groupby(["variant", "class"])[value].std().fillna(0.0)
    per_seed = results.groupby(["variant", "seed"])[value].mean()  # mean over classes
    lines = [
        "| variant | "
        + " | ".join(str(c) for c in by_class.columns)
        + " | mean ± sd over seeds | vs frozen (up / down) | vs compact (up / down) "
        "| rank corr. with frozen |",
        "|:---|" + "---:|" * (len(by_class.columns) + 4),
    ]
    for variant in order:
        cells = " | ".join(f"{v:.4f}" for v in by_class.loc[variant])
        seeds = per_seed.loc[variant]
        versus = []
        for other in ("frozen", "compact"):
            if other not in by_class.index or other == variant:
                versus.append("–")
                continue
            diff = by_class.loc[variant] - by_class.loc[other]
            noise = np.maximum(spread.loc[variant], spread.loc[other]).reindex(diff.index)
            up, down = int((diff > noise).sum()), int((diff < -noise).sum())
            versus.append(f"{diff.mean():+.4f} ({up} / {down})")
        corr = results.loc[results["variant"] == variant, "rank_corr_frozen"].mean()
        lines.append(
            f"| {variant} | {cells} | {seeds.mean():.4f} ± {seeds.std(ddof=0):.4f} | "
            f"{versus[0]} | {versus[1]} | {corr:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
