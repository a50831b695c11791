"""Output helpers shared by the benchmarks: folders, atomic writes, number formatting, figures.

Every file is written to a temporary name in its folder and then renamed over the target, so an
interrupted run never leaves a half-written CSV, table or figure behind. Figures use
matplotlib's Agg canvas directly (:class:`matplotlib.figure.Figure`), so the global pyplot
backend is never touched.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_OUT_ROOT",
    "MISSING",
    "QUICK_NOTE",
    "atomic_write",
    "check_resumable",
    "fmt",
    "fmt_mean_std",
    "int_list",
    "markdown_table",
    "new_figure",
    "prepare_out_dir",
    "save_figure",
    "timed",
    "write_csv",
    "write_meta",
    "write_settings",
    "write_table",
    "write_text",
]

logger = logging.getLogger(__name__)

#: Parent folder of each benchmark's output when no ``out_dir`` is given (ignored by git).
DEFAULT_OUT_ROOT = Path("results") / "benchmarks"

#: Placeholder for a cell with no value.
MISSING = "–"

# The process's file-creation mask, read once (reading it means setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

#: First line of every report of a quick (smoke-test) run.
QUICK_NOTE = (
    "**Quick mode (smoke test): tiny networks, few steps, small data; the numbers mean nothing.**"
)


def int_list(values: Iterable[int] | None, name: str) -> list[int]:
    """Check a list option (classes, seeds, sides): integers, at least one, no repeats.

    Parameters
    ----------
    values : iterable of int (or of integer strings)
        The option's values.
    name : str
        The option's name, for the error message.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        When empty, repeated or not integers.

    Examples
    --------
    >>> int_list(range(3), "seeds")
    [0, 1, 2]
    """
    if values is None or isinstance(values, str | bytes):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    try:
        out = [int(v) if isinstance(v, str) else operator.index(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be integers, got {list(values)!r}") from None
    if not out:
        raise ValueError(f"{name} must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat values, got {out}")
    return out


def prepare_out_dir(out_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """Create and return the output folder of a benchmark.

    Parameters
    ----------
    out_dir : str, os.PathLike or None
        The folder; ``None`` means ``results/benchmarks/<name>`` under the working directory.
    name : str
        Benchmark name, used for the default folder.

    Returns
    -------
    pathlib.Path
    """
    path = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_write(path: str | os.PathLike[str], suffix: str = ".tmp"):
    """Yield a temporary path next to ``path``; rename it over ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        Final location.
    suffix : str, optional
        Suffix of the temporary file (matplotlib picks the image format from it).

    Yields
    ------
    pathlib.Path
        Where to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; use the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a data frame as CSV (no index), atomically.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_write(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 text atomically, ending with one newline."""
    with atomic_write(path) as tmp:
        tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    return Path(path)


def write_settings(out_dir: str | os.PathLike[str], settings: Mapping[str, Any]) -> Path:
    """Record a run's settings in ``out_dir/settings.json`` (read by :func:`check_resumable`).

    Written when a run starts, so an interrupted run can be resumed too."""
    text = json.dumps(json_safe(dict(settings)), indent=2)
    return write_text(text, Path(out_dir) / "settings.json")


def check_resumable(out_dir: str | os.PathLike[str], settings: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``out_dir/settings.json`` records ``settings``: a run is
    resumed only with the settings it started with (a missing or unreadable record refuses)."""
    try:
        earlier = json.loads((Path(out_dir) / "settings.json").read_text())
    except (OSError, ValueError):
        earlier = None
    if earlier != json_safe(dict(settings)):
        raise ValueError(
            f"cannot resume: {out_dir} holds results of other settings "
            "(use another output folder, or run without resume)"
        )


def write_table(text: str, out_dir: str | os.PathLike[str]) -> Path:
    """Write the Markdown report to ``out_dir/table.md``, atomically."""
    return write_text(text, Path(out_dir) / "table.md")


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or a dash for ``None`` / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}"


def fmt_mean_std(values: Iterable[float], digits: int = 3) -> str:
    """``"mean ± std"`` of the finite values (sample std, ``ddof=1``); one value alone: ``"mean"``.

    Examples
    --------
    >>> fmt_mean_std([0.5, 0.7])
    '0.600 ± 0.141'
    >>> fmt_mean_std([0.25])
    '0.250'
    >>> fmt_mean_std([])
    '–'
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return MISSING
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def markdown_table(
    header: list[str], rows: list[list[str]], align: list[str] | None = None
) -> list[str]:
    """Lines of a Markdown table.

    Parameters
    ----------
    header : list of str
        Column titles.
    rows : list of list of str
        Cells, one list per row.
    align : list of str, optional
        ``"l"``, ``"r"`` or ``"c"`` per column; the first column left, the others right by
        default.

    Returns
    -------
    list of str
    """
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (4.0, 3.2), **kw):
    """A matplotlib figure (Agg canvas, no pyplot) and its axes array of shape (nrows, ncols).

    Parameters
    ----------
    nrows, ncols : int
        Grid of subplots.
    size : tuple of float
        Size of one subplot in inches.
    **kw
        Passed to :meth:`matplotlib.figure.Figure.subplots`.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of matplotlib.axes.Axes, shape (nrows, ncols)
    """
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save a figure as PNG, atomically."""
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    logger.info("wrote %s", path)
    return Path(path)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_meta(
    out_dir: str | os.PathLike[str],
    benchmark: str,
    options: Mapping[str, Any],
    *,
    started: float,
    device: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``meta.json``: the options, library versions, machine and wall time of a run.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder.
    benchmark : str
        Benchmark name.
    options : mapping
        The keyword arguments the benchmark was called with (made JSON-safe here).
    started : float
        ``time.time()`` at the start of the run.
    device : str
        The torch device the networks ran on.
    extra : mapping, optional
        More entries (e.g. the detector parameters).

    Returns
    -------
    pathlib.Path
        Path of ``meta.json``.

    Notes
    -----
    ``wall_seconds`` is this sitting's time. A run with ``options["resume"]`` true continues
    the run whose ``meta.json`` is already there: ``sittings_wall_seconds`` lists every
    sitting's time and ``total_wall_seconds`` is their sum.
    """
    import torch

    finished = time.time()
    meta = {
        "benchmark": benchmark,
        "options": json_safe(dict(options)),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": round(finished - started, 3),
        "versions": {
            "python": platform.python_version(),
            **{
                p: _version(p)
                for p in ("coreset-meg", "torch", "numpy", "scikit-learn", "pandas", "matplotlib")
            },
        },
        "machine": {
            "system": platform.system(),
            "architecture": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_device": device,
            "cuda_device": (
                torch.cuda.get_device_name(torch.device(device))
                if device.startswith("cuda") and torch.cuda.is_available()
                else None
            ),
        },
    }
    path = Path(out_dir) / "meta.json"
    # A resumed run adds its sitting to those of the run it continues, so the total is not lost.
    sittings = _earlier_sittings(path) if options.get("resume") else []
    sittings.append(meta["wall_seconds"])
    meta["sittings_wall_seconds"] = sittings
    meta["total_wall_seconds"] = round(sum(sittings), 3)
    if extra:
        meta.update(json_safe(dict(extra)))
    write_text(json.dumps(meta, indent=2), path)
    return path


def _earlier_sittings(path: Path) -> list[float]:
    """Wall times of the sittings recorded in an existing ``meta.json`` (none if unreadable)."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(earlier, dict):
        return []
    sittings = earlier.get("sittings_wall_seconds")
    if isinstance(sittings, list) and all(isinstance(t, int | float) for t in sittings):
        return [float(t) for t in sittings]
    wall = earlier.get("wall_seconds")
    return [float(wall)] if isinstance(wall, int | float) else []


def json_safe(value: Any) -> Any:
    """Turn paths, ranges, tuples, numpy scalars and the like into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range | set):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn()`` and return its result and the wall-clock seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
