"""The Markdown reports of the benchmarks: prose as templates, tables from the results alone.

Each report is a template below filled with tables and computed figures; an empty optional part
leaves no blank lines behind. A report is a function of the ``results.csv`` rows (and the settings
listed under it), so it can be written again from the CSV.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from datasets import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

from ._io import (
    QUICK_NOTE,
    fmt,
    fmt_mean_std,
    listing,
    markdown_table,
    summary_table,
)
from ._reference import (
    PUBLISHED_HELDOUT_AUPRC,
    PUBLISHED_MEG,
    PUBLISHED_NOTE,
    PUBLISHED_ONE_CLASS_AUROC,
    TARGET_DIGITS,
)

MEG_CORESET, MEG_RANDOM, KNN = "MEG + core-set", "MEG + random batches", "kNN distance"
_CLASS_NAMES = {"cifar10": CIFAR10_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}


def dataset_key(dataset: str) -> str:
    """Canonical data-set name: ``"CIFAR-10"`` -> ``"cifar10"``."""
    key = str(dataset).lower().replace("_", "-")
    return {"cifar-10": "cifar10", "fashion": "fashion-mnist"}.get(key, key)


def class_label(dataset: str) -> Callable[[int], str]:
    """Text of a class: its number, and its name where the data set has names."""
    names = _CLASS_NAMES.get(dataset_key(dataset))
    return str if names is None else (lambda c: f"{c} ({names[c]})")


HELDOUT = """\
# Held-out class benchmark: {dataset}

{quick}

One class is the anomaly and the other nine are normal; the normal samples are shuffled with the \
seed, 80% train and the test set is the other 20% plus every anomaly, with no sample in both \
(leak-free). Classes {classes}; seeds {seeds}; every method ran on the same split for each class \
and seed. Cells are mean ± standard deviation over seeds; the mean rows average over classes \
within each seed first.

## AUPRC (trapezoidal, anomaly = positive, as published)

{auprc}

{published_note}

## Targets

Verdicts computed from the measured numbers above.
{targets}

## AUROC

{auroc}

## Average precision (step-wise)

{average_precision}

{tail}"""

PUBLISHED_COLUMNS = f"""\
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

{data_note}

## AUROC

{auroc}

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

MEG parameters (random batches: prior_factor=1, data_factor=1): {params}."""

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

MIXTURE_TRAINING = """\
Training: {n_train} samples from the mixture, {config}; coverage measured on {n_generated} \
generated samples."""

COST = """\
# Cost of core-set selection per training step

{quick}

One step = 5 energy updates + 1 generator update, batch 64{on}, {cpus} CPU cores. Both settings \
timed in the same run, back to back; mean ± standard deviation over seeds {seeds}. The selection \
time is the sampler's own clock (greedy k-center on the latent and data candidates); the overhead \
is measured per seed against the random-batch step.

{table}

Timed steps per run: {steps}."""

#: Per-detector timing columns of the held-out and one-class reports.
TIMING_COLUMNS = [
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


def fill(template: str, **parts: Any) -> str:
    """``template`` filled in; empty parts leave no extra blank lines; one final newline."""
    text = template.format(**parts)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def _counts(results: pd.DataFrame) -> dict[str, str]:
    return {
        "classes": listing(sorted(int(c) for c in results["cls"].unique())),
        "seeds": listing(sorted(int(s) for s in results["seed"].unique())),
    }


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
    *,
    class_label: Callable[[int], str] = str,
    published: Mapping[str, Mapping[int, float]] | None = None,
    subsets: Sequence[tuple[str, Sequence[int]]] = (),
) -> list[str]:
    """Per class, mean ± std over seeds of one metric for every detector.

    ``published`` adds fixed reference columns (``{name: {cls: value}}``); mean rows follow, over
    every class and over each of ``subsets`` (``(label, classes)``) whose classes all ran.
    """
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
    mean_rows = [(f"mean over {len(classes)} {plural}", classes)]
    mean_rows += [
        (label, sorted(subset))
        for label, subset in subsets
        if set(subset) <= set(classes) and sorted(subset) != classes
    ]
    for label, subset in mean_rows:
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
    results = results.assign(selection_percent=100 * results["selection_share"])
    methods = list(dict.fromkeys(results["method"]))
    timing = summary_table(results, [("method", "method", methods)], TIMING_COLUMNS)
    text = DETECTION_TAIL.format(
        timing="\n".join(timing),
        share=span,
        params=", ".join(f"{k}={v}" for k, v in (params or {}).items()),
    )
    return text if params else text.rsplit("\n\n", 1)[0]


def heldout_report(
    results: pd.DataFrame, *, dataset: str, params: Mapping[str, Any] | None = None, quick=False
) -> str:
    """The report of a held-out run from its ``results.csv`` rows; published figures and
    targets apply to MNIST."""
    mnist = str(dataset).lower() == "mnist"
    digits = listing(TARGET_DIGITS)
    return fill(
        HELDOUT,
        dataset=dataset,
        quick=QUICK_NOTE if quick else "",
        **_counts(results),
        auprc="\n".join(
            metric_table(
                results,
                "auprc",
                published=PUBLISHED_HELDOUT_AUPRC if mnist else None,
                subsets=[(f"mean over digits {digits}", TARGET_DIGITS)],
            )
        ),
        published_note=PUBLISHED_COLUMNS if mnist else "",
        targets="\n".join(heldout_targets(results, dataset)),
        auroc="\n".join(metric_table(results, "auroc")),
        average_precision="\n".join(metric_table(results, "average_precision")),
        tail=_tail(results, params),
    )


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def heldout_targets(results: pd.DataFrame, dataset: str) -> list[str]:
    """One line per target, each verdict computed from the measured means over seeds."""
    classes = set(int(c) for c in results["cls"].unique())
    mnist = str(dataset).lower() == "mnist"
    ref = PUBLISHED_HELDOUT_AUPRC[PUBLISHED_MEG]
    ours, present = results[results["method"] == MEG_CORESET], set(results["method"])
    if MEG_CORESET not in present:
        return [f"- not measured ({MEG_CORESET} not run)"]
    lines = []
    for digit in TARGET_DIGITS:
        goal = f"digit {digit}: {MEG_CORESET} AUPRC > published MEG {ref[digit]:.3f}"
        got = ours[ours["cls"] == digit]["auprc"]
        if not mnist:
            lines.append(f"- {goal}: not measured (published figures are for MNIST, not {dataset})")
        elif digit not in classes:
            lines.append(f"- {goal}: not measured (digit {digit} not run)")
        else:
            ok = got.mean() > ref[digit]
            lines.append(f"- {goal}: {_verdict(ok)} ({fmt_mean_std(got)} vs {ref[digit]:.3f})")
    mine, knn = seed_means(results, "auprc", MEG_CORESET), seed_means(results, "auprc", KNN)
    mean_mine, mean_knn = (sum(v) / len(v) if v else float("nan") for v in (mine, knn))
    goal = f"- 10-class mean AUPRC: {MEG_CORESET} > {KNN}"
    if KNN not in present:
        pass
    elif set(range(10)) <= classes:
        verdict = _verdict(mean_mine > mean_knn)
        lines.append(f"{goal}: {verdict} ({fmt_mean_std(mine)} vs {fmt_mean_std(knn)})")
    else:
        lines.append(
            f"{goal}: not measured ({len(classes)} of 10 classes run; over those: "
            f"{fmt(mean_mine)} vs {fmt(mean_knn)})"
        )
    if MEG_RANDOM not in present:
        return lines
    coreset = ours.set_index(["cls", "seed"])["auprc"]
    random = results[results["method"] == MEG_RANDOM].set_index(["cls", "seed"])["auprc"]
    by_class = coreset.groupby("cls").mean()
    wins = int((by_class >= random.groupby("cls").mean()).sum())
    lines.append(
        f"- {MEG_CORESET} >= {MEG_RANDOM} (mean AUPRC over every class and seed run): "
        f"{_verdict(coreset.mean() >= random.mean())} ({fmt(coreset.mean())} vs "
        f"{fmt(random.mean())}; at least as good on {wins} of {len(by_class)} classes)"
    )
    return lines


def one_class_report(
    results: pd.DataFrame, *, dataset: str, params: Mapping[str, Any] | None = None, quick=False
) -> str:
    """The report of a one-class run from its ``results.csv`` rows; published figures for
    CIFAR-10."""
    key, label = dataset_key(dataset), class_label(dataset)
    data_note = ""
    if key == "cifar10":
        jpeg = "JPEG" in " ".join(results["split"].astype(str).unique())
        data_note = CIFAR_JPEG if jpeg else "Data: the official CIFAR-10 files."
    published = ""
    if key in PUBLISHED_ONE_CLASS_AUROC:
        n = results["cls"].nunique()
        rows = [[m, f"≈{v:.2f}", PUBLISHED_NOTE] for m, v in PUBLISHED_ONE_CLASS_AUROC[key].items()]
        rows += [
            [m, fmt_mean_std(seed_means(results, "auroc", m)), f"measured ({n} classes)"]
            for m in dict.fromkeys(results["method"])
        ]
        table = markdown_table(["method", "mean AUROC", "source"], rows, "lrl")
        published = ONE_CLASS_PUBLISHED.format(table="\n".join(table))
    return fill(
        ONE_CLASS,
        dataset=dataset,
        quick=QUICK_NOTE if quick else "",
        **_counts(results),
        data_note=data_note,
        auroc="\n".join(metric_table(results, "auroc", class_label=label)),
        published=published,
        average_precision="\n".join(metric_table(results, "average_precision", class_label=label)),
        tail=_tail(results, params),
    )


# ------------------------------------------------------------------------- mixture, cost


def mixture_report(
    results: pd.DataFrame,
    *,
    spacing: float,
    std: float,
    config: Mapping[str, Any] | None = None,
    quick: bool = False,
) -> str:
    """The report of a mixture run from its ``results.csv`` rows: grids of modes ``spacing``
    apart with ``std``; ``config`` (:func:`~.mixture.mixture_params`) is listed under the
    table."""
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
        training = MIXTURE_TRAINING.format(**{**config, "config": listed})
    return fill(
        MIXTURE,
        quick=QUICK_NOTE if quick else "",
        spacing=spacing,
        std=std,
        seeds=listing(sorted(int(s) for s in results["seed"].unique())),
        table="\n".join(summary_table(results, by, MIXTURE_COLUMNS)),
        targets="\n".join(targets),
        training=training,
    )


def cost_report(results: pd.DataFrame, *, device: str = "", quick: bool = False) -> str:
    """The report of a cost run from its ``results.csv`` rows (``device``: named in the text)."""
    random = results[results["prior_factor"] * results["data_factor"] == 1]
    baseline = random.groupby(["data", "seed"])["ms_per_step"].mean()
    keys = pd.MultiIndex.from_frame(results[["data", "seed"]])
    ratio = results["ms_per_step"].to_numpy() / baseline.reindex(keys).to_numpy()
    coreset = (results["prior_factor"] * results["data_factor"] > 1).to_numpy()
    results = results.assign(
        selection_percent=100 * results["selection_share"],
        overhead_percent=np.where(coreset, 100 * (ratio - 1), np.nan),
    )
    by = [
        ("data", "data", list(results["data"].unique())),
        ("setting", "setting", list(dict.fromkeys(results["setting"]))),
    ]
    table = summary_table(results, by, COST_COLUMNS, {"overhead vs random %": "(baseline)"})
    steps = results.groupby("data", sort=False)["steps"].first()
    return fill(
        COST,
        quick=QUICK_NOTE if quick else "",
        on=f" on {device}" if device else "",
        cpus=os.cpu_count(),
        seeds=listing(sorted(int(s) for s in results["seed"].unique())),
        table="\n".join(table),
        steps=", ".join(f"{d}: {n}" for d, n in steps.items()),
    )
