"""Circular rational-quadratic splines: diffeomorphisms of the circle (Rezende et al. 2020).

An angle ``x ∈ [-π, π)`` is first rotated by ``φ`` and then mapped by a monotonic
rational-quadratic spline ``S`` of ``[-π, π]`` onto itself ("Normalizing flows on tori and
spheres", Rezende et al. 2020, section 3.1)::

    u = wrap(x + φ),    y = S(u),    log|dy/dx| = log S'(u),    wrap(v) = ((v + π) mod 2π) - π

``S`` fixes ``±π`` and its slopes there are equal (both 1, the knots of
:class:`~exactflow.transforms.RationalQuadraticSpline`), so ``S`` glues into a C1
diffeomorphism of the circle. The rotation moves the point where the slope is pinned: with
``φ`` conditioned on the other coordinates it is nowhere fixed. Outside ``[-π, π]`` (the two
ends are one point of the circle) the forward ``log|dy/dx|`` is ``-inf`` (the density of a
point off the chart is zero), never NaN.

Also here: :class:`ColumnSplines`, which maps the periodic columns of an event circularly and
the others by an ordinary spline, and :class:`ToAngles`, which rescales a periodic column of
period ``p`` from its interval ``[low, low + p)`` to ``[-π, π)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..numerics import tracing
from .base import Transform
from .elementwise import ElementwiseMap
from .splines import RationalQuadraticSpline

__all__ = ["CircularSpline", "ColumnSplines", "ToAngles", "wrap"]

PI = math.pi
TWO_PI = 2 * math.pi


def wrap(v: Tensor) -> Tensor:
    """The angle ``v`` brought into ``[-π, π)``: ``((v + π) mod 2π) - π``.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.transforms.wrap(torch.tensor([3.5, -3.5, torch.pi]))
        tensor([-2.7832,  2.7832, -3.1416])

    """
    w = torch.remainder(v + PI, TWO_PI) - PI
    # The remainder of a tiny negative number rounds to 2π itself: that point is -π.
    return torch.where(w >= PI, w - TWO_PI, w)


class CircularSpline(ElementwiseMap):
    """Circular rational-quadratic spline on ``[-π, π)`` with a rotation (Rezende et al. 2020).

    ``y = S(wrap(x + φ))`` with ``S`` a monotonic rational-quadratic spline of ``[-π, π]``
    onto itself whose end slopes are equal, so the map is a C1 diffeomorphism of the circle;
    ``log|dy/dx| = log S'(wrap(x + φ))`` for ``x ∈ [-π, π]`` and ``-inf`` outside. The
    inverse returns angles in ``[-π, π)``.

    Raw parameters per coordinate, ``P = 3 · bins``: the first ``3 · bins - 1`` are the
    spline's, laid out as in :class:`~exactflow.transforms.RationalQuadraticSpline` (widths,
    heights, interior slopes); the last is the rotation ``φ`` in radians. All zero is the
    identity map.

    Args:
        bins: Number of bins ``K``.
        min_width: Smallest bin width, as a fraction of ``2π``.
        min_height: Smallest bin height, as a fraction of ``2π``.
        min_derivative: Smallest interior slope, in ``(0, 1)``.

    Shapes: ``x (*, D)``, ``params (*, D, P)`` ``-> y (*, D)``, ``log|dy/dx| (*, D)``.

    Example:
        >>> import torch, exactflow as ef
        >>> circle = ef.transforms.CircularSpline(bins=4)
        >>> params = torch.randn(10, 2, circle.params, dtype=torch.float64)
        >>> x = torch.rand(10, 2, dtype=torch.float64) * 2 * torch.pi - torch.pi
        >>> y, ladj = circle.forward(x, params)
        >>> bool((y.abs() <= torch.pi).all())
        True
        >>> torch.allclose(circle.inverse(y, params)[0], x)
        True

    """

    def __init__(
        self,
        bins: int = 8,
        min_width: float = 1e-3,
        min_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        self.spline = RationalQuadraticSpline(
            bins=bins,
            bound=PI,
            tails="linear",
            min_width=min_width,
            min_height=min_height,
            min_derivative=min_derivative,
        )
        self.bins = bins
        self.params = self.spline.params + 1

    def config(self) -> dict:
        settings = self.spline.config()
        return {k: settings[k] for k in ("bins", "min_width", "min_height", "min_derivative")}

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (*, D)``; return ``(y, log|dy/dx|)``, both ``(*, D)``.

        ``y`` lies in ``[-π, π]``: rounding may give ``π``, the same point as ``-π``, which
        every circular step and :class:`~exactflow.distributions.TorusNormal` accept (the
        hot path skips a wrap that would only move it).
        """
        raw, shift = params.split([self.spline.params, 1], -1)
        # u = wrap(x + φ) up to the end point: the spline takes u = π as well as u = -π.
        u = torch.remainder(x + (shift.squeeze(-1) + PI), TWO_PI) - PI
        y, ladj = self.spline.forward(u, raw)
        return y, ladj.masked_fill(x.abs() > PI, -math.inf)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward` on ``[-π, π)``: return ``(x, log|dx/dy|)``, both ``(*, D)``."""
        raw, shift = params.split([self.spline.params, 1], -1)
        u, ladj = self.spline.inverse(wrap(y), raw)
        return wrap(u - shift.squeeze(-1)), ladj


class ColumnSplines(ElementwiseMap):
    """Circular splines on the periodic columns, ordinary ones on the others.

    Column ``i`` of ``x (*, D)`` is mapped by :class:`CircularSpline` when ``periodic[i]``
    and by a :class:`~exactflow.transforms.RationalQuadraticSpline` on ``[-bound, bound]``
    with linear tails otherwise. Both read ``P = 3 · bins`` raw parameters per column (the
    ordinary spline ignores the last, the circular map's rotation), so one conditioner output
    serves every column. ``log|dy/dx|`` is the column's own.

    Args:
        periodic: One flag per column (``True``: an angle in ``[-π, π)``).
        bins: Number of bins of every spline.
        bound: Half-width of the ordinary splines' interval.

    Shapes: ``x (*, D)``, ``params (*, D, P)`` ``-> y (*, D)``, ``log|dy/dx| (*, D)``.

    Example:
        >>> import torch, exactflow as ef
        >>> splines = ef.transforms.ColumnSplines([True, False], bins=4)
        >>> x = torch.tensor([[3.0, 7.0]])
        >>> y, ladj = splines.forward(x, splines.identity().expand(2, -1))
        >>> torch.allclose(y, x)
        True

    """

    def __init__(self, periodic: Sequence[bool], bins: int = 8, bound: float = 5.0) -> None:
        self.periodic = [bool(p) for p in periodic]
        if not self.periodic:
            raise ValueError("ColumnSplines: periodic must flag at least one column, got []")
        self.circular = CircularSpline(bins=bins)
        self.spline = RationalQuadraticSpline(bins=bins, bound=bound, tails="linear")
        self.params = self.circular.params
        self.bins, self.bound = bins, float(bound)
        self._masks: dict[torch.device, Tensor] = {}

    def config(self) -> dict:
        return {"periodic": self.periodic, "bins": self.bins, "bound": self.bound}

    def column(self, i: int) -> ElementwiseMap:
        """The map of column ``i`` alone (its parameters: the column's ``P``)."""
        return self.circular if self.periodic[i] else _Truncated(self.spline)

    def _mask(self, like: Tensor) -> Tensor:
        """The periodic flags as a boolean tensor on ``like``'s device (cached)."""
        mask = self._masks.get(like.device)
        if mask is None:
            mask = torch.tensor(self.periodic, device=like.device)
            if not tracing():
                self._masks[like.device] = mask
        return mask

    def _both(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if all(self.periodic):
            circular = self.circular.inverse if inverse else self.circular.forward
            return circular(v, params)
        ordinary = _Truncated(self.spline)
        if not any(self.periodic):
            return ordinary.inverse(v, params) if inverse else ordinary.forward(v, params)
        # Mixed columns: both maps on every column, each column keeping its own (cheaper than
        # gathering the columns apart, and free of data-dependent shapes).
        if inverse:
            (yc, lc), (yo, lo) = self.circular.inverse(v, params), ordinary.inverse(v, params)
        else:
            (yc, lc), (yo, lo) = self.circular.forward(v, params), ordinary.forward(v, params)
        mask = self._mask(v)
        return torch.where(mask, yc, yo), torch.where(mask, lc, lo)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() < 1 or x.shape[-1] != len(self.periodic):
            raise ValueError(
                f"ColumnSplines: expected shape (*, {len(self.periodic)}), got {tuple(x.shape)}"
            )
        return self._both(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        if y.dim() < 1 or y.shape[-1] != len(self.periodic):
            raise ValueError(
                f"ColumnSplines: expected shape (*, {len(self.periodic)}), got {tuple(y.shape)}"
            )
        return self._both(y, params, inverse=True)


class _Truncated(ElementwiseMap):
    """An ordinary spline reading the first ``P - 1`` of ``P`` raw parameters."""

    def __init__(self, spline: RationalQuadraticSpline) -> None:
        self.spline = spline
        self.params = spline.params + 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.spline.forward(x, params[..., :-1])

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.spline.inverse(y, params[..., :-1])


class ToAngles(Transform):
    """Rescale periodic columns from their intervals ``[low, low + p)`` to ``[-π, π)``.

    Column ``i`` with interval ``[a_i, b_i)`` (period ``p_i = b_i - a_i``) becomes
    ``wrap(2π (x_i - a_i) / p_i - π)``; the other columns pass unchanged.
    ``log|det J| = Σ_i log(2π / p_i)`` inside the intervals and ``-inf`` when a periodic
    column lies outside its interval (no mass there), never NaN. The inverse sends
    ``[-π, π)`` back into ``[a_i, b_i)`` (a value that rounds to ``b_i`` is the same point of
    the circle as ``a_i``, and becomes it).

    Args:
        features: Event width ``D``.
        intervals: ``(column, low, high)`` per periodic column.

    Shapes: ``x (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> degrees = ef.transforms.ToAngles(2, [(1, 0.0, 360.0)])
        >>> y, ladj = degrees(torch.tensor([[5.0, 90.0], [5.0, 360.0]]))
        >>> y[0], ladj
        (tensor([ 5.0000, -1.5708]), tensor([-4.0482,    -inf]))

    """

    def __init__(self, features: int, intervals: Sequence[tuple[int, float, float]]) -> None:
        super().__init__()
        for column, a, b in intervals:
            if not 0 <= column < features or not a < b:
                raise ValueError(
                    f"ToAngles: expected (column, low, high) with 0 <= column < {features} and"
                    f" low < high, got {(column, a, b)}"
                )
        self.features = features
        self.intervals = [(int(c), float(a), float(b)) for c, a, b in intervals]
        self._ladj = sum(math.log(TWO_PI / (b - a)) for _, a, b in self.intervals)
        # (low, high, 2π / period, periodic) rows per (dtype, device), made from the floats
        # above in float64 so that a float64 flow is exact to float64.
        self._constants: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def _table(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        key = (like.dtype, like.device)
        table = self._constants.get(key)
        if table is None:
            table = torch.zeros(4, self.features, dtype=torch.float64)
            table[0], table[1], table[2] = -math.inf, math.inf, 1.0
            for c, a, b in self.intervals:
                table[:, c] = torch.tensor([a, b, TWO_PI / (b - a), 1.0], dtype=torch.float64)
            table = table.to(like)
            if not tracing():
                self._constants[key] = table
        low, high, scale, periodic = table
        return low, high, scale, periodic > 0

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        low, high, scale, periodic = self._table(x)
        angle = wrap(torch.where(periodic, x - low, 0.0) * scale - PI)
        y = torch.where(periodic, angle, x)
        outside = ((x < low) | (x >= high)).any(-1)
        return y, torch.where(outside, -math.inf, x.new_full(x.shape[:-1], self._ladj))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        low, high, scale, periodic = self._table(y)
        x = torch.where(periodic, (y + PI) / scale + torch.where(periodic, low, 0.0), y)
        x = torch.where(x >= high, x - (high - low), x)
        return x, y.new_full(y.shape[:-1], -self._ladj)
