"""Numeric tables from CSV/text, NPY and Parquet files, validated on the way in.

Every problem is a ``ValueError`` that names the file, the row and the column:

* text files (CSV, TSV, whitespace-separated, optionally gzipped) report **line numbers as a
  text editor shows them**: counted from 1, header and blank lines included;
* NPY and Parquet files report **rows counted from 1** (row 1 is the first array row);
* columns are counted from 1 in messages, with their name when the file has names.

Checked: empty files, a header without data, rows with a different number of fields (ragged
rows, or a header whose width differs from the data), cells that are not numbers (non-numeric
columns), and non-finite values (NaN, ±inf). Column *selection* uses Python indices (from 0,
negative allowed) or names.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from .dataset import Dataset, split_rows

__all__ = ["TABLE_SUFFIXES", "Table", "load_table", "read_table"]

TABLE_SUFFIXES = (
    ".csv",
    ".tsv",
    ".txt",
    ".dat",
    ".csv.gz",
    ".tsv.gz",
    ".txt.gz",
    ".npy",
    ".parquet",
)
_NOTE = "(lines and columns counted from 1, as a text editor shows them, header included)"
Columns = Sequence[int | str] | None


@dataclass(frozen=True)
class Table:
    """A numeric table read from a file.

    Attributes:
        values: float64 array ``(N, D)``, all finite.
        names: Column names (from a header, structured NPY fields or Parquet), or None.
        path: The file it came from.

    """

    values: np.ndarray
    names: tuple[str, ...] | None
    path: Path


def read_table(
    path: str | os.PathLike,
    *,
    columns: Columns = None,
    header: bool | None = None,
    delimiter: str | None = None,
    skip: int = 0,
) -> Table:
    r"""Read a numeric table and validate it.

    The format follows the suffix: ``.npy`` (NumPy, never unpickled), ``.parquet`` (needs
    pyarrow), anything else is delimited text (``.gz`` is decompressed).

    Args:
        path: The file.
        columns: Columns to keep, by 0-based index (negative counts from the end) or by name
            (needs a header). None keeps all. Unselected columns may hold anything.
        header: Text files: whether the first (non-skipped, non-blank) line holds column names.
            None detects it: the line is a header when none of its fields is a number.
        delimiter: Text files: a single character, ``"whitespace"`` for runs of spaces/tabs,
            or None to detect (``,`` then tab then ``;``, else whitespace) from the first line.
        skip: Text files: lines to skip at the top, before the header.

    Raises:
        ValueError: On any of the problems listed in the module docstring, naming the file,
            row and column.

    Example:
        >>> import tempfile, pathlib
        >>> from exactflow.data import read_table
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("a,b\n1,2\n3,4\n")
        >>> read_table(p, columns=["b"]).values.ravel().tolist()
        [2.0, 4.0]

    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix == ".npy":
        return _read_npy(path, columns)
    if path.suffix == ".parquet":
        return _read_parquet(path, columns)
    return _read_text(path, columns, header, delimiter, skip)


def load_table(
    path: str | os.PathLike,
    *,
    columns: Columns = None,
    header: bool | None = None,
    delimiter: str | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    shuffle: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Read a table (see :func:`read_table`) and split its rows into a tabular :class:`Dataset`.

    Args:
        path: The file.
        columns: Columns to keep (indices from 0, or names).
        header: Header line present (None: detect).
        delimiter: Field delimiter (None: detect).
        split: ``(train, val, test)`` fractions summing to 1.
        seed: Seed of the row shuffle.
        shuffle: Shuffle rows before splitting (False: consecutive blocks in file order).
        dtype: Floating dtype of the splits.

    """
    table = read_table(path, columns=columns, header=header, delimiter=delimiter)
    train, val, test = split_rows(torch.from_numpy(table.values), split, seed, shuffle)
    return Dataset(
        name=str(table.path),
        kind="tabular",
        train=train.to(dtype),
        val=val.to(dtype),
        test=test.to(dtype),
        feature_names=table.names,
        description=f"{table.path.name}: {table.values.shape[1]} columns, split {tuple(split)}",
    )


# --- text files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    delimiter: str | None  # None: whitespace
    names: tuple[str, ...] | None
    header_line: int | None  # 1-based
    first_data_line: int  # 1-based
    width: int


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _fields(line: str, delimiter: str | None) -> list[str]:
    line = line.rstrip("\r\n")
    if delimiter is None:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter), [])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _content_lines(path: Path, skip: int) -> Iterator[tuple[int, str]]:
    """``(line number from 1, line)`` of the non-blank lines after the first ``skip`` lines."""
    with _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if number > skip and line.strip():
                yield number, line


def _layout(path: Path, header: bool | None, delimiter: str | None, skip: int) -> _Layout:
    with closing(_content_lines(path, skip)) as lines:
        first, second = next(lines, None), next(lines, None)
    if first is None:
        raise ValueError(f"{path}: the file is empty (no data rows)")
    if delimiter == "whitespace":
        delimiter = None
    elif delimiter is None:
        delimiter = next((d for d in (",", "\t", ";") if d in first[1]), None)
    elif len(delimiter) != 1:
        raise ValueError(f"delimiter must be one character or 'whitespace', got {delimiter!r}")
    fields = _fields(first[1], delimiter)
    if header is None:
        header = not any(_is_number(f) for f in fields)
    names, header_line, data = None, None, first
    if header:
        names, header_line, data = tuple(f.strip() for f in fields), first[0], second
        if data is None:
            raise ValueError(f"{path}: line {first[0]} is a header, but no data rows follow it")
    width = len(_fields(data[1], delimiter))
    if names is not None and len(names) != width:
        raise ValueError(
            f"{path}: the header (line {header_line}) has {len(names)} names but line {data[0]}"
            f" has {width} fields {_NOTE}"
        )
    return _Layout(delimiter, names, header_line, data[0], width)


def _resolve(columns: Columns, names: Sequence[str] | None, width: int, path: Path) -> list[int]:
    """0-based indices of the selected columns."""
    if columns is None:
        return list(range(width))
    if isinstance(columns, str | int):
        columns = [columns]
    chosen = []
    for c in columns:
        if isinstance(c, str):
            if names is None:
                raise ValueError(
                    f"{path}: column {c!r} selected by name, but the file has no names"
                )
            if c not in names:
                raise ValueError(f"{path}: no column named {c!r}; the columns are {list(names)}")
            chosen.append(names.index(c))
        elif isinstance(c, int | np.integer) and not isinstance(c, bool):
            if not -width <= c < width:
                raise ValueError(f"{path}: column index {c} out of range for {width} columns")
            chosen.append(int(c) % width)
        else:
            raise TypeError(f"columns must be ints (from 0) or names, got {c!r}")
    if not chosen:
        raise ValueError(f"{path}: no columns selected")
    return chosen


def _column(j: int, names: Sequence[str] | None) -> str:
    return f"column {j + 1}" + (f" ({names[j]!r})" if names is not None and j < len(names) else "")


def _ignore(_: str) -> float:
    return 0.0


def _read_text(
    path: Path, columns: Columns, header: bool | None, delimiter: str | None, skip: int
) -> Table:
    layout = _layout(path, header, delimiter, skip)
    chosen = _resolve(columns, layout.names, layout.width, path)
    # Unselected columns go through a converter that ignores them, so they may hold text;
    # numpy still checks that every row has the same number of fields.
    converters = {j: _ignore for j in set(range(layout.width)) - set(chosen)}
    try:
        with _open_text(path) as handle:
            values = np.loadtxt(
                handle,
                delimiter=layout.delimiter,
                skiprows=layout.first_data_line - 1,
                dtype=np.float64,
                ndmin=2,
                comments=None,
                quotechar='"' if layout.delimiter is not None else None,
                converters=converters or None,
            )
    except ValueError as error:
        _diagnose(path, layout, chosen)
        raise ValueError(f"{path}: {error}") from None
    values = values[:, chosen]
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        line = _data_line(path, layout, int(row))
        raise ValueError(
            f"{path}: line {line}, {_column(chosen[col], layout.names)}: non-finite value"
            f" {values[row, col]} {_NOTE}"
        )
    names = None if layout.names is None else tuple(layout.names[j] for j in chosen)
    return Table(values, names, path)


def _data_lines(path: Path, layout: _Layout) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the data rows."""
    return _content_lines(path, layout.first_data_line - 1)


def _data_line(path: Path, layout: _Layout, row: int) -> int:
    """Line number (from 1) of data row ``row`` (from 0)."""
    with closing(_data_lines(path, layout)) as lines:
        for k, (number, _) in enumerate(lines):
            if k == row:
                return number
    return -1


def _diagnose(path: Path, layout: _Layout, chosen: list[int]) -> None:
    """Find the first bad row after numpy refused the file, and raise a precise error."""
    with closing(_data_lines(path, layout)) as lines:
        for number, line in lines:
            _check_line(path, layout, chosen, number, line)


def _check_line(path: Path, layout: _Layout, chosen: list[int], number: int, line: str) -> None:
    """Raise if line ``number`` has the wrong width or a selected cell that is not a number."""
    fields = _fields(line, layout.delimiter)
    if len(fields) != layout.width:
        raise ValueError(
            f"{path}: line {number} has {len(fields)} fields, expected {layout.width} like"
            f" line {layout.first_data_line} {_NOTE}"
        )
    for j in chosen:
        if not _is_number(fields[j]):
            hint = " or pass header=True if that line is a header" if number == 1 else ""
            raise ValueError(
                f"{path}: line {number}, {_column(j, layout.names)}: cannot read {fields[j]!r}"
                f" as a number {_NOTE}; select numeric columns with columns=[...]{hint}"
            )


# --- NPY and Parquet -------------------------------------------------------------------------


def _check_finite(
    values: np.ndarray, path: Path, chosen: list[int], names: Sequence[str] | None
) -> None:
    """Raise on the first non-finite cell; ``chosen[j]`` is the file column of column ``j``."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: row {row + 1}, {_column(chosen[col], names)}: non-finite value"
            f" {values[row, col]} (rows and columns counted from 1)"
        )


def _read_npy(path: Path, columns: Columns) -> Table:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(
            f"{path}: not a plain numeric array (reading it would need unpickling Python"
            f" objects, which exactflow never does): {error}"
        ) from None
    names = None
    if array.dtype.names is not None:  # structured array: one named field per column
        names = tuple(array.dtype.names)
        for name in names:
            if array.dtype[name].kind not in "biuf" or array.dtype[name].shape:
                raise ValueError(
                    f"{path}: field {name!r} has dtype {array.dtype[name]}, not a number"
                )
        array = np.stack([array[name].astype(np.float64) for name in names], axis=-1)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array (rows, columns), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{path}: the array is empty, shape {array.shape} (no data rows)")
    chosen = _resolve(columns, names, array.shape[1], path)
    array = array[:, chosen]
    if array.dtype.kind not in "biuf":
        for (row, col), cell in np.ndenumerate(array):
            if not _is_number(str(cell)):
                raise ValueError(
                    f"{path}: row {row + 1}, column {chosen[col] + 1}: cannot read"
                    f" {str(cell)!r} as a number (dtype {array.dtype};"
                    " rows and columns counted from 1)"
                )
    values = array.astype(np.float64)
    _check_finite(values, path, chosen, names)
    return Table(values, None if names is None else tuple(names[j] for j in chosen), path)


def _read_parquet(path: Path, columns: Columns) -> Table:
    try:
        import pyarrow.parquet as pq
        import pyarrow.types as pat
    except ImportError:
        raise ImportError(
            f"reading {path} needs pyarrow (pip install pyarrow); or save the table as CSV or NPY"
        ) from None
    table = pq.read_table(path)
    names = tuple(table.column_names)
    if table.num_rows == 0 or not names:
        raise ValueError(f"{path}: the table is empty (no data rows)")
    chosen = _resolve(columns, names, len(names), path)
    arrays = []
    for j in chosen:
        column = table.column(j)
        if not (pat.is_integer(column.type) or pat.is_floating(column.type)):
            raise ValueError(f"{path}: {_column(j, names)} has type {column.type}, not a number")
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"{path}: row {row + 1}, {_column(j, names)}: missing value (rows counted from 1)"
            )
        arrays.append(column.to_numpy().astype(np.float64))
    values = np.stack(arrays, axis=1)
    _check_finite(values, path, chosen, names)
    return Table(values, tuple(names[j] for j in chosen), path)
