"""Lottery tickets and augmentation on little normal data: one-class AUROC against sparsity.

For each share of the normal class's training images (1%, 10%, 100%), normal class and seed, the
detector is trained on that subset and scores the whole official test set (one-class protocol,
every other class is an anomaly). Compared on the same subset:

- ``dense``: the detector as it is (``prune_rounds=0``); it is also round 0 of the ticket search;
- ``IMP round r``: iterative magnitude pruning, round ``r`` (``1 - 0.8^r`` of G's weights gone);
- ``ticket``: the network after ``--rounds`` rounds, trained again from its initial weights;
- ``ticket + DiffAugment``: the same ticket trained with ``diffaugment="color,translation,cutout"``;
- ``ticket + DiffAugment + AdvAug``: and ``advaug=0.01``;
- ``kNN distance``: distance to the 5th nearest training image of the same subset.

With ``--view features`` every method sees the images' EfficientNet-Lite0 features instead,
each divided by its length as the detector's features view does (from the embedding cache of
the other benchmarks); DiffAugment works on images only, so its rows become ``ticket + AdvAug``.

The ticket rows come from the functions :class:`~coreset_meg.anomaly.MEGDetector` calls
(:func:`coreset_meg.gan.tickets.find_ticket`, then a trainer of the same settings and seed), so each
row is the detector with those options: its score is the energy of the weight-averaged ``E`` (one
snapshot), which ranks the test images as ``score_samples`` does. The ticket is searched once per
cell without augmentation (as the detector does) and shared by the three ticket rows::

    python benchmarks/bench_tickets.py --quick
    python benchmarks/bench_tickets.py --dataset mnist --classes 0,1,2 --seeds 0,1,2 \\
        --fractions 0.01,0.1 --rounds 2 --n-iter 50 --out docs/results/tickets/mnist --resume

Writes ``results.csv`` (a row per method x cell, rewritten after every cell: ``--resume``
continues an interrupted run), ``table.md`` and ``sparsity_auroc.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import pandas as pd

#: The ticket's training variants, per view: settings over the benchmark's.
VARIANTS = {
    "pixels": {
        "ticket": {},
        "ticket + DiffAugment": {"diffaugment": "color,translation,cutout"},
        "ticket + DiffAugment + AdvAug": {
            "diffaugment": "color,translation,cutout", "advaug": 0.01
        },
    },
    "features": {"ticket": {}, "ticket + AdvAug": {"advaug": 0.01}},
}  # fmt: skip
# fmt: off
COLUMNS = (
    "dataset", "network", "seed", "fraction", "cls", "method", "round", "generator_sparsity",
    "energy_sparsity", "auroc", "auprc", "fit_seconds", "n_train", "n_test",
)
# fmt: on
_SPLITS: dict[tuple, object] = {}


def small_split(
    dataset: str, cls: int, fraction: float, seed: int, root, n_test: int, view: str, cache_dir
):
    """The one-class split of ``cls`` with a seeded ``fraction`` of its training images (at least
    2) and, with ``n_test``, a stratified, seeded subsample of the test images; with ``view``
    "features", their unit-length features."""
    from coreset_meg.anomaly.benchmarks.protocols import subsample
    from coreset_meg.datasets import load_benchmark

    key = (dataset, cls, root)
    if key not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[key] = load_benchmark(dataset, "one-class", cls, root=root)
    split = _SPLITS[key]
    n = len(split.X_train)
    keep = max(2, round(fraction * n))
    split = subsample(split, seed, n_train=keep, n_test=n_test or len(split.X_test))
    if view == "features":  # unit-length, as the detector's features view scales them
        from coreset_meg.anomaly.benchmarks.features import FeatureView
        from coreset_meg.features.embeddings import unit_length

        split, _ = FeatureView("efficientnet-lite0", cache_dir)(split, dataset, "one-class", root)
        split = replace(split, X_train=unit_length(split.X_train), X_test=unit_length(split.X_test))
    return split


def measure(
    seed, fraction, cls, *, dataset, view, network, params, rounds, root, n_test, device, cache_dir
):
    """Every method on one cell: a row per method (and per pruning round)."""
    import torch

    from coreset_meg.anomaly import evaluate
    from coreset_meg.anomaly.benchmarks._grid import Cell
    from coreset_meg.anomaly.benchmarks.detectors import KNNDistance, flatten
    from coreset_meg.anomaly.scoring import energy_scores
    from coreset_meg.gan import MEGConfig, MEGTrainer
    from coreset_meg.gan.tickets import find_ticket

    torch.set_num_threads(1)
    split = small_split(dataset, cls, fraction, seed, root, n_test, view, cache_dir)
    X, X_test, y = split.X_train, split.X_test, split.y_test
    base = dict(
        dataset=dataset, network=network, seed=seed, fraction=fraction, cls=cls,
        n_train=len(X), n_test=len(X_test),
    )  # fmt: skip
    rows = []

    def row(method, round_, masks, seconds, anomaly_score):
        metrics = evaluate(y, anomaly_score, higher="anomalous")
        rows.append(
            base | {"method": method, "round": round_, "auroc": metrics["auroc"],
                    "auprc": metrics["auprc"], "fit_seconds": seconds,
                    "generator_sparsity": masks.sparsity("generator") if masks else 0.0,
                    "energy_sparsity": masks.sparsity("energy_net") if masks else 0.0}
        )  # fmt: skip

    def scored(trainer, method, round_, masks, seconds):
        row(
            method, round_, masks, seconds, energy_scores(trainer.energy_avg, X_test, device=device)
        )

    config = MEGConfig.from_params(network=network, prune_rounds=rounds, **params)

    def trainer_of(changes):
        tickets = replace(config.tickets, **changes)
        return MEGTrainer(replace(config, tickets=tickets), X.shape[1:], device=device,
                          random_state=seed)  # fmt: skip

    def on_round(round_, trainer, masks):
        name = "dense" if round_ == 0 else f"IMP round {round_}"
        scored(trainer, name, round_, masks, trainer.seconds)

    first = trainer_of({})
    masks = find_ticket(first, X, on_round=on_round)
    for method, changes in VARIANTS[view].items():
        trainer = first if method == "ticket" else trainer_of(changes)
        if trainer is not first:  # find_ticket attached the masks to the first
            masks.attach(trainer)
        trainer.fit(X)
        scored(trainer, method, rounds, masks, trainer.seconds)
    start = time.perf_counter()
    knn = KNNDistance(k=5).fit(flatten(X))
    row("kNN distance", 0, None, time.perf_counter() - start, -knn.score_samples(flatten(X_test)))
    logging.info("%s", {k: v for k, v in base.items() if k in ("seed", "fraction", "cls")})
    return Cell((seed, fraction, cls), rows)


def report(results: pd.DataFrame, rounds: int) -> str:
    """Markdown: AUROC by method and data share, then AUROC and sparsity by pruning round."""
    from coreset_meg.anomaly.benchmarks._io import fmt_mean_std, markdown_table

    fractions = sorted(results["fraction"].unique())
    methods = list(dict.fromkeys(results["method"]))
    text = []
    for network, part in results.groupby("network", sort=False):
        n_cells = part.groupby(["seed", "fraction", "cls"]).ngroups
        classes = ", ".join(str(int(c)) for c in sorted(part["cls"].unique()))
        seeds = ", ".join(str(int(s)) for s in sorted(part["seed"].unique()))
        text.append(
            f"AUROC, {network} energy (mean ± std over classes and seeds; {n_cells} cells; "
            f"classes {classes}, seeds {seeds})\n"
        )
        header = ["method", *(f"{100 * f:g}% of the class" for f in fractions), "fit s"]
        lines = []
        for method in methods:
            rows = part[part["method"] == method]
            cells = [fmt_mean_std(rows[rows["fraction"] == f]["auroc"]) for f in fractions]
            lines.append([method, *cells, f"{rows['fit_seconds'].mean():.1f}"])
        text.append(markdown_table(header, lines))
        # paired: each method minus dense on the same cell (class, share, seed)
        keys = ["seed", "fraction", "cls"]
        dense = part[part["method"] == "dense"].set_index(keys)["auroc"]
        header = ["method", *(f"{100 * f:g}%" for f in fractions)]
        lines = []
        for method in methods[1:]:
            diff = part[part["method"] == method].set_index(keys)["auroc"] - dense
            diff = diff.reset_index()
            cells = [fmt_mean_std(diff[diff["fraction"] == f]["auroc"], 4) for f in fractions]
            lines.append([method, *cells])
        text.append(f"\nAUROC minus dense on the same cell ({network} energy)\n")
        text.append(markdown_table(header, lines))
        curve = part[
            part["method"].isin(["dense", "ticket"]) | part["method"].str.startswith("IMP")
        ]
        header = ["round", "G sparsity", "E sparsity", *(f"{100 * f:g}%" for f in fractions)]
        lines = []
        for round_, rows in curve.groupby("round"):
            cells = [fmt_mean_std(rows[rows["fraction"] == f]["auroc"]) for f in fractions]
            sparsity = [f"{rows[f'{n}_sparsity'].mean():.3f}" for n in ("generator", "energy")]
            lines.append([round_, *sparsity, *cells])
        text.append(f"\nAUROC by pruning round ({network} energy, before retraining: round "
                    f"{rounds} is the ticket)\n")  # fmt: skip
        text.append(markdown_table(header, lines))
        text.append("")
    return "\n".join(text)


def plot(results: pd.DataFrame, path: Path) -> None:
    """AUROC against G's sparsity per data share (mean over cells), kNN as a dashed line."""
    from coreset_meg.anomaly.benchmarks._io import new_figure, save_figure

    networks = list(dict.fromkeys(results["network"]))
    fig, axes = new_figure(1, len(networks), size=(4.4, 3.4))
    for ax, network in zip(axes[0], networks, strict=True):
        part = results[results["network"] == network]
        for i, (fraction, rows) in enumerate(part.groupby("fraction")):
            imp = rows[
                rows["method"].isin(["dense", "ticket"]) | rows["method"].str.startswith("IMP")
            ]
            curve = imp.groupby("round")[["generator_sparsity", "auroc"]].mean()
            label = f"{100 * fraction:g}% of the class"
            ax.plot(curve["generator_sparsity"], curve["auroc"], "o-", color=f"C{i}", label=label)
            variants = [m for m in dict.fromkeys(rows["method"]) if m.startswith("ticket +")]
            for j, method in enumerate(variants):
                value = rows[rows["method"] == method]["auroc"].mean()
                x = curve["generator_sparsity"].iloc[-1]
                ax.plot([x], [value], "s^"[j], color=f"C{i}", mfc="none")
            knn = rows[rows["method"] == "kNN distance"]["auroc"].mean()
            ax.axhline(knn, color=f"C{i}", ls="--", lw=1)
        title = f"{network} energy\nsquares, triangles: {', '.join(variants)}; dashed: kNN"
        ax.set(xlabel="share of G's weights pruned", ylabel="AUROC", title=title)
        ax.title.set_fontsize(8)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist", "cifar10"))
    parser.add_argument("--network", default="coreset", choices=("coreset", "conv", "mlp"))
    parser.add_argument(
        "--view", default="pixels", choices=("pixels", "features"),
        help="what every method sees: the images, or their unit-length pretrained features",
    )  # fmt: skip
    parser.add_argument("--cache-dir", default="results/embeddings", help="embedding cache")
    parser.add_argument("--classes", default="0,1,2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fractions", default="0.01,0.1,1.0")
    parser.add_argument("--rounds", type=int, default=3, help="pruning rounds of the ticket")
    parser.add_argument("--n-iter", type=int, default=100, help="iterations of every training")
    parser.add_argument("--prune-energy", action="store_true", help="prune E too (mlp, conv)")
    parser.add_argument("--n-test", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None, help="folder holding the data sets")
    parser.add_argument("--out", default=None, help="output folder (results/benchmarks/tickets)")
    parser.add_argument("--resume", action="store_true", help="keep the cells already in --out")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 cell, 3 iterations")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from coreset_meg.anomaly.benchmarks._grid import run_grid
    from coreset_meg.anomaly.benchmarks._io import prepare_out_dir, write_text
    from coreset_meg.anomaly.settings import preset
    from coreset_meg.gan.config import TRAINING_GROUPS, setting_fields

    classes = [int(c) for c in args.classes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    # The view's preset, the settings of the trainer only (it sees the pixels or the features)
    trainer_settings = {field.name for _, field in setting_fields(TRAINING_GROUPS)}
    data_preset = preset("features" if args.view == "features" else args.dataset)
    params = {k: v for k, v in data_preset.items() if k in trainer_settings}
    params["n_iter"] = args.n_iter
    if args.prune_energy:
        params["prune_energy"] = True
    rounds, n_test = args.rounds, args.n_test
    if args.quick:
        classes, seeds, fractions, rounds, n_test = classes[:1], seeds[:1], [0.01], 1, 500
        params.update(n_iter=3, width=8)
    out = prepare_out_dir(args.out, "tickets")
    settings = {
        "dataset": args.dataset, "network": args.network, "params": params, "rounds": rounds,
        "n_test": n_test, "quick": args.quick,
    }  # fmt: skip
    if args.view == "features":  # (the folders of pixel runs have no "view")
        settings["view"] = "features"
    measure_cell = partial(
        measure, dataset=args.dataset, view=args.view, network=args.network, params=params,
        rounds=rounds, root=args.data_root, n_test=n_test, device=args.device,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    cells = run_grid(
        out, settings, {"seed": seeds, "fraction": fractions, "cls": classes}, measure_cell,
        columns=COLUMNS, resume=args.resume, label="tickets", verbose=True,
    )  # fmt: skip
    results = pd.DataFrame([r for c in cells for r in c.rows], columns=list(COLUMNS))
    text = report(results, rounds)
    write_text(text, out / "table.md")
    plot(results, out / "sparsity_auroc.png")
    print(text)


if __name__ == "__main__":
    main()
