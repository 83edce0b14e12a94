"""``exactflow eval``: the test NLL, bits/dim, KL gap and exactness certificate of a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import metrics
from . import arguments
from .datasets import dataset_for
from .errors import CommandError, one_line
from .lock import RunLock
from .report import certificate_failure, format_report, write_report
from .runs import EVAL_FILE, load_model, read_record

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """The ``eval`` subcommand and its options."""
    p = sub.add_parser("eval", help="test NLL, bits/dim, KL gap and exactness of a run")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="evaluate on another data set of the same width")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    arguments.add_allow_pickle(p)


def run(args: argparse.Namespace) -> None:
    """Print the report; the run's own test report also goes to ``RUN/eval.json``."""
    folder = Path(args.run)
    record = read_record(folder)
    ds, _ = dataset_for(record, args.data, args.allow_pickle)
    flow = load_model(folder, args.checkpoint, ds.features)
    report = metrics.evaluate(flow, ds, args.split)
    print(format_report(ds.name, report), flush=True)
    if args.data is None and args.split == "test":  # eval.json holds the run's test numbers
        try:
            with RunLock(folder):
                write_report(folder, report)
        except (OSError, CommandError) as e:
            raise CommandError(
                f"the result above was not saved to {folder / EVAL_FILE}: {one_line(e)}"
            ) from None
    failure = certificate_failure(report)
    if failure is not None:
        raise CommandError(f"exactness certificate FAILED: {failure}")
