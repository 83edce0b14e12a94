"""The pictures of a run, drawn into ``RUN/figures`` by ``fit``, ``vi`` and ``plot``.

An image flow's (events ``(C, H, W)``): ``samples.png`` (samples at temperatures 1 and 0.7),
``classes.png`` (a class-conditional flow: a row per class), ``reconstructions.png`` (test images
and their round trip ``T⁻¹(T(x))``), ``interpolations.png`` (paths between test images through the
base space) and ``data.png`` (test images).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import data, plot
from ..flow import Flow
from ..models import LatentVariableModel
from .image_runs import class_contexts, class_count

if TYPE_CHECKING:
    from ..targets import Target

__all__ = ["draw", "draw_vi"]


def draw(
    run: Path, model: Any, ds: data.Dataset, image_shape: list[int] | None, seed: int
) -> list[Path]:
    """Draw a run's pictures and its training curves.

    A flow: its density (2-D), pairwise marginals (tables) or image grids (an image flow: the
    module docstring's); a VAE: test images, their reconstructions and samples.

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
    elif len(model.event_shape) == 3:
        written.extend(_image_flow_figures(figures, model, ds))
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


TEMPERATURES = (1.0, 0.7)  # of the sample grids (Glow's reduced-temperature sampling)
CLASS_TEMPERATURE = 0.7  # of the per-class grid
PAIRS = 4  # rows of the interpolations


def _image_flow_figures(figures: Path, flow: Flow, ds: data.Dataset) -> list[Path]:
    """The pictures of an image flow (events ``(C, H, W)``); see the module docstring."""
    classes = class_count(flow)
    test = ds.test[:64]
    labels = ds.labels[2] if classes else None
    contexts = ds.contexts("test") if classes else None
    written = [
        plot.temperature_grid(
            figures / "samples.png",
            flow,
            TEMPERATURES,
            n=32,
            context=class_contexts(flow, 0, 32) if classes else None,
            title=f"{ds.name}: samples at T = {' and '.join(map(str, TEMPERATURES))}",
        )
    ]
    if classes:
        written.append(
            plot.class_grid(
                figures / "classes.png",
                flow,
                classes,
                temperature=CLASS_TEMPERATURE,
                title=f"{ds.name}: a row per class, T = {CLASS_TEMPERATURE}",
            )
        )
    written.append(
        plot.reconstructions(
            figures / "reconstructions.png",
            flow,
            test[:16],
            context=None if contexts is None else contexts[:16],
            title=f"{ds.name}: test images and their round trip",
        )
    )
    starts, ends = _pairs(len(ds.test), labels)
    if starts:
        written.append(
            plot.interpolations(
                figures / "interpolations.png",
                flow,
                ds.test[starts],
                ds.test[ends],
                context=None if contexts is None else contexts[starts],
                title=f"{ds.name}: interpolations between test images (spherical, in z)",
            )
        )
    written.append(plot.image_grid(figures / "data.png", test, title=f"{ds.name}: test data"))
    return written


def _pairs(n: int, labels: torch.Tensor | None) -> tuple[list[int], list[int]]:
    """Test rows to interpolate between: of the same class when ``labels`` are given."""
    if labels is None:
        pairs = min(PAIRS, n // 2)
        return list(range(pairs)), list(range(pairs, 2 * pairs))
    starts, ends = [], []
    for i in range(min(PAIRS, n)):
        same = (labels[i + 1 :] == labels[i]).nonzero()
        if len(same):
            starts.append(i)
            ends.append(i + 1 + int(same[0]))
    return starts, ends


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
