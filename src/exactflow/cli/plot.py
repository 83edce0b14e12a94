"""``exactflow plot``: draw a run's figures into ``RUN/figures``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import arguments
from .datasets import dataset_for
from .figures import draw
from .lock import RunLock
from .runs import load_model, read_record

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """The ``plot`` subcommand and its options."""
    p = sub.add_parser("plot", help="draw a run's figures into RUN/figures")
    p.add_argument("run", help="run folder")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    arguments.add_allow_pickle(p)


def run(args: argparse.Namespace) -> None:
    """Draw the figures of the run's data and flow."""
    folder = Path(args.run)
    record = read_record(folder)
    ds, image_shape = dataset_for(record, allow_pickle=args.allow_pickle)
    flow = load_model(folder, args.checkpoint, ds.features)
    with RunLock(folder):
        for path in draw(folder, flow, ds, image_shape, record["data"]["seed"]):
            print(f"wrote {path}")
