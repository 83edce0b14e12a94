"""Pictures of fitted flows: 2-D densities, pairwise marginals, image grids, training curves.

Every function draws on its own :class:`matplotlib.figure.Figure` (no pyplot global state) and
writes the PNG atomically, so an interrupted run never leaves a half-written picture.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .atomic import write_atomic

__all__ = ["density_2d", "image_grid", "pairwise", "training_curves"]


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def _bounds(points: Tensor, margin: float = 0.1) -> tuple[float, float, float, float]:
    lo = torch.quantile(points, 0.005, dim=0)
    hi = torch.quantile(points, 0.995, dim=0)
    pad = (hi - lo) * margin
    return (
        float(lo[0] - pad[0]),
        float(hi[0] + pad[0]),
        float(lo[1] - pad[1]),
        float(hi[1] + pad[1]),
    )


def _log_density_grid(
    log_density: Callable[[Tensor], Tensor],
    bounds: tuple[float, float, float, float],
    resolution: int,
    dtype: torch.dtype,
) -> np.ndarray:
    x0, x1, y0, y1 = bounds
    xs = torch.linspace(x0, x1, resolution, dtype=dtype)
    ys = torch.linspace(y0, y1, resolution, dtype=dtype)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx, gy], -1).reshape(-1, 2)
    with torch.no_grad():
        values = torch.cat([log_density(chunk) for chunk in points.split(65536)])
    return values.reshape(resolution, resolution).double().numpy()


def density_2d(
    path: str | os.PathLike,
    log_density: Callable[[Tensor], Tensor],
    data: Tensor,
    samples: Tensor,
    true_log_density: Callable[[Tensor], Tensor] | None = None,
    title: str = "",
    resolution: int = 200,
) -> Path:
    """Draw a fitted 2-D density beside the data and the flow's samples.

    Panels: data (2-D histogram), the learned density ``exp(log p)`` on a grid, samples from the
    flow, and the true density when ``true_log_density`` is given.

    Args:
        path: PNG file to write.
        log_density: Maps points ``(N, 2)`` to ``log p`` ``(N,)`` (e.g. ``flow.log_prob``).
        data: Data points ``(N, 2)`` (test split, in the data's own units).
        samples: Samples from the flow ``(M, 2)``.
        true_log_density: The generating log density, if known.
        title: Figure title.
        resolution: Grid points per axis.
    """
    data, samples = data.detach().cpu(), samples.detach().cpu()
    bounds = _bounds(data.double())
    extent = bounds
    panels = 4 if true_log_density is not None else 3
    fig = Figure(figsize=(3.2 * panels, 3.4))
    axes = fig.subplots(1, panels)
    hist_range = [[bounds[0], bounds[1]], [bounds[2], bounds[3]]]
    axes[0].hist2d(data[:, 0].numpy(), data[:, 1].numpy(), bins=120, range=hist_range, cmap="magma")
    axes[0].set_title(f"data ({len(data)})")
    learned = np.exp(_log_density_grid(log_density, bounds, resolution, data.dtype))
    axes[1].imshow(learned, origin="lower", extent=extent, cmap="magma", aspect="auto")
    axes[1].set_title("learned density")
    axes[2].hist2d(
        samples[:, 0].numpy(), samples[:, 1].numpy(), bins=120, range=hist_range, cmap="magma"
    )
    axes[2].set_title(f"flow samples ({len(samples)})")
    if true_log_density is not None:
        true = np.exp(_log_density_grid(true_log_density, bounds, resolution, torch.float64))
        axes[3].imshow(true, origin="lower", extent=extent, cmap="magma", aspect="auto")
        axes[3].set_title("true density")
    for ax in axes:
        ax.set_xlim(bounds[0], bounds[1])
        ax.set_ylim(bounds[2], bounds[3])
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def pairwise(
    path: str | os.PathLike,
    data: Tensor,
    samples: Tensor,
    columns: list[int] | None = None,
    names: list[str] | None = None,
    title: str = "",
) -> Path:
    """Pairwise marginals of data (blue) against flow samples (orange) for a few columns.

    Diagonal: 1-D histograms; below it: 2-D scatter of data; above it: scatter of samples.

    Args:
        path: PNG file to write.
        data: Data ``(N, D)``.
        samples: Flow samples ``(M, D)``.
        columns: Which columns to show (default: the first ``min(D, 5)``).
        names: Column names for the axis labels.
        title: Figure title.
    """
    data, samples = data.detach().cpu().double(), samples.detach().cpu().double()
    columns = columns if columns is not None else list(range(min(data.shape[1], 5)))
    k = len(columns)
    fig = Figure(figsize=(2.0 * k, 2.0 * k))
    axes = np.atleast_2d(fig.subplots(k, k, squeeze=False))
    n = min(len(data), len(samples), 2000)
    for i, ci in enumerate(columns):
        for j, cj in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == j:
                lo = float(torch.quantile(data[:, ci], 0.005))
                hi = float(torch.quantile(data[:, ci], 0.995))
                kw = {"bins": 40, "range": (lo, hi), "density": True, "histtype": "step"}
                ax.hist(data[:, ci].numpy(), color="tab:blue", **kw)
                ax.hist(samples[:, ci].numpy(), color="tab:orange", **kw)
            else:
                source, color = (data, "tab:blue") if i > j else (samples, "tab:orange")
                ax.scatter(source[:n, cj].numpy(), source[:n, ci].numpy(), s=1, c=color, alpha=0.4)
            if i == k - 1:
                ax.set_xlabel(names[cj] if names else f"x{cj}")
            if j == 0:
                ax.set_ylabel(names[ci] if names else f"x{ci}")
    fig.suptitle(title or "data (blue, below diagonal) vs flow samples (orange, above)")
    return _save(fig, path)


def image_grid(
    path: str | os.PathLike, images: Tensor, rows: int | None = None, title: str = ""
) -> Path:
    """A grid of images ``(N, C, H, W)`` with values in ``[0, 1]`` (clipped), grey or RGB."""
    images = images.detach().cpu().clamp(0, 1)
    n = images.shape[0]
    rows = rows or max(1, int(math.sqrt(n)))
    cols = math.ceil(n / rows)
    c, h, w = images.shape[1:]
    canvas = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for k in range(n):
        r, q = divmod(k, cols)
        canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = (
            images[k]
        )
    fig = Figure(figsize=(max(2.0, cols * w / 12), max(2.0, rows * h / 12)))
    ax = fig.subplots()
    if c == 1:
        ax.imshow(canvas[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def training_curves(
    path: str | os.PathLike, metrics_csv: str | os.PathLike, title: str = ""
) -> Path:
    """Train and validation NLL against the epoch, from a run's ``metrics.csv``."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{metrics_csv}: no metrics rows to plot")
    epoch = [float(r["epoch"]) for r in rows]
    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    for key, label in (("train_nll", "train NLL"), ("val_nll", "validation NLL")):
        values = [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows]
        ax.plot(epoch, values, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)
