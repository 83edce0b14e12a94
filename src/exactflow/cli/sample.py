"""``exactflow sample``: samples of a run's model to ``.npy``, ``.csv`` or a ``.png`` grid.

A flow's samples (a density run's, or the ``q`` of a variational-inference run, which needs no
target to sample), or a VAE's ``x ~ p(x|z), z ~ p(z)`` (``--mean``: the decoder's means).

``--temperature T`` scales a flow's base noise (``z ~ N(0, T²I)``; ``T < 1`` gives cleaner, less
varied samples, as in Glow). A class-conditional image run (``fit --conditional``) draws the class
``--class C``, or without it the classes in turn (``0, 1, …, K-1, 0, …``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plot
from ..atomic import temporaries, write_atomic
from ..models import Dequantized, LatentVariableModel
from . import arguments, image_runs
from .errors import CommandError
from .runs import load_model, owned_by_a_run, read_record

__all__ = ["MAX_GRID", "MAX_SAMPLES", "add_parser", "run"]

MAX_SAMPLES = 1_000_000  # default limit of -n; --max-samples raises it
MAX_GRID = 1024  # images in one PNG grid
SUFFIXES = (".npy", ".csv", ".png")


def add_parser(sub: Any) -> None:
    """The ``sample`` subcommand and its options."""
    p = sub.add_parser("sample", help="draw samples to .npy, .csv or a .png grid (images)")
    p.add_argument("run", help="run folder")
    p.add_argument("-n", type=arguments.count, default=1000, help="number of samples")
    p.add_argument("-o", "--output", required=True, help="file to write (.npy, .csv or .png)")
    p.add_argument("--seed", type=arguments.seed, default=0)
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--mean", action="store_true", help="VAE: the decoder's means, not draws")
    p.add_argument(
        "--temperature",
        type=arguments.temperature,
        default=1.0,
        help="flows: scale of the base noise (default 1; 0.7 gives cleaner images)",
    )
    p.add_argument(
        "--class",
        dest="label",
        type=arguments.nonnegative,
        help="class-conditional runs: the class to draw (default: every class in turn)",
    )
    p.add_argument(
        "--max-samples",
        type=arguments.count,
        default=MAX_SAMPLES,
        help=f"largest -n accepted (default {MAX_SAMPLES}; memory grows with it)",
    )


def _check_output(out: Path, args: argparse.Namespace, shape: list[int] | None) -> str:
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise CommandError(f"{out}: the output must end in .npy, .csv or .png, got {suffix!r}")
    if out.is_dir():
        raise CommandError(f"{out}: is a folder; give the file to write")
    if owned_by_a_run(out):
        raise CommandError(f"{out}: a file of a run folder; write the samples elsewhere")
    if suffix == ".png":
        if shape is None:
            raise CommandError(f"{out}: a PNG grid needs an image data set; use .npy or .csv")
        if args.n > MAX_GRID:
            raise CommandError(
                f"{out}: a PNG grid shows at most {MAX_GRID} images, got -n {args.n}"
            )
    return suffix


def run(args: argparse.Namespace) -> None:
    """Draw ``-n`` samples with ``--seed`` and write them atomically to ``-o``."""
    folder = Path(args.run)
    record = read_record(folder)
    if args.n > args.max_samples:
        raise CommandError(
            f"-n {args.n} is more than the limit of {args.max_samples} samples"
            " (raise it with --max-samples, memory permitting)"
        )
    out = Path(args.output)
    shape = record.get("image_shape")
    suffix = _check_output(out, args, shape)
    model = load_model(folder, args.checkpoint)
    table = isinstance(model, Dequantized)  # discrete columns: drawn as integers
    is_vae = isinstance(model, LatentVariableModel) and not table
    if args.mean and not is_vae:
        raise CommandError("--mean applies to VAE runs only: a flow's samples are its draws")
    if is_vae and args.temperature != 1.0:
        raise CommandError("--temperature applies to flows only, not to a VAE run")
    classes = 0 if is_vae else image_runs.class_count(model)
    if args.label is not None and not classes:
        raise CommandError(
            "--class applies to class-conditional runs only (fit --conditional); this run's"
            " model is not conditional"
        )
    if args.label is not None and args.label >= classes:
        raise CommandError(f"--class {args.label}: the run's classes are 0..{classes - 1}")
    width = math.prod(model.event_shape) if is_vae else model.features
    if shape is not None and math.prod(shape) != width:
        raise CommandError(
            f"{folder / 'run.json'}: image_shape {shape} has {math.prod(shape)} values but the"
            f" model has {width}"
        )
    torch.manual_seed(args.seed)
    with torch.no_grad():
        chunks = []
        for start in range(0, args.n, 65536):
            m = min(65536, args.n - start)
            if is_vae:
                chunks.append(model.sample(m, mean=args.mean).flatten(1))
                continue
            if classes:  # one context per draw: the batch shape is the draws'
                context = image_runs.class_contexts(model, start, m, args.label)
                drawn = model.sample((), context, args.temperature)
            else:
                draws = m if table else (m,)
                drawn = model.sample(draws, temperature=args.temperature)
            chunks.append(drawn.flatten(1))
    samples = torch.cat(chunks).double().numpy()
    for stale in temporaries(out):  # left by a killed sample writing the same file
        stale.unlink(missing_ok=True)
    if suffix == ".png":
        grid = torch.from_numpy(samples).reshape(-1, *shape)
        plot.image_grid(out, grid, title=f"{args.n} samples")
    elif suffix == ".npy":
        write_atomic(out, lambda f: np.save(f, samples), binary=True)
    else:
        write_atomic(out, lambda f: np.savetxt(f, samples, delimiter=",", fmt="%.8g"), binary=False)
    print(f"wrote {args.n} samples to {out}")
