"""``exactflow vi``: fit a flow ``q`` to an unnormalized target density by reverse KL.

Each step draws ``--samples`` points ``z ~ q`` with their log densities in one pass and minimizes
``E_q[log q(z) - log p̃(z)] = KL(q‖p) - log Z`` (:class:`exactflow.objectives.ReverseKL`); every
``--validate-every`` steps the mean over ``--val-samples`` fresh draws is the validation metric
(``metrics.csv``: ``train_neg_elbo``, ``val_neg_elbo``). At the end, the best ``q`` estimates
``log Z`` by importance sampling (``--eval-samples`` draws) with its standard error and effective
sample size, and the ELBO and ``KL(q‖p)``; where the target knows ``log Z`` the true KL is shown
too (``eval.json``).

The target is a built-in name (``exactflow list``) or a user's ``module:function`` with
``--dim`` (:mod:`exactflow.cli.targets`: such a function is imported only when named on the
command line, so ``--resume``, ``eval`` and ``plot`` of its run ask for ``--target`` again).
The run folder, lock, ``--resume``/``--overwrite``, checkpoints and progress bar are ``fit``'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint, objectives, registry
from ..flow import DTYPES
from ..targets import Target
from ..train import TrainConfig, fit
from ..train.distributed import launch
from . import arguments, image_runs, targets, training
from .errors import CommandError, one_line
from .figures import draw_vi
from .report import VI_SAMPLES, format_vi_report, vi_report
from .runs import kind

__all__ = ["add_parser", "run"]

DEFAULTS: dict[str, Any] = {
    "flow": "iaf",
    "steps": 5000,
    "samples": 256,
    "val_samples": 4096,
    "validate_every": 100,
    "lr": 1e-3,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "schedule": "cosine",
    "clip_grad": 5.0,
    "patience": 0,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
    "compile": False,
}
FLOW_OPTIONS = ("transforms", "hidden", "bins", "bound", "permutation", "coupling")
TRAIN_FIXED = ("dtype", "optimizer", "schedule")
CHANGEABLE = (
    "lr",
    "weight_decay",
    "clip_grad",
    "patience",
    "steps",
    "checkpoint_every",
    "device",
    "compile",
)


def add_parser(sub: Any) -> None:
    """The ``vi`` subcommand and its options."""
    p = sub.add_parser("vi", help="fit a flow to an unnormalized density by reverse KL")
    p.add_argument(
        "--target",
        help="built-in target (see 'list') or module:function of your own (on"
        " --resume: needed again for a module:function)",
    )
    p.add_argument(
        "--dim",
        type=arguments.count,
        help="dimension of a module:function target (or of a built-in that takes it)",
    )
    p.add_argument(
        "--flow",
        type=str.lower,
        help="flow preset: planar, radial, sylvester, iaf, nsf, maf, ... (default iaf)",
    )
    training.add_run_options(p)
    training.add_flow_options(p.add_argument_group("flow"))
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=arguments.count, help="optimizer steps (default 5000)")
    g.add_argument("--samples", type=arguments.count, help="draws of q per step (default 256)")
    g.add_argument(
        "--val-samples", type=arguments.count, help="draws of q per validation (default 4096)"
    )
    g.add_argument(
        "--validate-every",
        type=arguments.count,
        help="steps between validations and checkpoints (default 100)",
    )
    g.add_argument(
        "--eval-samples",
        type=arguments.count,
        help=f"draws of q for the final log Z estimate (default {VI_SAMPLES})",
    )
    training.add_training_options(g, patience="validations without improvement (default 0: off)")


def _given(args: argparse.Namespace, key: str) -> Any:
    return training.given(args, key, DEFAULTS)


def _new_record(args: argparse.Namespace, out: Path, target: Target) -> tuple[dict, TrainConfig]:
    flow = _given(args, "flow")
    if flow not in training.presets():
        raise CommandError(f"--flow {flow}: unknown; expected one of {sorted(training.presets())}")
    if flow in image_runs.ALWAYS:
        raise CommandError(
            f"--flow {flow} is an image flow (events (C, H, W)); a vi target is a vector of"
            f" {target.dim} values: use a vector preset such as nsf, iaf or planar"
        )
    training.vector_coupling(args)
    train = {key: _given(args, key) for key in (*TRAIN_FIXED, *CHANGEABLE)}
    for key in ("clip_grad", "patience"):  # 0 turns them off
        train[key] = train[key] or None
    train.update(
        epochs=None,
        epoch_steps=_given(args, "validate_every"),
        checkpoint_every=args.checkpoint_every,
        seed=_given(args, "seed"),
        out=str(out.absolute()),
    )
    config = TrainConfig(**train)
    kwargs = {key: getattr(args, key) for key in FLOW_OPTIONS if getattr(args, key) is not None}
    record = {
        "target": targets.record_of(target, args.target, args.dim),
        "flow": {"name": training.presets()[flow], "kwargs": {"features": target.dim, **kwargs}},
        "objective": {
            "name": "reverse_kl",
            "samples": _given(args, "samples"),
            "val_samples": _given(args, "val_samples"),
        },
        "train": config.to_dict(),
    }
    return record, config


def _refuse_changes(args: argparse.Namespace, record: dict) -> None:
    if kind(record) != "vi":
        raise CommandError(
            f"{args.out} holds a run of 'exactflow fit', not of vi; continue it with"
            f" 'exactflow fit --out {args.out} --resume'"
        )
    spec, objective = record["flow"], record["objective"]
    recorded: dict[str, Any] = {
        "flow": spec["name"].lower(),
        "samples": objective.get("samples"),
        "val_samples": objective.get("val_samples"),
        "validate_every": record["train"].get("epoch_steps"),
        "seed": record["train"].get("seed"),
    }
    recorded.update({k: spec["kwargs"].get(k) for k in FLOW_OPTIONS})
    recorded.update({k: record["train"].get(k) for k in TRAIN_FIXED})
    training.refuse_changes({k: getattr(args, k) for k in recorded}, recorded, CHANGEABLE)


def _build(spec: dict, seed: int, label: str) -> Any:
    torch.manual_seed(seed)
    try:
        return registry.build(spec)
    except (TypeError, ValueError) as e:
        raise CommandError(f"{label}: {one_line(e)}") from None


# ---------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> None:
    """Fit by reverse KL, estimate log Z, draw; see the module docstring."""
    out = training.check_out(args)
    if args.resume:
        training.resume(out, lambda record: _resume(args, out, record))
        return
    if args.target is None:
        raise CommandError("--target is required: a built-in name (see 'list') or module:function")
    dtype = _given(args, "dtype")
    target = targets.from_command_line(args.target, args.dim, DTYPES[dtype])
    record, config = _new_record(args, out, target)
    flow = _build(record["flow"], config.seed, f"--flow {_given(args, 'flow')}")

    def body(folder: Path, created: bool) -> None:
        staged = config if folder == out else training.config_in(config, folder)
        _fit_into(flow, folder, out, record, staged, target, args, created=created)

    training.start(out, args.overwrite, body)


def _resume(args: argparse.Namespace, out: Path, record: dict) -> None:
    _refuse_changes(args, record)
    config = training.resume_config(args, record, out, CHANGEABLE)
    record["train"] = config.to_dict()
    target = targets.of_run(record["target"], args.target, args.dim, out, DTYPES[config.dtype])
    flow = _build(record["flow"], config.seed, f"{out / 'run.json'}: flow")
    _fit_into(flow, out, out, record, config, target, args, created=False, resume=True)


def _fit_into(
    flow: Any,
    folder: Path,
    out: Path,
    record: dict,
    config: TrainConfig,
    target: Target,
    args: argparse.Namespace,
    *,
    created: bool,
    resume: bool = False,
) -> None:
    """Train in ``folder`` (``out`` itself, or its replacement); estimate log Z; draw."""
    spec, settings = record["flow"], record["objective"]
    if launch().main:
        print(
            f"fitting {spec['name']} to target {record['target']['name']} ({target.dim}-D) by"
            f" reverse KL, {settings['samples']} draws a step"
        )
    objective = objectives.ReverseKL(
        target, samples=settings["samples"], val_samples=settings["val_samples"]
    )

    def trainer() -> Any:
        return fit(
            flow, objective, config=config, spec=spec, resume=resume, progress=not args.no_progress
        )

    result, caught = training.train(folder, record, trainer, created=created, resume=resume)
    if not launch().main:  # under torchrun, rank 0 alone evaluates, draws and writes
        return
    best = checkpoint.load(folder / "best.safetensors").model
    report = vi_report(best, target, args.eval_samples or VI_SAMPLES)

    def figures() -> list[Path]:
        return draw_vi(folder, best, target, config.seed)

    training.finish(
        folder,
        out,
        result,
        report,
        format_vi_report(report),
        caught,
        "vi",
        None if args.no_plots else figures,
    )
