"""Pictures of 2-D densities and of marginals: fitted flows against data, and against VI targets.

* :func:`density_2d` — a flow fitted to 2-D data: data, learned density, samples (and the truth).
* :func:`pairwise` — pairwise marginals of tabular data against a flow's samples.
* :func:`target_vs_flow` — a flow trained by variational inference against its 2-D target, as in
  Rezende & Mohamed (2015), Figure 3.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..flow import Flow, placement
from .figure import save

if TYPE_CHECKING:
    from ..targets import Target

__all__ = ["density_2d", "pairwise", "target_vs_flow"]

Box = tuple[float, float, float, float]


def _bounds(points: Tensor, margin: float = 0.1) -> Box:
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
    bounds: Box,
    resolution: int,
    dtype: torch.dtype,
    device: torch.device | None = None,
    chunk: int = 65536,
) -> np.ndarray:
    """``log_density`` on a ``resolution²`` grid over ``bounds``, ``chunk`` points a call.

    Rows run along ``y`` and columns along ``x`` (``imshow(..., origin="lower")`` order).
    """
    x0, x1, y0, y1 = bounds
    xs = torch.linspace(x0, x1, resolution, dtype=dtype, device=device)
    ys = torch.linspace(y0, y1, resolution, dtype=dtype, device=device)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx, gy], -1).reshape(-1, 2)
    with torch.no_grad():
        values = torch.cat([log_density(part) for part in points.split(chunk)])
    return values.reshape(resolution, resolution).double().cpu().numpy()


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
    return save(fig, path)


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
    return save(fig, path)


def _box(bounds: Sequence[float]) -> Box:
    box = tuple(float(b) for b in bounds)
    if len(box) != 4 or not all(math.isfinite(b) for b in box):
        raise ValueError(
            "target_vs_flow: bounds must be 4 finite numbers (xmin, xmax, ymin, ymax),"
            f" got {bounds}"
        )
    if not (box[0] < box[1] and box[2] < box[3]):
        raise ValueError(f"target_vs_flow: bounds need xmin < xmax and ymin < ymax, got {box}")
    return box  # type: ignore[return-value]


def _positive(name: str, value: object, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"target_vs_flow: {name} must be an integer >= {least}, got {value!r}")
    return value


def target_vs_flow(
    target: Target,
    flow: Flow,
    path: str | os.PathLike,
    samples: int = 2000,
    grid: int = 200,
    bounds: Sequence[float] | None = None,
    chunk: int = 8192,
) -> Path:
    """A 2-D target density beside a variational flow ``q``: its density and its samples.

    Three panels over the same box, as in Rezende & Mohamed (2015), Figure 3: the target
    ``p(z) = exp(log p̃(z) - log Z)``, the flow's ``q(z) = exp(flow.log_prob(z))`` on the same grid
    and colour scale, and ``samples`` draws of ``q`` over the target's contours. ``log Z`` is
    ``target.log_normalizer`` when known; otherwise the target is normalized numerically on the
    grid (a Riemann sum over the box, so mass outside it is ignored; the panel says so). The
    second panel states q's mass inside the box (the same Riemann sum). Evaluation runs without
    gradients, in eval mode, in the flow's dtype and on its device, ``chunk`` grid points at a
    time, so flows whose ``log_prob`` is costly (a numerical or sequential inverse: Planar,
    Sylvester, IAF) stay within memory.

    Args:
        target: A 2-D :class:`exactflow.targets.Target`: ``target(z (..., 2)) -> (...)`` is
            ``log p̃``; its ``dim``, ``name``, ``bounds`` and ``log_normalizer`` are read.
        flow: An unconditional flow over ``(2,)``.
        path: PNG file to write.
        samples: Draws of ``q`` in the third panel.
        grid: Grid points per axis.
        bounds: The box ``(xmin, xmax, ymin, ymax)``; default ``target.bounds``, or when that
            is ``None`` (a user's function) the central 99% of the samples, padded by a quarter.
        chunk: Grid points per call of ``target`` and ``flow.log_prob``.

    Returns:
        The path written.

    Raises:
        ValueError: A target or flow that is not 2-D, a conditional flow, a bad box, or a
            ``NaN`` density.

    Example:
        >>> import os, tempfile
        >>> import exactflow as ef
        >>> target = ef.targets.get("banana")
        >>> flow = ef.flows.Planar(features=2, transforms=2)
        >>> png = target_vs_flow(target, flow, os.path.join(tempfile.mkdtemp(), "vi.png"), grid=40)
        >>> png.read_bytes()[1:4]
        b'PNG'

    """
    if target.dim != 2:
        raise ValueError(
            f"target_vs_flow: needs a 2-D target, got {target.name!r} with dim={target.dim}"
        )
    if tuple(flow.event_shape) != (2,) or flow.context:
        raise ValueError(
            "target_vs_flow: needs an unconditional flow over (2,), got event_shape"
            f" {tuple(flow.event_shape)} with context={flow.context}"
        )
    box = bounds if bounds is not None else target.bounds
    box = _box(box) if box is not None else None
    samples, grid = _positive("samples", samples), _positive("grid", grid, least=2)
    chunk = _positive("chunk", chunk)
    dtype, device = placement(flow)
    was_training = flow.training
    flow.eval()
    try:
        with torch.no_grad():
            z = flow.sample((samples,)).double().cpu()
        box = box if box is not None else _bounds(z, margin=0.25)
        log_p = _log_density_grid(target, box, grid, dtype, device, chunk)
        log_q = _log_density_grid(flow.log_prob, box, grid, dtype, device, chunk)
    finally:
        flow.train(was_training)
    for what, values in (("the target", log_p), ("flow.log_prob", log_q)):
        if np.isnan(values).any():
            raise ValueError(f"target_vs_flow: {what} is NaN at some grid points in {box}")
    cell = (box[1] - box[0]) * (box[3] - box[2]) / (grid - 1) ** 2
    if target.log_normalizer is None:
        log_z = float(torch.logsumexp(torch.from_numpy(log_p).flatten(), 0)) + math.log(cell)
        if not math.isfinite(log_z):
            raise ValueError(f"target_vs_flow: the target has no mass inside the box {box}")
        p_title = f"target {target.name}\n(normalized on the grid)"
    else:
        log_z = float(target.log_normalizer)
        p_title = f"target {target.name}\nexp(log p̃ - log Z)"
    p, q = np.exp(log_p - log_z), np.exp(log_q)
    peak = max(float(p.max()), float(q.max())) or 1.0
    z = z.numpy()
    inside = (z[:, 0] >= box[0]) & (z[:, 0] <= box[1]) & (z[:, 1] >= box[2]) & (z[:, 1] <= box[3])

    fig = Figure(figsize=(11.5, 3.9), layout="constrained")
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 0.05, 1]})
    shown = {"origin": "lower", "extent": box, "cmap": "magma", "aspect": "auto"}
    image = axes[0].imshow(p, vmin=0.0, vmax=peak, **shown)
    axes[0].set_title(p_title, fontsize=10)
    axes[1].imshow(q, vmin=0.0, vmax=peak, **shown)
    axes[1].set_title(f"flow q, same scale\n(mass in box {float(q.sum()) * cell:.3f})", fontsize=10)
    fig.colorbar(image, cax=axes[2], label="density")
    xs = np.linspace(box[0], box[1], grid)
    ys = np.linspace(box[2], box[3], grid)
    levels = np.linspace(0.0, float(p.max()), 7)[1:-1]
    if levels.size and levels[0] > 0:
        axes[3].contour(xs, ys, p, levels=levels, colors="0.6", linewidths=0.8)
    axes[3].scatter(z[:, 0], z[:, 1], s=2, c="tab:blue", alpha=0.5, linewidths=0)
    axes[3].set_title(
        f"{samples} samples of q\n({100.0 * inside.mean():.0f}% in box; grey: target)", fontsize=10
    )
    for ax in (axes[0], axes[1], axes[3]):
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.set_xticks([])
        ax.set_yticks([])
    return save(fig, path)
