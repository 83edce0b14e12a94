"""Checks of loader arguments and of the size of what a loader is about to allocate.

Loader options reach exactflow from users, scripts and run records (``run.json``), so every
option is checked for its type and range before it is used, and a wrong one is a one-line
``ValueError``/``TypeError`` that names the option, what was expected and what was given.

Untrusted files can announce (or decompress to) far more data than a machine holds. Every
loader checks the size of the array it is about to build against :func:`data_limit`, before
allocating it: ``EXACTFLOW_MAX_DATA_BYTES`` bytes (default 4 GiB, measured as float64 values
for tables and as stored bytes for IDX images).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "LENGTHS",
    "LIMIT_VARIABLE",
    "check_size",
    "count",
    "data_limit",
    "flag",
    "floating_dtype",
    "length",
    "path_option",
    "real",
    "seed_option",
]

#: The environment variable that raises (or lowers) the data size limit, in bytes.
LIMIT_VARIABLE = "EXACTFLOW_MAX_DATA_BYTES"
_DEFAULT_LIMIT = 4 * 2**30


def data_limit() -> int:
    """The largest array, in bytes, a loader builds: ``$EXACTFLOW_MAX_DATA_BYTES`` or 4 GiB.

    Example:
        >>> from exactflow.data.checks import data_limit
        >>> data_limit() >= 2**20
        True

    """
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return _DEFAULT_LIMIT
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise ValueError(f"{LIMIT_VARIABLE} must be a positive number of bytes, got {text!r}")
    return value


def _bytes(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def check_size(what: str, nbytes: float) -> None:
    """Raise ``ValueError`` when ``what`` needs more than :func:`data_limit` bytes.

    Args:
        what: The thing to be built, as the message should name it (``"path: shape (...)"``).
        nbytes: Its size in bytes.

    Example:
        >>> from exactflow.data.checks import check_size
        >>> check_size("a small array", 1024)

    """
    limit = data_limit()
    if nbytes > limit:
        raise ValueError(
            f"{what} needs {_bytes(nbytes)}, above the data size limit of {_bytes(limit)};"
            f" if this machine has the memory, raise it with {LIMIT_VARIABLE}=<bytes>"
        )


def count(label: str, value: object, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``, else ``ValueError``/``TypeError``.

    Bools and floats are refused (``n_train=1e3`` or ``True`` is a mistake, not a count).

    Example:
        >>> from exactflow.data.checks import count
        >>> count("n_train", 500, minimum=2)
        500

    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{label} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise ValueError(f"{label} must be at least {minimum}{upper}, got {value}")
    return int(value)


def seed_option(label: str, value: object) -> int:
    """A seed: an int in ``[0, 2**63)``."""
    return count(label, value, 0, 2**63 - 1)


def real(
    label: str,
    value: object,
    *,
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """``value`` as a finite float (optionally ``> 0`` and within bounds), else an error.

    Example:
        >>> from exactflow.data.checks import real
        >>> real("noise", 0.1, positive=True)
        0.1

    """
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise TypeError(f"{label} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{label} must be a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{label} must be positive, got {value}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{label} must lie in [{minimum}, {maximum}], got {value}")
    return value


#: The range of a synthetic density's lengths (noise, radii, cell sizes, scales): wide enough for
#: any picture, narrow enough that samples, densities and quadratures stay finite in float32.
LENGTHS = (1e-6, 1e6)


def length(label: str, value: object, *, zero: bool = False) -> float:
    """A length of a synthetic density: a number in :data:`LENGTHS` (or 0 when ``zero``).

    Example:
        >>> from exactflow.data.checks import length
        >>> length("moons: noise", 0.1)
        0.1

    """
    value = real(label, value)
    low, high = LENGTHS
    if not (low <= value <= high or (zero and value == 0)):
        start = "0 or " if zero else ""
        raise ValueError(f"{label} must be {start}between {low:g} and {high:g}, got {value:g}")
    return value


def flag(label: str, value: object) -> bool:
    """``value`` when it is a bool, else ``TypeError`` (``"no"`` is not False)."""
    if not isinstance(value, bool):
        raise TypeError(f"{label} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def floating_dtype(label: str, value: object) -> torch.dtype:
    """``value`` when it is a floating ``torch.dtype``, else ``TypeError``."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(
            f"{label} must be a floating torch.dtype such as torch.float32 or torch.float64,"
            f" got {value!r}"
        )
    return value


def path_option(label: str, value: object) -> Path:
    """``value`` as a :class:`~pathlib.Path` when it is a non-empty str or path-like."""
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise TypeError(f"{label} must be a non-empty path, got {value!r}")
    return Path(value)
