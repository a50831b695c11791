"""Output helpers of the benchmarks: options, atomic files, the one table formatter, figures.

Files are written with :func:`coreset_meg.common.atomic_path`, so an interrupted run never leaves a
half-written CSV, table or figure. Figures use matplotlib's Agg canvas
(:class:`matplotlib.figure.Figure`), so the global pyplot backend is never touched.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import operator
import os
import platform
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from coreset_meg.common import atomic_path, first_line

logger = logging.getLogger(__name__)

#: Parent folder of each benchmark's output when no ``out_dir`` is given (ignored by git).
DEFAULT_OUT_ROOT = Path("results") / "benchmarks"
#: Packages whose versions ``meta.json`` records.
PACKAGES = ("coreset-meg", "torch", "numpy", "scikit-learn", "pandas", "matplotlib")
#: Placeholder for a cell with no value.
MISSING = "–"
#: First line of every report of a quick (smoke-test) run.
QUICK_NOTE = (
    "**Quick mode (smoke test): tiny networks, few steps, small data; the numbers mean nothing.**"
)


def int_list(values: Iterable[int] | None, name: str) -> list[int]:
    """A list option (classes, seeds, sides) as integers: ``ValueError`` unless at least one and
    no repeats."""
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
    """Create and return ``out_dir`` (default ``results/benchmarks/<name>``)."""
    path = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a data frame as CSV (no index), atomically."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write UTF-8 text ending with one newline, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def write_npz(arrays: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Write arrays to a compressed ``.npz``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` an earlier run wrote (:func:`write_npz`), read whole.

    Raises
    ------
    ValueError
        Naming the file, when it is damaged (a run killed mid-write on a file system that does
        not rename atomically, a copy cut short): resume cannot trust it.
    """
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(
            f"{path} is damaged ({first_line(err)}); rerun with --overwrite to start afresh"
        ) from None


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


# ---------------------------------------------------------------------------- numbers, tables


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or a dash for ``None`` / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}"


def fmt_mean_std(values: Iterable[float], digits: int = 3) -> str:
    """``"mean ± std"`` of the finite values (sample std, ``ddof=1``); one value alone: ``"mean"``.

    >>> fmt_mean_std([0.5, 0.7]), fmt_mean_std([0.25]), fmt_mean_std([])
    ('0.600 ± 0.141', '0.250', '–')
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return MISSING
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
    """A Markdown table; ``align``: ``l`` or ``r`` per column (default ``lrr...``)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = {"l": ":---", "r": "---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


#: A summary column: (header, results column, digits, how): ``how`` is "±" (mean ± std over the
#: rows) or "mean"; a column missing from the results is shown as a dash.
Column = tuple[str, str, int, str]


def summary_table(
    results: pd.DataFrame,
    by: Sequence[tuple[str, str, Sequence[Any]]],
    columns: Sequence[Column],
    missing: Mapping[str, str] | None = None,
) -> str:
    """The one table formatter of summaries: a row per combination of the ``by`` values present.

    ``by`` lists ``(header, column, ordered values)`` to group on, shown first (numbers
    right-aligned); ``missing`` gives ``{header: text}`` shown instead of a dash.
    """
    rows = []
    for keys in itertools.product(*[values for *_, values in by]):
        mask = np.ones(len(results), dtype=bool)
        for (_, name, _), key in zip(by, keys, strict=True):
            mask &= (results[name] == key).to_numpy()
        group = results[mask]
        if not len(group):
            continue
        cells = []
        for header, column, digits, how in columns:
            v = group[column] if column in group else pd.Series([np.nan])
            text = fmt_mean_std(v, digits) if how == "±" else fmt(float(v.mean()), digits)
            cells.append((missing or {}).get(header, text) if text == MISSING else text)
        rows.append([str(k) for k in keys] + cells)
    align = "".join("r" if all(isinstance(v, Real) for v in vs) else "l" for *_, vs in by)
    header = [h for h, *_ in by] + [c[0] for c in columns]
    return markdown_table(header, rows, align + "r" * len(columns))


def listing(values: Iterable[Any]) -> str:
    """``"1, 2, 3"``."""
    return ", ".join(map(str, values))


# ----------------------------------------------------------------------------- figures


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (4.0, 3.2)):
    """A figure (Agg canvas, no pyplot) and its axes, shape (nrows, ncols); ``size`` per subplot."""
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save a figure as PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    logger.info("wrote %s", path)


# -------------------------------------------------------------------------------- meta.json


def write_meta(
    out_dir: str | os.PathLike[str],
    benchmark: str,
    options: Mapping[str, Any],
    *,
    started: float,
    device: str,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``meta.json``: options, versions, machine and wall time (``wall_seconds``, this
    sitting; a resumed run adds it to the earlier ``sittings_wall_seconds``, summed in
    ``total_wall_seconds``), plus the ``extra`` entries."""
    import torch

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    meta = {
        "benchmark": benchmark,
        "options": json_safe(dict(options)),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": round(time.time() - started, 3),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "machine": {
            "system": platform.system(),
            "architecture": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_device": device,
            "cuda_device": torch.cuda.get_device_name(torch.device(device)) if cuda else None,
        },
    }
    path = Path(out_dir) / "meta.json"
    sittings = _earlier_sittings(path) if options.get("resume") else []
    sittings.append(meta["wall_seconds"])
    meta["sittings_wall_seconds"] = sittings
    meta["total_wall_seconds"] = round(sum(sittings), 3)
    meta.update(json_safe(dict(extra or {})))
    write_text(json.dumps(meta, indent=2), path)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _earlier_sittings(path: Path) -> list[float]:
    """Wall times of the sittings in an existing ``meta.json`` (none if unreadable)."""
    earlier = read_json(path)
    if not isinstance(earlier, dict):
        return []
    sittings = earlier.get("sittings_wall_seconds")
    if isinstance(sittings, list) and all(isinstance(t, int | float) for t in sittings):
        return [float(t) for t in sittings]
    wall = earlier.get("wall_seconds")
    return [float(wall)] if isinstance(wall, int | float) else []


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the wall-clock seconds it took."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start
