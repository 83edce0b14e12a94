"""Training curves from a run's ``metrics.csv``: the objective's metric against the epoch or step.

* :func:`training_curves` — train and validation metric (NLL for a flow fitted to data).
* :func:`vi_curves` — the ``-ELBO`` of variational inference, with ``-log Z`` when it is known,
  so the gap between the two is ``KL(q || p)``.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .figure import save

__all__ = ["training_curves", "vi_curves"]

LABELS = {"nll": "NLL", "neg_elbo": "-ELBO", "neg_iwae": "-IWAE bound"}


def _read_metrics(metrics_csv: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a ``metrics.csv`` as float arrays (an empty cell is ``NaN``)."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{metrics_csv}: no metrics rows to plot")
    columns: dict[str, list[float]] = {key: [] for key in rows[0]}
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        for key, values in columns.items():
            cell = row.get(key)
            try:
                values.append(math.nan if cell in (None, "") else float(cell))
            except ValueError:
                raise ValueError(
                    f"{metrics_csv}: line {i}, column {key!r}: expected a number, got {cell!r}"
                ) from None
    return {key: np.array(values) for key, values in columns.items()}


def _metric(columns: dict[str, np.ndarray], metrics_csv: str | os.PathLike) -> str:
    """The objective's metric name, read off the ``train_<name>`` column."""
    names = [key.removeprefix("train_") for key in columns if key.startswith("train_")]
    if not names:
        raise ValueError(
            f"{metrics_csv}: expected a train_<metric> column, got columns {list(columns)}"
        )
    return names[0]


def training_curves(
    path: str | os.PathLike, metrics_csv: str | os.PathLike, title: str = ""
) -> Path:
    """Train and validation metric (NLL for maximum likelihood) against the epoch.

    The metric is the objective's, read off the ``train_<name>``/``val_<name>`` columns of a run's
    ``metrics.csv`` (``nll``, ``neg_elbo``, ``neg_iwae``, ...).
    """
    columns = _read_metrics(metrics_csv)
    metric = _metric(columns, metrics_csv)
    label = LABELS.get(metric, metric)
    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    for split, name in (("train", "train"), ("val", "validation")):
        values = columns.get(f"{split}_{metric}", np.full(len(columns["epoch"]), math.nan))
        ax.plot(columns["epoch"], values, label=f"{name} {label}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{label} (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)


def vi_curves(
    metrics_csv: str | os.PathLike,
    path: str | os.PathLike,
    log_z: float | None = None,
    title: str = "",
) -> Path:
    """The ``-ELBO`` of variational inference against the step, with ``-log Z`` when known.

    The reverse-KL objective's mean is ``E_q[log q - log p̃] = KL(q || p) - log Z``, so it lies
    above ``-log Z`` and the gap between the curve and that line is ``KL(q || p)``. The figure
    states the last validation gap (an estimate: the validation ``-ELBO`` is a Monte Carlo mean).
    The vertical range leaves out the first tenth of the run, whose values can dwarf the rest.

    Args:
        metrics_csv: A run's ``metrics.csv`` with ``train_neg_elbo`` (and ``val_neg_elbo``).
        path: PNG file to write.
        log_z: The target's exact ``log Z`` (e.g. ``target.log_normalizer``), or ``None``.
        title: Axes title.

    Returns:
        The path written.

    Example:
        >>> import math, os, tempfile
        >>> import exactflow as ef
        >>> from exactflow.train import TrainConfig, fit
        >>> def log_target(z):  # a standard normal, unnormalized: log Z = log 2π
        ...     return -0.5 * (z**2).sum(-1)
        >>> out = tempfile.mkdtemp()
        >>> flow = ef.flows.Planar(features=2, transforms=2)
        >>> config = TrainConfig(steps=60, epoch_steps=20, out=out, lr=1e-2)
        >>> vi = ef.objectives.ReverseKL(log_target, samples=64)
        >>> _ = fit(flow, vi, config=config, progress=False)
        >>> png = vi_curves(f"{out}/metrics.csv", f"{out}/vi.png", log_z=math.log(2 * math.pi))
        >>> png.read_bytes()[1:4]
        b'PNG'

    """
    columns = _read_metrics(metrics_csv)
    if "train_neg_elbo" not in columns:
        raise ValueError(
            f"{metrics_csv}: expected a train_neg_elbo column (a reverse-KL or ELBO run), got"
            f" columns {list(columns)}"
        )
    if log_z is not None and not math.isfinite(log_z):
        raise ValueError(f"vi_curves: log_z must be a finite number or None, got {log_z!r}")
    curves = {
        label: columns[key]
        for key, label in (("train_neg_elbo", "train -ELBO"), ("val_neg_elbo", "validation -ELBO"))
        if key in columns and np.isfinite(columns[key]).any()
    }
    if not curves:
        raise ValueError(f"{metrics_csv}: no finite -ELBO value to plot")
    x_key = "step" if "step" in columns and np.isfinite(columns["step"]).all() else "epoch"
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.subplots()
    for label, values in curves.items():
        ax.plot(columns[x_key], values, label=label, marker="." if len(values) < 50 else "")
    shown = [values[len(values) // 10 :] for values in curves.values()]
    gap = None
    if log_z is not None:
        ax.axhline(-log_z, color="black", linestyle="--", linewidth=1, label="-log Z (exact)")
        shown.append(np.array([-log_z]))
        last = list(curves.values())[-1]  # validation when there is one
        gap = f"last gap: KL(q‖p) ≈ {float(last[np.isfinite(last)][-1]) + log_z:.3g} nats"
    values = np.concatenate(shown)
    values = values[np.isfinite(values)]
    if not values.size:  # only the first tenth is finite
        values = np.concatenate([v[np.isfinite(v)] for v in curves.values()])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.1 * (hi - lo) or 0.1 * max(abs(lo), 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(x_key)
    ax.set_ylabel("-ELBO (nats)")
    ax.legend(loc="best", fontsize=9, title=gap, title_fontsize=9)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)
