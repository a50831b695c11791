"""Benchmark greedy k-center against the full-distance-matrix reference.

Prints a Markdown table (median wall-clock milliseconds over ``--repeats`` runs of each
implementation, timed in adjacent blocks) and whether each performance target is met::

    python benchmarks/bench_kcenter.py --repeats 30

Data: standard normal float32 points, both implementations started from the same index; the
``same`` column says whether they chose the same points.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from coreset_meg.coreset.kcenter import greedy_k_center, pairwise_k_center_reference

# (n, k, d); the reference runs only for n <= REFERENCE_MAX_N.
SIZES: list[tuple[int, int, int]] = [
    (512, 64, 32),
    (1024, 128, 32),
    (2048, 256, 32),
    (4096, 512, 32),
    (512, 64, 2048),
    (16384, 1024, 32),
]
REFERENCE_MAX_N = 4096
# Pause before timing the greedy implementation, so that idle BLAS threads stop spinning.
SETTLE_S = 0.3

# Performance targets: (n, k, d) -> the largest acceptable median in milliseconds.
TIME_TARGETS_MS: dict[tuple[int, int, int], float] = {(512, 64, 32): 2.0, (4096, 512, 32): 60.0}
# At this n, greedy must be at least this many times faster than the reference (same run).
SPEEDUP_TARGET: tuple[int, float] = (2048, 20.0)


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def run(repeats: int, seed: int) -> list[dict[str, object]]:
    """Time every size; returns one result dict per row of :data:`SIZES`."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, k, d in SIZES:
        X = rng.standard_normal((n, d)).astype(np.float32)
        first = int(rng.integers(n))
        with_ref = n <= REFERENCE_MAX_N
        fast_idx = greedy_k_center(X, k, first=first)  # warm-up
        same = None
        if with_ref:
            same = bool(np.array_equal(fast_idx, pairwise_k_center_reference(X, k, first=first)))
        fast_call = functools.partial(greedy_k_center, X, k, first=first)
        ref_call = functools.partial(pairwise_k_center_reference, X, k, first=first)
        # Separate blocks, not interleaved: the reference's multi-threaded BLAS calls leave
        # worker threads spinning for a while after they return, which would slow a greedy call
        # timed right after one (by 2x or more on two cores). Settle before the greedy block.
        time.sleep(SETTLE_S)
        fast_ms = [_time_ms(fast_call) for _ in range(repeats)]
        ref_ms = [_time_ms(ref_call) for _ in range(repeats)] if with_ref else []
        fast = statistics.median(fast_ms)
        ref = statistics.median(ref_ms) if with_ref else None
        rows.append(
            {
                "n": n,
                "k": k,
                "d": d,
                "fast_ms": fast,
                "ref_ms": ref,
                "ratio": ref / fast if ref is not None else None,
                "same": same,
            }
        )
    return rows


def _fmt(value: object, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def report(rows: list[dict[str, object]], repeats: int) -> str:
    """Markdown table plus one line per target."""
    lines = [
        f"greedy k-center vs full-matrix reference: median of {repeats} runs, "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, {platform.machine()}",
        "",
        "| n | k | d | greedy ms | reference ms | ratio | same choice |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['k']} | {r['d']} | {_fmt(r['fast_ms'], '.3f')} | "
            f"{_fmt(r['ref_ms'])} | {_fmt(r['ratio'], '.1f')}x | {_fmt(r['same'])} |"
        )
    lines.append("")
    by_size = {(r["n"], r["k"], r["d"]): r for r in rows}
    for size, limit in TIME_TARGETS_MS.items():
        got = by_size[size]["fast_ms"]
        verdict = "MET" if got <= limit else "NOT MET"
        n, k, d = size
        lines.append(
            f"- target k={k} from n={n}, d={d}: median <= {limit:g} ms: {verdict} ({got:.3f} ms)"
        )
    n_target, ratio_target = SPEEDUP_TARGET
    for r in rows:
        if r["n"] == n_target and r["ratio"] is not None:
            verdict = "MET" if r["ratio"] >= ratio_target else "NOT MET"
            lines.append(
                f"- target n={n_target} (k={r['k']}, d={r['d']}): >= {ratio_target:g}x faster "
                f"than the reference: {verdict} ({r['ratio']:.1f}x)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per size")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and start points")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    print(report(run(args.repeats, args.seed), args.repeats))


if __name__ == "__main__":
    main()
