"""Numeric tables from binary array files: NPY (never unpickled) and Parquet (needs pyarrow).

Rows are reported **counted from 1** (row 1 is the first array row), columns from 1 with their
name when the file has names. The NPY header is read and checked (format, dtype, shape, size
against :func:`~exactflow.data.checks.data_limit` and against the file's length) before any
array is allocated, so a damaged or hostile file is one ``ValueError`` naming it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format

from .checks import check_size
from .columns import Columns, Locate, Table, check_finite, column_label, is_number, resolve

__all__ = ["read_npy", "read_parquet"]

_MAGIC = b"\x93NUMPY"


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an NPY header, refusing anything but a complete plain array."""
    with open(path, "rb") as handle:
        head = handle.read(len(_MAGIC))
        if head.startswith(b"PK\x03\x04"):
            raise ValueError(
                f"{path}: a zip archive (an .npz file?), not a single .npy array; load it with"
                " numpy.load and save the array you want with numpy.save"
            )
        if head != _MAGIC:
            start = "it is empty" if not head else f"it starts with {head!r}"
            raise ValueError(f"{path}: not an .npy file ({start}, not {_MAGIC!r})")
        handle.seek(0)
        try:
            version = npy_format.read_magic(handle)
            read_header = (
                npy_format.read_array_header_1_0
                if version == (1, 0)
                else npy_format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(f"{path}: damaged .npy header ({error})") from None
        start = handle.tell()
    if dtype.hasobject:
        raise ValueError(
            f"{path}: not a plain numeric array (dtype {dtype}: reading it would need unpickling"
            " Python objects, which exactflow never does)"
        )
    stored = math.prod(shape) * dtype.itemsize
    check_size(
        f"{path}: an array of shape {shape}", 8.0 * math.prod(shape) * max(1, _fields(dtype))
    )
    held = path.stat().st_size - start
    if held < stored:
        raise ValueError(
            f"{path}: the header announces shape {shape} of {dtype} ({stored} bytes of data), but"
            f" the file holds {held} bytes after the header (truncated?)"
        )
    return shape, dtype


def _fields(dtype: np.dtype) -> int:
    return 1 if dtype.names is None else len(dtype.names)


def _locator(path: Path, chosen: list[int], names: tuple[str, ...] | None) -> Locate:
    def locate(row: int | None, col: int) -> str:
        if row is None:
            return f"{path}: {column_label(chosen[col], names)} (counted from 1)"
        return f"{path}: row {row + 1}, {column_label(chosen[col], names)} (counted from 1)"

    return locate


def read_npy(path: Path, columns: Columns) -> tuple[Table, Locate]:
    """Read and validate an NPY table: ``(N,)``, ``(N, D)`` or a structured ``(N,)`` array."""
    _npy_header(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: unreadable .npy file ({error})") from None
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
    chosen = resolve(columns, names, array.shape[1], path)
    array = array[:, chosen]
    if array.dtype.kind not in "biufUS":
        raise ValueError(f"{path}: dtype {array.dtype} is not a table of real numbers")
    if array.dtype.kind in "US":
        for (row, col), cell in np.ndenumerate(array):
            if not is_number(cell):
                raise ValueError(
                    f"{path}: row {row + 1}, column {chosen[col] + 1}: cannot read"
                    f" {str(cell)!r} as a number (dtype {array.dtype};"
                    " rows and columns counted from 1)"
                )
    values = array.astype(np.float64)
    locate = _locator(path, chosen, names)
    check_finite(values, locate)
    kept = None if names is None else tuple(names[j] for j in chosen)
    return Table(values, kept, path), locate


def read_parquet(path: Path, columns: Columns) -> tuple[Table, Locate]:
    """Read and validate a Parquet table of integer and floating columns."""
    try:
        import pyarrow
        import pyarrow.parquet as pq
        import pyarrow.types as pat
    except ImportError:
        raise ValueError(
            f"{path}: reading Parquet files needs the pyarrow package (pip install pyarrow);"
            " or save the table as CSV or NPY"
        ) from None
    try:
        meta = pq.ParquetFile(path).metadata
        check_size(
            f"{path}: a table of {meta.num_rows} rows and {meta.num_columns} columns",
            8.0 * meta.num_rows * meta.num_columns,
        )
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    names = tuple(table.column_names)
    if table.num_rows == 0 or not names:
        raise ValueError(f"{path}: the table is empty (no data rows)")
    chosen = resolve(columns, names, len(names), path)
    arrays = []
    for j in chosen:
        column = table.column(j)
        if not (pat.is_integer(column.type) or pat.is_floating(column.type)):
            raise ValueError(
                f"{path}: {column_label(j, names)} has type {column.type}, not a number"
            )
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"{path}: row {row + 1}, {column_label(j, names)}: missing value"
                " (rows counted from 1)"
            )
        arrays.append(column.to_numpy().astype(np.float64))
    values = np.stack(arrays, axis=1)
    locate = _locator(path, chosen, names)
    check_finite(values, locate)
    return Table(values, tuple(names[j] for j in chosen), path), locate
