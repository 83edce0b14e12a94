"""The ``exactflow`` command: fit, evaluate, sample from and draw flows from the shell.

A run lives in one folder (``--out``)::

    run.json            what was fitted: data (name, options, seed), flow preset, training config
    best.safetensors    best weights by validation NLL (what eval/sample/plot use)
    last.safetensors    latest weights and training state (what --resume continues from)
    metrics.csv         one row per epoch
    eval.json           test NLL, bits/dim, KL gap (written by fit and by eval)
    figures/*.png       pictures (written by fit and by plot)

Errors are one line on stderr and exit code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from . import checkpoint, data, flows, plot
from .atomic import write_atomic
from .flow import Flow, placement
from .train import NonFiniteLossError, TrainConfig, fit

__all__ = ["main"]

PRESETS = {name.lower(): name for name in flows.__all__}
RUN_FILE = "run.json"
EVAL_FILE = "eval.json"


class CommandError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------- files
def _write_json(path: Path, value: dict) -> None:
    write_atomic(path, lambda f: json.dump(value, f, indent=2), binary=False)


def _read_run(run: Path) -> dict:
    if not run.is_dir():
        raise CommandError(f"{run}: no such run folder (make one with 'exactflow fit --out {run}')")
    path = run / RUN_FILE
    if not path.is_file():
        raise CommandError(f"{path}: missing; {run} is not a folder written by 'exactflow fit'")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CommandError(f"{path}: not valid JSON ({e})") from None
    if not (
        isinstance(record, dict)
        and isinstance(record.get("data"), dict)
        and {"name", "options", "seed"} <= set(record["data"])
        and isinstance(record.get("flow"), dict)
        and isinstance(record.get("train"), dict)
    ):
        raise CommandError(
            f"{path}: not a run record (expected an object with 'data' (name, options, seed),"
            " 'flow' and 'train')"
        )
    return record


def _load_model(run: Path, which: str = "best", ds: data.Dataset | None = None) -> Flow:
    """The flow of ``run/<which>.safetensors``; with ``ds``, check that it has the same width."""
    path = run / f"{which}.safetensors"
    if not path.exists():
        raise CommandError(f"{path}: missing; the run has no {which} checkpoint yet")
    flow = checkpoint.load(path).flow
    if ds is not None and ds.features != flow.features:
        raise CommandError(
            f"{path} models {flow.features}-D points but the data {ds.name} has"
            f" {ds.features} columns"
        )
    return flow


# ---------------------------------------------------------------------------- data
def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("n_train", "n_val", "n_test", "root"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if getattr(args, "columns", None):
        options["columns"] = [int(c) if c.lstrip("-").isdigit() else c for c in args.columns]
    if getattr(args, "header", None) is not None:
        options["header"] = args.header
    return options


def _load_data(name: str, seed: int, options: dict[str, Any]) -> tuple[data.Dataset, list | None]:
    """Load a data set as rows ``(N, D)``; images are flattened and their shape returned."""
    if name.lower() == "digits":
        options = {**options, "image": True}
    try:
        ds = data.load(name, seed=seed, **options)
    except TypeError as e:
        given = ", ".join(f"--{k.replace('_', '-')}" for k in options if k != "image")
        raise CommandError(
            f"--data {name} does not take the options given ({given}): {e}"
        ) from None
    if ds.kind != "image":
        return ds, None
    image_shape = list(ds.train.shape[1:])
    flat = {split: t.flatten(1) for split, t in ds.splits().items()}
    return (
        data.Dataset(
            name=ds.name,
            kind="tabular",
            train=flat["train"],
            val=flat["val"],
            test=flat["test"],
            density=ds.density,
            levels=ds.levels,
            feature_names=ds.feature_names,
            description=ds.description,
        ),
        image_shape,
    )


def _dataset_for(record: dict, override: str | None = None) -> tuple[data.Dataset, list | None]:
    source = record["data"]
    name = override or source["name"]
    options = source["options"] if override is None else {}
    return _load_data(name, source["seed"], options)


# ---------------------------------------------------------------------------- evaluation
def evaluate(flow: Flow, ds: data.Dataset, split: str = "test") -> dict[str, float]:
    """Mean NLL (nats per point) with its standard error, plus bits/dim and KL gap if known."""
    dtype = placement(flow)[0]
    x = getattr(ds, split).to(dtype)
    flow.eval()
    with torch.no_grad():
        nll = -torch.cat([flow.log_prob(chunk) for chunk in x.split(4096)]).double()
    report: dict[str, float] = {
        "split": split,
        "points": len(x),
        "nll": float(nll.mean()),
        "nll_stderr": float(nll.std() / math.sqrt(len(x))) if len(x) > 1 else math.nan,
    }
    if ds.levels is not None:
        report["bits_per_dim"] = float(data.bits_per_dim(report["nll"], x.shape[1], ds.levels))
    if ds.density is not None:
        entropy = ds.entropy
        report["entropy"] = entropy.value
        report["entropy_error"] = entropy.error
        report["entropy_method"] = entropy.method
        report["kl_gap"] = report["nll"] - entropy.value
    return report


def _format_eval(name: str, report: dict) -> str:
    parts = [f"{name}: test NLL {report['nll']:.4f} ± {report['nll_stderr']:.4f} nats"]
    if "bits_per_dim" in report:
        parts.append(f"{report['bits_per_dim']:.4f} bits/dim")
    if "kl_gap" in report:
        parts.append(
            f"true entropy {report['entropy']:.4f} ({report['entropy_method']}),"
            f" KL gap {report['kl_gap']:.4f} nats"
        )
    return ", ".join(parts)


# ---------------------------------------------------------------------------- pictures
def _draw(run: Path, flow: Flow, ds: data.Dataset, image_shape: list | None, seed: int) -> list:
    figures = run / "figures"
    torch.manual_seed(seed)
    n = min(len(ds.test), 5000)
    samples = flow.sample((n,))
    written = []
    if ds.features == 2:
        written.append(
            plot.density_2d(
                figures / "density.png",
                flow.log_prob,
                ds.test,
                samples,
                true_log_density=ds.log_density,
                title=ds.name,
            )
        )
    elif image_shape is None:
        written.append(
            plot.pairwise(
                figures / "pairwise.png",
                ds.test,
                samples,
                names=list(ds.feature_names) if ds.feature_names else None,
                title=f"{ds.name}: data (blue, below) vs samples (orange, above)",
            )
        )
    if image_shape is not None:
        shape = (-1, *image_shape)
        written.append(
            plot.image_grid(
                figures / "samples.png", samples[:64].reshape(shape), title=f"{ds.name}: samples"
            )
        )
        written.append(
            plot.image_grid(
                figures / "data.png", ds.test[:64].reshape(shape), title=f"{ds.name}: test data"
            )
        )
    metrics = run / "metrics.csv"
    if metrics.is_file():
        written.append(plot.training_curves(figures / "training.png", metrics, title=ds.name))
    return written


# ---------------------------------------------------------------------------- commands
def _flow_kwargs(args: argparse.Namespace, features: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"features": features}
    if args.transforms is not None:
        kwargs["transforms"] = args.transforms
    if args.hidden is not None:
        kwargs["hidden"] = list(args.hidden)
    for key in ("bins", "bound", "permutation"):
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    if args.coupling:
        kwargs["coupling"] = True
    return kwargs


def cmd_fit(args: argparse.Namespace) -> None:
    preset = PRESETS[args.flow]
    run = Path(args.out)
    options = _data_options(args)
    if args.resume:
        record = _read_run(run)
        ds, image_shape = _dataset_for(record)
        spec = record["flow"]
        # The folder may have moved since the run started: it is where the run lives now.
        config = TrainConfig.from_dict(
            {**record["train"], **_train_overrides(args), "out": str(run)}
        )
    else:
        ds, image_shape = _load_data(args.data, args.seed, options)
        spec = {"preset": preset, "kwargs": _flow_kwargs(args, ds.features)}
        config = TrainConfig(**_train_options(args), out=str(run))
        record = {
            "data": {"name": args.data, "options": options, "seed": args.seed},
            "image_shape": image_shape,
            "flow": spec,
            "train": config.to_dict(),
        }
    try:
        flow = getattr(flows, spec["preset"])(**spec["kwargs"])
    except TypeError as e:
        raise CommandError(f"--flow {args.flow}: {e}") from None
    print(f"fitting {spec['preset']} to {ds.name} ({len(ds.train)} train points, {ds.features}-D)")
    _write_json(run / RUN_FILE, record)
    result = fit(
        flow,
        ds.train,
        ds.val,
        config,
        spec=spec,
        resume=args.resume,
        progress=not args.no_progress,
    )
    model = checkpoint.load(run / "best.safetensors").flow
    report = evaluate(model, ds)
    report["best_val_nll"] = result.best_val_nll
    report["best_epoch"] = result.best_epoch
    _write_json(run / EVAL_FILE, report)
    print(_format_eval(ds.name, report))
    if not args.no_plots:
        for path in _draw(run, model, ds, image_shape, args.seed):
            print(f"wrote {path}")


def _train_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": args.schedule,
        "epochs": args.epochs,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "clip_grad": args.clip_grad if args.clip_grad > 0 else None,
        "patience": _patience(args.patience if args.patience is not None else 20),
        "seed": args.seed,
        "dtype": args.dtype,
        "checkpoint_every": args.checkpoint_every,
        "standardize": not args.no_standardize,
    }


def _patience(value: int) -> int | None:
    return value if value > 0 else None


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """On --resume, only the run's limits may change (more epochs or steps, other patience)."""
    overrides: dict[str, Any] = {}
    if args.epochs_given:
        overrides["epochs"] = args.epochs
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.patience is not None:
        overrides["patience"] = _patience(args.patience)
    return overrides


def cmd_eval(args: argparse.Namespace) -> None:
    run = Path(args.run)
    record = _read_run(run)
    ds, _ = _dataset_for(record, args.data)
    flow = _load_model(run, args.checkpoint, ds)
    report = evaluate(flow, ds, args.split)
    if args.data is None and args.split == "test":  # eval.json holds the run's test numbers
        previous = run / EVAL_FILE
        try:  # keep what fit recorded there (best validation NLL and epoch)
            kept = json.loads(previous.read_text()) if previous.is_file() else {}
        except json.JSONDecodeError:
            kept = {}
        _write_json(previous, {**(kept if isinstance(kept, dict) else {}), **report})
    print(_format_eval(ds.name, report))


def cmd_sample(args: argparse.Namespace) -> None:
    run = Path(args.run)
    record = _read_run(run)
    if args.n < 1:
        raise CommandError(f"-n must be a positive number of samples, got {args.n}")
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".csv", ".png"):
        raise CommandError(f"{out}: the output must end in .npy, .csv or .png, got {suffix!r}")
    shape = record.get("image_shape")
    if suffix == ".png" and shape is None:
        raise CommandError(f"{out}: a PNG grid needs an image data set; use .npy or .csv")
    flow = _load_model(run, args.checkpoint)
    torch.manual_seed(args.seed)
    samples = flow.sample((args.n,)).double()
    if suffix == ".png":
        plot.image_grid(out, samples.reshape(-1, *shape), title=f"{args.n} samples")
    elif suffix == ".npy":
        write_atomic(out, lambda f: np.save(f, samples.numpy()), binary=True)
    else:
        write_atomic(
            out,
            lambda f: np.savetxt(f, samples.numpy(), delimiter=",", fmt="%.8g"),
            binary=False,
        )
    print(f"wrote {args.n} samples to {out}")


def cmd_plot(args: argparse.Namespace) -> None:
    run = Path(args.run)
    record = _read_run(run)
    ds, image_shape = _dataset_for(record)
    flow = _load_model(run, args.checkpoint, ds)
    for path in _draw(run, flow, ds, image_shape, record["data"]["seed"]):
        print(f"wrote {path}")


def cmd_list(args: argparse.Namespace) -> None:
    print("flows (--flow):")
    for key, name in PRESETS.items():
        doc = (getattr(flows, name).__doc__ or "").strip().splitlines()
        print(f"  {key:<11} {doc[0] if doc else ''}")
    print("datasets (--data, or the path of a .csv/.npy file):")
    for name, description in data.list_datasets():
        print(f"  {name:<14} {description}")


# ---------------------------------------------------------------------------- parser
def _hidden(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 64,64, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,64, got {text!r}")
    return widths


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="exactflow", description="Normalizing flows with exact densities.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a flow by maximum likelihood")
    p.add_argument("--data", default="moons", help="data set name or table file (see 'list')")
    p.add_argument("--flow", default="nsf", choices=sorted(PRESETS), help="flow preset")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    g = p.add_argument_group("flow")
    g.add_argument("--transforms", type=int, help="number of steps")
    g.add_argument("--hidden", type=_hidden, help="conditioner hidden widths, e.g. 64,64")
    g.add_argument("--bins", type=int, help="spline bins (nsf)")
    g.add_argument("--bound", type=float, help="spline tail bound (nsf)")
    g.add_argument("--coupling", action="store_true", help="coupling instead of autoregressive")
    g.add_argument("--permutation", choices=("reverse", "random", "lu"), help="mixing")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--optimizer", choices=("adam", "adamw"), default="adam")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--schedule", choices=("cosine", "plateau", "none"), default="cosine")
    g.add_argument("--clip-grad", type=float, default=5.0, help="0 disables clipping")
    g.add_argument(
        "--patience", type=int, default=None, help="epochs without improvement (default 20; 0: off)"
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    g.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    g.add_argument("--no-standardize", action="store_true", help="train on raw features")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-plots", action="store_true", help="skip the figures")
    _data_arguments(p)

    p = sub.add_parser("eval", help="test NLL, bits/dim and KL gap of a run")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="evaluate on another data set of the same width")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")

    p = sub.add_parser("sample", help="draw samples to .npy, .csv or a .png grid (images)")
    p.add_argument("run", help="run folder")
    p.add_argument("-n", type=int, default=1000, help="number of samples")
    p.add_argument("-o", "--output", required=True, help="file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")

    p = sub.add_parser("plot", help="draw a run's figures into RUN/figures")
    p.add_argument("run", help="run folder")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")

    sub.add_parser("list", help="list flow presets and data sets")
    return parser


def _data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--n-train", type=int, help="training points (synthetic sets)")
    g.add_argument("--n-val", type=int, help="validation points (synthetic sets)")
    g.add_argument("--n-test", type=int, help="test points (synthetic sets)")
    g.add_argument("--root", help="folder holding the benchmark or image files")
    g.add_argument("--columns", nargs="+", help="table columns to use, by name or 0-based index")
    header = g.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_true", default=None)
    header.add_argument("--no-header", dest="header", action="store_false")


COMMANDS = {
    "fit": cmd_fit,
    "eval": cmd_eval,
    "sample": cmd_sample,
    "plot": cmd_plot,
    "list": cmd_list,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad option (already reported in one line)
        return e.code if isinstance(e.code, int) else 2
    if args.command == "fit":
        args.epochs_given = args.epochs is not None
        if args.epochs is None and args.steps is None:
            args.epochs = 100
    try:
        COMMANDS[args.command](args)
    except (CommandError, ValueError, TypeError, OSError, NonFiniteLossError) as e:
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else e
        one_line = " ".join(str(message).split())  # messages of other libraries may wrap
        print(f"exactflow {args.command}: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"exactflow {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
