"""``exactflow fit --model vae``: the VAE, its training data and objective, its report.

A VAE cannot evaluate ``log p(x)``: it is trained on a bound, the ELBO
``E_q[log p(x, z) - log q(z | x)] <= log p(x)`` (``--objective elbo``), or the tighter IWAE bound
``E[log (1/k) Σ_j w_j] `` with ``k`` importance weights (``--objective iwae --k K``). Its test
report gives the ELBO and an importance-sampling estimate of ``log p(x)`` with ``k`` draws per
point (default 1000), with standard errors: an estimate (a lower bound in expectation), not the
exact value a flow reports.

On binary data (``binary-digits``, ``binary-fashion-mnist``) the training batches are binarized
afresh every epoch from the grey intensities (dynamic binarization, the literature's setting);
validation and test use the data set's fixed binarization.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from torch import Tensor

from .. import data, objectives
from ..flow import DTYPES
from ..models import LatentVariableModel
from ..train import TrainConfig
from . import arguments
from .errors import CommandError

__all__ = [
    "MODEL",
    "OPTIONS",
    "POSTERIORS",
    "add_options",
    "evaluate",
    "format_report",
    "kwargs",
    "objective",
    "objective_record",
    "training_data",
]

MODEL = "DenseVAE"
POSTERIORS = ("gaussian", "planar", "radial", "sylvester", "iaf", "nsf", "maf")
# What defines a VAE (keyword arguments of DenseVAE): fixed once a run has started.
OPTIONS = ("latent", "posterior", "likelihood", "context", "kind", "transforms", "hidden")
EVAL_K = 1000  # importance draws per test point for the log p(x) estimate
ROWS = 128  # test points per batch of the estimate (memory: ROWS x CHUNK x D)
CHUNK = 128  # importance draws at a time


def add_options(p: argparse.ArgumentParser) -> None:
    """The VAE options of ``fit`` (``--transforms``/``--hidden`` are shared with flows)."""
    g = p.add_argument_group("VAE (--model vae; --transforms: posterior steps, --hidden: MLPs)")
    g.add_argument(
        "--posterior",
        type=str.lower,
        choices=POSTERIORS,
        help="q(z|x): a diagonal Gaussian or a flow on it (default gaussian)",
    )
    g.add_argument("--latent", type=arguments.count, help="latent width (default 16)")
    g.add_argument(
        "--likelihood",
        choices=("bernoulli", "gaussian"),
        help="decoder (default: bernoulli for binary-* data, gaussian otherwise)",
    )
    g.add_argument("--context", type=arguments.count, help="encoder feature width (default 64)")
    g.add_argument(
        "--kind",
        choices=("orthogonal", "householder", "triangular"),
        help="Sylvester posterior's kind (default orthogonal)",
    )
    g.add_argument("--objective", choices=("elbo", "iwae"), help="bound to train (default elbo)")
    g.add_argument(
        "--k",
        type=arguments.count,
        help="importance samples per point in training (default: 1 elbo, 5 iwae)",
    )
    g.add_argument(
        "--eval-k",
        type=arguments.count,
        help=f"draws per test point for the log p(x) estimate (default {EVAL_K})",
    )


def kwargs(args: argparse.Namespace, data_name: str) -> dict[str, Any]:
    """DenseVAE's keyword arguments from the options given (``features`` comes from the data).

    Without ``--likelihood``, binary data gets a Bernoulli decoder and other data a Gaussian one.

    Example:
        >>> args = argparse.Namespace(**{**dict.fromkeys(OPTIONS), "latent": 8})
        >>> kwargs(args, "digits")
        {'latent': 8, 'likelihood': 'gaussian'}

    """
    given = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}
    if "likelihood" not in given and not binary(data_name):
        given["likelihood"] = "gaussian"
    return given


def objective_record(args: argparse.Namespace) -> dict[str, Any]:
    """The training bound as ``run.json`` records it."""
    name = args.objective or "elbo"
    return {"name": name, "k": args.k or (1 if name == "elbo" else 5)}


def objective(record: dict) -> objectives.Objective:
    """The bound of a (checked) record: ``ELBO(samples=k)`` or ``IWAE(k)``."""
    k = record.get("k", 1)
    if record["name"] == "iwae":
        return objectives.IWAE(k)
    if record["name"] == "elbo":
        return objectives.ELBO(samples=k)
    raise CommandError(f"run.json: objective {record['name']!r} does not train a VAE")


def binary(name: str) -> bool:
    """Whether ``name`` is a binarized image set (trained on dynamic binarizations)."""
    return name.startswith("binary-")


def training_data(record: dict, ds: data.Dataset, config: TrainConfig) -> Any:
    """The VAE's training data: fresh binarizations of the intensities for binary data."""
    source = record["data"]
    if source.get("binarization") != "dynamic":
        return ds.train
    # The options that choose the same split of the same images as the binarized set.
    options = {k: v for k, v in source["options"].items() if k in ("root", "n_val")}
    grey = data.intensities(
        source["name"].removeprefix("binary-"),
        source["seed"],
        dtype=DTYPES[config.dtype],
        **options,
    )
    return data.DynamicBinarization(grey.train.flatten(1), config.batch_size, config.seed)


# ---------------------------------------------------------------------------- the report
def _mean_stderr(values: Tensor) -> tuple[float, float | None]:
    n = len(values)
    mean = float(values.mean())
    spread = float(values.std()) / math.sqrt(n) if n > 1 else math.nan
    return mean, spread if math.isfinite(spread) else None


def evaluate(
    vae: LatentVariableModel, ds: data.Dataset, split: str = "test", k: int = EVAL_K
) -> dict[str, Any]:
    """The ELBO and the importance-sampling estimate of ``log p(x)`` on a split, nats per point.

    ``elbo``/``elbo_stderr``: mean single-draw ELBO over the points and its standard error
    across them. ``iwae``: the mean of ``log (1/k) Σ_j w_j`` per point (``k`` draws), an estimate
    of ``log p(x)`` that is a lower bound in expectation; ``iwae_stderr`` its standard error
    across points (comparable to a flow's ``nll_stderr``), ``iwae_mc_stderr`` the importance
    sampling's own error (delta method), which is what separates two models on the same points.
    ``nll = -iwae`` and ``bits_per_dim`` (from it) are there for comparison with flows.
    """
    x = ds.splits().get(split)
    if x is None or len(x) == 0:
        raise CommandError(f"the {split} split of {ds.name} is empty; nothing to evaluate")
    vae.check_data(x, None, f"the {split} split of {ds.name}")
    vae.eval()
    elbos, estimates, errors = vae.bounds(x, k, batch_size=ROWS, chunk=CHUNK)
    mean_elbo, elbo_stderr = _mean_stderr(elbos)
    mean_iwae, iwae_stderr = _mean_stderr(estimates)
    mc_stderr = float(errors.square().sum().sqrt()) / len(errors)
    report: dict[str, Any] = {
        "split": split,
        "points": len(x),
        "elbo": mean_elbo,
        "elbo_stderr": elbo_stderr,
        "iwae": mean_iwae,
        "iwae_stderr": iwae_stderr,
        "iwae_mc_stderr": mc_stderr if math.isfinite(mc_stderr) else None,
        "k": k,
        "nll": -mean_iwae,
        "estimate": f"log p(x) by importance sampling, {k} draws per point (a lower bound in"
        " expectation), not exact",
    }
    dims = x[0].numel()
    if binary(ds.name):  # a probability mass: bits are nats / log 2
        report["bits_per_dim"] = -mean_iwae / (dims * math.log(2))
    elif ds.levels is not None:
        report["bits_per_dim"] = float(data.bits_per_dim(-mean_iwae, dims, ds.levels))
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in report.items()
    }


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def format_report(name: str, report: dict[str, Any]) -> str:
    """One line: the ELBO and the IWAE estimate of ``log p(x)`` with their standard errors."""
    split = report.get("split", "test")
    parts = [
        f"{name}: {split} ELBO {_number(report.get('elbo'))} ± {_number(report.get('elbo_stderr'))}"
        " nats",
        f"log p(x) ≈ {_number(report.get('iwae'))} ± {_number(report.get('iwae_stderr'))} nats"
        f" (IWAE estimate, k={report.get('k')}, importance-sampling error"
        f" ± {_number(report.get('iwae_mc_stderr'))})",
    ]
    if report.get("bits_per_dim") is not None:
        parts.append(f"{_number(report['bits_per_dim'])} bits/dim (from the estimate)")
    return ", ".join(parts)
