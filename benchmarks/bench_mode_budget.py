"""Mode coverage over training (issue 31, item 3): how long the mixture benchmark must train.

Each cell (mixture, batch setting, seed) trains the benchmark's MEG (its
:func:`~coreset_meg.anomaly.benchmarks.mixture.mixture_params`, plus ``--config`` overrides that
apply to every setting alike) and measures the generator every ``--eval-every`` steps: 10,000
samples, latents from the prior, scored at the project's threshold (4 std, one sample recovers
a mode) and at VEEGAN's and PacGAN's (3 std). With ``generator_ema`` set, the live generator and
its weight average are both measured (the average does not change training). One JSON line per
measurement goes to ``docs/results/modes/budget/<tag>.jsonl`` as soon as it is taken; a
checkpoint every ``--eval-every`` steps (``results/mode-budget/<tag>/``) lets an interrupted
run, or a longer ``--n-iter``, continue where it stopped.

Mixtures: ``grid5``, ``grid7``, ``grid10`` (25, 49, 100 modes, spacing 2, std 0.05),
``ring8`` (8 modes on a circle of radius 2, std 0.05) and ``grid5-unequal`` (the 25-mode grid
with :func:`~coreset_meg.datasets.unequal_weights`, heaviest 10 times the lightest).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_mode_budget.py --tag T \\
        --mixtures grid5 --settings "random 512" --seeds 0 --n-iter 20000 --eval-every 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from coreset_meg.anomaly.benchmarks.mixture import _SETTINGS, mixture_params
from coreset_meg.datasets import grid_mixture, mode_coverage, ring_mixture, unequal_weights
from coreset_meg.gan import MEGConfig, MEGTrainer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "modes" / "budget"
CKPT = ROOT / "results" / "mode-budget"

MIXTURES = {
    "grid5": lambda: grid_mixture(5),
    "grid7": lambda: grid_mixture(7),
    "grid10": lambda: grid_mixture(10),
    "ring8": lambda: ring_mixture(8, radius=2.0, std=0.05),
    "grid5-unequal": lambda: grid_mixture(5, weights=unequal_weights(25)),
}


def coverage_row(samples: np.ndarray, mixture) -> dict:
    """Coverage at the project's threshold (4 std) and at the papers' (3 std)."""
    four = mode_coverage(samples, mixture, n_std=4.0)
    three = mode_coverage(samples, mixture, n_std=3.0)
    return {
        "modes": four["modes_recovered"],
        "hq": round(four["high_quality_fraction"], 4),
        "kl": round(four["kl_uniform"], 4),
        "kl_weights": round(four["kl_weights"], 4),
        "modes_3std": three["modes_recovered"],
        "hq_3std": round(three["high_quality_fraction"], 4),
        "kl_3std": round(three["kl_weights"], 4),
    }


class Measure:
    """Trainer callback: measure the generator(s) every ``every`` steps, append JSON lines."""

    def __init__(self, path: Path, key: dict, mixture, every: int, n: int, seed: int, done):
        self.path, self.key, self.mixture = path, key, mixture
        self.every, self.n, self.seed, self.done = every, n, seed, done

    def on_step_end(self, trainer: MEGTrainer, result) -> None:
        if trainer.step % self.every or trainer.step in self.done:
            return
        nets = {"live": trainer.generator}
        if trainer.generator_avg is not None:
            nets["ema"] = trainer.generator_avg
        for name, net in nets.items():
            z = trainer.prior.draw(self.n, torch.Generator().manual_seed(self.seed))
            training = net.training
            with torch.no_grad():
                x = net.eval()(z).numpy()
            net.train(training)
            row = {**self.key, "step": trainer.step, "generator": name}
            row.update(coverage_row(x, self.mixture))
            row["seconds_per_step"] = round(trainer.seconds / trainer.step, 4)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        self.done.add(trainer.step)


def run_cell(tag, mixture_name, setting, seed, n_iter, every, overrides) -> None:
    path = OUT / f"{tag}.jsonl"
    key = {"mixture": mixture_name, "setting": setting, "seed": seed}
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if all(row[k] == v for k, v in key.items()):
                done.add(row["step"])
    if n_iter in done:
        return
    params = mixture_params()
    mixture = MIXTURES[mixture_name]()
    X, _ = mixture.sample(params["n_train"], random_state=seed)
    batches = _SETTINGS[setting]
    measure = Measure(path, key, mixture, every, params["n_generated"], seed, done)
    ckpt = CKPT / tag / f"{mixture_name}-{setting.replace(' ', '_')}-{seed}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(checkpoint_path=ckpt, checkpoint_every=every, callbacks=[measure])
    if ckpt.exists():
        trainer = MEGTrainer.from_checkpoint(ckpt, device="cpu", **kwargs)
        trainer.config.schedule.n_iter = n_iter
    else:
        cfg = MEGConfig.from_params(
            **{
                **params["config"],
                **dict(batches.options),
                **overrides,
                "n_iter": n_iter,
                "batch_size": batches.batch_size,
                "prior_factor": batches.prior_factor,
                "data_factor": batches.data_factor,
            }
        )
        trainer = MEGTrainer(cfg, (2,), device="cpu", random_state=seed, **kwargs)
    t0 = time.time()
    trainer.fit(X)
    print(f"# {key} done in {time.time() - t0:.0f} s", flush=True)


def main(argv=None) -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", required=True, help="name of the output file and checkpoints")
    ap.add_argument("--mixtures", default="grid5")
    ap.add_argument("--settings", default="random 512")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n-iter", type=int, default=20_000)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--config", action="append", default=[], help="NAME=JSON, a MEGConfig setting")
    a = ap.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (c.split("=", 1) for c in a.config)}
    OUT.mkdir(parents=True, exist_ok=True)
    meta = OUT / f"{a.tag}.meta.json"
    if not meta.exists():
        config = {**mixture_params()["config"], **overrides}
        meta.write_text(json.dumps({"config": config, "eval_every": a.eval_every}, indent=1))
    for seed in map(int, a.seeds.split(",")):
        for mixture in a.mixtures.split(","):
            for setting in a.settings.split(","):
                run_cell(a.tag, mixture, setting, seed, a.n_iter, a.eval_every, overrides)


if __name__ == "__main__":
    main()
