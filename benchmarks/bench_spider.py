"""Spider GAN: does a friendly-set input give the detector a better energy in a fixed budget?

Two protocols, one-class MNIST and one-class CIFAR-10 (``--dataset``), in the
EfficientNet-Lite0 feature space, on validation splits only (the official training set
shuffled with seed 10; its last 10,000 images are the validation test set, a seeded 2,000 of
them scored; a seeded 1,000 images of the normal class among the others are the training
data, to fit the CPU budget). Features come from the benchmarks' cache (``--cache-dir``),
scaled to unit length as the detector's features preset does, and the detector's settings are
that preset's (the core-set energy, 100 iterations; ``--network mlp`` for the MLP energy,
whose scores depend on the generator's negatives).

For each class, the candidate friendly sets (scikit-learn's digits and the other data set,
whole and per class; the protocol's own data set is left out, its other classes being the
anomalies) are ranked by their SID to the training features
(:func:`coreset_meg.anomaly.friendly.rank_friendly`'s measure). The
generator is then trained with three inputs, all else equal: Gaussian latents, the friendliest
set and the least friendly one (their embeddings, through the learned input map). Every
``--eval-at`` iterations the run records the validation AUROC / AUPRC of the averaged energy
and the Fréchet distance between 500 generated samples and the training features (in the same
1280-d feature space), against iterations and training seconds (evaluation excluded)::

    python benchmarks/bench_spider.py --data-root ../shared/data --classes 3 --seeds 0,1,2
    python benchmarks/bench_spider.py --dataset cifar10 --data-root ../shared/data --classes 0
    python benchmarks/bench_spider.py --quick --data-root ../shared/data   # a smoke run

Writes ``results.csv`` (one row per run and evaluation; resumable with ``--resume``),
``sid.csv`` (every candidate's SID), ``results.md`` and ``convergence.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_coreset_energy import training_set

from coreset_meg.anomaly import evaluate
from coreset_meg.anomaly.benchmarks._grid import Cell, run_grid
from coreset_meg.anomaly.benchmarks._io import (
    QUICK_NOTE,
    fmt,
    fmt_mean_std,
    markdown_table,
    new_figure,
    save_figure,
    write_csv,
    write_meta,
    write_text,
)
from coreset_meg.anomaly.benchmarks.features import DEFAULT_CACHE, dataset_features
from coreset_meg.anomaly.friendly import friendly_embeddings
from coreset_meg.anomaly.settings import preset
from coreset_meg.coreset.friendly import FriendlyPrior
from coreset_meg.coreset.sid import rank_by_sid
from coreset_meg.features.embeddings import unit_length
from coreset_meg.gan import MEGConfig, MEGTrainer

INPUTS = ("gaussian", "best", "worst")  # also "median": the middle of the SID ranking
CANDIDATES = {
    dataset: [s for n in ("digits", other) for s in [n, *(f"{n}:{k}" for k in range(10))]]
    for dataset, other in (("mnist", "cifar10"), ("cifar10", "mnist"))
}
COLUMNS = [
    "cls",
    "input",
    "seed",
    "friendly",
    "sid",
    "step",
    "seconds",
    "auroc",
    "auprc",
    "frechet",
]
SPLIT_SEED, N_VALIDATION = 10, 10_000
DOCS_OUT = Path("docs") / "results" / "spider"  # one folder per data set and network below it


def validation_split(dataset, cls: int, root, cache_dir, n_test: int, n_train: int | None):
    """``(X_train, X_test, y_test)``: unit-length features of the one-class validation split."""
    F, _, _ = dataset_features(dataset, "efficientnet-lite0", root=root, cache_dir=cache_dir)
    _, labels = training_set(dataset, root)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    fit, val = np.sort(order[:-N_VALIDATION]), np.sort(order[-N_VALIDATION:])
    train = fit[labels[fit] == cls]
    rng = np.random.default_rng(0)
    test = np.sort(rng.choice(val, n_test, replace=False))
    if n_train is not None and len(train) > n_train:
        train = np.sort(rng.choice(train, n_train, replace=False))
    return unit_length(F[train]), unit_length(F[test]), (labels[test] != cls).astype(np.int64)


class Frechet:
    """Fréchet distance of samples to a fixed reference set, in the reference's space.

    ``tr sqrt(S_r S_g)`` is the sum of the square roots of the eigenvalues of
    ``G S_r G^T / (n - 1)`` (``G``: the centred samples), an n x n problem for n samples.
    """

    def __init__(self, reference: np.ndarray):
        ref = np.asarray(reference, dtype=np.float64)
        self.mean, self.cov = ref.mean(0), np.cov(ref, rowvar=False)

    def __call__(self, samples: np.ndarray) -> float:
        x = np.asarray(samples, dtype=np.float64)
        g = x - x.mean(0)
        eig = np.linalg.eigvalsh(g @ self.cov @ g.T / (len(x) - 1))
        cross = np.sqrt(np.clip(eig, 0, None)).sum()
        trace_g = (g * g).sum() / (len(x) - 1)
        diff = self.mean - x.mean(0)
        return float(diff @ diff + np.trace(self.cov) + trace_g - 2 * cross)


class Evaluate:
    """Trainer callback: metrics of the averaged energy and the generator at ``steps``."""

    def __init__(self, steps, X_test, y_test, frechet: Frechet, n_gen: int):
        self.steps, self.X_test, self.y_test = set(steps), torch.from_numpy(X_test), y_test
        self.frechet, self.n_gen, self.records = frechet, n_gen, []

    @torch.no_grad()
    def on_step_end(self, trainer: MEGTrainer, result) -> None:
        if trainer.step not in self.steps:
            return
        net = trainer.generator
        net.eval()  # batch norm on its running statistics, as a fitted detector samples
        z = trainer.prior.draw(self.n_gen, torch.Generator().manual_seed(12345))
        samples = net(z).numpy()
        net.train()
        energy = torch.cat([trainer.energy_avg(b) for b in self.X_test.split(500)]).numpy()
        metrics = evaluate(self.y_test, -energy, higher="normal")
        self.records.append(
            {
                "step": trainer.step,
                "seconds": round(trainer.seconds, 2),
                "auroc": metrics["auroc"],
                "auprc": metrics["auprc"],
                "frechet": self.frechet(samples),
            }
        )


def measure(cls, input, seed, *, data, friendly, network, n_iter, eval_at, n_gen) -> Cell:
    """One training run: its metrics at every evaluation step."""
    X_train, X_test, y_test = data[cls]
    name, sid, samples = friendly[cls].get(input, ("", np.nan, None))
    params = {**preset("features"), "network": network, "n_iter": n_iter, "log_every": n_iter}
    params.pop("scaling")  # the features are scaled here already
    if samples is not None:
        params.update(prior="friendly", friendly=name)
    prior = None if samples is None else FriendlyPrior(samples, name=name)
    callback = Evaluate(eval_at, X_test, y_test, Frechet(X_train), n_gen)
    trainer = MEGTrainer(
        MEGConfig.from_params(**params),
        X_train.shape[1:],
        device="cpu",
        random_state=seed,
        prior=prior,
        callbacks=[callback],
    )
    trainer.fit(X_train)
    keys = {"cls": cls, "input": input, "seed": seed, "friendly": name, "sid": sid}
    return Cell((cls, seed, input), [{**keys, **r} for r in callback.records])


def rank(X_train, candidates, embed, sid_kwargs, earlier: pd.DataFrame | None):
    """``[(candidate, SID), ...]`` by SID to ``X_train``, friendliest first (the ranking in
    ``earlier`` when it has every candidate: a resumed run does not embed them again)."""
    if earlier is not None and set(earlier.candidate) == set(candidates):
        return list(earlier.sort_values("rank")[["candidate", "sid"]].itertuples(index=False))
    embedded = {spec: embed(spec) for spec in candidates}
    return rank_by_sid(X_train, embedded, random_state=0, **sid_kwargs)


def embed(spec, root, cache_dir, work_cache) -> np.ndarray:
    """Unit-length features of a candidate: from the benchmarks' cache, or (the digits) embedded
    into ``work_cache``, since ``results/`` is only read here."""
    cache = work_cache if spec.startswith("digits") else cache_dir
    return unit_length(friendly_embeddings(spec, root=root, cache_dir=cache))


def summarise(results: pd.DataFrame, sids: pd.DataFrame, n_iter: int) -> str:
    """The Markdown report: final metrics, the iterations-to-Gaussian-FD target, SID vs gain."""
    out = []
    final = results[results.step == results.step.max()]
    rows = []
    for (cls, inp), g in final.groupby(["cls", "input"], sort=False):
        rows.append(
            [
                cls,
                inp,
                g.friendly.iloc[0] if isinstance(g.friendly.iloc[0], str) else "–",
                fmt(g.sid.iloc[0]),
                fmt_mean_std(g.auroc),
                fmt_mean_std(g.auprc),
                fmt_mean_std(g.frechet),
                f"{g.seconds.mean():.0f}",
            ]
        )
    header = ["class", "input", "friendly set", "SID", "AUROC", "AUPRC", "Fréchet", "train s"]
    out += [
        f"### After {n_iter} iterations (mean ± sd over seeds)\n",
        markdown_table(header, rows, "rllrrrrr"),
        "",
    ]

    curve = results.groupby(["cls", "input", "step"]).frechet.mean()
    rows, met = [], False
    runs = set(curve.index.droplevel(2))
    for cls in results.cls.unique():
        if (cls, "gaussian") not in runs:
            continue
        target = curve[(cls, "gaussian")].iloc[-1]
        for inp in ("best", "median", "worst"):
            if (cls, inp) not in runs:
                continue
            c = curve[(cls, inp)]
            reached = c[c <= target]
            first = int(reached.index[0]) if len(reached) else None
            ok = first is not None and first <= n_iter / 5
            met |= ok
            rows.append(
                [
                    cls,
                    inp,
                    fmt(target, 4),
                    fmt(c.iloc[-1], 4),
                    "never" if first is None else str(first),
                    "yes" if ok else "no",
                ]
            )
    header = ["class", "input", "Gaussian final FD", "its final FD", "first step <= it", "<= 1/5"]
    out += [
        "### Target: Gaussian input's final Fréchet distance in at most a fifth of the "
        "iterations (mean over seeds)\n",
        markdown_table(header, rows, "rlrrrl"),
        f"\nTarget {'met' if met else 'missed'}.\n",
    ]

    rows = []
    base = final[final.input == "gaussian"].groupby("cls")[["auroc", "auprc", "frechet"]].mean()
    for (cls, _), g in final[final.input != "gaussian"].groupby(["cls", "input"], sort=False):
        if cls not in base.index:
            continue
        rows.append(
            [
                cls,
                g.friendly.iloc[0],
                fmt(g.sid.iloc[0]),
                f"{g.auroc.mean() - base.auroc[cls]:+.4f}",
                f"{g.auprc.mean() - base.auprc[cls]:+.4f}",
                f"{g.frechet.mean() - base.frechet[cls]:+.4f}",
            ]
        )
    rows.sort(key=lambda r: (r[0], float(r[2])))
    header = ["class", "friendly set", "SID", "Δ AUROC", "Δ AUPRC", "Δ Fréchet"]
    out += [
        "### SID against the measured gain over Gaussian input (final, mean over seeds)\n",
        markdown_table(header, rows, "rlrrrr"),
        "",
    ]
    for cls, g in sids.groupby("cls"):
        top = ", ".join(f"{r.candidate} {r.sid:.3g}" for r in g.head(3).itertuples())
        low = ", ".join(f"{r.candidate} {r.sid:.3g}" for r in g.tail(3).itertuples())
        out.append(f"SID ranking, class {cls}: friendliest {top}; least friendly {low}.")
    return "\n".join(out) + "\n"


def plot(results: pd.DataFrame, path: Path) -> None:
    fig, axes = new_figure(1, 3, (4.2, 3.2))
    mean = results.groupby(["cls", "input", "step"])[["seconds", "auroc", "frechet"]].mean()
    for (cls, inp), g in mean.groupby(level=[0, 1], sort=False):
        steps = g.index.get_level_values(2)
        label = f"class {cls}, {inp}"
        axes[0, 0].plot(steps, g.frechet, marker="o", label=label)
        axes[0, 1].plot(g.seconds, g.frechet, marker="o", label=label)
        axes[0, 2].plot(steps, g.auroc, marker="o", label=label)
    labels = [
        ("iteration", "Fréchet distance"),
        ("training seconds", "Fréchet distance"),
        ("iteration", "validation AUROC"),
    ]
    for ax, (x, y) in zip(axes[0], labels, strict=True):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--network", choices=("coreset", "mlp"), default="coreset")
    parser.add_argument("--classes", default="3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--inputs", default=",".join(INPUTS))
    parser.add_argument("--n-iter", type=int, default=100)
    parser.add_argument("--eval-at", default="5,10,20,40,70,100")
    parser.add_argument("--n-train", type=int, default=1000, help="training images (seeded)")
    parser.add_argument("--n-gen", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument(
        "--out",
        default=None,
        help="[default: docs/results/spider/DATASET, -mlp appended for the MLP energy; --quick: "
        "a temporary folder]",
    )
    parser.add_argument("--sid-points", type=int, default=256, help="SID test points per radius")
    parser.add_argument("--sid-samples", type=int, default=1000, help="embeddings per set, SID")
    parser.add_argument(
        "--work-cache",
        default=None,
        help="embedding cache of the sets results/embeddings lacks (the digits) [default: a "
        "folder in the temporary directory]",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one process each")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 iterations, tiny")
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(1)
    classes = [int(c) for c in args.classes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    n_iter, eval_at = args.n_iter, [int(s) for s in args.eval_at.split(",")]
    n_train, n_gen, n_test = args.n_train, args.n_gen, args.n_test
    candidates = CANDIDATES[args.dataset]
    if args.quick:
        n_iter, eval_at, n_train, n_gen, n_test = 4, [2, 4], 300, 200, 300
        candidates, seeds = ["digits:3", "digits:7"], seeds[:1]
    folder = args.dataset + ("-mlp" if args.network == "mlp" else "")
    quick_out = Path(tempfile.gettempdir()) / "bench_spider_quick"
    default = quick_out if args.quick else DOCS_OUT / folder
    out = Path(args.out) if args.out else default
    out.mkdir(parents=True, exist_ok=True)

    work_cache = args.work_cache or Path(tempfile.gettempdir()) / "spider-embeddings"
    embedder = functools.partial(
        embed, root=args.data_root, cache_dir=args.cache_dir, work_cache=work_cache
    )
    sid_kwargs = {"n_points": args.sid_points, "max_samples": args.sid_samples}
    earlier = pd.read_csv(out / "sid.csv") if args.resume and (out / "sid.csv").exists() else None
    data, friendly, sid_rows = {}, {}, []
    for cls in classes:
        data[cls] = validation_split(
            args.dataset, cls, args.data_root, args.cache_dir, n_test, n_train
        )
        mine = None if earlier is None else earlier[earlier.cls == cls]
        ranking = rank(data[cls][0], candidates, embedder, sid_kwargs, mine)
        sid_rows += [
            {"cls": cls, "rank": i, "candidate": n, "sid": s} for i, (n, s) in enumerate(ranking, 1)
        ]
        picks = {"best": ranking[0], "median": ranking[len(ranking) // 2], "worst": ranking[-1]}
        friendly[cls] = {
            inp: (name, sid, embedder(name))
            for inp, (name, sid) in picks.items()
            if inp in args.inputs.split(",")
        }
        print(f"class {cls}: SID ranking " + ", ".join(f"{n} {s:.4g}" for n, s in ranking))
    sids = pd.DataFrame(sid_rows)
    if earlier is not None:  # rankings of classes not asked for this time are kept
        sids = pd.concat([sids, earlier[~earlier.cls.isin(classes)]], ignore_index=True)
    write_csv(sids, out / "sid.csv")

    settings = {
        "dataset": args.dataset,
        "network": args.network,
        "n_iter": n_iter,
        "eval_at": eval_at,
        "n_gen": n_gen,
        "n_test": n_test,
        "n_train": n_train,
        "candidates": candidates,
        "split_seed": SPLIT_SEED,
        **sid_kwargs,
    }
    axes = {
        "cls": classes,
        "seed": seeds,
        "input": args.inputs.split(","),
    }  # a seed's inputs together
    task = functools.partial(
        measure,
        data=data,
        friendly=friendly,
        network=args.network,
        n_iter=n_iter,
        eval_at=eval_at,
        n_gen=n_gen,
    )
    cells = run_grid(
        out,
        settings,
        axes,
        task,
        columns=COLUMNS,
        resume=args.resume,
        jobs=args.jobs,
        label="Spider GAN runs",
        verbose=True,
    )
    results = pd.DataFrame([r for c in cells for r in c.rows], columns=COLUMNS)
    report = (QUICK_NOTE + "\n\n" if args.quick else "") + summarise(results, sids, n_iter)
    write_text(report, out / "results.md")
    plot(results, out / "convergence.png")
    write_meta(out, "spider", vars(args), started=started, device="cpu")
    print(report)


if __name__ == "__main__":
    main()
