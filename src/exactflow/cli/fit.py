"""``exactflow fit``: fit a flow by maximum likelihood into a run folder.

A new run refuses a folder that already holds one unless ``--resume`` (continue it) or
``--overwrite`` (replace it: the new run is built in a fresh hidden sibling folder and swapped in
only once it has finished with a checkpoint, so a failed fit leaves the old run as it was). On
``--resume`` the limits and step sizes (``--epochs``, ``--steps``, ``--lr``, ``--clip-grad``,
``--patience``, ...) may change and are recorded in ``run.json``; what defines the model and its
data (``--flow``, ``--hidden``, ``--data``, ``--batch-size``, ``--dtype``, ...) may not.

The flow is built after seeding torch with ``--seed``, so the same command gives the same run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint, metrics, objectives, registry
from ..atomic import write_atomic
from ..data import Dataset
from ..train import TrainConfig, TrainingWorsenedWarning, fit
from ..train.config import resolve_device
from . import arguments
from .datasets import data_name, data_options, load_data
from .errors import CommandError, one_line
from .figures import draw
from .lock import RunLock, remove_stale_siblings, staging_folder, swap_in
from .report import certificate_failure, format_report, write_report
from .runs import RUN_FILE, RUN_FILES, holds_run, read_record, write_json

__all__ = ["add_parser", "run"]

# Settings of a new run that the command line does not give.
DEFAULTS: dict[str, Any] = {
    "data": "moons",
    "flow": "nsf",
    "batch_size": 256,
    "lr": 1e-3,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "schedule": "cosine",
    "clip_grad": 5.0,
    "patience": 20,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
    "compile": False,
    "no_standardize": False,
}
EPOCHS = 100  # when neither --epochs nor --steps is given
# What defines the model and its data: fixed once a run has started. (option, where in run.json)
FLOW_OPTIONS = ("transforms", "hidden", "bins", "bound", "permutation", "coupling")
DATA_OPTIONS = ("n_train", "n_val", "n_test", "root", "columns", "header")
TRAIN_FIXED = ("batch_size", "dtype", "optimizer", "schedule")
# What may change on --resume (it takes effect, and run.json records it).
CHANGEABLE = ("lr", "weight_decay", "clip_grad", "patience", "epochs", "steps",
              "checkpoint_every", "device", "compile")  # fmt: skip


def _presets() -> dict[str, str]:
    return {name.lower(): name for name in registry.names()}


def add_parser(sub: Any) -> None:
    """The ``fit`` subcommand and its options."""
    p = sub.add_parser("fit", help="fit a flow by maximum likelihood")
    p.add_argument("--data", help="data set name or table file (see 'list'; default moons)")
    p.add_argument("--flow", type=str.lower, help="model name (see 'list'; default nsf)")
    p.add_argument("--out", required=True, type=arguments.out_folder, help="run folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out")
    mode.add_argument(
        "--overwrite", action="store_true", help="replace the run in --out once the new one is done"
    )
    g = p.add_argument_group("flow")
    g.add_argument("--transforms", type=arguments.count, help="number of steps")
    g.add_argument("--hidden", type=arguments.hidden, help="conditioner hidden widths, e.g. 64,64")
    g.add_argument("--bins", type=arguments.count, help="spline bins (nsf)")
    g.add_argument("--bound", type=float, help="spline tail bound (nsf)")
    g.add_argument("--coupling", action="store_true", default=None, help="coupling layers")
    g.add_argument("--permutation", choices=("reverse", "random", "lu"), help="mixing")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=arguments.count)
    g.add_argument("--steps", type=arguments.count)
    g.add_argument("--batch-size", type=arguments.count, help="default 256")
    g.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    g.add_argument("--optimizer", choices=("adam", "adamw"))
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=("cosine", "plateau", "none"))
    g.add_argument("--clip-grad", type=float, help="largest gradient norm (default 5; 0: off)")
    g.add_argument(
        "--patience", type=arguments.nonnegative, help="epochs without improvement (20; 0: off)"
    )
    g.add_argument("--seed", type=arguments.seed, help="seed of data, flow and training (0)")
    g.add_argument("--dtype", choices=("float32", "float64"))
    g.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    g.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help="torch.compile the loss"
    )
    g.add_argument("--checkpoint-every", type=arguments.count, help="steps between checkpoints")
    g.add_argument(
        "--no-standardize", action="store_true", default=None, help="train on raw features"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-plots", action="store_true", help="skip the figures")
    arguments.add_data_arguments(p)


# ---------------------------------------------------------------------------- settings
def _given(args: argparse.Namespace, key: str) -> Any:
    value = getattr(args, key)
    return DEFAULTS.get(key) if value is None else value


def _train_settings(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
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


def _new_record(args: argparse.Namespace, out: Path) -> tuple[dict, TrainConfig]:
    presets = _presets()
    flow = _given(args, "flow")
    if flow not in presets:
        raise CommandError(f"--flow {flow}: unknown; expected one of {sorted(presets)}")
    epochs = args.epochs if args.epochs is not None or args.steps is not None else EPOCHS
    train = {key: _given(args, key) for key in (*TRAIN_FIXED, *CHANGEABLE) if key in DEFAULTS}
    for key in ("clip_grad", "patience"):  # 0 turns them off
        train[key] = train[key] or None
    train.update(
        epochs=epochs,
        steps=args.steps,
        checkpoint_every=args.checkpoint_every,
        seed=_given(args, "seed"),
        standardize=not _given(args, "no_standardize"),
        out=str(out.absolute()),
    )
    config = TrainConfig(**train)
    kwargs = {key: getattr(args, key) for key in FLOW_OPTIONS if getattr(args, key) is not None}
    record = {
        "data": {
            "name": data_name(_given(args, "data")),
            "options": data_options(args),
            "seed": config.seed,
        },
        "image_shape": None,
        "flow": {"name": presets[flow], "kwargs": kwargs},
        "train": config.to_dict(),
    }
    return record, config


def _refuse_changes(args: argparse.Namespace, record: dict) -> None:
    """On --resume, refuse an option that would change what the run trains."""
    recorded: dict[str, Any] = {
        "data": record["data"]["name"],
        "seed": record["data"]["seed"],
        "flow": record["flow"]["name"].lower(),
        "no_standardize": not record["train"].get("standardize", False),
    }
    recorded.update({k: record["data"]["options"].get(k) for k in DATA_OPTIONS})
    recorded.update({k: record["flow"]["kwargs"].get(k) for k in FLOW_OPTIONS})
    recorded.update({k: record["train"].get(k) for k in TRAIN_FIXED})
    given = data_options(args)
    given.update({k: getattr(args, k) for k in recorded if k not in DATA_OPTIONS})
    if args.data is not None:
        given["data"] = data_name(args.data)
    for key, value in given.items():
        if value is not None and value != recorded[key]:
            option = "--" + key.replace("_", "-")
            was = "the default" if recorded[key] is None else repr(recorded[key])
            raise CommandError(
                f"{option} {value!r} differs from the run's {was}, and it cannot change on"
                " --resume (only "
                + ", ".join("--" + k.replace("_", "-") for k in CHANGEABLE)
                + " can); start a new run with another --out or --overwrite"
            )


# ---------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> None:
    """Fit, evaluate on the test split, draw; see the module docstring."""
    out = Path(args.out)
    if args.device is not None:
        try:
            resolve_device(args.device)
        except ValueError as e:
            raise CommandError(f"--device {args.device}: {e}") from None
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: exists and is not a folder")
    if args.resume:
        _resume(args, out)
        return
    if out.is_dir() and holds_run(out) and not args.overwrite:
        raise CommandError(
            f"{out} already holds a run; continue it with --resume, replace it with --overwrite,"
            " or choose another --out"
        )
    record, config = _new_record(args, out)
    ds, image_shape = load_data(
        record["data"]["name"],
        config.seed,
        record["data"]["options"],
        args.allow_pickle,
        config.dtype,
    )
    record["image_shape"] = image_shape
    record["flow"]["kwargs"] = {"features": ds.features, **record["flow"]["kwargs"]}
    _check_splits(ds)
    try:
        model = _build(record["flow"], config.seed)
    except ValueError as e:
        raise CommandError(f"--flow {_given(args, 'flow')}: {one_line(e)}") from None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        if holds_run(out) and not args.overwrite:  # another fit finished in the meantime
            raise CommandError(f"{out} already holds a run; --resume or --overwrite it")
        if not holds_run(out):
            _fit_into(model, out, out, record, config, ds, image_shape, args, created=created)
            return
        remove_stale_siblings(out)
        staging = staging_folder(out)
        with RunLock(staging) as lock:
            staged = TrainConfig.from_dict({**config.to_dict(), "out": str(staging)})
            try:
                _fit_into(model, staging, out, record, staged, ds, image_shape, args, created=True)
            except BaseException as e:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(e, Exception):
                    raise CommandError(
                        f"the new fit failed, so {out} keeps the old run: {one_line(e)}"
                    ) from e
                raise
            swap_in(staging, out)
            lock.folder = out  # the lock moved with the folder; the old one left with the old run


def _resume(args: argparse.Namespace, out: Path) -> None:
    read_record(out)  # the folder must be a run before it is locked
    with RunLock(out):
        record = read_record(out)
        _refuse_changes(args, record)
        train = {**record["train"], **_train_settings(args, CHANGEABLE), "out": str(out.absolute())}
        try:
            config = TrainConfig.from_dict(train)
        except (TypeError, ValueError) as e:
            raise CommandError(f"{out / 'run.json'}: train: {one_line(e)}") from None
        record["train"] = config.to_dict()
        source = record["data"]
        ds, image_shape = load_data(source["name"], source["seed"], source["options"],
                                    args.allow_pickle, config.dtype)  # fmt: skip
        if image_shape != record["image_shape"]:
            raise CommandError(
                f"{out / 'run.json'}: image_shape {record['image_shape']} does not match the"
                f" data ({image_shape})"
            )
        _check_splits(ds)
        model = _build(record["flow"], config.seed)
        _fit_into(
            model, out, out, record, config, ds, image_shape, args, created=False, resume=True
        )


def _check_splits(ds: Dataset) -> None:
    if len(ds.test) == 0:
        raise CommandError(
            f"the test split of {ds.name} is empty (--n-test 0?); fit reports the test NLL,"
            " so it needs at least one test point"
        )


def _build(spec: dict, seed: int) -> Any:
    """The flow of ``spec``, built after seeding: its initial weights are part of the run."""
    torch.manual_seed(seed)
    return registry.build(spec)


def _fit_into(
    model: Any,
    folder: Path,
    out: Path,
    record: dict,
    config: TrainConfig,
    ds: Dataset,
    image_shape: list[int] | None,
    args: argparse.Namespace,
    *,
    created: bool,
    resume: bool = False,
) -> None:
    """Train in ``folder`` (``out`` itself, or its replacement); evaluate; draw."""
    spec = record["flow"]
    print(f"fitting {spec['name']} to {ds.name} ({len(ds.train)} train points, {ds.features}-D)")
    previous = (folder / RUN_FILE).read_bytes() if resume else None
    last = _stamp(folder / "last.safetensors")
    write_json(folder / RUN_FILE, record)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TrainingWorsenedWarning)
            result = fit(
                model,
                objectives.NLL(),
                data=ds.train,
                val=ds.val,
                config=config,
                spec=spec,
                resume=resume,
                progress=not args.no_progress,
            )
    except BaseException:
        if previous is not None and _stamp(folder / "last.safetensors") == last:
            # Nothing was trained with the new settings: the record says what was.
            write_atomic(folder / RUN_FILE, lambda f: f.write(previous))
        elif not resume and not (folder / "last.safetensors").exists():
            _remove_new_run(folder, created)
        raise
    if result.compile_seconds is not None:
        print(f"compiled the loss in {result.compile_seconds:.1f} s (first step included)")
    best = checkpoint.load(folder / "best.safetensors").flow
    report = metrics.evaluate(best, ds)
    report["best_val_nll"] = result.best_val
    report["best_epoch"] = result.best_epoch
    write_report(folder, report)
    print(format_report(ds.name, report))
    for warning in caught:  # said after the figures it qualifies, on stderr like errors
        if issubclass(warning.category, TrainingWorsenedWarning):
            print(f"exactflow fit: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if not args.no_plots:
        for path in draw(folder, best, ds, image_shape, config.seed):
            print(f"wrote {out / path.relative_to(folder)}")
    failure = certificate_failure(report)
    if failure is not None:  # the run is kept: its numbers are not to be trusted
        raise CommandError(f"exactness certificate FAILED: {failure}")


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
