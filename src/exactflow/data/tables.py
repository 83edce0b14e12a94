"""Numeric tables from CSV/text, NPY and Parquet files, validated on the way in.

Every problem is a ``ValueError`` that names the file, the row and the column:

* text files (CSV, TSV, whitespace-separated, optionally gzipped; :mod:`.textfiles`) report
  **line numbers as a text editor shows them**: counted from 1, header and blank lines
  included;
* NPY and Parquet files (:mod:`.arrays`) report **rows counted from 1** (row 1 is the first
  array row);
* columns are counted from 1 in messages, with their name when the file has names.

Checked: empty files, a header without data, rows with a different number of fields (ragged
rows, or a header whose width differs from the data), cells that are not numbers (non-numeric
columns), empty cells, non-finite values (NaN, ±inf), damaged files (truncated or mislabelled
gzip, an ``.npz`` named ``.npy``, bytes that are not UTF-8), sizes beyond
:func:`~exactflow.data.checks.data_limit`, and values that do not fit the requested dtype.
Column *selection* uses Python indices (from 0, negative allowed) or names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .arrays import read_npy, read_parquet
from .checks import count, flag, floating_dtype, seed_option
from .columns import Columns, Locate, Table
from .dataset import Dataset, convert, split_rows
from .textfiles import read_text

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


def read_table(
    path: str | os.PathLike,
    *,
    columns: Columns = None,
    header: bool | None = None,
    delimiter: str | None = None,
    skip: int = 0,
    dtype: torch.dtype | None = None,
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
        dtype: When given, also check that every value fits this floating dtype (see
            :func:`load_table`); the values stay float64.

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
    table, locate = _read(path, columns, header, delimiter, skip)
    if dtype is not None:
        convert(torch.from_numpy(table.values), floating_dtype("dtype", dtype), locate)
    return table


def _read(
    path: str | os.PathLike,
    columns: Columns,
    header: bool | None,
    delimiter: str | None,
    skip: int,
) -> tuple[Table, Locate]:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or path-like, got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a directory, not a table file")
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (a device, socket or pipe?)")
    if header is not None:
        flag(f"{path}: header", header)
    count(f"{path}: skip", skip)
    if path.suffix == ".npy":
        return read_npy(path, columns)
    if path.suffix == ".parquet":
        return read_parquet(path, columns)
    return read_text(path, columns, header, delimiter, skip)


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
    r"""Read a table (see :func:`read_table`) and split its rows into a tabular :class:`Dataset`.

    Args:
        path: The file.
        columns: Columns to keep (indices from 0, or names).
        header: Header line present (None: detect).
        delimiter: Field delimiter (None: detect).
        split: ``(train, val, test)`` fractions summing to 1.
        seed: Seed of the row shuffle.
        shuffle: Shuffle rows before splitting (False: consecutive blocks in file order).
        dtype: Floating dtype of the splits. The file is read in float64 and converted after
            checking that the values fit: a value beyond the dtype's range, or a column whose
            spread the dtype cannot resolve (``1 + i·1e-10`` in float32) is a ``ValueError``
            naming the file, row and column.

    Raises:
        ValueError: Everything :func:`read_table` refuses; a constant column; too few rows
            for ``split`` (each split needs :data:`~exactflow.data.dataset.MIN_ROWS`); values
            that do not fit ``dtype``.
        TypeError: An option of the wrong type.

    Example:
        >>> import tempfile, pathlib
        >>> from exactflow.data import load_table
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("a,b\n" + "".join(f"{i},{i * i}\n" for i in range(20)))
        >>> [len(s) for s in load_table(p, split=(0.5, 0.25, 0.25)).splits().values()]
        [10, 5, 5]

    """
    seed, dtype = seed_option("seed", seed), floating_dtype("dtype", dtype)
    flag("shuffle", shuffle)
    table, locate = _read(path, columns, header, delimiter, 0)
    values = torch.from_numpy(table.values)
    train, val, test = split_rows(values, split, seed, shuffle, name=str(table.path))
    constant = values.amin(0) == values.amax(0)
    if bool(constant.any()):
        col = int(constant.nonzero()[0, 0])
        raise ValueError(
            f"{locate(None, col)}: the column is constant (every row holds"
            f" {float(values[0, col]):.10g}), and a constant column has no density; leave it"
            " out with columns=[...]"
        )
    convert(values, dtype, locate)
    return Dataset(
        name=str(table.path),
        kind="tabular",
        train=train.to(dtype),
        val=val.to(dtype),
        test=test.to(dtype),
        feature_names=table.names,
        description=f"{table.path.name}: {table.values.shape[1]} columns, split {tuple(split)}",
    )
