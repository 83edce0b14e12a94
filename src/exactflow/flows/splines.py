"""Neural spline flows (NSF), autoregressive or coupling."""

from __future__ import annotations

from collections.abc import Sequence

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import Compose, RationalQuadraticSpline
from .chains import autoregressive_layers, check_preset, config_of, coupling_layers

__all__ = ["NSF"]


class NSF(Flow):
    """Neural spline flow (Durkan et al. 2019): rational-quadratic spline layers.

    Each layer maps every coordinate by a monotonic rational-quadratic spline with ``bins``
    bins on ``[-bound, bound]`` (identity, i.e. linear, tails outside;
    :class:`~exactflow.transforms.RationalQuadraticSpline`), whose knots come from a
    :class:`~exactflow.nn.MADE` (autoregressive, the default: one pass for the density, ``D``
    for sampling) or from the other half of the coordinates (``coupling=True``: one pass each
    way). ``log|det J| = Σ_layers Σ_i log g_i'(x_i)``. Base: standard normal.

    Args:
        features: Data width ``D`` (at least 2 with ``coupling=True``).
        context: Context width ``C`` the conditioners read (0: unconditional).
        transforms: Number of spline layers.
        hidden: Hidden widths of each conditioner.
        bins: Number of spline bins ``K``.
        bound: Half-width ``B`` of the spline interval ``[-B, B]``.
        coupling: Coupling layers instead of masked autoregressive ones.
        permutation: ``"reverse"``, ``"random"`` or ``"lu"`` (see :class:`NICE` for coupling
            layers, :class:`MAF` for autoregressive ones).
        residual: Residual conditioners.
        seed: Seed of the random masks or orders.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.NSF(features=2, transforms=2, hidden=(16, 16), coupling=True)
        >>> flow.sample((4,)).shape
        torch.Size([4, 2])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        bins: int = 8,
        bound: float = 5.0,
        coupling: bool = False,
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        validate: bool = True,
    ) -> None:
        config = config_of(locals())
        check_preset("NSF", features, transforms, permutation)
        spline = RationalQuadraticSpline(bins=bins, bound=bound, tails="linear")
        layers = coupling_layers if coupling else autoregressive_layers
        steps = layers(spline, features, context, transforms, hidden, permutation, residual, seed)
        super().__init__(Compose(steps), StandardNormal(features), validate=validate)
        self.config = config
