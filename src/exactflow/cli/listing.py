"""``exactflow list``: the models, data sets and targets the other commands know by name."""

from __future__ import annotations

import argparse
from typing import Any

from .. import data, flows, registry, targets
from . import vae

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """The ``list`` subcommand."""
    sub.add_parser("list", help="list flow presets, data sets and vi targets")


def run(args: argparse.Namespace) -> None:
    """Print every flow (``--flow``), data set (``--data``) and target (``--target``)."""
    print("flows (--flow):")
    for name in registry.names():
        if name not in flows.__all__:
            continue
        doc = (getattr(flows, name).__doc__ or "").strip().splitlines()
        print(f"  {name.lower():<11} {doc[0] if doc else ''}")
    print(f"VAE posteriors (fit --model vae --posterior): {', '.join(vae.POSTERIORS)}")
    print("datasets (--data, or the path of a .csv/.npy file):")
    for name, description in data.list_datasets():
        print(f"  {name:<14} {description}")
    print("targets (vi --target, or module:function of your own with --dim):")
    for name in targets.names():
        try:
            target = targets.get(name)
        except ImportError as e:  # a target whose package is absent
            print(f"  {name:<14} (needs a package: {e})")
            continue
        print(f"  {name:<14} {target.dim}-D, {target.description}")
