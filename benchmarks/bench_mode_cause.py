"""Why core-set batches drop modes on the Gaussian grids (issue 31): measurements.

Part ``stats`` (seconds): the latents greedy k-center keeps from prior draws (the benchmark's
2-d uniform prior, 256 candidates -> 64) against the prior itself, and the data it keeps
(512 candidates -> 64 of the mixture) against random batches.

Part ``train`` (minutes per cell): one seed, short MEG trainings that switch one thing at a
time (prior-side selection, data-side selection, selection embedding, entropy weight, energy
steps); each generator is evaluated with prior latents and with latents drawn as training
drew them (its core-set sampler's batches).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_mode_cause.py stats
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_mode_cause.py train --side 5 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from coreset_meg.coreset import CoresetSampler
from coreset_meg.datasets import grid_mixture, mode_coverage

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "modes" / "cause"


def latent_stats(z: np.ndarray, w: np.ndarray | None = None) -> dict:
    """Statistics of 2-d latents in [-1, 1]^2 (weights ``w``: a weighted sample)."""
    w = np.ones(len(z)) if w is None else np.asarray(w, float)
    w = w / w.sum()
    a = np.abs(z)
    return {
        "mean_norm": float(w @ np.linalg.norm(z, axis=1)),
        "second_moment": float(w @ (z**2).mean(1)),  # prior: 1/3
        "mean": [float(v) for v in w @ z],  # prior: 0
        "near_face_0.9": float(w @ (a.max(1) > 0.9)),  # prior: 1 - 0.9^2 = 0.19
        "near_face_0.95": float(w @ (a.max(1) > 0.95)),  # prior: 0.0975
        "corner_0.8": float(w @ (a.min(1) > 0.8)),  # prior: 0.04
        "inner_0.5": float(w @ (a.max(1) < 0.5)),  # prior: 0.25
    }


def stats(n_batches: int = 400) -> dict:
    """Selected vs prior latents, and selected vs random data batches."""
    res = {}
    for pf, stratified in ((1, False), (2, False), (4, False), (8, False), (4, True)):
        s = CoresetSampler(
            None, batch_size=64, latent_dim=2, prior_factor=pf, data_factor=1,
            prior="uniform", n_samples=1000, random_state=0, stratified=stratified,
        )  # fmt: skip
        z, w = zip(*(s.sample_prior_batch() for _ in range(n_batches)), strict=True)
        w = None if w[0] is None else torch.cat(w).numpy()
        name = f"latents prior_factor={pf}" + (" stratified (weighted)" if stratified else "")
        res[name] = latent_stats(torch.cat(z).numpy(), w)
    for side in (5, 7, 10):
        mix = grid_mixture(side, spacing=2.0, std=0.05)
        X, _ = mix.sample(20_000, random_state=0)
        for df, stratified in ((1, False), (8, False), (8, True)):
            # the benchmark's selection space: 2-d data randomly projected to 32-d
            from coreset_meg.coreset import GaussianProjection

            emb = GaussianProjection(32, random_state=0).fit_transform(X)
            s = CoresetSampler(
                emb, batch_size=64, latent_dim=2, prior_factor=1, data_factor=df,
                random_state=0, stratified=stratified,
            )  # fmt: skip
            idx, w = zip(*(s.sample_data_batch() for _ in range(n_batches)), strict=True)
            idx = np.concatenate(idx)
            w = np.ones(len(idx)) if w[0] is None else np.concatenate(w).astype(np.float64)
            w = w / w.sum()
            x = X[idx]
            d2 = ((x[:, None] - mix.centers[None]) ** 2).sum(-1)
            nearest, dist = d2.argmin(1), np.sqrt(d2.min(1)) / mix.std
            counts = np.bincount(nearest, weights=w, minlength=mix.n_modes)
            edge = np.abs(mix.centers).max(1) >= np.abs(mix.centers).max() - 1e-3
            name = f"data {side * side} modes data_factor={df}"
            res[name + (" stratified (weighted)" if stratified else "")] = {
                "mean_dist_std": float(w @ dist),  # random: about 1.25 (2-d Rayleigh)
                "share_beyond_2std": float(w @ (dist > 2)),  # random: exp(-2) = 0.135
                "mode_share_cv": float(counts.std() / counts.mean()),
                "outer_ring_share": float(counts[edge].sum()),
                "outer_ring_modes_share": float(edge.mean()),
                "mean": [float(v) for v in w @ x],
            }
    return res


def evaluate(trainer, mix, n: int, seed: int) -> dict:
    """Coverage of the trained generator under prior latents and under training-style latents
    (the core-set sampler's own batches)."""
    prior_samples = trainer.sample(n, seed).numpy()
    out = {"prior": mode_coverage(prior_samples, mix)}
    # which modes no prior sample reaches, and how far the generated square reaches (the
    # 0.1 and 99.9 percentiles per axis against the outermost centres)
    d2 = ((prior_samples[:, None] - mix.centers[None]) ** 2).sum(-1)
    hit = (d2 <= (4 * mix.std) ** 2).any(0)
    out["missed"] = [[float(c) for c in mix.centers[i]] for i in np.flatnonzero(~hit)]
    lo, hi = np.percentile(prior_samples, [0.1, 99.9], axis=0)
    out["extent"] = {"x": [float(lo[0]), float(hi[0])], "y": [float(lo[1]), float(hi[1])],
                     "centres": float(np.abs(mix.centers).max())}  # fmt: skip
    s = trainer.sampler
    z = torch.cat([s.sample_prior() for _ in range(-(-n // s.batch_size))])[:n]
    with torch.no_grad():
        x = trainer.sampling_generator.eval()(z).numpy()
    out["training latents"] = mode_coverage(x, mix)
    out["generated mean"] = [float(v) for v in x.mean(0)]
    return {
        k: {kk: (float(vv) if kk != "n_modes" else int(vv)) for kk, vv in v.items()}
        if isinstance(v, dict) and "n_modes" in v
        else v
        for k, v in out.items()
    }


VARIANTS = {
    "random 64": dict(prior_factor=1, data_factor=1),
    "core-set 64": dict(prior_factor=4, data_factor=8),
    "prior side only": dict(prior_factor=4, data_factor=1),
    "data side only": dict(prior_factor=1, data_factor=8),
    "core-set 64 stratified": dict(prior_factor=4, data_factor=8, stratified=True),
    "core-set 64, entropy weight 2": dict(prior_factor=4, data_factor=8, entropy_weight=2.0),
    "core-set 64, 1 energy step": dict(prior_factor=4, data_factor=8, n_energy_steps=1),
    "random 64, 1 energy step": dict(prior_factor=1, data_factor=1, n_energy_steps=1),
}


def train(side: int, seed: int, variants, n_iter: int) -> None:
    from coreset_meg.anomaly.benchmarks.mixture import mixture_params
    from coreset_meg.gan import MEGConfig, MEGTrainer

    path = OUT / f"train-{side * side}-seed{seed}-{n_iter}.jsonl"
    done = set()
    if path.exists():
        done = {json.loads(line)["variant"] for line in path.read_text().splitlines()}
    params = mixture_params()
    mix = grid_mixture(side, spacing=2.0, std=0.05)
    X, _ = mix.sample(params["n_train"], random_state=seed)
    for name in variants:
        if name in done:
            continue
        cfg = {**params["config"], "n_iter": n_iter, "batch_size": 64, **VARIANTS[name]}
        t0 = time.time()
        trainer = MEGTrainer(MEGConfig.from_params(**cfg), (2,), device="cpu", random_state=seed)
        trainer.fit(X)
        row = {"variant": name, "side": side, "seed": seed, "n_iter": n_iter,
               "seconds": time.time() - t0}  # fmt: skip
        row.update(evaluate(trainer, mix, params["n_generated"], seed))
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        p, t = row["prior"], row["training latents"]
        print(
            f"{name}: prior {p['modes_recovered']} modes {100 * p['high_quality_fraction']:.1f}%"
            f" | training latents {t['modes_recovered']} modes "
            f"{100 * t['high_quality_fraction']:.1f}% | missed {row['missed']} "
            f"({row['seconds']:.0f} s)",
            flush=True,
        )


def main(argv=None) -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=("stats", "train"))
    ap.add_argument("--side", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-iter", type=int, default=2000)
    ap.add_argument("--variants", default=";".join(VARIANTS))
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if a.part == "stats":
        res = stats()
        (OUT / "selection-stats.json").write_text(json.dumps(res, indent=1))
        json.dump(res, sys.stdout, indent=1)
    else:
        train(a.side, a.seed, a.variants.split(";"), a.n_iter)


if __name__ == "__main__":
    main()
