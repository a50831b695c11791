"""The one resumable grid runner of the benchmarks (held-out, one-class, mixture).

A benchmark is a grid: named axes (``cls`` x ``seed``, or ``side`` x ``seed`` x ``setting``) and a
function that measures one cell. Each cell gives rows of ``results.csv`` keyed by its coordinates
(and, where the benchmark keeps them, scores or samples). ``results.csv`` is rewritten after every
cell, so a long run can be watched and an interrupted one continued: with ``resume=True`` the cells
already in the output folder are kept and only the missing ones are measured, provided
``settings.json`` records the same settings. A kept cell that lacks something measured since (a
detector added to a benchmark) is completed where it is asked for again, and stays on disk as it
was until then.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from coreset_meg.common import progress

from ._io import json_safe, read_json, write_csv, write_text

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
        key = tuple(row[a] for a in axes)
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
    label: str = "",
    verbose: bool = False,
) -> list[Cell]:
    """Measure the missing cells of a grid, keep the others, write ``results.csv`` as it goes.

    Parameters
    ----------
    out : pathlib.Path
        Output folder.
    settings : mapping
        What the results depend on: recorded in ``settings.json``, checked on resume.
    axes : mapping
        ``{column: values asked for}`` in loop order (the last varies fastest).
    measure : callable
        ``measure(**coordinates) -> Cell``; picklable when ``jobs > 1``.
    columns : sequence of str
        Columns of ``results.csv``.
    resume : bool, optional
        Keep the cells of an earlier run with the same settings in ``out``.
    load, save : callable, optional
        ``load(out, cells) -> cells`` adds what else kept cells have (scores, samples) and drops
        incomplete ones; a cell it returns with ``extra["missing"]`` set is measured again as
        ``measure(**coordinates, kept=cell)``, which measures only what is missing (a detector
        added to a benchmark since). ``save(out, cells)`` writes it after every cell.
    jobs : int, optional
        Cells measured at once, each in its own process sharing the cores.
    label : str, optional
        Progress bar text (shown when ``verbose``).

    Returns
    -------
    list of Cell
        Every cell measured or kept, in grid order: the values asked for first on each axis,
        then the kept ones (resuming never drops results from disk).
    """
    done: dict[tuple, Cell] = {}
    if resume and (out / "results.csv").exists():
        check_resumable(out, settings)
        done = load_cells(out, list(axes), columns)
        done = load(out, done) if load else done
    asked = list(itertools.product(*axes.values()))
    # Cells with something missing are completed where asked for, else kept as they are; until
    # completed they stay in the files as they were.
    wanted = set(asked)
    partial = {k: c for k, c in done.items() if c.extra.get("missing") and k in wanted}
    write_settings(out, settings)
    todo = [
        {**dict(zip(axes, key, strict=True)), **({"kept": partial[key]} if key in partial else {})}
        for key in asked
        if key not in done or key in partial
    ]
    if done:
        logger.info(
            "%s: resuming, %d of %d cells kept, %d to complete",
            label,
            len(asked) - len(todo),
            len(asked),
            len(partial),
        )
    order = [
        list(dict.fromkeys([*v, *sorted({k[i] for k in done})]))
        for i, v in enumerate(axes.values())
    ]
    cells = dict(done)

    def record(cell: Cell | None = None) -> list[Cell]:
        if cell is not None:
            cells[cell.key] = cell
        ordered = [cells[k] for k in itertools.product(*order) if k in cells]
        rows = [r for c in ordered for r in c.rows]
        write_csv(pd.DataFrame(rows, columns=list(columns)), out / "results.csv")
        if save:
            save(out, ordered)
        return ordered

    with progress(len(asked), label, enabled=verbose) as bar:
        bar.advance(len(asked) - len(todo))
        if jobs == 1 or len(todo) <= 1:
            for task in todo:
                record(measure(**task))
                bar.advance()
        else:
            context = multiprocessing.get_context("spawn")
            level = logging.getLogger().getEffectiveLevel()
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(
                min(jobs, len(todo)), context, _init, (threads, level, os.getpid())
            ) as pool:
                futures = [pool.submit(measure, **task) for task in todo]
                try:
                    for future in as_completed(futures):
                        record(future.result())
                        bar.advance()
                except BaseException:  # fail fast: cells not started yet are dropped
                    for future in futures:
                        future.cancel()
                    raise
    return record()


def _init(threads: int, log_level: int, parent: int) -> None:
    """Limit a worker's torch and BLAS threads so that the workers share the cores, and end the
    worker when the run that started it ends (even killed: its cells would be lost anyway)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
    logging.basicConfig(level=log_level, format="%(message)s")
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int, interval: float = 1.0) -> None:
    """Exit this process once ``parent`` is no longer its parent (it was re-parented: the
    parent died). A killed run would otherwise leave its workers computing for nobody."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)
