"""The :class:`Table` record and what every table reader shares: column selection and labels.

Columns are *selected* with Python indices (from 0, negative counting from the end) or names,
and *reported* counted from 1, with their name when the file has names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Columns", "Locate", "Table", "check_finite", "column_label", "is_number", "resolve"]

Columns = Sequence[int | str] | int | str | None
#: ``locate(row, column)`` -> ``"path: line 4, column 2 ('b')"``: where a cell of a table (both
#: counted from 0 among the rows and the *selected* columns; row None for a whole column) is.
Locate = Callable[[int | None, int], str]


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


def resolve(columns: Columns, names: Sequence[str] | None, width: int, path: Path) -> list[int]:
    """0-based indices of the selected columns of a ``width``-column file.

    Raises:
        TypeError: ``columns`` is not None, an int, a name or a sequence of them.
        ValueError: An unknown name, an index out of range, a column chosen twice, or none.

    Example:
        >>> from pathlib import Path
        >>> from exactflow.data.columns import resolve
        >>> resolve(["b", -1], ("a", "b", "c"), 3, Path("t.csv"))
        [1, 2]

    """
    if columns is None:
        return list(range(width))
    if isinstance(columns, str | int | np.integer):
        columns = [columns]
    if not isinstance(columns, Sequence | range):
        raise TypeError(
            f"{path}: columns must be a list of indices (from 0) or names, got {columns!r}"
        )
    chosen: list[int] = []
    for c in columns:
        if isinstance(c, str):
            if names is None:
                raise ValueError(
                    f"{path}: column {c!r} selected by name, but the file has no names"
                    " (select it by index, from 0)"
                )
            if c not in names:
                raise ValueError(f"{path}: no column named {c!r}; the columns are {list(names)}")
            j = list(names).index(c)
            if list(names).count(c) > 1:
                where = [k + 1 for k, n in enumerate(names) if n == c]
                raise ValueError(
                    f"{path}: {len(where)} columns are named {c!r} (columns {where}, counted"
                    " from 1); select the one you mean by index (from 0)"
                )
        elif isinstance(c, int | np.integer) and not isinstance(c, bool):
            if not -width <= c < width:
                raise ValueError(
                    f"{path}: column index {c} out of range for {width} columns"
                    f" (indices from 0 to {width - 1}, or negative from the end)"
                )
            j = int(c) % width
        else:
            raise TypeError(
                f"{path}: columns must be ints (from 0) or names, got {c!r} ({type(c).__name__})"
            )
        if j in chosen:
            raise ValueError(f"{path}: {column_label(j, names)} is selected twice in {columns!r}")
        chosen.append(j)
    if not chosen:
        raise ValueError(f"{path}: no columns selected")
    return chosen


def column_label(j: int, names: Sequence[str] | None) -> str:
    """``"column 3 ('c')"`` for 0-based column ``j`` (counted from 1, with its name if any)."""
    named = names is not None and j < len(names)
    return f"column {j + 1}" + (f" ({names[j]!r})" if named else "")


def check_finite(values: np.ndarray, locate: Locate) -> None:
    """Raise on the first non-finite cell of ``values (N, D)``, where ``locate`` says."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{locate(row, col)}: non-finite value {values[row, col]}")


def is_number(text: object) -> bool:
    """Whether ``text`` reads as a number the way numpy reads a table cell (no ``1_000``)."""
    if "_" in str(text):  # Python reads "1_000", numpy does not
        return False
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
