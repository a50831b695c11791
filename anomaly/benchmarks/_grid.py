"""The one resumable grid runner of the benchmarks (held-out, one-class, mixture).

A benchmark is a grid: named axes (``cls`` x ``seed``, or ``side`` x ``seed`` x ``setting``) and a
function that measures one cell. Each cell gives rows of ``results.csv`` keyed by its coordinates
(and, where the benchmark keeps them, scores or samples). ``results.csv`` is rewritten after every
cell, so a long run can be watched and an interrupted one continued: with ``resume=True`` the cells
already in the output folder are kept as they are and only the missing ones are measured, provided
``settings.json`` records the same settings.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from common import progress

from ._io import json_safe, product, read_json, write_csv, write_text

logger = logging.getLogger(__name__)


@dataclass
class Cell:
    """One grid cell: its coordinates, its ``results.csv`` rows and whatever else it keeps."""

    key: tuple
    rows: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def write_settings(out: Path, settings: Mapping[str, Any]) -> None:
    """Record the run's settings in ``out/settings.json`` (written when a run starts)."""
    write_text(json.dumps(json_safe(dict(settings)), indent=2), out / "settings.json")


def check_resumable(out: Path, settings: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``out/settings.json`` records ``settings`` (missing or
    unreadable refuses too): a run is resumed only with the settings it started with."""
    if read_json(out / "settings.json") != json_safe(dict(settings)):
        raise ValueError(
            f"cannot resume: {out} holds results of other settings "
            "(use another output folder, or run without resume)"
        )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def load_cells(out: Path, axes: Sequence[str], columns: Sequence[str]) -> dict[tuple, Cell]:
    """The cells of ``out/results.csv``, keyed by their coordinates (none if there is no file)."""
    path = out / "results.csv"
    if not path.exists():
        return {}
    results = pd.read_csv(path)
    missing = set(columns) - set(results.columns)
    if missing:
        raise ValueError(f"cannot resume: {path} lacks the columns {sorted(missing)}")
    cells: dict[tuple, Cell] = {}
    for row in results[list(columns)].to_dict("records"):
        key = tuple(_plain(row[a]) for a in axes)
        cells.setdefault(key, Cell(key, [])).rows.append(row)
    return cells


def run_grid(
    out: Path,
    settings: Mapping[str, Any],
    axes: Mapping[str, Sequence[Any]],
    measure: Callable[..., Cell],
    *,
    columns: Sequence[str],
    resume: bool = False,
    load: Callable[[Path, dict[tuple, Cell]], dict[tuple, Cell]] | None = None,
    save: Callable[[Path, list[Cell]], None] | None = None,
    jobs: int = 1,
    worker_init: Callable[..., None] | None = None,
    label: str = "",
    verbose: bool = False,
) -> list[Cell]:
    """Measure the missing cells of a grid; keep the others; write ``results.csv`` as it goes.

    Parameters
    ----------
    out : pathlib.Path
        Output folder.
    settings : mapping
        What the results depend on; recorded in ``settings.json`` and checked on resume.
    axes : mapping
        ``{column: values asked for}``, in loop order (the last axis varies fastest).
    measure : callable
        ``measure(**coordinates) -> Cell``; picklable when ``jobs > 1``.
    columns : sequence of str
        Columns of ``results.csv``, in order.
    resume : bool, optional
        Keep the cells of an earlier run in ``out`` (refused when its settings differ).
    load : callable, optional
        ``load(out, cells) -> cells``: adds what else a kept cell has (scores, samples) and drops
        incomplete cells, which are measured again.
    save : callable, optional
        ``save(out, cells)``: writes what else the cells have, after every cell.
    jobs : int, optional
        Cells measured at once, each in its own process (``worker_init(threads, log_level)``
        starts each process).
    label : str, optional
        Progress bar text.
    verbose : bool, optional
        Progress bar on stderr.

    Returns
    -------
    list of Cell
        Every cell measured or kept, in grid order: asked values first on each axis, then kept
        values not asked for this time (resuming never drops results from disk).
    """
    names = list(axes)
    done: dict[tuple, Cell] = {}
    if resume and (out / "results.csv").exists():
        check_resumable(out, settings)
        done = load_cells(out, names, columns)
        done = load(out, done) if load else done
    write_settings(out, settings)
    asked = product([list(v) for v in axes.values()])
    todo = [key for key in asked if key not in done]
    if done:
        logger.info("%s: resuming, %d of %d cells kept", label, len(asked) - len(todo), len(asked))
    order = [
        list(dict.fromkeys([*values, *sorted({k[i] for k in done})]))
        for i, values in enumerate(axes.values())
    ]
    finished = dict(done)

    def record(cell: Cell) -> list[Cell]:
        finished[cell.key] = cell
        cells = [finished[k] for k in product(order) if k in finished]
        rows = [r for c in cells for r in c.rows]
        write_csv(pd.DataFrame(rows, columns=list(columns)), out / "results.csv")
        if save:
            save(out, cells)
        return cells

    cells = [finished[k] for k in product(order) if k in finished]
    with progress(len(asked), label, enabled=verbose) as bar:
        bar.advance(len(asked) - len(todo))
        tasks = [dict(zip(names, key, strict=True)) for key in todo]
        if jobs == 1 or len(tasks) <= 1:
            for task in tasks:
                cells = record(measure(**task))
                bar.advance()
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            level = logging.getLogger().getEffectiveLevel()
            with ProcessPoolExecutor(
                max_workers=min(jobs, len(tasks)),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_init,
                initargs=(threads, level) if worker_init else (),
            ) as pool:
                futures = [pool.submit(measure, **task) for task in tasks]
                try:
                    for future in as_completed(futures):
                        cells = record(future.result())
                        bar.advance()
                except BaseException:  # fail fast: cells not started yet are dropped
                    for future in futures:
                        future.cancel()
                    raise
    if not tasks:
        cells = record(cells[0]) if cells else cells
    return cells


def init_worker(threads: int, log_level: int) -> None:
    """Limit a worker's torch and BLAS threads so that the workers share the cores."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
    logging.basicConfig(level=log_level, format="%(message)s")
