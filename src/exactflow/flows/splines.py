"""Neural spline flows (NSF), autoregressive or coupling."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..distributions import StandardNormal, TorusNormal
from ..flow import Flow
from ..transforms import Compose, RationalQuadraticSpline
from ..transforms.bounds import BoundsLike
from .chains import autoregressive_layers, check_preset, config_of, coupling_layers
from .periodic import PeriodicLike, check_not_bounded, periodic_intervals, periodic_layers

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
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).
        periodic: Periodic columns (angles): ``[i, ...]`` for period ``2π`` on ``[-π, π)``,
            ``{i: period}`` for ``[-p/2, p/2)``, ``{i: (low, high)}`` or a list of
            ``(i, low, high)`` for any interval. Those columns get circular splines
            (:class:`~exactflow.transforms.CircularSpline`, Rezende et al. 2020) after a
            rescale to ``[-π, π)``, conditioners read them as ``(cos, sin)``
            (:class:`~exactflow.transforms.TorusAutoregressive`,
            :func:`~exactflow.transforms.torus_coupling`), and the base is uniform on the
            circle for them (:class:`~exactflow.distributions.TorusNormal`): the density is
            continuous across the seam, zero outside the interval, and samples lie in it. Not
            with ``permutation="lu"``, nor on a bounded column. The config records
            ``[[i, low, high], ...]``.

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
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
        periodic: PeriodicLike = None,
    ) -> None:
        config = config_of(locals())
        check_preset("NSF", features, transforms, permutation)
        intervals = periodic_intervals(periodic, features)
        if intervals:
            check_not_bounded(intervals, bounds, features, "NSF")
            config["periodic"] = intervals
            steps = periodic_layers(
                intervals, features, context, transforms, hidden, bins, bound, coupling,
                permutation, residual, seed,
            )  # fmt: skip
            base = TorusNormal([i in {c for c, _, _ in intervals} for i in range(features)])
        else:
            config.pop("periodic")  # the configs of flows without angles stay as they were
            spline = RationalQuadraticSpline(bins=bins, bound=bound, tails="linear")
            layers = coupling_layers if coupling else autoregressive_layers
            steps = layers(
                spline, features, context, transforms, hidden, permutation, residual, seed
            )
            base = StandardNormal(features)
        super().__init__(
            Compose(steps),
            base,
            validate=validate,
            bounds=bounds,
            embedding=embedding,
        )
        self.config = config
