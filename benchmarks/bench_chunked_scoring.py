"""Peak memory and time of ``anomaly score`` on long inputs: chunked reading against in-memory.

Fits a small model on 20-feature vectors (an MLP energy: the benchmark is about reading and
writing, not the network), writes test files of ``--rows`` rows (1x) and ten times as many (10x,
the 1x rows repeated) as CSV and ``.npy``, and scores each in a fresh process twice:

* ``chunked``: ``anomaly score`` as it is (a ``.npy`` file memory-mapped, a CSV file read in
  pieces, the scores written as they come);
* ``in-memory``: the earlier path, reproduced: the whole file read and checked
  (``coreset_meg.datasets.load_table``), validated and scored in one call, the table written at the
  end.

Prints a Markdown table of each process's peak resident memory (``os.wait4``'s ``ru_maxrss``),
CPU time (user + system, steadier than wall time on a busy machine) and wall time, and whether
both wrote the same scores bit for bit::

    python benchmarks/bench_chunked_scoring.py                 # 200,000 and 2,000,000 rows
    python benchmarks/bench_chunked_scoring.py --rows 20000    # a quick look
    python benchmarks/bench_chunked_scoring.py --formats csv --in-memory-scales 1

Every child runs torch on one thread (``OMP_NUM_THREADS=1``): with two threads, a busy core
makes the other spin and the times scatter. ``ru_maxrss`` also counts the image a child is
forked from, so the measuring process imports neither numpy nor torch: fitting and writing the
inputs run in child processes as well.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_FEATURES = 20


def _fit(folder: Path, seed: int) -> Path:
    import numpy as np
    import pandas as pd

    from coreset_meg.anomaly import MEGDetector, save_model

    X = np.random.default_rng(seed).normal(size=(500, N_FEATURES))
    names = [f"f{j}" for j in range(N_FEATURES)]
    detector = MEGDetector(
        network="mlp", score_type="energy", n_snapshots=1, n_iter=10, width=16,
        random_state=seed, verbose=False,
    )  # fmt: skip
    detector.fit(pd.DataFrame(X, columns=names))
    return save_model(detector, folder / "model")


def _write_inputs(folder: Path, rows: int, repeats: int, seed: int) -> dict[str, Path]:
    """A CSV and a ``.npy`` file of the same ``rows`` random samples repeated ``repeats`` times
    (written piece by piece)."""
    import numpy as np

    block = np.random.default_rng(seed + 1).normal(size=(rows, N_FEATURES)).round(6)
    block[::50] += 4.0  # a few anomalies
    n = rows * repeats
    csv_path, npy_path = folder / f"x{n}.csv", folder / f"x{n}.npy"
    mapped = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.float64, shape=(n, N_FEATURES))
    body = io.StringIO()
    np.savetxt(body, block, fmt="%.6f", delimiter=",")
    with open(csv_path, "w") as f:
        f.write(",".join(f"f{j}" for j in range(N_FEATURES)) + "\n")
        for k in range(repeats):
            f.write(body.getvalue())
            mapped[k * rows : (k + 1) * rows] = block
    mapped.flush()
    del mapped
    return {"csv": csv_path, "npy": npy_path}


def _measure(argv: list[str]) -> tuple[float, float, float]:
    """``(peak RSS in MB, CPU seconds, wall seconds)`` of a child process."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torch on one thread: steadier on a busy machine
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = child.stderr.read().decode()  # until the child closes it
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {err.strip()}")
    cpu = usage.ru_utime + usage.ru_stime
    return usage.ru_maxrss / 1024, cpu, seconds  # ru_maxrss is in KiB on Linux


def _score_in_memory(model: str, data: str, out: str) -> None:
    """The earlier ``anomaly score`` path: everything read, validated and scored at once."""
    import numpy as np
    import pandas as pd

    from coreset_meg.anomaly import load_model
    from coreset_meg.datasets import csv_feature_names, load_table

    detector = load_model(model)
    X, _ = load_table(data)
    if data.endswith(".csv"):
        X = pd.DataFrame(X, columns=csv_feature_names(data))
    normality = detector._raw_scores(detector._validate(X, reset=False))  # one piece
    flagged = ~(normality - detector.offset_ >= 0)
    table = pd.DataFrame(
        {
            "index": np.arange(len(normality)),
            "anomaly_score": -normality,
            "score_samples": normality,
            "is_anomaly": flagged.astype(int),
        }
    )
    table.to_csv(out, index=False)


def _same_scores(a: Path, b: Path) -> bool:
    """Whether two score files are the same text (compared in blocks)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def _child(args: list[str]) -> None:
    """The work of a child process: ``fit FOLDER SEED``, ``write FOLDER ROWS REPEATS SEED`` or
    ``in-memory MODEL DATA OUT``."""
    task, *rest = args
    if task == "fit":
        _fit(Path(rest[0]), int(rest[1]))
    elif task == "write":
        _write_inputs(Path(rest[0]), *(int(v) for v in rest[1:]))
    else:
        _score_in_memory(*rest)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the 1x input")
    parser.add_argument("--scales", default="1,10", help="input sizes, as multiples of --rows")
    parser.add_argument("--formats", default="csv,npy", help="csv, npy or both")
    parser.add_argument(
        "--in-memory-scales", default=None, help="sizes to measure the in-memory path at [all]"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="[default: a temporary one]")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return

    scales, formats = _ints(args.scales), args.formats.split(",")
    in_memory_scales = scales if args.in_memory_scales is None else _ints(args.in_memory_scales)
    me = [sys.executable, __file__, "--child"]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        _measure([*me, "fit", tmp, str(args.seed)])
        model = folder / "model"
        for scale in scales:
            _measure([*me, "write", tmp, str(args.rows), str(scale), str(args.seed)])
            n = scale * args.rows
            for kind in formats:
                path = folder / f"x{n}.{kind}"
                chunked, in_memory = folder / "chunked.csv", folder / "in_memory.csv"
                cli = [
                    sys.executable,
                    "-m",
                    "coreset_meg.anomaly.cli",
                    "score",
                    str(model),
                    str(path),
                ]
                new = _measure([*cli, "--out", str(chunked), "--quiet"])
                old, same = (None, None, None), None
                if scale in in_memory_scales:
                    old = _measure([*me, "in-memory", str(model), str(path), str(in_memory)])
                    same = _same_scores(chunked, in_memory)
                size = path.stat().st_size / 2**20
                rows.append((kind, f"{scale}x", n, size, *new, *old, same))
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
            for kind in ("csv", "npy"):
                (folder / f"x{n}.{kind}").unlink()

    def cell(value, digits):
        return "–" if value is None else f"{value:,.{digits}f}"

    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print(
        "| input | size | rows | file MB | chunked: peak MB | CPU s | wall s "
        "| in-memory: peak MB | CPU s | wall s | same scores |"
    )
    print("|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|:---|")
    for kind, scale, n, size, *numbers, same in rows:
        mb_new, cpu_new, s_new, mb_old, cpu_old, s_old = numbers
        print(
            f"| {kind} | {scale} | {n:,} | {size:,.0f} | {mb_new:,.0f} | {cpu_new:.1f} "
            f"| {s_new:.1f} | {cell(mb_old, 0)} | {cell(cpu_old, 1)} | {cell(s_old, 1)} "
            f"| {'–' if same is None else 'yes' if same else 'NO'} |"
        )
    if len(scales) > 1:
        print()
        for kind in formats:
            mine = [r for r in rows if r[0] == kind]
            first, last = mine[0], mine[-1]
            line = f"{kind}, {last[1]} against {first[1]}: peak memory x{last[4] / first[4]:.2f}"
            if last[7] is not None and first[7] is not None:
                line += f" chunked, x{last[7] / first[7]:.2f} in memory"
            print(line)


if __name__ == "__main__":
    main()
