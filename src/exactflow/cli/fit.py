"""``exactflow fit``: fit a flow by maximum likelihood, or a VAE by its bound, into a run folder.

``--model flow`` (the default) fits the ``--flow`` preset by maximum likelihood: its ``log p(x)``
is exact. ``--flow glow`` (and ``--flow realnvp --image``) fits an image flow to images kept as
``(C, H, W)``, with fresh dequantization noise every batch (:mod:`exactflow.cli.image_runs`).
``--model vae`` fits a VAE (:class:`exactflow.models.DenseVAE`, posterior
``--posterior``) by the ELBO or the IWAE bound (:mod:`exactflow.cli.vae`).

A new run refuses a folder that already holds one unless ``--resume`` (continue it) or
``--overwrite`` (replace it once the new one has finished; :mod:`exactflow.cli.training`). On
``--resume`` the limits and step sizes (``--epochs``, ``--steps``, ``--lr``, ``--clip-grad``,
``--patience``, ...) may change and are recorded in ``run.json``; what defines the model and its
data (``--flow``, ``--hidden``, ``--data``, ``--batch-size``, ``--dtype``, ...) may not.

The model is built after seeding torch with ``--seed``, so the same command gives the same run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint, objectives, registry
from ..data import Dataset
from ..train import TrainConfig, fit
from ..train.distributed import launch
from . import arguments, discrete, image_runs, training, vae
from .datasets import data_name, data_options, load_data, load_images, refuse_outside
from .errors import CommandError, one_line
from .figures import draw
from .report import certificate_failure, density_report, format_report
from .runs import image_run, kind

__all__ = ["add_parser", "run"]

# Settings of a new run that the command line does not give.
DEFAULTS: dict[str, Any] = {
    "model": "flow",
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
FLOW_OPTIONS = ("transforms", "hidden", "bins", "bound", "permutation", "coupling", "bounds",
                "periodic")  # fmt: skip
DATA_OPTIONS = ("n_train", "n_val", "n_test", "root", "columns", "header")
TRAIN_FIXED = ("batch_size", "dtype", "optimizer", "schedule")
# What may change on --resume (it takes effect, and run.json records it).
CHANGEABLE = ("lr", "weight_decay", "clip_grad", "patience", "epochs", "steps",
              "checkpoint_every", "device", "compile")  # fmt: skip
# Options of one kind of model only.
ONLY_FLOW = ("flow", "bins", "bound", "permutation", "coupling", "no_standardize", "image",
             "kinetic", "jacobian_norm", "bounds", "periodic", *image_runs.IMAGE_ONLY,
             *discrete.OPTIONS)  # fmt: skip
# The NLL's regularizers of continuous-time flows: option -> key of run.json's objective.
REGULARIZERS = {"kinetic": "kinetic", "jacobian_norm": "jacobian"}
ONLY_VAE = ("posterior", "latent", "likelihood", "context", "kind", "objective", "k", "eval_k")


def add_parser(sub: Any) -> None:
    """The ``fit`` subcommand and its options."""
    p = sub.add_parser("fit", help="fit a flow by maximum likelihood (or a VAE by its bound)")
    p.add_argument(
        "--model", choices=("flow", "vae"), help="flow (exact likelihood; default) or vae (a bound)"
    )
    p.add_argument("--data", help="data set name or table file (see 'list'; default moons)")
    p.add_argument("--flow", type=str.lower, help="flow preset (see 'list'; default nsf)")
    training.add_run_options(p)
    flow_options = p.add_argument_group("flow")
    training.add_flow_options(flow_options)
    image_runs.add_options(flow_options)
    discrete.add_options(flow_options)
    flow_options.add_argument(
        "--bounds",
        type=arguments.bounds,
        help="bounded columns, low:high each (an empty end is open), e.g. 0:1,0:,:5,: or 0:1 for"
        " all: the flow's density is zero outside and its samples stay inside",
    )
    flow_options.add_argument(
        "--periodic",
        type=arguments.periodic,
        help="nsf: periodic columns (angles), counted from 0: i (period 2π on [-π, π)), i=period"
        " or i=low:high, e.g. 0,1 or 2=0:360",
    )
    flow_options.add_argument(
        "--kinetic", type=arguments.weight, help="ffjord: weight of the kinetic-energy penalty"
    )
    flow_options.add_argument(
        "--jacobian-norm",
        type=arguments.weight,
        help="ffjord: weight of the Jacobian Frobenius-norm penalty",
    )
    vae.add_options(p)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=arguments.count)
    g.add_argument(
        "--steps",
        type=arguments.count,
        help="optimizer steps, a limit of training (an image flow's steps per level: --transforms)",
    )
    g.add_argument("--batch-size", type=arguments.count, help="default 256")
    training.add_training_options(g, patience="epochs without improvement (20; 0: off)")
    g.add_argument(
        "--no-standardize", action="store_true", default=None, help="train on raw features"
    )
    arguments.add_data_arguments(p)


# ---------------------------------------------------------------------------- settings
def _given(args: argparse.Namespace, key: str) -> Any:
    return training.given(args, key, DEFAULTS)


def _refuse_other_kind(args: argparse.Namespace, model: str) -> None:
    other = ONLY_FLOW if model == "vae" else ONLY_VAE
    for key in other:
        if getattr(args, key) is not None:
            raise CommandError(
                f"--{key.replace('_', '-')} does not apply to --model {model}"
                + (" (a VAE's posterior is --posterior)" if key == "flow" else "")
            )


def _new_record(args: argparse.Namespace, out: Path) -> tuple[dict, TrainConfig]:
    model = _given(args, "model")
    _refuse_other_kind(args, model)
    name = data_name(_given(args, "data"))
    image = False
    if model == "flow":
        flow = _given(args, "flow")
        if flow not in training.presets():
            raise CommandError(
                f"--flow {flow}: unknown; expected one of {sorted(training.presets())}"
            )
        image = image_runs.wanted(args, flow)
        if not image:
            training.vector_coupling(args)
        elif args.bounds is not None:
            raise CommandError(
                "--bounds applies to vector data; image flows map their pixels in [0, 1) by a"
                " logit of their own"
            )
        if args.periodic is not None and (image or flow != "nsf"):
            raise CommandError(
                f"--periodic needs --flow nsf on vector data (circular splines), got --flow {flow}"
                + (" on images" if image else "")
            )
    epochs = args.epochs if args.epochs is not None or args.steps is not None else EPOCHS
    train = {key: _given(args, key) for key in (*TRAIN_FIXED, *CHANGEABLE) if key in DEFAULTS}
    for key in ("clip_grad", "patience"):  # 0 turns them off
        train[key] = train[key] or None
    train.update(
        epochs=epochs,
        steps=args.steps,
        checkpoint_every=args.checkpoint_every,
        seed=_given(args, "seed"),
        # Images are never standardized: the image flows' logit needs [0, 1).
        standardize=model == "flow" and not image and not _given(args, "no_standardize"),
        out=str(out.absolute()),
    )
    config = TrainConfig(**train)
    record: dict[str, Any] = {
        "data": {"name": name, "options": data_options(args), "seed": config.seed},
        "image_shape": None,
    }
    if model == "vae":
        if vae.binary(name):
            record["data"]["binarization"] = "dynamic"
        record["model"] = {"name": vae.MODEL, "kwargs": vae.kwargs(args, name)}
        record["objective"] = vae.objective_record(args)
    else:
        kwargs = {key: getattr(args, key) for key in FLOW_OPTIONS if getattr(args, key) is not None}
        if image:  # filled in from the images once they are loaded
            kwargs = {"shape": None}
        record["flow"] = {"name": training.presets()[_given(args, "flow")], "kwargs": kwargs}
        weights = {REGULARIZERS[k]: getattr(args, k) for k in REGULARIZERS if getattr(args, k)}
        if weights:
            if record["flow"]["name"] != "FFJORD":
                raise CommandError(
                    "--kinetic and --jacobian-norm regularize continuous-time flows (--flow"
                    f" ffjord), not --flow {_given(args, 'flow')}"
                )
            record["objective"] = {"name": "nll", **weights}
    record["train"] = config.to_dict()
    return record, config


def _spec_key(record: dict) -> str:
    return "model" if kind(record) == "vae" else "flow"


def _refuse_changes(args: argparse.Namespace, record: dict) -> None:
    """On --resume, refuse an option that would change what the run trains."""
    model = kind(record)
    if model == "vi":
        raise CommandError(
            f"{args.out} holds a variational-inference run; continue it with 'exactflow vi --out"
            f" {args.out} --resume'"
        )
    if args.model is not None and args.model != model:
        raise CommandError(f"--model {args.model} differs from the run's {model!r} on --resume")
    _refuse_other_kind(args, model)
    spec = record[_spec_key(record)]
    recorded: dict[str, Any] = {
        "data": record["data"]["name"],
        "seed": record["data"]["seed"],
    }
    options = vae.OPTIONS if model == "vae" else FLOW_OPTIONS
    recorded.update({k: spec["kwargs"].get(k) for k in options})
    if model == "flow":
        recorded.update(dict.fromkeys(("image", *image_runs.IMAGE_ONLY)))
    if image_run(record):
        recorded.update(image_runs.recorded(spec))
    if model == "vae":
        recorded.update(objective=record["objective"]["name"], k=record["objective"].get("k"))
    else:
        recorded.update(
            flow=spec["name"].lower(), no_standardize=not record["train"].get("standardize", False)
        )
        weights = record.get("objective", {})
        recorded.update({k: weights.get(key) for k, key in REGULARIZERS.items()})
        recorded.update(discrete.recorded(spec))
    recorded.update({k: record["data"]["options"].get(k) for k in DATA_OPTIONS})
    recorded.update({k: record["train"].get(k) for k in TRAIN_FIXED})
    given = data_options(args)
    given.update({k: getattr(args, k) for k in recorded if k not in DATA_OPTIONS})
    if args.data is not None:
        given["data"] = data_name(args.data)
    if given.get("flow") in training.presets():  # an alias names its preset
        given["flow"] = training.presets()[given["flow"]].lower()
    training.refuse_changes(given, recorded, CHANGEABLE)


# ---------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> None:
    """Fit, evaluate on the test split, draw; see the module docstring."""
    out = training.check_out(args)
    if args.resume:
        training.resume(out, lambda record: _resume(args, out, record))
        return
    record, config = _new_record(args, out)
    spec = record[_spec_key(record)]
    ds, pixels, image_shape = _load(record, args, config)
    record["image_shape"] = image_shape
    if pixels is not None:
        spec["kwargs"] = image_runs.kwargs(args, _given(args, "flow"), ds)
    else:
        spec["kwargs"] = {"features": ds.features, **spec["kwargs"]}
        refuse_outside(spec["kwargs"].get("bounds"), ds, spec["kwargs"].get("periodic"))
    config = discrete.apply(record, args, ds, config, image=pixels is not None)
    spec = record[_spec_key(record)]
    _check_splits(ds)
    try:
        model = _build(spec, config.seed)
    except ValueError as e:
        option = "--model vae" if kind(record) == "vae" else f"--flow {_given(args, 'flow')}"
        raise CommandError(f"{option}: {one_line(e)}") from None
    discrete.prepare(model, spec, ds)

    def body(folder: Path, created: bool) -> None:
        staged = config if folder == out else training.config_in(config, folder)
        _fit_into(model, folder, out, record, staged, ds, pixels, args, created=created)

    training.start(out, args.overwrite, body)


def _resume(args: argparse.Namespace, out: Path, record: dict) -> None:
    _refuse_changes(args, record)
    config = training.resume_config(args, record, out, CHANGEABLE)
    record["train"] = config.to_dict()
    ds, pixels, image_shape = _load(record, args, config)
    if image_shape != record["image_shape"]:
        raise CommandError(
            f"{out / 'run.json'}: image_shape {record['image_shape']} does not match the"
            f" data ({image_shape})"
        )
    _check_splits(ds)
    model = _build(record[_spec_key(record)], config.seed)
    _fit_into(model, out, out, record, config, ds, pixels, args, created=False, resume=True)


def _load(
    record: dict, args: argparse.Namespace, config: TrainConfig
) -> tuple[Dataset, Dataset | None, list[int] | None]:
    """The run's data, its integer pixels (an image run's, as ``k/L``; else None), image shape."""
    source = record["data"]
    if image_run(record):
        if args.allow_pickle:
            raise CommandError("--allow-pickle applies to --data gas only")
        pixels, ds = load_images(source["name"], source["seed"], source["options"], config.dtype)
        return ds, pixels, list(ds.event_shape)
    ds, image_shape = load_data(source["name"], source["seed"], source["options"],
                                args.allow_pickle, config.dtype)  # fmt: skip
    return ds, None, image_shape


def _check_splits(ds: Dataset) -> None:
    if len(ds.test) == 0:
        raise CommandError(
            f"the test split of {ds.name} is empty (--n-test 0?); fit reports the test NLL,"
            " so it needs at least one test point"
        )


def _build(spec: dict, seed: int) -> Any:
    """The model of ``spec``, built after seeding: its initial weights are part of the run."""
    torch.manual_seed(seed)
    return registry.build(spec)


def _fit_into(
    model: Any,
    folder: Path,
    out: Path,
    record: dict,
    config: TrainConfig,
    ds: Dataset,
    pixels: Dataset | None,
    args: argparse.Namespace,
    *,
    created: bool,
    resume: bool = False,
) -> None:
    """Train in ``folder`` (``out`` itself, or its replacement); evaluate; draw."""
    is_vae = kind(record) == "vae"
    spec = record[_spec_key(record)]
    image_shape = record["image_shape"]
    image = pixels is not None
    points = "x".join(map(str, ds.event_shape)) + " images" if image else f"{ds.features}-D"
    if launch().main:
        print(f"fitting {spec['name']} to {ds.name} ({len(ds.train)} train points, {points})")
    val = ds.val
    if is_vae:
        objective = vae.objective(record["objective"])
        train_data = vae.training_data(record, ds, config)
    elif discrete.uses(spec):  # the dequantization bound
        objective, train_data = objectives.ELBO(), ds.train
    elif image:  # fresh dequantization noise every batch
        objective = objectives.NLL()
        train_data, val = image_runs.training_data(spec, pixels, ds, config)
    else:
        weights = record.get("objective", {})
        objective = objectives.NLL(
            **{k: weights[k] for k in ("kinetic", "jacobian") if k in weights}
        )
        train_data = ds.train

    def trainer() -> Any:
        return fit(
            model,
            objective,
            data=train_data,
            val=val,
            config=config,
            spec=spec,
            resume=resume,
            progress=not args.no_progress,
        )

    result, caught = training.train(folder, record, trainer, created=created, resume=resume)
    if not launch().main:  # under torchrun, rank 0 alone evaluates, draws and writes
        return
    best = checkpoint.load(folder / "best.safetensors").model
    if is_vae:
        report = vae.evaluate(best, ds, k=args.eval_k or vae.EVAL_K)
        line = vae.format_report(ds.name, report)
    elif discrete.uses(spec):
        report, line = discrete.report(best, ds)
    else:
        report = density_report(best, ds)
        line = format_report(ds.name, report)

    def figures() -> list[Path]:
        return draw(folder, discrete.drawn(best), ds, image_shape, config.seed)

    training.finish(
        folder, out, result, report, line, caught, "fit", None if args.no_plots else figures
    )
    failure = certificate_failure(report)
    if failure is not None:  # the run is kept: its numbers are not to be trusted
        raise CommandError(f"exactness certificate FAILED: {failure}")
