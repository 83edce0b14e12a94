"""A run folder: its record ``run.json`` (checked against a schema), its files, and its lock.

A run lives in one folder::

    run.json            what was fitted: data (name, options, seed) or a vi target (name,
                        options, dim), the flow spec (a VAE's: model), objective, training config
    best.safetensors    best weights by validation loss (what eval/sample/plot use)
    last.safetensors    latest weights and training state (what --resume continues from)
    metrics.csv         one row per epoch
    eval.json           test NLL, bits/dim, KL gap, exactness certificate (a flow); ELBO and
                        IWAE estimate of log p(x) (a VAE); log Z, ELBO, KL(q||p) (vi)
    figures/*.png       pictures
    .lock               the process id of the command writing the folder

``run.json`` is read as untrusted input: every field is checked (type, known key, size) before it
is used, and nothing in it can switch on unsafe loading (unpickling a data file needs the user's
own ``--allow-pickle`` on the command line). The folder is written only by the process that holds
its lock (:mod:`exactflow.cli.lock`).

Example:
    >>> record = {"data": {"name": "moons", "options": {"n_train": 500}, "seed": 0},
    ...           "flow": {"name": "MAF", "kwargs": {"features": 2}}, "train": {"lr": 0.001}}
    >>> check_record(record, "run.json")["flow"]["name"]
    'MAF'
    >>> check_record({**record, "image_shape": [3, 7]}, "run.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    exactflow.cli.errors.CommandError: run.json: image_shape must be null or 3 whole numbers ...

"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import checkpoint
from ..atomic import write_atomic
from ..flow import Flow
from .errors import CommandError
from .record import MAX_RECORD_BYTES, check_record

__all__ = [
    "EVAL_FILE",
    "FIGURES",
    "LOCK_FILE",
    "RUN_FILE",
    "RUN_FILES",
    "check_record",
    "holds_run",
    "image_run",
    "kind",
    "load_model",
    "owned_by_a_run",
    "read_record",
    "write_json",
]

RUN_FILE = "run.json"
EVAL_FILE = "eval.json"
LOCK_FILE = ".lock"
RUN_FILES = (RUN_FILE, EVAL_FILE, "metrics.csv", "best.safetensors", "last.safetensors")
FIGURES = ("density.png", "pairwise.png", "samples.png", "data.png", "training.png",
           "target_vs_flow.png", "vae.png", "classes.png", "reconstructions.png",
           "interpolations.png")  # fmt: skip


# ---------------------------------------------------------------------------- json files
def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def write_json(path: Path, value: dict) -> None:
    """Write ``value`` as strict JSON (a NaN or infinity becomes ``null``), atomically."""
    text = json.dumps(_finite_or_null(value), indent=2, allow_nan=False)
    write_atomic(path, lambda f: f.write(text + "\n"), binary=False)


# ---------------------------------------------------------------------------- the record
def kind(record: dict) -> str:
    """What a (checked) run trained: ``"flow"`` (density), ``"vae"`` or ``"vi"``.

    Example:
        >>> record = {"target": {"name": "u1", "options": {}, "dim": 2},
        ...           "flow": {"name": "IAF", "kwargs": {"features": 2}},
        ...           "objective": {"name": "reverse_kl", "samples": 256}, "train": {}}
        >>> kind(check_record(record, "run.json"))
        'vi'

    """
    if "target" in record:
        return "vi"
    return "vae" if "model" in record else "flow"


def image_run(record: dict) -> bool:
    """Whether a (checked) run fits an image flow to images kept as ``(C, H, W)``.

    Such a run's flow takes ``shape=[C, H, W]`` (instead of ``features``); its data are
    quantized images, trained on with fresh dequantization noise every batch
    (:mod:`exactflow.cli.image_runs`).

    Example:
        >>> image_run({"data": {}, "flow": {"name": "Glow", "kwargs": {"shape": [1, 8, 8]}}})
        True

    """
    return kind(record) == "flow" and "shape" in record["flow"]["kwargs"]


def read_record(run: Path) -> dict:
    """Read and check ``run/run.json``; a missing folder or record is a :class:`CommandError`."""
    if not run.is_dir():
        raise CommandError(f"{run}: no such run folder (make one with 'exactflow fit --out {run}')")
    path = run / RUN_FILE
    if not path.is_file():
        raise CommandError(
            f"{path}: missing; {run} is not a folder written by 'exactflow fit' or 'exactflow vi'"
        )
    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        raise CommandError(f"{path}: {size} bytes, more than a run record's {MAX_RECORD_BYTES}")
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CommandError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise CommandError(f"{path}: nested too deeply to be a run record") from None
    return check_record(record, path)


# ---------------------------------------------------------------------------- run files
def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds (part of) a run: any of the files ``fit`` writes."""
    return any((folder / name).exists() for name in RUN_FILES)


def owned_by_a_run(path: Path) -> bool:
    """Whether writing ``path`` would replace a file of a run (its record, weights, figures)."""
    path = path.resolve()
    folder = path.parent
    if folder.name == "figures" and path.name in FIGURES and holds_run(folder.parent):
        return True
    if folder.name == "tensorboard" and holds_run(folder.parent):
        return True
    return path.name in (*RUN_FILES, LOCK_FILE) and holds_run(folder)


# ---------------------------------------------------------------------------- the model
def load_model(run: Path, which: str = "best", features: int | None = None) -> Any:
    """The model of ``run/<which>.safetensors``; with ``features``, check a flow is that wide."""
    path = run / f"{which}.safetensors"
    if not path.exists():
        raise CommandError(f"{path}: missing; the run has no {which} checkpoint yet")
    model = checkpoint.load(path).model
    if features is not None and isinstance(model, Flow) and features != model.features:
        raise CommandError(
            f"{path} models {model.features}-D points but the data has {features} columns"
        )
    return model
