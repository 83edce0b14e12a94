"""The one way a picture reaches the disk: a PNG written atomically from its own figure."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from ..atomic import write_atomic

__all__ = ["save"]


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG through :func:`exactflow.atomic.write_atomic`."""
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
