"""``exactflow eval``: the test figures of a run, printed and kept in ``RUN/eval.json``.

A flow fitted to data: its exact test NLL, bits/dim, KL gap and exactness certificate. An image
run's bits/dim are those of the dequantized test images on the original 0..L-1 scale,
``(NLL + D log L)/(D log 2)`` (:func:`exactflow.data.bits_per_dim`); a class-conditional run is
evaluated on each image's own label. A VAE:
its test ELBO and the importance-sampling estimate of ``log p(x)`` with ``--k`` draws per point.
A variational-inference run: the estimate of ``log Z``, the ELBO and ``KL(q‖p)``
(``--target`` again for a ``module:function`` target).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..flow import DTYPES
from . import arguments, discrete, targets, vae
from .datasets import dataset_for
from .errors import CommandError, one_line
from .lock import RunLock
from .report import (
    VI_SAMPLES,
    certificate_failure,
    density_report,
    format_report,
    format_vi_report,
    vi_report,
    write_report,
)
from .runs import EVAL_FILE, kind, load_model, read_record

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """The ``eval`` subcommand and its options."""
    p = sub.add_parser(
        "eval", help="test NLL and exactness of a flow; ELBO and log p(x) estimate of a VAE; log Z"
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="evaluate on another data set of the same width")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument(
        "--k",
        type=arguments.count,
        help=f"VAE: draws per point for the log p(x) estimate (default {vae.EVAL_K})",
    )
    p.add_argument("--target", help="vi run: its module:function target, named again")
    p.add_argument("--dim", type=arguments.count, help="vi run: the target's dimension")
    p.add_argument(
        "--samples",
        type=arguments.count,
        help=f"vi run: draws of q for the log Z estimate (default {VI_SAMPLES})",
    )
    arguments.add_allow_pickle(p)


def _refuse(args: argparse.Namespace, keys: tuple[str, ...], what: str) -> None:
    for key in keys:
        if getattr(args, key) not in (None, "test"):
            raise CommandError(f"--{key} does not apply to {what}")


def run(args: argparse.Namespace) -> None:
    """Print the report; the run's own test report also goes to ``RUN/eval.json``."""
    folder = Path(args.run)
    record = read_record(folder)
    model = kind(record)
    if model == "vi":
        _refuse(args, ("data", "split", "k"), "a variational-inference run (it has no data)")
        dtype = DTYPES[record["train"].get("dtype", "float32")]
        target = targets.of_run(record["target"], args.target, args.dim, folder, dtype)
        flow = load_model(folder, args.checkpoint, target.dim)
        report = vi_report(flow, target, args.samples or VI_SAMPLES)
        line = format_vi_report(report)
    else:
        what = f"a {'VAE' if model == 'vae' else 'density'} run"
        bound = model == "flow" and discrete.uses(record["flow"])  # a bound, like a VAE's
        _refuse(
            args, ("target", "dim", "samples") + (() if model == "vae" or bound else ("k",)), what
        )
        ds, _ = dataset_for(record, args.data, args.allow_pickle)
        fitted = load_model(folder, args.checkpoint, ds.features)
        if model == "vae":
            report = vae.evaluate(fitted, ds, args.split, args.k or vae.EVAL_K)
            line = vae.format_report(ds.name, report)
        elif bound:
            report = discrete.evaluate(fitted, ds, args.split, args.k or vae.EVAL_K)
            line = discrete.format_report(ds.name, report)
        else:
            report = density_report(fitted, ds, args.split)
            line = format_report(ds.name, report)
    print(line, flush=True)
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
