"""Pictures: fitted 2-D densities, pairwise marginals, image grids, curves, VI and VAE figures.

Every function draws on its own :class:`matplotlib.figure.Figure` (no pyplot global state) and
writes the PNG atomically (:func:`exactflow.atomic.write_atomic`), so an interrupted run never
leaves a half-written picture.

* :mod:`.density` — :func:`density_2d`, :func:`pairwise`, :func:`target_vs_flow`.
* :mod:`.images` — :func:`image_grid`, :func:`vae_grid`.
* :mod:`.image_flows` — :func:`temperature_grid`, :func:`class_grid`, :func:`reconstructions`,
  :func:`interpolations`.
* :mod:`.curves` — :func:`training_curves`, :func:`vi_curves`.
* :mod:`.bounds` — :func:`bounds_chart`.
"""

from .bounds import bounds_chart
from .curves import training_curves, vi_curves
from .density import density_2d, pairwise, target_vs_flow
from .image_flows import class_grid, interpolations, reconstructions, temperature_grid
from .images import image_grid, vae_grid

__all__ = [
    "bounds_chart",
    "class_grid",
    "density_2d",
    "image_grid",
    "interpolations",
    "pairwise",
    "reconstructions",
    "target_vs_flow",
    "temperature_grid",
    "training_curves",
    "vae_grid",
    "vi_curves",
]
