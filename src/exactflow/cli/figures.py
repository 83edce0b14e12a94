"""The pictures of a run, drawn into ``RUN/figures`` by ``fit`` and ``plot``."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import data, plot
from ..flow import Flow

__all__ = ["draw"]


def draw(
    run: Path, flow: Flow, ds: data.Dataset, image_shape: list[int] | None, seed: int
) -> list[Path]:
    """Draw the density (2-D), pairwise marginals (tables) or image grids, and the curves.

    Returns:
        The files written.

    """
    figures = run / "figures"
    torch.manual_seed(seed)
    n = min(len(ds.test), 5000)
    with torch.no_grad():
        samples = flow.sample((n,))
    written = []
    if ds.features == 2:
        written.append(
            plot.density_2d(
                figures / "density.png",
                flow.log_prob,
                ds.test,
                samples,
                true_log_density=ds.log_density,
                title=ds.name,
            )
        )
    elif image_shape is None:
        written.append(
            plot.pairwise(
                figures / "pairwise.png",
                ds.test,
                samples,
                names=list(ds.feature_names) if ds.feature_names else None,
                title=f"{ds.name}: data (blue, below) vs samples (orange, above)",
            )
        )
    if image_shape is not None:
        shape = (-1, *image_shape)
        written.append(
            plot.image_grid(
                figures / "samples.png", samples[:64].reshape(shape), title=f"{ds.name}: samples"
            )
        )
        written.append(
            plot.image_grid(
                figures / "data.png", ds.test[:64].reshape(shape), title=f"{ds.name}: test data"
            )
        )
    metrics = run / "metrics.csv"
    if metrics.is_file():
        written.append(plot.training_curves(figures / "training.png", metrics, title=ds.name))
    return written
