"""Data for the commands: the options ``fit`` records, and loading a run's data again.

Images are flattened to rows ``(N, C·H·W)`` for the vector presets; their shape is returned so the
pictures can be drawn. An image run (:func:`~exactflow.cli.runs.image_run`) keeps them as
``(N, C, H, W)`` (:func:`load_images`). A data file is recorded by its absolute path, so a run can
be evaluated from any directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .. import data
from ..flow import DTYPES
from ..flows.periodic import periodic_intervals
from ..transforms.bounds import check_bounds
from .errors import CommandError
from .runs import image_run

__all__ = [
    "IMAGE_DATA",
    "data_name",
    "data_options",
    "dataset_for",
    "load_data",
    "load_images",
    "refuse_outside",
]

# Data sets that are images only when asked (their pictures are drawn as images).
IMAGES = ("digits", "binary-digits", "binary-fashion-mnist")
#: Quantized images an image flow is fitted to (``--root`` reads any MNIST-format folder).
IMAGE_DATA = ("digits", "mnist", "fashion-mnist")


def _registered(name: str) -> bool:
    key = name.strip().lower().replace("_", "-")
    return key in {registered for registered, _ in data.list_datasets()}


def data_name(name: str) -> str:
    """A registered data set's name as given; a file's absolute path."""
    return name if _registered(name) else str(Path(name).expanduser().absolute())


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The data options given on the command line, as ``run.json`` records them."""
    options: dict[str, Any] = {}
    for key in ("n_train", "n_val", "n_test"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if getattr(args, "root", None) is not None:
        options["root"] = str(Path(args.root).expanduser().absolute())
    if getattr(args, "columns", None):
        options["columns"] = [int(c) if c.lstrip("-").isdigit() else c for c in args.columns]
    if getattr(args, "header", None) is not None:
        options["header"] = args.header
    return options


def load_data(
    name: str,
    seed: int,
    options: dict[str, Any],
    allow_pickle: bool = False,
    dtype: str = "float32",
) -> tuple[data.Dataset, list[int] | None]:
    """Load a data set as rows ``(N, D)``; images are flattened and their shape returned.

    Args:
        name: Registered name or table file.
        seed: Seed of the samples / split.
        options: Loader options (from the command line or a checked ``run.json``).
        allow_pickle: Let the ``gas`` loader unpickle its file. Only the user's own
            ``--allow-pickle`` sets it, never a run record.
        dtype: The run's dtype: tables are read in float64 and converted to it after
            checking that their values fit it.

    """
    options = dict(options)
    table_options = [f"--{key}" for key in ("columns", "header") if key in options]
    if table_options and _registered(name):
        raise CommandError(
            f"--data {name} does not take {', '.join(table_options)}: they select the columns"
            " of a table file"
        )
    if dtype not in DTYPES:
        raise CommandError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if name.lower() in IMAGES:
        options["image"] = True
    if allow_pickle:
        if name.strip().lower() != "gas":
            raise CommandError(f"--allow-pickle applies to --data gas only, not {name}")
    try:
        # data.load refuses unpickling whatever its options say: the user's own flag takes
        # the one explicit, unsafe call.
        ds = (
            data.load_gas(options.pop("root", None), unsafe_allow_pickle=True, dtype=DTYPES[dtype])
            if allow_pickle
            else data.load(name, seed=seed, dtype=DTYPES[dtype], **options)
        )
    except TypeError as e:
        given = ", ".join(f"--{k.replace('_', '-')}" for k in options if k != "image")
        raise CommandError(
            f"--data {name} does not take the options given ({given}): {e}"
        ) from None
    if ds.kind != "image":
        return ds, None
    image_shape = list(ds.train.shape[1:])
    flat = {split: t.flatten(1) for split, t in ds.splits().items()}
    rows = data.Dataset(
        name=ds.name,
        kind="tabular",
        train=flat["train"],
        val=flat["val"],
        test=flat["test"],
        density=ds.density,
        levels=ds.levels,
        feature_names=ds.feature_names,
        description=ds.description,
    )
    return rows, image_shape


def load_images(
    name: str, seed: int, options: dict[str, Any], dtype: str = "float32"
) -> tuple[data.Dataset, data.Dataset]:
    """Quantized images kept as ``(N, C, H, W)``: their values ``k/L``, and dequantized.

    The second is what the loader gives by default (every split dequantized ``(k + u)/L`` with
    its own seeded noise, :func:`exactflow.data.dequantized`): the validation and test splits an
    image run is evaluated on. The first holds the integer pixels (as ``k/L``) that training
    dequantizes afresh every batch.

    Raises:
        CommandError: ``name`` is not one of :data:`IMAGE_DATA`.

    """
    key = name.strip().lower().replace("_", "-")
    if key not in IMAGE_DATA:
        raise CommandError(
            f"--data {name}: an image flow needs quantized images: one of"
            f" {', '.join(IMAGE_DATA)} (any MNIST-format folder: --data mnist --root DIR)"
        )
    if dtype not in DTYPES:
        raise CommandError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    options = {**options, "dequantize_pixels": False}
    if key == "digits":
        options["image"] = True
    try:
        pixels = data.load(key, seed=seed, dtype=DTYPES[dtype], **options)
    except TypeError as e:
        own = ("dequantize_pixels", "image")  # set here, not on the command line
        given = ", ".join(f"--{k.replace('_', '-')}" for k in options if k not in own)
        raise CommandError(
            f"--data {name} does not take the options given ({given}): {e}"
        ) from None
    return pixels, data.dequantized(pixels, seed)


def dataset_for(
    record: dict, override: str | None = None, allow_pickle: bool = False
) -> tuple[data.Dataset, list[int] | None]:
    """The data of a (checked) run record, or the data set ``override`` with default options.

    An image run's data are images ``(N, C, H, W)``, dequantized (:func:`load_images`).
    """
    source = record["data"]
    name = override or source["name"]
    options = source["options"] if override is None else {}
    dtype = record["train"].get("dtype", "float32")
    if image_run(record):
        ds = load_images(name, source["seed"], options, dtype)[1]
        image_shape = list(ds.event_shape)
    else:
        ds, image_shape = load_data(name, source["seed"], options, allow_pickle, dtype)
    recorded = record.get("image_shape")
    if override is None and recorded is not None and image_shape != recorded:
        raise CommandError(
            f"run.json says the images have shape {recorded} but {name} has {image_shape}"
        )
    return ds, image_shape


def refuse_outside(bounds: object, ds: data.Dataset, periodic: object = None) -> None:
    """Refuse data outside ``--bounds`` or ``--periodic`` before training, in one line.

    ``bounds`` and ``periodic`` are the preset's recorded keywords (``None``: not given). A
    bounded column must lie inside its open interval, a periodic one in ``[low, high)``; the
    values are compared in the data's dtype, as the flow compares them. The message names the
    split, row and column.
    """
    if bounds is not None:
        try:
            pairs = check_bounds(bounds, ds.features)  # type: ignore[arg-type]
        except ValueError as error:
            raise CommandError(f"--bounds: {str(error).splitlines()[0]}") from None
        columns = list(range(ds.features))
        _refuse("--bounds", ds, columns, pairs, closed=False, fix="widen the bounds")
    if periodic is not None:
        try:
            intervals = periodic_intervals(periodic, ds.features, "--periodic")
        except ValueError as error:
            raise CommandError(str(error).splitlines()[0]) from None
        columns = [int(c) for c, _, _ in intervals]
        pairs = [(low, high) for _, low, high in intervals]
        _refuse("--periodic", ds, columns, pairs, closed=True, fix="wrap the angles into it")


def _refuse(
    option: str,
    ds: data.Dataset,
    columns: list[int],
    pairs: list,
    closed: bool,
    fix: str,
) -> None:
    """Raise naming the first value of ``columns`` outside its interval (``closed``: ``[low,``)."""
    for split, x in ds.splits().items():
        values = x[:, columns]
        low = torch.tensor([p[0] for p in pairs], dtype=torch.float64).to(x.dtype)
        high = torch.tensor([p[1] for p in pairs], dtype=torch.float64).to(x.dtype)
        above = values >= low if closed else values > low
        outside = ~(above & (values < high))
        if bool(outside.any()):
            row, at = outside.nonzero()[0].tolist()
            column, names = columns[at], ds.feature_names
            name = f" ({names[column]})" if names and column < len(names) else ""
            interval = f"[{pairs[at][0]}, {pairs[at][1]})" if closed else f"{list(pairs[at])}"
            raise CommandError(
                f"{option}: {split} row {row + 1}, column {column + 1}{name} (counted from 1)"
                f" is {float(values[row, at])}, outside its interval {interval}; {fix} or drop"
                " the row"
            )
