"""The pictures of a run, drawn into ``RUN/figures`` by ``fit``, ``vi`` and ``plot``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import data, plot
from ..flow import Flow
from ..models import LatentVariableModel

if TYPE_CHECKING:
    from ..targets import Target

__all__ = ["draw", "draw_vi"]


def draw(
    run: Path, model: Any, ds: data.Dataset, image_shape: list[int] | None, seed: int
) -> list[Path]:
    """Draw a run's pictures and its training curves.

    A flow: its density (2-D), pairwise marginals (tables) or image grids; a VAE: test images,
    their reconstructions and samples.

    Returns:
        The files written.

    """
    figures = run / "figures"
    torch.manual_seed(seed)
    written = []
    if isinstance(model, LatentVariableModel):
        title = f"{ds.name}: test data, reconstructions, samples"
        written.append(
            plot.vae_grid(
                model, ds.test[:32], figures / "vae.png", image_shape=image_shape, title=title
            )
        )
    else:
        written.extend(_flow_figures(figures, model, ds, image_shape))
    metrics = run / "metrics.csv"
    if metrics.is_file():
        written.append(plot.training_curves(figures / "training.png", metrics, title=ds.name))
    return written


def _flow_figures(
    figures: Path, flow: Flow, ds: data.Dataset, image_shape: list[int] | None
) -> list[Path]:
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
    return written


def draw_vi(run: Path, flow: Flow, target: Target, seed: int) -> list[Path]:
    """Draw a variational-inference run: the target beside q (2-D targets) and the -ELBO curve.

    Returns:
        The files written.

    """
    figures = run / "figures"
    torch.manual_seed(seed)
    written = []
    if target.dim == 2:
        bounds = target.bounds
        if bounds is None:  # a user's function: the box that holds q's draws
            with torch.no_grad():
                z = flow.sample((4000,)).double()
            low, high = torch.quantile(z, 0.005, dim=0), torch.quantile(z, 0.995, dim=0)
            margin = 0.25 * (high - low) + 1e-3
            bounds = (
                float(low[0] - margin[0]),
                float(high[0] + margin[0]),
                float(low[1] - margin[1]),
                float(high[1] + margin[1]),
            )
        written.append(
            plot.target_vs_flow(target, flow, figures / "target_vs_flow.png", bounds=bounds)
        )
    metrics = run / "metrics.csv"
    if metrics.is_file():
        written.append(
            plot.vi_curves(
                metrics,
                figures / "training.png",
                log_z=target.log_normalizer,
                title=f"target {target.name}",
            )
        )
    return written
