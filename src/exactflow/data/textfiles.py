"""Numeric tables from delimited text (CSV, TSV, whitespace), optionally gzipped.

Problems are reported with **line numbers as a text editor shows them**: counted from 1,
header and blank lines included. The file must be UTF-8 (a byte-order mark is dropped);
blank lines, and lines holding only spaces, are skipped anywhere. A ``.gz`` name must hold
gzip data and gzip data must have a ``.gz`` name; truncated or corrupt gzip data, binary
data, bytes that are not UTF-8 and files larger than :func:`~exactflow.data.checks.data_limit`
are each one ``ValueError`` naming the file.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

import numpy as np

from .checks import check_size, data_limit
from .columns import Columns, Locate, Table, check_finite, column_label, is_number, resolve

__all__ = ["NOTE", "Layout", "check_gzip_name", "read_text", "reading"]

NOTE = "(lines and columns counted from 1, as a text editor shows them, header included)"
_GZIP = b"\x1f\x8b"
_NOT_DELIMITERS = set("0123456789.+-eE\"'\r\n")
_MISSING = {"na", "n/a", "null", "none", "nil", "?", "-", "--", "missing", "#n/a"}
_BINARY = {
    b"\x93NUMPY": "an .npy array file",
    b"PAR1": "a Parquet file",
    b"PK\x03\x04": "a zip archive",
    b"\x89HDF": "an HDF5 file",
}
_BINARY_ADVICE = {
    "an .npy array file": "give it the .npy suffix",
    "a Parquet file": "give it the .parquet suffix",
    "a zip archive": "unpack it first",
    "an HDF5 file": "save its arrays as .npy files",
}


@dataclass(frozen=True)
class Layout:
    """Where the numbers are: delimiter (None: whitespace), names, header and first data line."""

    delimiter: str | None
    names: tuple[str, ...] | None
    header_line: int | None  # 1-based
    first_data_line: int  # 1-based
    width: int


def check_gzip_name(path: Path, text: bool = False) -> bool:
    """Whether ``path`` is gzipped: a ``.gz`` name must hold gzip data, and gzip data needs one.

    With ``text``, a file that starts like a binary table format is refused too.
    """
    with open(path, "rb") as raw:
        head = raw.read(8)
    for magic, kind in _BINARY.items():
        if text and head.startswith(magic):
            raise ValueError(f"{path}: {kind}, not a text table; {_BINARY_ADVICE[kind]}")
    head = head[:2]
    compressed = path.suffix == ".gz"
    if compressed and head != _GZIP:
        raise ValueError(
            f"{path}: the name ends in .gz but the file is not gzip-compressed (it starts with"
            f" {head!r}); rename it without .gz"
        )
    if not compressed and head == _GZIP:
        raise ValueError(
            f"{path}: the file holds gzip-compressed data but its name does not end in .gz;"
            f" rename it to {path.name}.gz"
        )
    return compressed


def _open(path: Path) -> TextIO:
    if check_gzip_name(path, text=True):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _raw_lines(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        yield from handle


def _where_not_utf8(path: Path) -> str:
    """``"line 3 (byte 0xe9 at column 5)"``: the first line that does not decode as UTF-8."""
    with closing(_raw_lines(path)) as lines:
        for number, line in enumerate(lines, 1):
            try:
                line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                return f"line {number} (byte {line[error.start]:#04x} at column {error.start + 1})"
    return "a line"


def _starts_with(path: Path, prefixes: tuple[bytes, ...]) -> bool:
    with closing(_raw_lines(path)) as lines:
        return next(lines, b"").startswith(prefixes)


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn the errors of reading a damaged file into one ``ValueError`` naming it."""
    try:
        yield
    except UnicodeDecodeError:
        if _starts_with(path, (b"\xff\xfe", b"\xfe\xff")):
            raise ValueError(
                f"{path}: UTF-16 text (an export as 'Unicode text'?); save the file as UTF-8"
            ) from None
        raise ValueError(
            f"{path}: {_where_not_utf8(path)} is not UTF-8 text; save the file as UTF-8"
        ) from None
    except EOFError:
        raise ValueError(
            f"{path}: the gzip data is truncated (it ends before its end marker); the file is"
            " incomplete: copy or download it again"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path}: corrupt gzip data ({error})") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the file ({error.strerror or error})") from None


def _fields(line: str, delimiter: str | None) -> list[str]:
    line = line.rstrip("\r\n")
    if delimiter is None:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter), [])


def _numbered(handle: TextIO, path: Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, line)`` of every line, each read with a bounded length.

    A value takes at least two characters (with its delimiter) and 8 bytes as float64, so a
    line longer than a quarter of the data size limit cannot fit it: reading stops there (a
    gzip bomb may hold one endless line).
    """
    longest = max(1024, data_limit() // 4)
    for number, line in enumerate(iter(partial(handle.readline, longest), ""), 1):
        if len(line) == longest and line[-1] not in "\r\n":
            check_size(
                f"{path}: line {number}, longer than {longest} characters,", 4.0 * len(line) + 4
            )
        yield number, line


def _content_lines(path: Path, skip: int) -> Iterator[tuple[int, str]]:
    """``(line number from 1, line)`` of the non-blank lines after the first ``skip`` lines."""
    with _open(path) as handle:
        for number, line in _numbered(handle, path):
            if number > skip and not line.isspace():
                if "\0" in line:
                    raise ValueError(
                        f"{path}: line {number} holds binary data (a NUL byte), not text; is it"
                        " an .npy or .parquet file with the wrong suffix?"
                    )
                yield number, line


def _data_text(path: Path, layout: Layout) -> Iterator[str]:
    """The data lines for numpy, without blank lines (numpy refuses a line of spaces)."""
    with _open(path) as handle:
        for number, line in _numbered(handle, path):
            if number >= layout.first_data_line and not line.isspace():
                yield line


def _delimiter(delimiter: str | None, first: str, path: Path) -> str | None:
    if delimiter == "whitespace":
        return None
    if delimiter is None:
        return next((d for d in (",", "\t", ";") if d in first), None)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in _NOT_DELIMITERS:
        raise ValueError(
            f"{path}: delimiter must be one character that cannot be part of a number,"
            f" 'whitespace', or None (detect), got {delimiter!r}"
        )
    return delimiter


def _layout(path: Path, header: bool | None, delimiter: str | None, skip: int) -> Layout:
    with closing(_content_lines(path, skip)) as lines:
        first, second = next(lines, None), next(lines, None)
    if first is None:
        after = f" after the {skip} skipped lines" if skip else ""
        raise ValueError(f"{path}: the file is empty (no data rows{after})")
    delimiter = _delimiter(delimiter, first[1], path)
    fields = _fields(first[1], delimiter)
    if header is None:
        header = not any(is_number(f) for f in fields)
    names, header_line, data = None, None, first
    if header:
        names, header_line, data = tuple(f.strip() for f in fields), first[0], second
        if data is None:
            raise ValueError(f"{path}: line {first[0]} is a header, but no data rows follow it")
    width = len(_fields(data[1], delimiter))
    if names is not None and len(names) != width:
        raise ValueError(
            f"{path}: the header (line {header_line}) has {len(names)} names but line {data[0]}"
            f" has {width} fields {NOTE}"
        )
    return Layout(delimiter, names, header_line, data[0], width)


def _ignore(_: str) -> float:
    return 0.0


def read_text(
    path: Path, columns: Columns, header: bool | None, delimiter: str | None, skip: int
) -> tuple[Table, Locate]:
    """Read and validate a text table (see the module docstring), and say where its cells are."""
    with reading(path):
        layout = _layout(path, header, delimiter, skip)
        chosen = resolve(columns, layout.names, layout.width, path)
        values = _load(path, layout, chosen)
        values = values[:, chosen]

        def locate(row: int | None, col: int) -> str:
            if row is None:
                return f"{path}: {column_label(chosen[col], layout.names)} (counted from 1)"
            line = _data_line(path, layout, row)
            where = f"line {line}, {column_label(chosen[col], layout.names)}"
            return f"{path}: {where} (counted from 1, as a text editor shows them)"

        check_finite(values, locate)
    names = None if layout.names is None else tuple(layout.names[j] for j in chosen)
    return Table(values, names, path), locate


def _load(path: Path, layout: Layout, chosen: list[int]) -> np.ndarray:
    # At most as many rows as fit the data size limit in float64 (one more, to notice more).
    cap = max(1, data_limit() // (8 * layout.width))
    # Unselected columns go through a converter that ignores them, so they may hold text;
    # numpy still checks that every row has the same number of fields.
    converters = {j: _ignore for j in set(range(layout.width)) - set(chosen)}
    try:
        with closing(_data_text(path, layout)) as lines:
            values = np.loadtxt(
                lines,
                delimiter=layout.delimiter,
                dtype=np.float64,
                ndmin=2,
                comments=None,
                quotechar='"' if layout.delimiter is not None else None,
                converters=converters or None,
                max_rows=cap + 1,
            )
    except ValueError as error:
        _diagnose(path, layout, chosen)
        raise ValueError(f"{path}: {error}") from None
    if len(values) > cap:
        check_size(
            f"{path}: more than {cap} rows of {layout.width} columns",
            8.0 * len(values) * layout.width,
        )
    return values


def _data_lines(path: Path, layout: Layout) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the data rows."""
    return _content_lines(path, layout.first_data_line - 1)


def _data_line(path: Path, layout: Layout, row: int) -> int:
    """Line number (from 1) of data row ``row`` (from 0)."""
    with closing(_data_lines(path, layout)) as lines:
        for k, (number, _) in enumerate(lines):
            if k == row:
                return number
    return -1


def _diagnose(path: Path, layout: Layout, chosen: Sequence[int]) -> None:
    """Find the first bad row after numpy refused the file, and raise a precise error."""
    with closing(_data_lines(path, layout)) as lines:
        for number, line in lines:
            _check_line(path, layout, chosen, number, line)


def _check_line(path: Path, layout: Layout, chosen: Sequence[int], number: int, line: str) -> None:
    """Raise if line ``number`` has the wrong width or a selected cell that is not a number."""
    fields = _fields(line, layout.delimiter)
    if len(fields) != layout.width:
        raise ValueError(
            f"{path}: line {number} has {len(fields)} fields, expected {layout.width} like"
            f" line {layout.first_data_line} {NOTE}"
        )
    for j in chosen:
        if not fields[j].strip():
            hint = "; a delimiter at the end of the line?" if j == len(fields) - 1 else ""
            raise ValueError(
                f"{path}: line {number}, {column_label(j, layout.names)}: missing value (an empty"
                f" cell) {NOTE}{hint}"
            )
        if not is_number(fields[j]):
            hint = " or pass header=True if that line is a header" if number == 1 else ""
            if re.fullmatch(r"\s*[-+]?\d+,\d+\s*", fields[j]):
                hint += "; write decimals with a point, not a comma"
            if fields[j].strip().lower() in _MISSING:
                hint += "; it marks a missing value: drop or fill that row first"
            raise ValueError(
                f"{path}: line {number}, {column_label(j, layout.names)}: cannot read"
                f" {fields[j]!r} as a number {NOTE}; select numeric columns with"
                f" columns=[...]{hint}"
            )
