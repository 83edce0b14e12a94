"""Discrete columns in ``exactflow fit``: detected or declared, dequantized, reported as a bound.

A table file's columns that hold only integers with few distinct values (at most
:data:`~exactflow.models.columns.MAX_LEVELS`, or at most 5 % of the training rows:
:func:`~exactflow.models.columns.integer_columns`) are discrete: counts, ratings, categories
coded ``0..C-1``. ``--discrete auto`` (the default for table files) dequantizes them,
``--discrete none`` keeps every column continuous, ``--discrete 2,age`` names them (0-based
indices or names, of the columns loaded, as ``--columns`` selects them). Registered data sets are
continuous unless ``--discrete`` names columns.

The run's model is then :class:`~exactflow.models.Dequantized` around the ``--flow`` preset
(``--dequantization uniform|variational``), trained by the ELBO (the dequantization bound);
the standardization becomes a step of that model, fitted to the exact moments of ``k + u``. Its
report gives the **dequantization bound** of ``log P(k, x_rest)`` (nats per row: a probability
in the discrete columns, a density in the others) and the importance-weighted estimate, the
tighter figure, never an exact NLL.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

from ..data import Dataset
from ..data.columns import column_label, resolve
from ..models import Dequantized
from ..models.columns import integer_columns
from ..models.dequantizers import DEQUANTIZERS
from ..train import TrainConfig
from ..train.distributed import launch
from . import vae
from .errors import CommandError
from .runs import kind

__all__ = [
    "MODEL",
    "OPTIONS",
    "add_options",
    "apply",
    "drawn",
    "evaluate",
    "format_report",
    "prepare",
    "recorded",
    "report",
    "uses",
]

MODEL = "Dequantized"
#: ``fit`` options of density runs on tables only.
OPTIONS = ("discrete", "dequantization")
_PREFIX = "flow_"


def add_options(g: Any) -> None:
    """``--discrete`` and ``--dequantization`` (recorded in the model's spec)."""
    g.add_argument(
        "--discrete",
        help="tables: integer columns to dequantize: auto (integers with at most 50 distinct"
        " values or 5%% of the rows; default for table files), none, or 0-based indices/names"
        " such as 2,age",
    )
    g.add_argument(
        "--dequantization",
        choices=DEQUANTIZERS,
        help="noise of the discrete columns: uniform (default) or variational (learned)",
    )


def uses(spec: dict) -> bool:
    """Whether a (checked) model spec is a table model with discrete columns."""
    return spec["name"] == MODEL and "discrete" in spec["kwargs"]


def _columns(args: argparse.Namespace, ds: Dataset, name: str, is_file: bool) -> list[int]:
    choice = (args.discrete or "auto").strip()
    if choice.lower() == "none":
        return []
    if choice.lower() == "auto":
        return integer_columns(ds.train) if is_file else []
    items = [c.strip() for c in choice.split(",")]
    wanted = [int(c) if c.lstrip("-").isdigit() else c for c in items]
    try:
        columns = sorted(resolve(wanted, ds.feature_names, ds.features, Path(name)))
    except (TypeError, ValueError) as e:
        raise CommandError(f"--discrete {choice}: {e}") from None
    for split, x in ds.splits().items():
        bad = x[:, columns] != x[:, columns].round()
        if bool(bad.any()):
            row, j = bad.nonzero()[0].tolist()
            raise CommandError(
                f"--discrete {choice}: {column_label(columns[j], ds.feature_names)} is not"
                f" integer-valued: {split} row {row + 1} holds {float(x[row, columns[j]]):.6g}"
                " (counted from 1)"
            )
    return columns


def apply(
    record: dict, args: argparse.Namespace, ds: Dataset, config: TrainConfig, image: bool
) -> TrainConfig:
    """Make a new flow run's model a :class:`Dequantized` one when its data have discrete columns.

    Says in one line what was done, and returns the training settings (the standardization
    moves into the model); without discrete columns the record and settings are unchanged.
    """
    if kind(record) != "flow" or image:
        for key in OPTIONS:
            if getattr(args, key) is not None and image:
                raise CommandError(f"--{key} applies to tables, not to image flows")
        return config
    is_file = Path(record["data"]["name"]).is_absolute()  # a registered name never is
    columns = _columns(args, ds, record["data"]["name"], is_file)
    if not columns:
        if args.dequantization is not None:
            raise CommandError("--dequantization applies to discrete columns, and there are none")
        return config
    if "objective" in record:
        raise CommandError(
            "--kinetic and --jacobian-norm regularize an exact NLL; a run with discrete columns"
            " trains the dequantization bound (--discrete none keeps every column continuous)"
        )
    flow = record["flow"]
    dequantizer = args.dequantization or "uniform"
    record["flow"] = {
        "name": MODEL,
        "kwargs": {
            "flow": flow["name"],
            **{_PREFIX + key: value for key, value in flow["kwargs"].items()},
            "discrete": columns,
            "dequantizer": dequantizer,
            "standardize": config.standardize,
        },
    }
    record["objective"] = {"name": "elbo", "k": 1}
    config = dataclasses.replace(config, standardize=False)
    record["train"] = config.to_dict()
    labels = ", ".join(column_label(j, ds.feature_names).removeprefix("column ") for j in columns)
    how = "uniformly" if dequantizer == "uniform" else "by a learned (variational) noise"
    plural = "s" if len(columns) > 1 else ""
    if launch().main:
        print(
            f"column{plural} {labels}: integer-valued, dequantized {how}; the reported NLL is the"
            " dequantization bound of their probability"
        )
    return config


def prepare(model: object, spec: dict, ds: Dataset) -> None:
    """Fit a new discrete run's standardization step to its training rows (else nothing)."""
    if uses(spec) and model.standardize:
        model.fit_standardization(ds.train)


def drawn(model: object) -> object:
    """What a run's figures show: a discrete run's flow (in data units), else the model."""
    return model.flow if isinstance(model, Dequantized) and model.columns is not None else model


def recorded(spec: dict) -> dict[str, Any]:
    """A discrete run's flow options as the command line gives them, for ``--resume``'s check.

    Empty for other runs.
    """
    if not uses(spec):
        return {}
    kwargs = spec["kwargs"]
    options = {key[len(_PREFIX) :]: v for key, v in kwargs.items() if key.startswith(_PREFIX)}
    return {
        **{key: value for key, value in options.items() if key != "features"},
        "flow": str(kwargs["flow"]).lower(),
        "dequantization": kwargs.get("dequantizer"),
        "no_standardize": not kwargs.get("standardize", False),
    }


def evaluate(model: Dequantized, ds: Dataset, split: str = "test", k: int = vae.EVAL_K) -> dict:
    """The dequantization bound and the importance-weighted estimate on a split, nats per row.

    ``bound``: the mean over rows of ``E_u[log p(k + u, x_rest) - log q(u)]`` (one draw per
    row; its standard error across rows), a lower bound on ``log P(k, x_rest)``; ``estimate``:
    the mean of ``log (1/k) Σ_j w_j`` (also a lower bound in expectation, the tighter figure),
    with its standard errors across rows and of the importance sampling; ``nll_bound`` is
    ``-bound``, an upper bound on the NLL.
    """
    figures = vae.evaluate(model, ds, split, k)
    return {
        "split": figures["split"],
        "points": figures["points"],
        "discrete_columns": list(model.columns.indices),
        "dequantization": model.dequantization,
        "bound": figures["elbo"],
        "bound_stderr": figures["elbo_stderr"],
        "nll_bound": None if figures["elbo"] is None else -figures["elbo"],
        "estimate": figures["iwae"],
        "estimate_stderr": figures["iwae_stderr"],
        "estimate_mc_stderr": figures["iwae_mc_stderr"],
        "k": k,
        "what": "dequantization bound of log P(k, x_rest), nats per row: a probability in the"
        " discrete columns, a density in the others; estimate: importance-weighted, k draws per"
        " row (a lower bound in expectation); neither is an exact likelihood",
    }


def report(model: Dequantized, ds: Dataset) -> tuple[dict, str]:
    """The test report of a discrete run and its line."""
    figures = evaluate(model, ds)
    return figures, format_report(ds.name, figures)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def format_report(name: str, report: dict) -> str:
    """One line: the bound and the estimate, with their standard errors."""
    return (
        f"{name}: {report['split']} dequantization bound {_number(report['bound'])}"
        f" ± {_number(report['bound_stderr'])} nats/row (NLL ≤ {_number(report['nll_bound'])}),"
        f" importance-weighted estimate {_number(report['estimate'])}"
        f" ± {_number(report['estimate_stderr'])} (k={report['k']}, importance-sampling error"
        f" ± {_number(report['estimate_mc_stderr'])}); a bound of log P(k, x_rest), not exact"
    )
