"""The schema of a run record (``run.json``), checked as untrusted input before any use.

Every field is checked for type, known key and size (a model spec's keywords through the same
rules as :func:`exactflow.registry.build`); a bad record is a :class:`CommandError` naming the
field, what it should be and what it holds. :func:`check_record` is the entry point.

Example:
    >>> record = {"data": {"name": "moons", "options": {"n_train": 500}, "seed": 0},
    ...           "flow": {"name": "MAF", "kwargs": {"features": 2}}, "train": {"lr": 0.001}}
    >>> check_record(record, "run.json")["flow"]["name"]
    'MAF'

"""

from __future__ import annotations

import json
import math
from typing import Any

from .arguments import MAX_SEED
from .errors import CommandError

__all__ = ["MAX_RECORD_BYTES", "OBJECTIVES", "check_record"]

MAX_RECORD_BYTES = 1 << 20
MAX_TEXT = 4096
MAX_ROWS = 10**8
MAX_LIST = 64
MAX_COLUMNS = 100_000
MAX_WIDTH = 1 << 20
MAX_IMAGE_SIDE = 4096
MAX_SAMPLES = 10**7
# Objectives a run record may name (training ones: what fit/vi rebuild on --resume).
OBJECTIVES = ("nll", "elbo", "iwae", "reverse_kl")


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _text(value: Any, limit: int = MAX_TEXT) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return isinstance(value, bool) or abs(value) <= MAX_WIDTH
    return value is None or (isinstance(value, str) and len(value) <= MAX_TEXT)


_OPTIONS = {
    "n_train": (lambda v: _whole(v, 0, MAX_ROWS), f"a whole number from 0 to {MAX_ROWS}"),
    "n_val": (lambda v: _whole(v, 0, MAX_ROWS), f"a whole number from 0 to {MAX_ROWS}"),
    "n_test": (lambda v: _whole(v, 0, MAX_ROWS), f"a whole number from 0 to {MAX_ROWS}"),
    "root": (_text, "a folder path"),
    "columns": (
        lambda v: (
            isinstance(v, list)
            and 0 < len(v) <= MAX_COLUMNS
            and all(_text(c, 1000) or _whole(c, -MAX_WIDTH, MAX_WIDTH) for c in v)
        ),
        "a list of column names or indices",
    ),
    "header": (lambda v: isinstance(v, bool), "true or false"),
}

_TRAIN_TYPES: dict[str, tuple[type, ...]] = {
    "optimizer": (str,),
    "schedule": (str,),
    "dtype": (str,),
    "device": (str,),
    "out": (str, type(None)),
    "lr": (int, float),
    "weight_decay": (int, float),
    "clip_grad": (int, float, type(None)),
    "epochs": (int, type(None)),
    "steps": (int, type(None)),
    "batch_size": (int,),
    "patience": (int, type(None)),
    "seed": (int,),
    "checkpoint_every": (int, type(None)),
    "epoch_steps": (int,),
    "max_nonfinite": (int,),
    "standardize": (bool,),
    "tensorboard": (bool,),
    "compile": (bool,),
}


def _expect(ok: bool, path: object, where: str, expected: str, value: Any) -> None:
    if not ok:
        raise CommandError(f"{path}: {where} must be {expected}, got {_show(value)}")


def _keys(value: Any, path: object, where: str, known: set[str], required: set[str]) -> None:
    _expect(isinstance(value, dict), path, where, "an object", value)
    unknown = sorted(set(value) - known)
    if unknown:
        hint = (
            " (a run record cannot switch on unpickling; type --allow-pickle yourself)"
            if "allow_pickle" in unknown
            else ""
        )
        raise CommandError(
            f"{path}: {where} has unknown key(s) {unknown}; known: {sorted(known)}{hint}"
        )
    missing = sorted(required - set(value))
    if missing:
        raise CommandError(f"{path}: {where} lacks {missing}; not a run record written by fit")


def _check_data(value: Any, path: object) -> None:
    known = {"name", "options", "seed", "binarization"}
    _keys(value, path, "data", known, {"name", "options", "seed"})
    binarization = value.get("binarization", "static")
    _expect(binarization in ("static", "dynamic"), path, "data.binarization",
            "'static' or 'dynamic'", binarization)  # fmt: skip
    _expect(_text(value["name"]), path, "data.name", "a data set name or file path", value["name"])
    seed = value["seed"]
    _expect(_whole(seed, 0, MAX_SEED), path, "data.seed", f"a whole number 0..{MAX_SEED}", seed)
    options = value["options"]
    _keys(options, path, "data.options", set(_OPTIONS), set())
    for key, option in options.items():
        ok, expected = _OPTIONS[key]
        _expect(ok(option), path, f"data.options.{key}", expected, option)


def _check_flow(value: Any, path: object, where: str = "flow") -> dict:
    known = {"name", "preset", "kwargs", "standardize"}
    _keys(value, path, where, known, {"kwargs"})
    name = value.get("name", value.get("preset"))
    _expect(_text(name, 100), path, f"{where}.name", "a registered model name", name)
    kwargs = value["kwargs"]
    _expect(isinstance(kwargs, dict) and len(kwargs) <= MAX_LIST, path, f"{where}.kwargs",
            f"an object of at most {MAX_LIST} keyword arguments", kwargs)  # fmt: skip
    for key, item in kwargs.items():
        ok = _flat(item)
        if key == "bounds":  # one [low, high], or one per column (null: open)
            ok = ok or _bounds(item)
        if key == "embedding":  # a context embedding's spec (the registry checks it again)
            ok = ok or _embedding(item)
        if key == "periodic":  # NSF's periodic columns: [column, low, high] each
            ok = ok or _periodic(item)
        expected = f"a number, string, bool, null or a flat list of at most {MAX_LIST} of them"
        _expect(ok and _text(key, 100), path, f"{where}.kwargs.{key}", expected, item)
    standardize = value.get("standardize", False)
    _expect(isinstance(standardize, bool), path, f"{where}.standardize", "true or false",
            standardize)  # fmt: skip
    spec = {"name": name, "kwargs": dict(kwargs)}
    if standardize:
        spec["standardize"] = True
    return spec


def _bounds(value: Any) -> bool:
    """A flow's recorded bounds: a list of at most ``MAX_COLUMNS`` ``[low, high]`` or nulls."""

    def pair(item: Any) -> bool:
        if item is None:
            return True
        return isinstance(item, list) and len(item) == 2 and all(map(_scalar, item))

    return isinstance(value, list) and len(value) <= MAX_COLUMNS and all(map(pair, value))


def _periodic(value: Any) -> bool:
    """NSF's recorded periodic columns: at most ``MAX_COLUMNS`` ``[column, low, high]``."""

    def triple(item: Any) -> bool:
        return isinstance(item, list) and len(item) == 3 and all(map(_scalar, item))

    return isinstance(value, list) and len(value) <= MAX_COLUMNS and all(map(triple, value))


def _flat(item: Any) -> bool:
    """A keyword value of a recorded spec: a scalar or a flat list of at most ``MAX_LIST``."""
    return _scalar(item) or (
        isinstance(item, list) and len(item) <= MAX_LIST and all(map(_scalar, item))
    )


def _embedding(value: Any) -> bool:
    """A context embedding's spec: ``{"name": ..., "kwargs": {...}}`` of flat values."""
    if not isinstance(value, dict) or set(value) != {"name", "kwargs"}:
        return False
    kwargs = value["kwargs"]
    return (
        _text(value["name"], 100)
        and isinstance(kwargs, dict)
        and len(kwargs) <= MAX_LIST
        and all(_text(k, 100) and _flat(v) for k, v in kwargs.items())
    )


def _check_train(value: Any, path: object) -> None:
    _expect(isinstance(value, dict) and len(value) <= MAX_LIST, path, "train", "an object", value)
    for key, item in value.items():
        types = _TRAIN_TYPES.get(key)
        ok = _scalar(item) if types is None else isinstance(item, types) and _scalar(item)
        if types is not None and bool not in types and isinstance(item, bool):
            ok = False
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types or ())
        _expect(ok and _text(key, 100), path, f"train.{key}", expected or "a JSON scalar", item)


def _check_target(value: Any, path: object) -> None:
    _keys(value, path, "target", {"name", "options", "dim"}, {"name", "options", "dim"})
    name = value["name"]
    _expect(_text(name, 300), path, "target.name", "a target name or module:function", name)
    dim = value["dim"]
    _expect(_whole(dim, 1, MAX_COLUMNS), path, "target.dim", f"a whole number 1..{MAX_COLUMNS}",
            dim)  # fmt: skip
    options = value["options"]
    _expect(isinstance(options, dict) and len(options) <= MAX_LIST, path, "target.options",
            f"an object of at most {MAX_LIST} options", options)  # fmt: skip
    for key, item in options.items():
        _expect(_scalar(item) and _text(key, 100), path, f"target.options.{key}",
                "a number, string, bool or null", item)  # fmt: skip


def _check_objective(value: Any, path: object) -> None:
    optional = {"name", "k", "samples", "val_samples", "kinetic", "jacobian"}
    _keys(value, path, "objective", optional, {"name"})
    name = value["name"]
    _expect(name in OBJECTIVES, path, "objective.name", f"one of {sorted(OBJECTIVES)}", name)
    for key in ("kinetic", "jacobian"):  # the NLL's regularizers of continuous-time flows
        if key in value:
            item = value[key]
            number = isinstance(item, int | float) and not isinstance(item, bool)
            _expect(
                number and math.isfinite(item) and item >= 0,
                path,
                f"objective.{key}",
                "a finite number >= 0",
                item,
            )
    for key in ("k", "samples", "val_samples"):
        if key in value:
            item = value[key]
            _expect(_whole(item, 1, MAX_SAMPLES), path, f"objective.{key}",
                    f"a whole number 1..{MAX_SAMPLES}", item)  # fmt: skip


def check_record(record: Any, path: object) -> dict:
    """Check a run record against the schema; return it with the model spec normalized.

    A density run has ``data`` and ``flow``; a VAE run ``data``, ``model`` (the VAE's spec)
    and ``objective``; a variational-inference run ``target``, ``flow`` and ``objective``. A
    ``target`` named ``module:function`` is only a note of what the user named: no command
    imports it from the record (:mod:`exactflow.cli.targets`).

    Args:
        record: The parsed ``run.json``.
        path: Where it came from (for the message).

    Returns:
        The record, its ``flow`` (or ``model``) as ``{"name": ..., "kwargs": {...}}`` (a record
        written before the model registry says ``"preset"``).

    Raises:
        CommandError: A missing or unknown key, a value of the wrong type, or one out of range.

    """
    if not isinstance(record, dict):
        raise CommandError(
            f"{path}: not a run record (expected an object with 'data', 'flow' and 'train',"
            f" got {_show(record)})"
        )
    known = {"data", "target", "image_shape", "flow", "model", "objective", "train"}
    vi, vae = "target" in record, "model" in record
    required = {"train"} | ({"target", "flow", "objective"} if vi else {"data"})
    required |= {"model", "objective"} if vae else set() if vi else {"flow"}
    if vi and vae:
        raise CommandError(f"{path}: the record has both 'target' and 'model'; not a run record")
    _keys(record, path, "the record", known, required)
    if vi:
        if "data" in record or "image_shape" in record:
            raise CommandError(f"{path}: a run with a 'target' has no 'data' or 'image_shape'")
        _check_target(record["target"], path)
        _check_objective(record["objective"], path)
        _check_train(record["train"], path)
        return {**record, "flow": _check_flow(record["flow"], path)}
    if "objective" in record:
        _check_objective(record["objective"], path)
    if vae and "flow" in record:
        raise CommandError(f"{path}: the record has both 'flow' and 'model'; not a run record")
    _check_data(record["data"], path)
    shape = record.get("image_shape")
    ok = shape is None or (
        isinstance(shape, list)
        and len(shape) == 3
        and all(_whole(s, 1, MAX_IMAGE_SIDE) for s in shape)
    )
    expected = f"null or 3 whole numbers [C, H, W] from 1 to {MAX_IMAGE_SIDE}"
    _expect(ok, path, "image_shape", expected, shape)
    _check_train(record["train"], path)
    spec = "model" if vae else "flow"
    checked = _check_flow(record[spec], path, spec)
    image = checked["kwargs"].get("shape")
    if not vae and image is not None and image != shape:
        raise CommandError(
            f"{path}: flow.kwargs.shape {_show(image)} differs from image_shape {_show(shape)}"
        )
    return {**record, spec: checked, "image_shape": shape}
