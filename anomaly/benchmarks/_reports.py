"""The benchmark reports: prose as templates, published figures as data, tables from the results.

A report is a function of the ``results.csv`` rows (and the settings listed under it), so it can
be written again from the CSV. An empty optional part of a template leaves no blank lines.

The published figures are copied from the papers, never measured here. Held-out MNIST AUPRC
(trapezoidal, anomaly = positive) from the MEG paper's table, with its VAE and BiGAN-sigma
baselines; the Small-GAN paper's MEG + core-set figures could not be checked against its text.
The published runs used a split in which most "normal" test images were also training images,
so they are reference points, not like-for-like comparisons. One-class CIFAR-10 mean AUROC of
well-known methods (Deep SVDD, AnoGAN, GEOM, CSI), rounded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from coreset_meg.datasets import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, dataset_key

from ._io import QUICK_NOTE, fmt, fmt_mean_std, markdown_table, summary_table

#: Held-out MNIST AUPRC per digit, by method (published, not measured).
PUBLISHED_HELDOUT_AUPRC: dict[str, dict[int, float]] = {
    "VAE": {1: 0.063, 4: 0.337, 5: 0.325, 7: 0.148, 9: 0.104},
    "MEG": {1: 0.281, 4: 0.401, 5: 0.402, 7: 0.290, 9: 0.342},
    "BiGAN-σ": {1: 0.287, 4: 0.443, 5: 0.514, 7: 0.347, 9: 0.307},
    "MEG + core-set, unverified": {1: 0.35, 4: 0.45, 5: 0.42, 7: 0.34, 9: 0.36},
}
#: One-class mean AUROC over the ten classes, by data set and method (published, not measured).
PUBLISHED_ONE_CLASS_AUROC = {
    "cifar10": {"Deep SVDD": 0.65, "AnoGAN": 0.62, "GEOM": 0.86, "CSI": 0.94}
}
#: The words that mark every published figure.
PUBLISHED_NOTE = "published, not measured"
#: Digits with published held-out figures.
TARGET_DIGITS = (1, 4, 5, 7, 9)
#: The detector in its feature, both and pixel views, and each view's fair baselines (the both
#: view's: kNN on its own vectors, and on each of its parts).
MEG_FEATURES, MEG_PIXELS = "MEG core-set energy (features)", "MEG core-set energy (pixels)"
MEG_BOTH = "MEG core-set energy (both views)"
KNN, KNN_UNIT = "kNN distance", "kNN distance, unit length (features)"
BASELINES = {
    MEG_FEATURES: ("kNN distance (features)", KNN_UNIT, "Gaussian (features)"),
    MEG_BOTH: ("kNN distance (both views)", "Gaussian (both views)", KNN_UNIT, KNN),
    MEG_PIXELS: (KNN,),
}
RUN = {"seeds": "seed", "classes": "cls"}  # listed in the reports' text
CLASS_NAMES = {"cifar10": CIFAR10_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}

HELDOUT = """\
# Held-out class benchmark: {dataset}

{quick}

One class is the anomaly and the other nine are normal; {split} Classes {classes}; seeds \
{seeds}; every method ran on the same split for each class and seed. Cells are mean ± standard \
deviation over seeds; the mean rows average over classes within each seed first.

## AUPRC (trapezoidal, anomaly = positive, as published)

{auprc}

{published}

## Targets

Verdicts computed from the measured numbers above.
{targets}

## AUROC

{auroc}

## Average precision (step-wise)

{average_precision}

{tail}"""

HELDOUT_PUBLISHED = f"""\
Columns marked ({PUBLISHED_NOTE}) are copied from the MEG and Small-GAN papers: they were not \
measured here, they used a split in which most normal test images were also training images, and \
the MEG + core-set figures are unverified."""

ONE_CLASS = """\
# One-class benchmark: {dataset}

{quick}

One class is normal: the detectors train on that class of the training split only and are tested \
on the whole test split, every other class being an anomaly. Normal classes {classes}; seeds \
{seeds}; every method ran on the same split for each class and seed. Cells are mean ± standard \
deviation over seeds; the mean row averages over classes within each seed first.

{data}

## AUROC

{auroc}

## Targets

Verdicts computed from the measured numbers above: the detector's mean against each baseline on
the same inputs.
{targets}

{published}

## Average precision (step-wise, anomaly = positive)

{average_precision}

{tail}"""

CIFAR_JPEG = """\
Note: these CIFAR-10 images are the shared JPEG-compressed copy (quality about 75; pixels differ \
from the originals by up to about 15 levels), so the figures are close to, but not exactly \
comparable with, published CIFAR-10 results."""

ONE_CLASS_PUBLISHED = f"""\
## Mean AUROC beside published figures

{{table}}

Rows marked {PUBLISHED_NOTE} are the ten-class means reported in their papers (rounded); a \
measured mean over fewer than ten classes is not comparable with them."""

DETECTION_TAIL = """\
## Time (mean per split)

{timing}

Anomaly share of the test sets: {share} (the AUPRC of a random score).

{params}"""

MIXTURE = """\
# Mode coverage on 2-D Gaussian grids

{quick}

Grids of modes with spacing {spacing:g} and std {std:g}; a generated sample is high quality \
within 4 std of a mode, and a mode is recovered when it has a high-quality sample. KL: \
divergence of the high-quality samples' mode histogram from uniform (0 is perfectly even). Mean \
± standard deviation over seeds {seeds}.

{table}

## Targets

Verdicts computed from the measured numbers above.
{targets}

{training}"""

TRUNCATION = """\
# Truncation trick on the Gaussian grids: fidelity against diversity

{quick}

Every trained generator draws its samples again with its latents truncated: entries \
beyond the threshold are drawn again until inside (uniform prior in [-1, 1], so 1 is no \
truncation). Same networks as in the main table ("none"); mean ± standard deviation over seeds \
{seeds}.

{table}"""

COST = """\
# Cost of core-set selection per training step

{quick}

One step = 5 energy updates + 1 generator update, batch 64{on}, {cpus} CPU cores. Both settings \
timed in the same run, back to back; mean ± standard deviation over seeds {seeds}. The selection \
time is the sampler's own clock (greedy k-center on the latent and data candidates); the overhead \
is measured per seed against the random-batch step.

{table}

Timed steps per run: {steps}."""

#: Summary columns (header, results column, decimals, "±" or "mean") of each table.
TIMING_COLUMNS = [
    ("embedding s", "embedding_seconds", 1, "mean"),
    ("fit s", "fit_seconds", 1, "mean"),
    ("score s", "score_seconds", 2, "mean"),
    ("GAN iterations/s", "iters_per_second", 2, "mean"),
    ("selection share %", "selection_percent", 1, "mean"),
]
MIXTURE_COLUMNS = [
    ("modes recovered", "modes_recovered", 1, "±"),
    ("high quality %", "high_quality_percent", 1, "±"),
    ("KL to uniform", "kl_uniform", 3, "±"),
    ("ms/step", "ms_per_step", 1, "±"),
    ("selection share %", "selection_percent", 1, "mean"),
]
COST_COLUMNS = [
    ("ms/step", "ms_per_step", 1, "±"),
    ("selection ms/step", "selection_ms_per_step", 2, "±"),
    ("share %", "selection_percent", 1, "±"),
    ("overhead vs random %", "overhead_percent", 1, "±"),
]


def fill(template: str, results: pd.DataFrame, quick: bool, **parts: Any) -> str:
    """``template`` filled with ``parts``, the quick-mode note and the classes and seeds run."""
    listed = {
        k: ", ".join(map(str, sorted(results[c].unique()))) for k, c in RUN.items() if c in results
    }
    text = template.format(quick=QUICK_NOTE if quick else "", **listed, **parts)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def class_label(dataset: str) -> Callable[[int], str]:
    """Text of a class: its number, and its name where the data set has names."""
    names = CLASS_NAMES.get(dataset_key(dataset))
    return str if names is None else (lambda c: f"{c} ({names[c]})")


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# --------------------------------------------------------------------- held-out, one-class


def seed_means(results: pd.DataFrame, metric: str, method: str, classes=None) -> list[float]:
    """Per seed, the mean of ``metric`` over the classes (all run, or ``classes``)."""
    rows = results[results["method"] == method]
    if classes is not None:
        rows = rows[rows["cls"].isin(list(classes))]
    return rows.groupby("seed")[metric].mean().sort_index().tolist()


def metric_table(
    results: pd.DataFrame,
    metric: str,
    class_label: Callable[[int], str] = str,
    published: Mapping[str, Mapping[int, float]] | None = None,
    subsets: Sequence[tuple[str, Sequence[int]]] = (),
) -> str:
    """Per class, mean ± std over seeds of one metric for every detector; ``published`` adds
    reference columns (``{name: {cls: value}}``); mean rows over every class and over each of
    ``subsets`` (``(label, classes)``) whose classes all ran."""
    methods = list(dict.fromkeys(results["method"]))
    classes = sorted(int(c) for c in results["cls"].unique())
    published = published or {}
    groups = results.sort_values("seed", kind="stable").groupby(["cls", "method"])[metric]
    values = {key: list(group) for key, group in groups}
    header = ["class", *methods, *(f"{name} ({PUBLISHED_NOTE})" for name in published)]
    rows = []
    for cls in classes:
        cells = [fmt_mean_std(values.get((cls, m), [])) for m in methods]
        rows.append([class_label(cls), *cells, *(fmt(ref.get(cls)) for ref in published.values())])
    plural = "class" if len(classes) == 1 else "classes"
    means = [(f"mean over {len(classes)} {plural}", classes)]
    means += [(label, sorted(s)) for label, s in subsets if set(classes) > set(s)]
    for label, subset in means:
        cells = [fmt_mean_std(seed_means(results, metric, m, subset)) for m in methods]
        for ref in published.values():
            known = [ref[c] for c in subset if c in ref]
            cells.append(fmt(float(np.mean(known))) if len(known) == len(subset) else "–")
        rows.append([f"**{label}**", *(f"**{c}**" if c != "–" else c for c in cells)])
    return markdown_table(header, rows)


def _tail(results: pd.DataFrame, params: Mapping[str, Any] | None) -> str:
    share = results["anomaly_fraction"]
    span = f"{share.min():.1%}"
    if share.max() - share.min() >= 0.0005:
        span += f" to {share.max():.1%}"
    methods = [("method", "method", list(dict.fromkeys(results["method"])))]
    results = results.assign(selection_percent=100 * results["selection_share"])
    listed = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
    return DETECTION_TAIL.format(
        timing=summary_table(results, methods, TIMING_COLUMNS),
        share=span,
        params=listed and f"MEG parameters (beside the detector's defaults): {listed}.",
    )
    # "embedding s": the time to embed every image of the data set, or to read the cache, in
    # the split's worker (the same for every feature-view method of a split).


LEAK_FREE = (
    "the normal samples are shuffled with the seed, 80% train and the test set is the other 20% "
    "plus every anomaly, with no sample in both (leak-free)."
)
LEAKY = (
    "the split is the published MEG / Efficient-GAN loaders' draw (`RandomState(42)` shared by "
    "the training and the test call), in which about 80% of the normal test samples are also "
    "training samples (leaky); it is the same for every seed, so the seeds differ only in "
    "training. The published figures were measured on this split; the leak-free run is the one "
    "to trust."
)


def heldout_report(
    results: pd.DataFrame, *, dataset: str, params=None, quick=False, leaky: bool = False
) -> str:
    """The report of a held-out run (``leaky``: on the published split); published figures and
    targets apply to MNIST."""
    mnist = dataset_key(dataset) == "mnist"
    subsets = [(f"mean over digits {', '.join(map(str, TARGET_DIGITS))}", TARGET_DIGITS)]
    return fill(
        HELDOUT,
        results,
        quick,
        dataset=dataset,
        split=LEAKY if leaky else LEAK_FREE,
        auprc=metric_table(
            results, "auprc", str, PUBLISHED_HELDOUT_AUPRC if mnist else None, subsets
        ),
        published=HELDOUT_PUBLISHED if mnist else "",
        targets="\n".join(heldout_targets(results, dataset)),
        auroc=metric_table(results, "auroc"),
        average_precision=metric_table(results, "average_precision"),
        tail=_tail(results, params),
    )


def baseline_targets(results: pd.DataFrame, metric: str, n_classes: int = 10) -> list[str]:
    """The must-meet targets: for each view of the detector that ran, its mean (classes within a
    seed first) at least that of each baseline on the same inputs."""
    classes, present = set(results["cls"]), set(results["method"])
    lines = []
    for ours, baselines in BASELINES.items():
        if ours not in present:
            continue
        mine = seed_means(results, metric, ours)
        for other in (b for b in baselines if b in present):
            theirs = seed_means(results, metric, other)
            goal = f"- mean {metric.upper()}: {ours} >= {other}"
            if set(range(n_classes)) <= classes:
                verdict = _verdict(np.mean(mine) >= np.mean(theirs))
                lines.append(f"{goal}: {verdict} ({fmt_mean_std(mine)} vs {fmt_mean_std(theirs)})")
            else:
                run = f"{len(classes)} of {n_classes} classes run; over those: "
                lines.append(f"{goal}: not measured ({run}{fmt(np.mean(mine))} vs "
                             f"{fmt(np.mean(theirs))})")  # fmt: skip
    return lines or ["- not measured (the detector did not run)"]


def heldout_targets(results: pd.DataFrame, dataset: str) -> list[str]:
    """One line per target, each verdict computed from the measured means over seeds."""
    classes, present = set(results["cls"]), set(results["method"])
    ours = next((m for m in BASELINES if m in present), None)
    if ours is None:
        return ["- not measured (the detector did not run)"]
    mine, ref = results[results["method"] == ours], PUBLISHED_HELDOUT_AUPRC["MEG"]
    lines = []
    for digit in TARGET_DIGITS:
        goal = f"- digit {digit}: {ours} AUPRC > published MEG {ref[digit]:.3f}"
        got = mine[mine["cls"] == digit]["auprc"]
        if dataset_key(dataset) != "mnist":
            lines.append(f"{goal}: not measured (published figures are for MNIST, not {dataset})")
        elif digit not in classes:
            lines.append(f"{goal}: not measured (digit {digit} not run)")
        else:
            verdict = _verdict(got.mean() > ref[digit])
            lines.append(f"{goal}: {verdict} ({fmt_mean_std(got)} vs {ref[digit]:.3f})")
    return lines + baseline_targets(results, "auprc")


def one_class_report(results: pd.DataFrame, *, dataset: str, params=None, quick=False) -> str:
    """The report of a one-class run; published figures for CIFAR-10."""
    key, label = dataset_key(dataset), class_label(dataset)
    data = ""
    if key == "cifar10":
        jpeg = results["split"].astype(str).str.contains("JPEG").any()
        data = CIFAR_JPEG if jpeg else "Data: the official CIFAR-10 files."
    published = ""
    if key in PUBLISHED_ONE_CLASS_AUROC:
        n = results["cls"].nunique()
        rows = [[m, f"≈{v:.2f}", PUBLISHED_NOTE] for m, v in PUBLISHED_ONE_CLASS_AUROC[key].items()]
        rows += [
            [m, fmt_mean_std(seed_means(results, "auroc", m)), f"measured ({n} classes)"]
            for m in dict.fromkeys(results["method"])
        ]
        table = markdown_table(["method", "mean AUROC", "source"], rows, "lrl")
        published = ONE_CLASS_PUBLISHED.format(table=table)
    return fill(
        ONE_CLASS,
        results,
        quick,
        dataset=dataset,
        data=data,
        auroc=metric_table(results, "auroc", label),
        targets="\n".join(baseline_targets(results, "auroc")),
        published=published,
        average_precision=metric_table(results, "average_precision", label),
        tail=_tail(results, params),
    )


# ------------------------------------------------------------------------- mixture, cost


def mixture_report(results: pd.DataFrame, *, spacing, std, config=None, quick=False) -> str:
    """The report of a mixture run on grids of modes ``spacing`` apart with ``std``; ``config``
    (:func:`~.mixture.mixture_params`) is listed under the table."""
    results = results.assign(
        high_quality_percent=100 * results["high_quality_fraction"],
        ms_per_step=1000 * results["seconds_per_step"],
        selection_percent=100 * results["selection_share"],
    )
    by = [
        ("modes", "n_modes", sorted(results["n_modes"].unique())),
        ("setting", "setting", list(dict.fromkeys(results["setting"]))),
    ]
    targets = []
    for n_modes in sorted(results["n_modes"].unique()):
        r = results[results["n_modes"] == n_modes].groupby("setting")["modes_recovered"].mean()
        if {"core-set 64", "random 64"} <= set(r.index):
            targets.append(
                f"- {n_modes} modes: core-set 64 recovers at least as many modes as random 64: "
                f"{_verdict(r['core-set 64'] >= r['random 64'])} "
                f"({r['core-set 64']:.1f} vs {r['random 64']:.1f})"
            )
    training = ""
    if config:
        listed = ", ".join(f"{k}={v}" for k, v in config["config"].items())
        training = (
            f"Training: {config['n_train']} samples from the mixture, {listed}; coverage "
            f"measured on {config['n_generated']} generated samples."
        )
    return fill(
        MIXTURE,
        results,
        quick,
        spacing=spacing,
        std=std,
        table=summary_table(results, by, MIXTURE_COLUMNS),
        targets="\n".join(targets)
        or "- none: the one target compares core-set 64 with random 64, not both in this run.",
        training=training,
    )


def truncation_report(sweep: pd.DataFrame, results: pd.DataFrame, *, quick=False) -> str:
    """The report of a mixture run's truncation sweep: ``sweep`` rows of
    ``truncation.csv``, ``results`` the untruncated rows of the same networks."""
    thresholds = sorted(sweep["truncation"].unique(), reverse=True)
    both = pd.concat(
        [
            results.assign(cut="none"),
            sweep.assign(cut=[f"{t:g}" for t in sweep["truncation"]]),
        ],
        ignore_index=True,
    )
    both = both.assign(high_quality_percent=100 * both["high_quality_fraction"])
    by = [
        ("modes", "n_modes", sorted(sweep["n_modes"].unique())),
        ("setting", "setting", list(dict.fromkeys(sweep["setting"]))),
        ("truncation", "cut", ["none"] + [f"{t:g}" for t in thresholds]),
    ]
    columns = [c for c in MIXTURE_COLUMNS if c[1] not in ("ms_per_step", "selection_percent")]
    return fill(TRUNCATION, sweep, quick, table=summary_table(both, by, columns))


def cost_report(results: pd.DataFrame, *, device: str = "", quick: bool = False) -> str:
    """The report of a cost run; ``device`` is named in the text."""
    coreset = (results["prior_factor"] * results["data_factor"] > 1).to_numpy()
    baseline = results[~coreset].groupby(["data", "seed"])["ms_per_step"].mean()
    keys = pd.MultiIndex.from_frame(results[["data", "seed"]])
    ratio = results["ms_per_step"].to_numpy() / baseline.reindex(keys).to_numpy()
    results = results.assign(
        selection_percent=100 * results["selection_share"],
        overhead_percent=np.where(coreset, 100 * (ratio - 1), np.nan),
    )
    by = [
        ("data", "data", list(results["data"].unique())),
        ("setting", "setting", list(dict.fromkeys(results["setting"]))),
    ]
    steps = results.groupby("data", sort=False)["steps"].first()
    return fill(
        COST,
        results,
        quick,
        on=f" on {device}" if device else "",
        cpus=os.cpu_count(),
        table=summary_table(results, by, COST_COLUMNS, {"overhead vs random %": "(baseline)"}),
        steps=", ".join(f"{d}: {n}" for d, n in steps.items()),
    )
