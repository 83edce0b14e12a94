"""``exactflow plot``: draw a run's figures into ``RUN/figures``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..flow import DTYPES
from . import arguments, targets
from .datasets import dataset_for
from .errors import CommandError
from .figures import draw, draw_vi
from .lock import RunLock
from .runs import kind, load_model, read_record

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """The ``plot`` subcommand and its options."""
    p = sub.add_parser("plot", help="draw a run's figures into RUN/figures")
    p.add_argument("run", help="run folder")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--target", help="vi run: its module:function target, named again")
    p.add_argument("--dim", type=arguments.count, help="vi run: the target's dimension")
    arguments.add_allow_pickle(p)


def run(args: argparse.Namespace) -> None:
    """Draw the figures of the run's data (or target) and model."""
    folder = Path(args.run)
    record = read_record(folder)
    if kind(record) == "vi":
        dtype = DTYPES[record["train"].get("dtype", "float32")]
        target = targets.of_run(record["target"], args.target, args.dim, folder, dtype)
        flow = load_model(folder, args.checkpoint, target.dim)
        with RunLock(folder):
            for path in draw_vi(folder, flow, target, record["train"].get("seed", 0)):
                print(f"wrote {path}")
        return
    if args.target is not None or args.dim is not None:
        raise CommandError("--target and --dim apply to variational-inference runs only")
    ds, image_shape = dataset_for(record, allow_pickle=args.allow_pickle)
    model = load_model(folder, args.checkpoint, ds.features)
    with RunLock(folder):
        for path in draw(folder, model, ds, image_shape, record["data"]["seed"]):
            print(f"wrote {path}")
