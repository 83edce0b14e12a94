"""What every training command (``fit``, ``vi``) does to its run folder.

A new run refuses a folder that already holds one unless ``--resume`` (continue it) or
``--overwrite`` (replace it: the new run is built in a fresh hidden sibling folder and swapped in
only once it has finished with a checkpoint, so a failed run leaves the old one as it was). A run
that fails before its first checkpoint leaves nothing behind; a failed ``--resume`` that trained
nothing keeps the record it had. On ``--resume`` only the limits and step sizes may change
(:func:`refuse_changes`).

The commands keep their own model, data and objective; they hand this module a callable that
trains (so tests can replace the trainer in the command's own module).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import flows, registry
from ..atomic import write_atomic
from ..train import FitResult, TrainConfig, TrainingWorsenedWarning
from ..train.config import resolve_device
from ..train.distributed import finish as finish_processes
from ..train.distributed import launch
from . import arguments
from .errors import CommandError, one_line
from .lock import RunLock, remove_stale_siblings, staging_folder, swap_in
from .report import write_report
from .runs import RUN_FILE, RUN_FILES, holds_run, read_record, write_json

__all__ = [
    "add_flow_options",
    "add_run_options",
    "add_training_options",
    "check_out",
    "config_in",
    "finish",
    "given",
    "presets",
    "refuse_changes",
    "resume",
    "resume_config",
    "say_warnings",
    "start",
    "train",
    "train_settings",
    "vector_coupling",
]


# Short ``--flow`` names of presets whose class name is longer.
ALIASES = {"residual": "ResidualFlow"}


def presets() -> dict[str, str]:
    """Flow presets by their lower-case ``--flow`` name (and the short aliases).

    Example:
        >>> presets()["iaf"], presets()["residual"]
        ('IAF', 'ResidualFlow')

    """
    names = {name.lower(): name for name in registry.names() if name in flows.__all__}
    return names | {alias: name for alias, name in ALIASES.items() if name in names.values()}


def given(args: argparse.Namespace, key: str, defaults: Mapping[str, Any]) -> Any:
    """The option ``key`` as given, else its default (``None`` without one).

    Example:
        >>> given(argparse.Namespace(lr=None), "lr", {"lr": 1e-3})
        0.001

    """
    value = getattr(args, key)
    return defaults.get(key) if value is None else value


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--out`` and what to do with a run already there (``--resume``, ``--overwrite``)."""
    p.add_argument("--out", required=True, type=arguments.out_folder, help="run folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out")
    mode.add_argument(
        "--overwrite", action="store_true", help="replace the run in --out once the new one is done"
    )


def add_flow_options(g: Any) -> None:
    """The sizes of a flow preset (recorded in ``run.json``; fixed on ``--resume``)."""
    g.add_argument(
        "--transforms", type=arguments.count, help="number of steps (image flows: per level)"
    )
    g.add_argument(
        "--hidden",
        type=arguments.hidden,
        help="hidden widths, e.g. 64,64 (glow: one channel count, e.g. 256)",
    )
    g.add_argument("--bins", type=arguments.count, help="spline bins (nsf; glow --coupling spline)")
    g.add_argument("--bound", type=float, help="spline tail bound (nsf; glow --coupling spline)")
    g.add_argument(
        "--coupling",
        nargs="?",
        const=True,
        default=None,
        type=arguments.coupling,
        metavar="{" + ",".join(arguments.COUPLINGS) + "}",
        help="nsf: coupling layers (the flag alone); glow: the coupling map (default affine)",
    )
    g.add_argument("--permutation", choices=("reverse", "random", "lu"), help="mixing")


def add_training_options(g: Any, patience: str) -> None:
    """Step sizes, seed, precision and device, checkpoints, progress and figures."""
    g.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    g.add_argument("--optimizer", choices=("adam", "adamw"))
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=("cosine", "plateau", "none"))
    g.add_argument("--clip-grad", type=float, help="largest gradient norm (default 5; 0: off)")
    g.add_argument("--patience", type=arguments.nonnegative, help=patience)
    g.add_argument("--seed", type=arguments.seed, help="seed of data, model and training (0)")
    g.add_argument("--dtype", choices=("float32", "float64"))
    g.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the training step (loss, clipping, update)",
    )
    g.add_argument("--checkpoint-every", type=arguments.count, help="steps between checkpoints")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-plots", action="store_true", help="skip the figures")


def vector_coupling(args: argparse.Namespace) -> None:
    """Refuse ``--coupling MAP`` for a vector flow, whose ``--coupling`` is a flag."""
    if isinstance(args.coupling, str):
        raise CommandError(
            f"--coupling {args.coupling} chooses the coupling map of an image flow (--flow glow);"
            " for a vector flow (nsf) --coupling is a flag, given alone"
        )


def check_out(args: argparse.Namespace) -> Path:
    """``--out`` as a path, after checking ``--device`` and that ``--out`` is not a file.

    Under torchrun only rank 0 refuses a folder holding a run: it may already have written the
    new run's record when another rank gets here.
    """
    out = Path(args.out)
    try:
        main = launch().main
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.device is not None:
        try:
            resolve_device(args.device)
        except ValueError as e:
            raise CommandError(f"--device {args.device}: {e}") from None
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: exists and is not a folder")
    if main and not args.resume and out.is_dir() and holds_run(out) and not args.overwrite:
        raise CommandError(
            f"{out} already holds a run; continue it with --resume, replace it with --overwrite,"
            " or choose another --out"
        )
    return out


def train_settings(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    """TrainConfig fields from the options given (``0`` turns clipping/patience off)."""
    settings: dict[str, Any] = {}
    for key in keys:
        value = getattr(args, key)
        if value is None:
            continue
        if key in ("clip_grad", "patience") and value == 0:
            value = None
        settings[key] = value
    return settings


def config_in(config: TrainConfig, folder: Path) -> TrainConfig:
    """``config`` writing into ``folder``."""
    return TrainConfig.from_dict({**config.to_dict(), "out": str(folder.absolute())})


def resume_config(args: argparse.Namespace, record: dict, out: Path, changeable: tuple[str, ...]):
    """The recorded training settings with the changeable ones given on the command line."""
    train = {**record["train"], **train_settings(args, changeable), "out": str(out.absolute())}
    try:
        return TrainConfig.from_dict(train)
    except (TypeError, ValueError) as e:
        raise CommandError(f"{out / RUN_FILE}: train: {one_line(e)}") from None


def refuse_changes(
    given: Mapping[str, Any], recorded: Mapping[str, Any], changeable: tuple[str, ...]
) -> None:
    """On ``--resume``, refuse an option (``given``, ``None``: not given) that differs."""
    for key, value in given.items():
        if value is not None and value != recorded[key]:
            option = "--" + key.replace("_", "-")
            was = "the default" if recorded[key] is None else repr(recorded[key])
            raise CommandError(
                f"{option} {value!r} differs from the run's {was}, and it cannot change on"
                " --resume (only "
                + ", ".join("--" + k.replace("_", "-") for k in changeable)
                + " can); start a new run with another --out or --overwrite"
            )


def start(out: Path, overwrite: bool, body: Callable[[Path, bool], None]) -> None:
    """Run ``body(folder, created)`` under the lock of ``out``, or of its replacement.

    ``folder`` is ``out`` itself for a new run; with ``overwrite`` and a run in ``out``, a fresh
    hidden sibling that replaces ``out`` once ``body`` has returned. ``created`` says whether the
    folder was made for this run (a failed run then removes it whole). Under torchrun only rank 0
    takes the lock and writes; the other ranks train with it (``body(out, False)``, writing
    nothing) and wait for it at the end.
    """
    if launch().main:
        _start_locked(out, overwrite, body)
    else:
        body(out, False)
    finish_processes()


def _start_locked(out: Path, overwrite: bool, body: Callable[[Path, bool], None]) -> None:
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        if holds_run(out) and not overwrite:  # another run finished in the meantime
            raise CommandError(f"{out} already holds a run; --resume or --overwrite it")
        if not holds_run(out):
            body(out, created)
            return
        remove_stale_siblings(out)
        staging = staging_folder(out)
        with RunLock(staging) as lock:
            try:
                body(staging, True)
            except BaseException as e:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(e, Exception):
                    raise CommandError(
                        f"the new fit failed, so {out} keeps the old run: {one_line(e)}"
                    ) from e
                raise
            swap_in(staging, out)
            lock.folder = out  # the lock moved with the folder; the old one left with the old run


def resume(out: Path, body: Callable[[dict], None]) -> None:
    """Run ``body(record)`` on the checked record of the run in ``out``, under its lock.

    Under torchrun only rank 0 takes the lock; the other ranks read the record and train.
    """
    if launch().main:
        read_record(out)  # the folder must be a run before it is locked
        with RunLock(out):
            body(read_record(out))
    else:
        body(read_record(out))
    finish_processes()


def train(
    folder: Path,
    record: dict,
    trainer: Callable[[], FitResult],
    *,
    created: bool,
    resume: bool = False,
) -> tuple[FitResult, list[warnings.WarningMessage]]:
    """Write ``record`` to ``folder/run.json`` and call ``trainer``; clean up if it fails.

    Returns:
        The trainer's result and the warnings it raised (say them with :func:`say_warnings`
        once the results they qualify are printed). Under torchrun, ranks other than 0 only
        train: they write nothing.

    """
    if not launch().main:
        return trainer(), []
    previous = (folder / RUN_FILE).read_bytes() if resume else None
    last = _stamp(folder / "last.safetensors")
    write_json(folder / RUN_FILE, record)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TrainingWorsenedWarning)
            result = trainer()
    except BaseException:
        if previous is not None and _stamp(folder / "last.safetensors") == last:
            # Nothing was trained with the new settings: the record says what was.
            write_atomic(folder / RUN_FILE, lambda f: f.write(previous))
        elif not resume and not (folder / "last.safetensors").exists():
            _remove_new_run(folder, created)
        raise
    if result.compile_payoff is not None:
        print(result.compile_payoff.summary())
    elif result.compile_seconds is not None:
        print(f"compiled the step in {result.compile_seconds:.1f} s (first step included)")
    return result, caught


def finish(
    folder: Path,
    out: Path,
    result: FitResult,
    report: dict[str, Any],
    line: str,
    caught: list[warnings.WarningMessage],
    command: str,
    draw: Callable[[], list[Path]] | None,
) -> None:
    """Close a training command: keep the report, print it, say the warnings, draw.

    The report gains the best validation metric and its epoch and goes to ``eval.json``; the
    trainer's warnings follow the line they qualify; ``draw`` (``None``: ``--no-plots``) draws.
    """
    report[f"best_val_{result.metric}"] = result.best_val
    report["best_epoch"] = result.best_epoch
    write_report(folder, report)
    print(line)
    say_warnings(caught, command)
    for path in draw() if draw is not None else ():
        print(f"wrote {out / path.relative_to(folder)}")


def say_warnings(caught: list[warnings.WarningMessage], command: str) -> None:
    """Say the trainer's warnings on stderr, after the figures they qualify."""
    for warning in caught:
        if issubclass(warning.category, TrainingWorsenedWarning):
            print(f"exactflow {command}: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def _stamp(path: Path) -> tuple[int, int] | None:
    """When and how big ``path`` is (``None`` if absent): whether a checkpoint was written."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_size


def _remove_new_run(folder: Path, created: bool) -> None:
    """A run that failed before its first checkpoint leaves nothing behind."""
    if created:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
