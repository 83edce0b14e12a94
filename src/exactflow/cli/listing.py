"""``exactflow list``: the models and data sets the other commands know by name."""

from __future__ import annotations

import argparse
from typing import Any

from .. import data, flows, registry

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """The ``list`` subcommand."""
    sub.add_parser("list", help="list flow presets and data sets")


def run(args: argparse.Namespace) -> None:
    """Print every model name (``--flow``) and data set (``--data``) with one line about it."""
    print("flows (--flow):")
    for name in registry.names():
        doc = (getattr(flows, name, None).__doc__ or "").strip().splitlines()
        print(f"  {name.lower():<11} {doc[0] if doc else ''}")
    print("datasets (--data, or the path of a .csv/.npy file):")
    for name, description in data.list_datasets():
        print(f"  {name:<14} {description}")
