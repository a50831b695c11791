"""Time per training iteration, embedding and scoring throughput for 1 and 2 processes.

Each setting runs in fresh processes: one process with 1 and with 2 threads, and
``torchrun --standalone --nproc-per-node 2`` with one thread each. Printed as one Markdown
table per run, with the speed-up over one process with as many threads as the machine's
processes get in all::

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --n-iter 20 --out results/distributed.csv

What is timed (synthetic values of the benchmarks' shapes: the cost depends on the shapes only):

- ``train features``: the detector's settings for image features, 5,000 unit-length 1280-d
  embeddings (a CIFAR-10 class), core-set energy; seconds per iteration (5 energy steps and a
  generator step of batch B per process) after two warm-up iterations, and samples per
  second of the effective batch (processes x B);
- ``train pixels``: the same on 6,000 MNIST-sized images (1 x 28 x 28) seen as pixels;
- ``embed``: EfficientNet-Lite0 features of 1,024 32 x 32 colour images (images per second);
- ``score``: the trained energy on 20,000 embeddings (rows per second).

On a machine with two cores two processes share them: expect no speed-up over one process
with two threads; the table says what splitting costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _config(view: str, n_iter: int):
    from coreset_meg.anomaly.settings import preset
    from coreset_meg.gan import MEGConfig
    from coreset_meg.gan.config import TRAINING_GROUPS, setting_fields

    names = {field.name for _, field in setting_fields(TRAINING_GROUPS)}
    params = {k: v for k, v in preset("features" if view == "features" else "images").items()
              if k in names}  # fmt: skip
    return MEGConfig.from_params(**params, n_iter=n_iter, log_every=1)


def _data(view: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if view == "features":
        X = rng.standard_normal((5000, 1280)).astype(np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True)
    return rng.uniform(-1, 1, (6000, 1, 28, 28)).astype(np.float32)


def worker(n_iter: int, warmup: int, out: Path) -> None:
    """One process's share of every measurement; rank 0 writes the figures as JSON."""
    import torch

    from coreset_meg.anomaly.scoring import score_columns
    from coreset_meg.common import distributed
    from coreset_meg.features.embeddings import compute_embeddings
    from coreset_meg.features.pretrained import make_embedder
    from coreset_meg.gan import MEGTrainer

    distributed.init_from_env("cpu")
    procs = distributed.world_size()
    result = {"processes": procs, "threads": torch.get_num_threads()}
    trained = None
    for view in ("features", "pixels"):
        X = _data(view)
        config = _config(view, warmup + n_iter)
        trainer = MEGTrainer(config, X.shape[1:], device="cpu", random_state=0).fit(X)
        seconds = [r["seconds"] for r in trainer.history]
        per_iter = distributed.all_reduce_mean([(seconds[-1] - seconds[warmup - 1]) / n_iter])[0]
        result[f"train {view} s/iter"] = per_iter
        result[f"train {view} samples/s"] = procs * config.batches.batch_size / per_iter
        trained = trained or trainer
    images = np.random.default_rng(1).integers(0, 256, (1024, 3, 32, 32), dtype=np.uint8)
    embedder = make_embedder("efficientnet-lite0", device="cpu")
    compute_embeddings(images[:64], embedder, verbose=False)  # warm-up (alone in each process)
    distributed.barrier()
    start = time.perf_counter()
    compute_embeddings(images, embedder, chunk_size=128, verbose=False)
    result["embed images/s"] = len(images) / (time.perf_counter() - start)
    rows = _data("features")[np.random.default_rng(2).integers(0, 5000, 20_000)]
    net = trained.energy_avg.eval()
    distributed.barrier()
    start = time.perf_counter()
    distributed.map_rows(lambda r: score_columns(net, r, ("energy",)), rows, block=512)
    result["score rows/s"] = len(rows) / (time.perf_counter() - start)
    if distributed.is_main():
        out.write_text(json.dumps(result))
    distributed.finish()


def render(table) -> str:
    """The Markdown table of a run (``table``: its rows as a data frame)."""
    from coreset_meg.anomaly.benchmarks._io import markdown_table

    base = table[(table.processes == 1) & (table.threads == 2)].iloc[0]
    rates = [c for c in table.columns if c.endswith("/s")]
    for column in rates:  # same-run ratios: the machine's noise cancels
        table[column.rsplit(" ", 1)[0] + " vs 1x2"] = table[column] / base[column]
    header = ["processes x threads", *[c.rsplit(" ", 1)[0] for c in rates]]
    lines = []
    for _, row in table.iterrows():
        cells = [f"{int(row.processes)} x {int(row.threads)}"]
        for column in rates:
            ratio = row[column.rsplit(" ", 1)[0] + " vs 1x2"]
            cells.append(f"{row[column]:,.1f} ({ratio:.2f}x)")
        lines.append(cells)
    seconds = [
        f"{int(row.processes)} x {int(row.threads)}: "
        f"features {row['train features s/iter']:.3f} s, "
        f"pixels {row['train pixels s/iter']:.3f} s"
        for _, row in table.iterrows()
    ]
    return (
        "throughput per second (ratio to 1 process x 2 threads)\n\n"
        + markdown_table(header, lines)
        + "\n\nseconds per training iteration: "
        + "; ".join(seconds)
    )


def _run(processes: int, threads: int, args, folder: Path) -> dict:
    out = folder / f"{processes}x{threads}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    me = [str(Path(__file__).resolve()), "--worker", "--out", str(out)]
    me += ["--n-iter", str(args.n_iter), "--warmup", str(args.warmup)]
    if processes == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(processes), *me]  # fmt: skip
    subprocess.run(cmd, env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-iter", type=int, default=10, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="iterations before timing")
    parser.add_argument("--out", default=None, help="CSV of the table")
    parser.add_argument("--table", default=None, help="print the table of an earlier --out CSV")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.n_iter, args.warmup, Path(args.out))
        return
    import pandas as pd

    if args.table:
        print(render(pd.read_csv(args.table)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_run(p, t, args, Path(tmp)) for p, t in ((1, 1), (1, 2), (2, 1))]
    table = pd.DataFrame(rows)
    print(
        f"{os.cpu_count()} CPU cores; {args.n_iter} timed iterations after {args.warmup}; ", end=""
    )
    print(render(table))
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
