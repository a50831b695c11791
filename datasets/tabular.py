"""Load a user's own data from a CSV, ``.npy`` or ``.npz`` file, with strict validation."""

from __future__ import annotations

import csv
import logging
import mmap
import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._npy_sizes import check_declared_sizes
from .errors import DataError

__all__ = [
    "CHUNK_ROWS",
    "TABLE_SUFFIXES",
    "TableChunks",
    "check_finite",
    "check_finite_2d",
    "check_labels",
    "csv_feature_names",
    "load_table",
]

logger = logging.getLogger(__name__)

#: File name endings :func:`load_table` reads.
TABLE_SUFFIXES = (".csv", ".npy", ".npz")
#: Rows per piece of :class:`TableChunks` (a multiple of the detector's scoring batch of 512);
#: wide samples get fewer, in multiples of 512, to keep a piece near ``_CHUNK_BYTES`` of float32.
CHUNK_ROWS = 16_384
_CHUNK_BYTES = 16 * 2**20


def _check_numeric(X: np.ndarray, source: str) -> None:
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X):
        raise DataError(f"{source} holds {X.dtype} values, not real numbers")


def _to_float32(X: np.ndarray) -> np.ndarray:
    # Values beyond float32's range become inf here, so check finiteness after the cast.
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(X, dtype=np.float32)


def check_finite_2d(
    X: np.ndarray,
    *,
    source: str = "array",
    column_names: Sequence[str] | None = None,
    first_row: int = 0,
) -> np.ndarray:
    """Check that ``X`` is a non-empty 2-D table of finite numbers and return it as ``float32``.

    Parameters
    ----------
    X : array_like
        The data, shape (n, d).
    source : str, optional
        What ``X`` is (a file name, say), used in error messages.
    column_names : sequence of str, optional
        Names of the ``d`` columns, used in error messages instead of column indices.
    first_row : int, optional
        Row number of ``X``'s first row in its source (a chunk of a larger file), added to the
        row of error messages.

    Returns
    -------
    numpy.ndarray
        C-contiguous ``float32`` copy (or view) of ``X``.

    Raises
    ------
    DataError
        When ``X`` is not 2-D, has no rows or no columns, is not numeric, or holds NaN or
        infinite values (or values too large for ``float32``); the message gives the row and
        column of the first one.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(
            f"{source} has shape {X.shape}; expected a 2-D table (n_samples, n_features)"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{source} is empty: shape {X.shape}")
    _check_numeric(X, source)
    out = _to_float32(X)
    finite = np.isfinite(out)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        name = repr(column_names[col]) if column_names is not None else str(col)
        raise DataError(
            f"{source} has a non-finite value {X[row, col].item()!r} at row {first_row + row}, "
            f"column {name}"
        )
    return out


def check_finite(
    X: np.ndarray, *, source: str = "array", min_ndim: int = 1, first_row: int = 0
) -> np.ndarray:
    """Check that ``X`` is a non-empty numeric array of finite values; return it as ``float32``.

    The N-dimensional counterpart of :func:`check_finite_2d`, for image arrays.

    Parameters
    ----------
    X : array_like
        The data.
    source : str, optional
        What ``X`` is, used in error messages.
    min_ndim : int, optional
        Fewest dimensions allowed.
    first_row : int, optional
        Index of ``X``'s first sample in its source (a chunk of a larger file), added to the
        first index of error messages.

    Returns
    -------
    numpy.ndarray
        C-contiguous ``float32`` array of the same shape.

    Raises
    ------
    DataError
        When ``X`` has too few dimensions, is empty, is not numeric, or holds a non-finite value
        (the message gives its index).
    """
    X = np.asarray(X)
    if X.ndim < min_ndim:
        raise DataError(f"{source} has shape {X.shape}; expected at least {min_ndim} dimensions")
    if X.size == 0:
        raise DataError(f"{source} is empty: shape {X.shape}")
    _check_numeric(X, source)
    out = _to_float32(X)
    finite = np.isfinite(out)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        value = X[index].item()
        index = (first_row + index[0], *index[1:])
        raise DataError(f"{source} has a non-finite value {value!r} at index {index}")
    return out


def check_labels(
    y: np.ndarray, n: int, *, source: str = "labels", first_row: int = 0
) -> np.ndarray:
    """Check that ``y`` holds ``n`` integer-valued labels and return them as ``int64``.

    Parameters
    ----------
    y : array_like
        The labels, shape (n,).
    n : int
        Number of samples they must match.
    source : str, optional
        What ``y`` is, used in error messages.
    first_row : int, optional
        Row number of ``y``'s first label in its source (a chunk of a larger file), added to
        the row of error messages.

    Returns
    -------
    numpy.ndarray
        ``int64`` labels.

    Raises
    ------
    DataError
        When the shape is wrong or a label is not a finite integer.
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source} has shape {y.shape}; expected ({n},) to match the data")
    if y.dtype == np.bool_ or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    _check_numeric(y, source)
    y_float = y.astype(np.float64)
    bad = ~np.isfinite(y_float) | (y_float != np.round(y_float))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source} has a non-integer label {y[i].item()!r} at row {first_row + i}")
    return y_float.astype(np.int64)


#: CSV text is read as UTF-8; a byte-order mark (what Excel writes) is skipped.
_ENCODING = "utf-8-sig"
#: Rows of an unnamed first column looked at to tell a pandas index (0, 1, 2, ...).
_INDEX_PROBE_ROWS = 1000
# A number with a '.' in a file whose decimal mark is ',': a thousands mark, or a decimal point?
_DOTTED_NUMBER = re.compile(r"^\s*[+-]?\d*\.\d")


@dataclass(frozen=True)
class _CsvLayout:
    """How a CSV file is read: its dialect, whether it has a header, and what each column is."""

    sep: str
    decimal: str
    header: bool
    columns: list[str]  # every column's name ("0", "1", ... in a file without a header)
    label: int | None  # the label column
    id_column: int | None  # a column of row names (text): kept out of the features
    dropped: frozenset[int]  # columns that are neither features nor the label (the id included)
    index_column: bool  # column 0 is a pandas index (unnamed, counting 0, 1, 2, ...): dropped

    @property
    def feature_names(self) -> list[str] | None:
        """The feature columns' names; None without a header (the columns go by position)."""
        if not self.header:
            return None
        skip = self.dropped | ({self.label} if self.label is not None else set())
        return [c for j, c in enumerate(self.columns) if j not in skip]

    def line(self, path: Path, data_row: int) -> int:
        """File line number (from 1) of the 0-based data row, skipping the header and blank
        lines."""
        with open(path, newline="", encoding=_ENCODING, errors="replace") as f:
            reader = csv.reader(f, delimiter=self.sep)
            if self.header:
                next(reader, None)
            k = -1
            for row in reader:
                if row:
                    k += 1
                    if k == data_row:
                        return reader.line_num
        return data_row + 1 + self.header

    def check_rows(self, path: Path) -> None:
        """Raise on the first non-blank row whose field count differs from the first row's."""
        first = "the header" if self.header else "the first row"
        with open(path, newline="", encoding=_ENCODING, errors="replace") as f:
            reader = csv.reader(f, delimiter=self.sep)
            n_fields = len(next(reader, []))
            for row in reader:
                if row and len(row) != n_fields:
                    raise DataError(
                        f"{path} has ragged rows: line {reader.line_num} has {len(row)} fields "
                        f"but {first} has {n_fields}"
                    )


def _select_label(
    columns: list[str], label_column: str | int | None, path: Path, what: str = "label_column"
) -> int | None:
    """The index of the column named (or numbered) ``label_column``; None for None."""
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if label_column not in columns:
            raise DataError(f"{path} has no column {label_column!r}; columns are {columns}")
        return columns.index(label_column)
    if not -len(columns) <= label_column < len(columns):
        raise DataError(
            f"{what} {label_column} is out of range for the {len(columns)} columns of {path}"
        )
    return label_column % len(columns)


def _csv_dialect(path: Path) -> tuple[str, str]:
    """``(separator, decimal mark)`` from the first line: commas; or, when it has no comma,
    semicolons with decimal commas (the European convention) or tabs; or semicolons with decimal
    commas when the line is numbers in that convention."""
    try:
        with open(path, encoding=_ENCODING, errors="replace") as f:
            header = f.readline()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if "," not in header and ";" in header:
        return ";", ","
    if "," not in header and "\t" in header:
        return "\t", "."
    fields = header.strip().split(";")
    if len(fields) > 1 and all(_is_number(f, ",") for f in fields):  # 1,5;2,25 without a header
        return ";", ","
    return ",", "."


def _is_number(text: str, decimal: str) -> bool:
    text = text.strip()
    if decimal == ",":
        if "." in text:
            return False
        text = text.replace(",", ".")
    try:
        float(text)
    except ValueError:
        return False
    return True


def _counts_from_zero(values: list[str]) -> bool:
    return bool(values) and all(v.strip() == str(i) for i, v in enumerate(values))


def _csv_layout(
    path: Path,
    label_column: str | int | None = None,
    *,
    header: bool | None = None,
    id_column: str | int | None = None,
    drop_columns: Sequence[str | int] = (),
    notify: bool = False,
) -> _CsvLayout:
    """The layout of a CSV file as :func:`load_table` reads it (``notify``: log what was
    inferred: a file without a header, a pandas index column)."""
    sep, decimal = _csv_dialect(path)
    first, probe = [], []
    try:
        with open(path, newline="", encoding=_ENCODING, errors="replace") as f:
            reader = csv.reader(f, delimiter=sep)
            first = [c.strip() for c in next(reader, [])]
            for row in reader:
                if len(probe) == _INDEX_PROBE_ROWS:
                    break
                if row:
                    probe.append(row[0])
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    numeric = [_is_number(c, decimal) for c in first]
    if header is None:
        header = not (first and all(numeric))
        if not header and notify:
            logger.warning(
                "%s is read without a header: its first row is numbers (columns are numbered "
                "from 0; pass header=True, or --header, to read that row as column names)",
                path,
            )
        elif any(numeric) and notify:
            logger.warning(
                "the first row of %s is read as the header but some of it looks numeric (%s); "
                "pass header=False, or --no-header, if it is data",
                path,
                ", ".join(c for c, n in zip(first, numeric, strict=True) if n),
            )
    columns = first if header else [str(j) for j in range(len(first))]
    if not header:  # columns go by position: "2" or 2
        label_column, id_column = (
            int(c) if isinstance(c, str) and re.fullmatch(r"-?\d+", c) else c
            for c in (label_column, id_column)
        )
        drop_columns = [
            int(c) if isinstance(c, str) and re.fullmatch(r"-?\d+", c) else c for c in drop_columns
        ]
    index_column = header and len(columns) > 1 and columns[0] == "" and _counts_from_zero(probe)
    if index_column and notify:
        logger.warning(
            "%s: the unnamed first column counts 0, 1, 2, ... (a pandas index, as "
            "DataFrame.to_csv writes by default) and is dropped; name it to keep it",
            path,
        )
    label = _select_label(columns, label_column, path)
    dropped = {0} if index_column else set()
    for name in drop_columns:
        dropped.add(_select_label(columns, name, path, "drop_columns"))
    ident = _select_label(columns, id_column, path, "id_column")
    if ident is not None:
        dropped.add(ident)
    if label is not None and label in dropped:
        raise DataError(f"{path}: the label column {columns[label]!r} is also dropped or the id")
    if columns and len(dropped | ({label} if label is not None else set())) >= len(columns):
        raise DataError(f"{path} has no feature columns left after dropping {sorted(dropped)}")
    return _CsvLayout(sep, decimal, header, columns, label, ident, frozenset(dropped), index_column)


def csv_feature_names(
    path: str | os.PathLike[str],
    label_column: str | int | None = None,
    *,
    header: bool | None = None,
    id_column: str | int | None = None,
    drop_columns: Sequence[str | int] = (),
) -> list[str] | None:
    """The feature column names of a CSV file as :func:`load_table` reads it (label, id and
    dropped columns left out); None for a file without a header."""
    layout = _csv_layout(
        Path(path), label_column, header=header, id_column=id_column, drop_columns=drop_columns
    )
    return layout.feature_names


def _read_csv(path: Path, layout: _CsvLayout, read):
    """``read()`` (a ``pandas.read_csv`` call, or the next chunk of one) with every reading
    problem as a one-line :class:`DataError`."""
    try:
        # index_col=False: rows longer than the header are never read as an index; pandas warns
        # that it would drop their extra fields, and the warning becomes an error naming the line.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return read()
    except pd.errors.ParserWarning as exc:
        layout.check_rows(path)
        raise DataError(f"{path} has rows longer than its header: {exc}") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path} has ragged rows: {str(exc).strip()}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 text file: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _csv_reader(
    path: Path, layout: _CsvLayout, chunk_rows: int | None = None, nrows: int | None = None
):
    """A data frame of the CSV (its first ``nrows`` rows), or (with ``chunk_rows``) pandas'
    reader of its chunks."""
    converters = {} if layout.id_column is None else {layout.id_column: str}
    return _read_csv(
        path,
        layout,
        lambda: pd.read_csv(
            path,
            sep=layout.sep,
            decimal=layout.decimal,
            header=0 if layout.header else None,
            encoding=_ENCODING,
            skipinitialspace=True,
            index_col=False,
            converters=converters,
            chunksize=chunk_rows,
            nrows=nrows,
        ),
    )


def _csv_values(
    df: pd.DataFrame, path: Path, layout: _CsvLayout, first_row: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(X, y, ids)`` of CSV rows read as a data frame, checked; ``first_row`` is the index of
    its first row among the file's data rows (for the line numbers of messages)."""
    columns = list(layout.columns)
    ids = None
    if layout.id_column is not None:
        ids = df.iloc[:, layout.id_column].astype(str).to_numpy(dtype=object)
    if layout.index_column:
        index = pd.to_numeric(df.iloc[:, 0], errors="coerce").to_numpy()
        bad = np.flatnonzero(index != np.arange(first_row, first_row + len(df)))
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{path}: the unnamed first column counted 0, 1, 2, ... (a pandas index) but "
                f"line {layout.line(path, first_row + i)} holds {df.iloc[i, 0]!r}; name the "
                "column to keep it as a feature"
            )
    keep = [j for j in range(len(columns)) if j not in layout.dropped]
    df = df.iloc[:, keep].copy()
    columns = [columns[j] for j in keep]
    label = None if layout.label is None else keep.index(layout.label)
    for j in range(df.shape[1]):
        series = df.iloc[:, j]
        if pd.api.types.is_bool_dtype(series):
            df.isetitem(j, series.astype(np.float64))
        elif not pd.api.types.is_numeric_dtype(series):
            if layout.decimal == ",":  # '1.234': a thousands mark, or a decimal point?
                dotted = series.astype(str).str.match(_DOTTED_NUMBER).to_numpy(dtype=bool)
                dotted = dotted & series.notna().to_numpy()
                if dotted.any():
                    i = int(np.flatnonzero(dotted)[0])
                    raise DataError(
                        f"{path} line {layout.line(path, first_row + i)}, column "
                        f"{columns[j]!r}: {series.iloc[i]!r} has a '.' in a file whose decimal "
                        "mark is ',' (a thousands mark?); write numbers without thousands marks"
                    )
            coerced = pd.to_numeric(series, errors="coerce")
            bad = np.flatnonzero(coerced.isna().to_numpy() & series.notna().to_numpy())
            if len(bad) == 0:  # every value parses as a number after all
                df.isetitem(j, coerced)
                continue
            i = int(bad[0])
            raise DataError(
                f"{path} column {columns[j]!r} is not numeric "
                f"(line {layout.line(path, first_row + i)}: {series.iloc[i]!r})"
            )

    values = df.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        if np.isnan(values).any():
            layout.check_rows(path)  # a short row shows up as NaN
        i, j = (int(k) for k in np.argwhere(~finite)[0])
        kind = (
            "missing or NaN value" if np.isnan(values[i, j]) else f"infinite value {values[i, j]}"
        )
        line = layout.line(path, first_row + i)
        raise DataError(f"{path} has a {kind} at line {line}, column {columns[j]!r}")

    y = None
    if label is not None:
        source = f"{path} column {columns[label]!r}"
        y = check_labels(values[:, label], len(values), source=source, first_row=first_row)
        values = np.delete(values, label, axis=1)
        del columns[label]
    X = check_finite_2d(values, source=str(path), column_names=columns, first_row=first_row)
    return X, y, ids


def _no_rows(path: Path, layout: _CsvLayout) -> DataError:
    return DataError(f"{path} has a header ({', '.join(layout.columns)}) but no data rows")


def _load_csv(path: Path, layout: _CsvLayout) -> tuple[np.ndarray, np.ndarray | None]:
    df = _csv_reader(path, layout)
    if len(df) == 0:
        raise _no_rows(path, layout)
    X, y, _ = _csv_values(df, path, layout)
    return X, y


def _split_label_column(
    X: np.ndarray, label_column: str | int | None, path: Path, first_row: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    if label_column is None:
        return X, None
    if isinstance(label_column, str) or X.ndim != 2:
        raise DataError(
            f"label_column={label_column!r} for {path}: give an integer column index of a 2-D "
            "array (or store labels under the key 'y' of a .npz file)"
        )
    columns = [str(j) for j in range(X.shape[1])]
    j = _select_label(columns, label_column, path)
    y = check_labels(X[:, j], len(X), source=f"{path} column {j}", first_row=first_row)
    return np.delete(X, j, axis=1), y


def _finish_array(X: np.ndarray, path: Path, source: str, first_row: int = 0) -> np.ndarray:
    if X.ndim < 2:
        raise DataError(
            f"{source} has shape {X.shape}; expected a 2-D table (n_samples, n_features) or "
            "an image array (N, ...)"
        )
    if X.ndim == 2:
        return check_finite_2d(X, source=source, first_row=first_row)
    if X.dtype in (np.uint8, np.uint16):  # images: the detector scales them by their dtype
        if X.size == 0:
            raise DataError(f"{source} is empty: shape {X.shape}")
        return np.ascontiguousarray(X)
    return check_finite(X, source=source, min_ndim=3, first_row=first_row)


def _load_npy(path: Path, label_column: str | int | None) -> tuple[np.ndarray, np.ndarray | None]:
    check_declared_sizes(path)
    try:
        X = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path} is not a plain numeric .npy array: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    X, y = _split_label_column(X, label_column, path)
    return _finish_array(X, path, str(path)), y


def _load_npz(path: Path, label_column: str | int | None) -> tuple[np.ndarray, np.ndarray | None]:
    label_key = label_column if isinstance(label_column, str) else "y"
    check_declared_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if label_column is not None and isinstance(label_column, str) and label_key not in keys:
                raise DataError(f"{path} has no array {label_key!r}; arrays are {keys}")
            if "X" in keys:
                x_key = "X"
            else:
                others = [k for k in keys if k != label_key]
                if len(others) != 1:
                    raise DataError(
                        f"{path} holds arrays {keys}; name the data 'X' (and labels 'y')"
                    )
                x_key = others[0]
            X = archive[x_key]
            y = archive[label_key] if label_key in keys else None
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{path} is not a plain numeric .npz archive: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    source = f"{path}[{x_key!r}]"
    if isinstance(label_column, int):
        if y is not None:
            raise DataError(f"{path} has a 'y' array and label_column={label_column}; give one")
        X, y = _split_label_column(X, label_column, path)
    X = _finish_array(X, path, source)
    if y is not None:
        y = check_labels(y, len(X), source=f"{path}[{label_key!r}]")
    return X, y


def _table_file(
    path: str | os.PathLike[str], label_column: str | int | None
) -> tuple[Path, str, str | int | None]:
    """``(path, lower-case suffix, label_column)``, checked as :func:`load_table` reads them."""
    if isinstance(label_column, np.integer):
        label_column = int(label_column)
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"unsupported data file {path}: extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(TABLE_SUFFIXES)}"
        )
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    return path, suffix, label_column


def load_table(
    path: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    header: bool | None = None,
    id_column: str | int | None = None,
    drop_columns: Sequence[str | int] = (),
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a data set from a ``.csv``, ``.npy`` or ``.npz`` file.

    * ``.csv``: a header row, then one sample per row; every column must be numeric (UTF-8,
      a byte-order mark is skipped). A file whose first row is all numbers (what
      ``numpy.savetxt`` writes) is read without a header, with a notice, and its columns go by
      position (``header`` forces either). An unnamed first column that counts 0, 1, 2, ...
      (the index ``DataFrame.to_csv`` writes by default) is dropped, with a notice. The
      ``label_column`` (a column name, or an index) is split off as the labels; ``id_column``
      and ``drop_columns`` are left out of the features. A file without commas in its first
      line is read with semicolons and decimal commas (or tabs); a number with a ``.`` in such a
      file (``1.234``: a thousands mark?) is refused rather than guessed.
    * ``.npy``: a 2-D array (n_samples, n_features), or an N-D image array (N, ...) returned with
      its shape unchanged (and its dtype, when it is uint8 or uint16: the detector scales such
      images by their dtype). An integer ``label_column`` splits a column off a 2-D array.
    * ``.npz``: the array named ``"X"`` (or the only array other than the labels) is the data;
      the array ``"y"`` (or the key named by a string ``label_column``), when present, holds
      the labels.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    label_column : str or int, optional
        Where the labels are, as described above. Labels must be integer-valued.
    header : bool, optional
        CSV only: whether the first row holds the column names; by default it does unless it
        is all numbers.
    id_column : str or int, optional
        CSV only: a column of row names or ids (any text), left out of the features.
    drop_columns : sequence of str or int, optional
        CSV only: columns left out of the features.

    Returns
    -------
    X : numpy.ndarray
        ``float32`` data, shape (n, d) (or the N-D shape of an image array; uint8 and uint16
        image arrays keep their dtype).
    y : numpy.ndarray or None
        ``int64`` labels of shape (n,), or ``None`` when the file has none.

    Raises
    ------
    DataError
        For a missing file, an unknown extension, an empty file, ragged CSV rows, a non-numeric
        column (named), NaN or infinite values (row and column given) or inconsistent labels.
    """
    path, suffix, label_column = _table_file(path, label_column)
    if suffix != ".csv" and (header is not None or id_column is not None or drop_columns):
        raise DataError(f"header, id_column and drop_columns apply to CSV files, not to {path}")
    if suffix == ".csv":
        layout = _csv_layout(
            path, label_column, header=header, id_column=id_column, drop_columns=drop_columns,
            notify=True,
        )  # fmt: skip
        X, y = _load_csv(path, layout)
    elif suffix == ".npy":
        X, y = _load_npy(path, label_column)
    else:
        X, y = _load_npz(path, label_column)
    logger.info("read %s: X %s%s", path, X.shape, "" if y is None else f", y {y.shape}")
    return X, y


def _page_release(array: np.ndarray):
    """A function ``release(rows)`` that drops the pages of a memory-mapped array's first
    ``rows`` rows from the process's resident memory (they stay in the page cache), so reading
    a mapped file from start to end does not make the process grow by the file's size."""
    mapping = getattr(array, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mapping is None or advice is None or not hasattr(mapping, "madvise"):
        return lambda rows: None
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    offset = array.ctypes.data - base  # where the rows start in the mapping
    row_bytes = array.strides[0]
    done = 0

    def release(rows: int) -> None:
        nonlocal done
        end = (offset + rows * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > done:
            mapping.madvise(advice, done, end - done)
            done = end

    return release


class TableChunks:
    """:func:`load_table` in pieces of at most ``chunk_rows`` rows, for files larger than memory.

    A ``.npy`` file is memory-mapped and a CSV file read with pandas' ``chunksize``, so only one
    piece is in memory at a time; a ``.npz`` archive (compressed, so it cannot be mapped) is read
    whole and handed out in pieces. Every piece gets the checks :func:`load_table` makes, with
    the file's line or row numbers in messages, and the pieces put together equal what
    :func:`load_table` returns. The file's layout (header, label column, array shape) is checked
    when the object is made; the values as they are read.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv``, ``.npy`` or ``.npz`` file, as for :func:`load_table`.
    label_column : str or int, optional
        Where the labels are, as for :func:`load_table`.
    chunk_rows : int, optional
        Rows per piece (the last may have fewer); by default :data:`CHUNK_ROWS`, or fewer for
        wide samples (about 16 MiB of float32 values a piece, in multiples of 512 rows).
    header, id_column, drop_columns : optional
        CSV only, as for :func:`load_table`; :meth:`with_ids` also hands out the id column.

    Attributes
    ----------
    n_rows : int or None
        Number of samples, or None for a CSV file (not known before it is read).
    feature_names : list of str or None
        A CSV file's feature columns (label, id and dropped columns left out), as
        :func:`csv_feature_names` gives them; None for other files and CSV files without a
        header.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
    >>> np.save(path, np.arange(10.0).reshape(5, 2))
    >>> [X.shape for X, _ in TableChunks(path, chunk_rows=2)]
    [(2, 2), (2, 2), (1, 2)]
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        label_column: str | int | None = None,
        chunk_rows: int | None = None,
        header: bool | None = None,
        id_column: str | int | None = None,
        drop_columns: Sequence[str | int] = (),
    ):
        self.path, self._suffix, self._label_column = _table_file(path, label_column)
        if self._suffix != ".csv" and (header is not None or id_column is not None or drop_columns):
            raise DataError(
                f"header, id_column and drop_columns apply to CSV files, not to {self.path}"
            )
        given = chunk_rows is not None
        if given and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int)
                      or chunk_rows < 1):  # fmt: skip
            raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
        self.n_rows: int | None = None
        self.feature_names: list[str] | None = None
        if self._suffix == ".csv":
            self._layout = _csv_layout(
                self.path, self._label_column, header=header, id_column=id_column,
                drop_columns=drop_columns, notify=True,
            )  # fmt: skip
            self.feature_names = self._layout.feature_names
            values = len(self._layout.columns)
        elif self._suffix == ".npy":
            self._array = self._map_npy()
            self.n_rows = len(self._array)
            values = int(np.prod(self._array.shape[1:]))
        else:
            self._X, self._y = _load_npz(self.path, self._label_column)
            self.n_rows = len(self._X)
            values = int(np.prod(self._X.shape[1:]))
        if not given:
            batches = _CHUNK_BYTES // (4 * max(values, 1) * 512)
            chunk_rows = max(512, min(CHUNK_ROWS, 512 * batches))
        self.chunk_rows = chunk_rows

    def _map_npy(self) -> np.ndarray:
        path = self.path
        check_declared_sizes(path)
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path} is not a plain numeric .npy array: {exc}") from exc
        except (OSError, EOFError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        if X.ndim < 2 or len(X) == 0:
            _finish_array(np.asarray(X), path, str(path))  # raises the message load_table gives
        _split_label_column(X[:0], self._label_column, path)  # a bad label_column fails here
        return X

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(X, y)`` pieces in file order: ``float32`` data and ``int64`` labels (or None)."""
        for X, y, _ in self.with_ids():
            yield X, y

    def with_ids(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """``(X, y, ids)`` pieces: as iterating gives them, and the ``id_column``'s text (an
        object array) or None."""
        step = self.chunk_rows
        if self._suffix == ".csv":
            yield from self._csv_chunks()
        elif self._suffix == ".npy":
            release = _page_release(self._array)
            for start in range(0, len(self._array), step):
                part = self._array[start : start + step]
                X, y = _split_label_column(part, self._label_column, self.path, start)
                yield _finish_array(X, self.path, str(self.path), start), y, None
                release(start + len(part))
        else:
            for start in range(0, len(self._X), step):
                y = None if self._y is None else self._y[start : start + step]
                yield self._X[start : start + step], y, None

    def _csv_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        layout = self._layout
        reader = _csv_reader(self.path, layout, chunk_rows=self.chunk_rows)
        first_row = 0
        with reader:
            while (df := _read_csv(self.path, layout, lambda: next(reader, None))) is not None:
                if first_row == 0 and len(df) == 0:
                    break
                yield _csv_values(df, self.path, layout, first_row)
                first_row += len(df)
        if first_row == 0:
            raise _no_rows(self.path, layout)
