"""Argument types shared by the commands: each names its option and says what it expected.

Example:
    >>> seed("7")
    7
    >>> count("1e3")
    1000
    >>> hidden("64,64")
    [64, 64]

"""

from __future__ import annotations

import argparse
import math
import re

__all__ = [
    "COUPLINGS",
    "MAX_SEED",
    "add_allow_pickle",
    "add_data_arguments",
    "count",
    "coupling",
    "hidden",
    "nonnegative",
    "out_folder",
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
