"""Mirror images and backbone ensembles: cheap ways to better features, on validation splits.

CIFAR-10 one-class validation (inside the official *training* set, as in ``bench_adaptation.py``:
the last 10,000 shuffled training images are the validation pool, a seeded ``--n-val`` of them
are scored, every class but the normal one is an anomaly; the test set is never read). Each
member is a backbone (``make_embedder``'s names) with an optional mirror treatment:

- ``name``: the unit-length features (today's features view);
- ``name:flip``: the mean of the unit-length features of the image and of its mirror image
  (left-right), made unit length again: one vector per image, scored as usual;
- ``name:tta``: the energies of the image and of its mirror image added (test-time
  augmentation, two energies per image);
- ``name:aug``: the mirror images of the training images added as centres.

``--combos`` joins members side by side (``a+b``: their unit-length vectors concatenated and
made unit length again, so each member weighs alike). Every row is scored by the detector's
default energy (the core-set mixture plus the 0.3 Gaussian term) and by kNN (5th neighbour)
on the same vectors. Embeddings are cached (``--cache-dir``); the whole training set is
embedded once per backbone and mirror::

    python benchmarks/bench_ensembles.py \\
        --members efficientnet-lite0@128,efficientnet-lite0@128:flip \\
        --data-root DATA --out docs/results/ensembles
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_adaptation import default_energy_scores, split_rows
from bench_coreset_energy import training_set
from bench_views import knn

from coreset_meg.anomaly import auroc
from coreset_meg.anomaly.benchmarks.features import DEFAULT_CACHE
from coreset_meg.features.embeddings import compute_embeddings, unit_length
from coreset_meg.features.pretrained import make_embedder

TREATMENTS = ("", "flip", "tta", "aug")


def embed(name: str, images: np.ndarray, mirror: bool, cache_dir) -> np.ndarray:
    """Unit-length features of ``images`` (uint8, (N, 3, H, W)), or of their mirror images."""
    X = np.ascontiguousarray(images[..., ::-1]) if mirror else images
    return unit_length(np.asarray(compute_embeddings(X, make_embedder(name), cache_dir=cache_dir)))


def member_scores(member: str, F: dict, train, val) -> dict[str, np.ndarray]:
    """Anomaly scores of the rows ``val`` by one member or combo (``a+b``), fitted on ``train``:
    ``{"energy": ..., "knn": ...}``."""
    parts = member.split("+")
    treatments = {p.partition(":")[2] for p in parts}
    if len(parts) > 1 and treatments - {"", "flip"}:
        raise ValueError(f"{member}: only plain and ':flip' members can be joined")
    if len(parts) > 1 or treatments <= {"", "flip"}:
        V = unit_length(np.concatenate([vectors(p, F) for p in parts], axis=1))
        return {"energy": default_energy_scores(V[train], V[val], 0), "knn": knn(V[train], V[val])}
    name, treatment = member.split(":")
    A, B = F[name, False], F[name, True]
    if treatment == "tta":
        return {
            "energy": default_energy_scores(A[train], A[val], 0)
            + default_energy_scores(A[train], B[val], 0),
            "knn": knn(A[train], A[val]) + knn(A[train], B[val]),
        }
    centres = np.concatenate([A[train], B[train]])  # "aug"
    return {"energy": default_energy_scores(centres, A[val], 0), "knn": knn(centres, A[val])}


def vectors(member: str, F: dict) -> np.ndarray:
    name, _, treatment = member.partition(":")
    if treatment == "flip":
        return unit_length((F[name, False] + F[name, True]) / 2)
    return F[name, False]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", required=True, help="comma-separated; a+b joins members")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    rows = pd.read_csv(path).to_dict("records") if args.resume and path.exists() else []
    done = {(r["member"], r["class"]) for r in rows}
    (out / "meta.json").write_text(json.dumps(vars(args), indent=1) + "\n")
    members = args.members.split(",")
    for member in members:
        for part in member.split("+"):
            if part.partition(":")[2] not in TREATMENTS:
                raise SystemExit(f"error: {part}: the treatment must be one of {TREATMENTS[1:]}")

    images, _ = training_set("cifar10", args.data_root)
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    F = {}
    for member in members:
        for part in member.split("+"):
            name, _, treatment = part.partition(":")
            for mirror in (False, True) if treatment else (False,):
                if (name, mirror) not in F:
                    started = time.perf_counter()
                    F[name, mirror] = embed(name, images, mirror, args.cache_dir)
                    print(f"{name}{' mirrored' if mirror else ''}: "
                          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    for cls in (int(c) for c in args.classes.split(",")):
        train, val, y = split_rows("cifar10", cls, args.data_root, args.n_val)
        for member in members:
            if (member, cls) in done:
                continue
            scores = member_scores(member, F, train, val)
            metrics = {k: auroc(y, s, higher="anomalous") for k, s in scores.items()}
            rows.append({"member": member, "class": cls, **metrics})
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(path, index=False)
    table = summarise(pd.DataFrame(rows), members)
    (out / "table.md").write_text(table)
    print(table)


def summarise(results: pd.DataFrame, order: list[str]) -> str:
    """Markdown: the energy's AUROC per class, its mean, kNN's mean, and the difference from
    the first member (classes higher / lower)."""
    energy = results.pivot_table(index="member", columns="class", values="energy").loc[order]
    knn_mean = results.groupby("member")["knn"].mean()
    base = energy.iloc[0]
    head = " | ".join(str(c) for c in energy.columns)
    lines = [f"| member | {head} | mean | kNN mean | vs {order[0]} (up / down) |",
             "|:---|" + "---:|" * (len(energy.columns) + 3)]  # fmt: skip
    for member, row in energy.iterrows():
        diff = row - base
        versus = f"{diff.mean():+.4f} ({int((diff > 0).sum())} / {int((diff < 0).sum())})"
        cells = " | ".join(f"{v:.4f}" for v in row)
        lines.append(f"| {member} | {cells} | {row.mean():.4f} | {knn_mean[member]:.4f} | "
                     f"{'–' if member == order[0] else versus} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
