"""Argument types shared by the commands: each names its option and says what it expected.

Example:
    >>> seed("7")
    7
    >>> count("1e3")
    1000
    >>> hidden("64,64")
    [64, 64]
    >>> bounds("0:1,0:")
    [[0.0, 1.0], [0.0, None]]

"""

from __future__ import annotations

import argparse
import math
import re

from ..transforms.bounds import check_bounds

__all__ = [
    "COUPLINGS",
    "MAX_SEED",
    "add_allow_pickle",
    "add_data_arguments",
    "bounds",
    "count",
    "coupling",
    "hidden",
    "nonnegative",
    "out_folder",
    "periodic",
    "seed",
    "temperature",
]

# Seeds reach torch.manual_seed and numpy's generators: keep them in the range every one takes.
MAX_SEED = 2**63 - 1
#: The coupling maps of the image flows (``--coupling``).
COUPLINGS = ("affine", "additive", "spline")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _whole(text: str, what: str) -> int:
    """A whole number written as ``12``, ``1e6`` or ``1000000.0``; anything else is an error."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    try:
        value = int(text)
    except ValueError:
        number = float(text)
        if not math.isfinite(number) or number != int(number):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        value = int(number)
    return value


def seed(text: str) -> int:
    """A seed: a whole number in ``[0, 2**63 - 1]``."""
    value = _whole(text, f"a whole number from 0 to {MAX_SEED}")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 to {MAX_SEED}, got {text}"
        )
    return value


def count(text: str) -> int:
    """A positive whole number (``1e6`` is accepted)."""
    value = _whole(text, "a positive whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def nonnegative(text: str) -> int:
    """A whole number ``>= 0``."""
    value = _whole(text, "a whole number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text}")
    return value


def weight(text: str) -> float:
    """A finite number ``>= 0`` (a regularizer's weight)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def hidden(text: str) -> list[int]:
    """Hidden widths such as ``64,64``."""
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 64,64, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,64, got {text!r}")
    return widths


def bounds(text: str) -> list:
    """Bounded columns: ``low:high`` per column, comma-separated, an empty end open.

    ``0:1,0:,:5,:`` bounds column 1 to ``(0, 1)``, column 2 below by 0, column 3 above by 5
    and leaves column 4 open; one entry (``0:1``) applies to every column. Returned as the
    JSON value a preset's config records (:func:`exactflow.transforms.bounds_config`): one
    ``[low, high]``, or a list of them with ``None`` for an open column.

    Example:
        >>> bounds("0:1,0:,:5,:")
        [[0.0, 1.0], [0.0, None], [None, 5.0], None]
        >>> bounds("-1:1")
        [-1.0, 1.0]

    """
    entries = []
    for entry in text.split(","):
        ends = entry.split(":")
        if len(ends) != 2:
            raise argparse.ArgumentTypeError(
                f"expected low:high per column (an empty end is open), like 0:1,0:,:5,: ;"
                f" got {entry.strip()!r} in {text!r}"
            )
        pair = []
        for end in ends:
            try:
                value = float(end) if end.strip() else None
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected numbers in low:high, got {entry.strip()!r} in {text!r}"
                ) from None
            pair.append(None if value is not None and math.isinf(value) else value)
        entries.append(None if pair == [None, None] else pair)
    for column, entry in enumerate(entries):
        try:
            check_bounds([entry], 1)
        except ValueError as error:
            reason = str(error).split(": ", 1)[-1]
            raise argparse.ArgumentTypeError(
                f"column {column + 1} (counted from 1): {reason}, in {text!r}"
            ) from None
    if all(entry is None for entry in entries):
        return None  # every column open: no bounds
    return entries[0] if len(entries) == 1 else entries


def periodic(text: str) -> list:
    """Periodic columns (angles): ``i``, ``i=period`` or ``i=low:high``, comma-separated.

    ``i`` is a column index counted from 0, as ``--columns`` counts. Alone it means period
    ``2π`` on ``[-π, π)``; ``i=360`` means the interval ``[-180, 180)``; ``i=0:24`` means
    ``[0, 24)``. The result is the ``[[i, low, high], ...]`` list an ``NSF(periodic=...)``
    config records.

    Example:
        >>> periodic("1=0:360,0")
        [[0, -3.141592653589793, 3.141592653589793], [1, 0.0, 360.0]]

    """
    entries: dict[int, list] = {}
    for entry in text.split(","):
        column, _, interval = entry.strip().partition("=")
        try:
            index = int(column)
            ends = [float(v) for v in interval.split(":")] if interval else [2 * math.pi]
        except ValueError:
            index, ends = -1, []
        if index < 0 or len(ends) not in (1, 2):
            raise argparse.ArgumentTypeError(
                f"expected i, i=period or i=low:high per periodic column (i counted from 0),"
                f" got {entry.strip()!r} in {text!r}"
            )
        low, high = (-ends[0] / 2, ends[0] / 2) if len(ends) == 1 else ends
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise argparse.ArgumentTypeError(
                f"column {index}: a period must be positive and an interval low < high, both"
                f" finite; got {entry.strip()!r} in {text!r}"
            )
        if index in entries:
            raise argparse.ArgumentTypeError(f"column {index} is given twice in {text!r}")
        entries[index] = [index, low, high]
    return [entries[i] for i in sorted(entries)]


def coupling(text: str) -> str:
    """The coupling map of an image flow: ``affine``, ``additive`` or ``spline``."""
    value = text.strip().lower()
    if value not in COUPLINGS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(COUPLINGS)}, got {text!r}")
    return value


def temperature(text: str) -> float:
    """A sampling temperature: a positive finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def out_folder(text: str) -> str:
    """A run folder: any non-empty path (``''`` would mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a run folder, got an empty path")
    return text


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options of ``fit`` (recorded in ``run.json``) and ``--allow-pickle``."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--n-train",
        type=nonnegative,
        help="training points (synthetic sets; (fashion-)mnist: the first N training images)",
    )
    g.add_argument(
        "--n-val",
        type=nonnegative,
        help="validation points (synthetic sets; (fashion-)mnist: the last N training images)",
    )
    g.add_argument(
        "--n-test",
        type=nonnegative,
        help="test points (synthetic sets; (fashion-)mnist: the first N test images)",
    )
    g.add_argument("--root", help="folder holding the benchmark or image files")
    g.add_argument("--columns", nargs="+", help="table columns to use, by name or 0-based index")
    header = g.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_true", default=None)
    header.add_argument("--no-header", dest="header", action="store_false")
    add_allow_pickle(parser)


def add_allow_pickle(parser: argparse.ArgumentParser) -> None:
    """``--allow-pickle``: never recorded, so every command that reads the data must be told."""
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let --data gas unpickle its file (runs code from it: trusted files only)",
    )
