"""What a training run records: ``metrics.csv`` columns and writing, TensorBoard, the console.

``metrics.csv`` has one row per epoch; its columns follow the objective's metric name
(:func:`columns`): ``epoch, step, train_<name>, val_<name>, lr, time, skipped``. It is rewritten
whole through :func:`exactflow.atomic.write_atomic` (fresh temporary name, atomic rename) after
every epoch, so a reader never sees half a row and no fixed temporary name can be hijacked.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_atomic

__all__ = ["METRICS_FILE", "Board", "columns", "write_metrics"]

METRICS_FILE = "metrics.csv"


def columns(metric: str) -> tuple[str, ...]:
    """The ``metrics.csv`` columns for an objective whose metric is called ``metric``.

    Example:
        >>> columns("nll")
        ('epoch', 'step', 'train_nll', 'val_nll', 'lr', 'time', 'skipped')

    """
    return ("epoch", "step", f"train_{metric}", f"val_{metric}", "lr", "time", "skipped")


def write_metrics(
    path: str | os.PathLike, history: Sequence[dict[str, Any]], names: Sequence[str]
) -> Path:
    """Rewrite the metrics file atomically from a history (one dict per epoch)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(names), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    data = text.getvalue().encode()
    return write_atomic(path, lambda f: f.write(data))


class Board:
    """TensorBoard curves in ``out/tensorboard``; does nothing when tensorboard is unavailable."""

    def __init__(self, out: Path | None, enabled: bool) -> None:
        self.writer: Any = None
        if out is None or not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(log_dir=os.fspath(out / "tensorboard"))

    def scalars(self, row: dict[str, Any], keys: Sequence[str], step: int) -> None:
        if self.writer is not None:
            for key in keys:
                self.writer.add_scalar(key, row[key], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
