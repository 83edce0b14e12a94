"""Monotonic rational-quadratic splines (Neural Spline Flows; Durkan et al. 2019).

A rational-quadratic (RQ) spline maps ``[-B, B]`` onto itself through ``K`` bins. Bin ``k``
runs from knot ``(x_k, y_k)`` to ``(x_{k+1}, y_{k+1})`` with slopes ``δ_k``, ``δ_{k+1}`` at its
ends. With ``w = x_{k+1} - x_k``, ``h = y_{k+1} - y_k``, ``s = h / w``, ``ξ = (x - x_k) / w`` and
``θ = ξ (1 - ξ)`` (Gregory & Delbourgo 1982; Durkan et al. 2019, eqs. 4-8)::

    y = y_k + h (s ξ² + δ_k θ) / (s + (δ_k + δ_{k+1} - 2 s) θ)
    dy/dx = s² (δ_{k+1} ξ² + 2 s θ + δ_k (1 - ξ)²) / (s + (δ_k + δ_{k+1} - 2 s) θ)²

which is strictly increasing, C1 across knots, and inverts in closed form (one quadratic per
element). Outside ``[-B, B]`` the map is the identity.

Two things live here: :class:`RationalQuadraticSpline`, an :class:`ElementwiseMap` whose
parameters come from a conditioner (coupling and autoregressive layers), and :class:`Spline`,
a learnable transform with its own parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..numerics import tracing
from .base import Transform
from .elementwise import ElementwiseMap
from .spline_kernel import spline_forward

__all__ = ["RationalQuadraticSpline", "Spline"]

_TAILS = ("linear", "identity")
_LOG2 = math.log(2.0)


class RationalQuadraticSpline(ElementwiseMap):
    """Monotonic rational-quadratic spline on ``[-bound, bound]``, identity outside.

    Raw parameters per coordinate, ``params[..., d, :]`` of length ``P = 3 · bins - 1``:

    * ``[0, bins)``: width logits. Widths are ``2B · (m_w + (1 - bins · m_w) softmax(·))``,
      so every bin is at least ``2B · min_width`` wide and they add up to ``2B``.
    * ``[bins, 2 · bins)``: height logits, likewise with ``min_height``.
    * ``[2 · bins, 3 · bins - 1)``: raw slopes ``a`` at the ``bins - 1`` interior knots,
      ``δ = m_δ + (1 - m_δ) softplus(a) / log 2`` with ``m_δ = min_derivative``: tending to
      ``m_δ`` as ``a -> -∞``, growing like ``a / log 2`` as ``a -> ∞``, and exactly 1 at
      ``a = 0`` (computed as ``1 + (1 - m_δ) (softplus(a) - log 2) / log 2``).

    All-zero raw parameters therefore give equal bins and unit slopes, which is exactly the
    identity map (:meth:`identity`); a conditioner whose last layer starts at zero starts as
    the identity too.

    The slopes at ``±B`` are fixed to 1, so with the identity outside the bounds the map is C1
    on the whole real line ("linear tails" of Durkan et al. 2019). ``tails="identity"`` names
    the same map. ``log|dy/dx|`` is given by the formula in the module docstring inside the
    bounds and is 0 outside.

    Inputs anywhere on the real line (``±1e30`` included) give finite values and finite
    gradients with respect to both inputs and parameters: the spline is evaluated on inputs
    clamped into the bounds and its result is selected with ``torch.where``. Every quantity
    inside a bin is computed from sums of non-negative terms, measured from the nearer knot,
    so outputs stay inside their bin and the inverse has no cancellation even at the knots.

    Args:
        bins: Number of bins ``K``.
        bound: Half-width ``B`` of the interval the spline acts on.
        tails: ``"linear"`` or ``"identity"`` (the same map, see above).
        min_width: Smallest bin width, as a fraction of ``2B``; ``bins · min_width < 1``.
        min_height: Smallest bin height, as a fraction of ``2B``; ``bins · min_height < 1``.
        min_derivative: Smallest interior slope, in ``(0, 1)``.

    Shapes: ``x (*, D)``, ``params (*, D, P)`` (broadcasting against each other, e.g.
    ``params (D, P)`` for a batch ``x (N, D)``) ``-> y (*, D)``, ``log|dy/dx| (*, D)``.

    Example:
        >>> import torch, exactflow as ef
        >>> spline = ef.transforms.RationalQuadraticSpline(bins=4, bound=3.0)
        >>> params = torch.randn(10, 2, spline.params)
        >>> y, ladj = spline.forward(torch.randn(10, 2), params)
        >>> x, _ = spline.inverse(y, params)

    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        tails: str = "linear",
        min_width: float = 1e-3,
        min_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"RationalQuadraticSpline: bins must be an int >= 1, got {bins!r}")
        if not isinstance(bound, int | float) or not 0 < bound < math.inf:
            raise ValueError(f"RationalQuadraticSpline: bound must be positive, got {bound}")
        if tails not in _TAILS:
            raise ValueError(
                f"RationalQuadraticSpline: tails must be one of {_TAILS}, got {tails!r}"
            )
        for name, value in (("min_width", min_width), ("min_height", min_height)):
            if not 0 < value * bins < 1:
                raise ValueError(
                    f"RationalQuadraticSpline: {name} must be in (0, 1 / bins) = "
                    f"(0, {1 / bins:g}), got {value}"
                )
        if not 0 < min_derivative < 1:
            raise ValueError(
                f"RationalQuadraticSpline: min_derivative must be in (0, 1), got {min_derivative}"
            )
        self.bins = bins
        self.bound = float(bound)
        self.tails = tails
        self.min_width = min_width
        self.min_height = min_height
        self.min_derivative = min_derivative
        self.params = 3 * bins - 1
        # Constant matrices of `_table`, per (dtype, device), as one tensor `cat([c, a], 1)`:
        # a dict of tensors, not of tuples, so that tools which walk and rebuild an object's
        # containers (sbi's VIPosterior copies its q that way) can traverse it.
        self._constants: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def identity(self) -> Tensor:
        """Raw parameters ``(P,)`` of the identity: all zero (equal bins, unit slopes)."""
        return torch.zeros(self.params)

    def config(self) -> dict:
        return {
            "bins": self.bins,
            "bound": self.bound,
            "tails": self.tails,
            "min_width": self.min_width,
            "min_height": self.min_height,
            "min_derivative": self.min_derivative,
        }

    def knots(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The knots ``x_k``, ``y_k`` and slopes ``δ_k`` of raw ``params (*, D, P)``.

        Returns three tensors of shape ``(*, D, bins + 1)``; the first and last knots are
        exactly ``-B`` and ``B`` and the slopes there exactly 1.
        """
        table = self._table(params).movedim(1, -1)  # (3, *, D, K + 1)
        return table[0], table[1], self._slopes(table[2])

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (*, D)``; return ``(y, log|dy/dx|)``, both ``(*, D)``.

        Outside tracers the pass runs as one autograd node with a hand-written backward
        (:mod:`exactflow.transforms.spline_kernel`); under ``torch.compile``, ``torch.export``
        and ``torch.func`` transforms it is composed of differentiable torch operations. Both
        evaluate the same expressions (:meth:`evaluate`), so their values agree to the bit.
        """
        if not tracing():
            return spline_forward(self, x, params)
        return self.composed_forward(x, params)

    def composed_forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` composed of differentiable torch operations (any order of gradient)."""
        inside = x.abs() <= self.bound
        xc = x.clamp(-self.bound, self.bound)
        xc, (x0, x1), (y0, y1), (d0, d1) = self._bin(xc, params, 0)
        y, ladj = self.evaluate(xc, x0, x1, y0, y1, d0, d1)[:2]
        return torch.where(inside, y, x), torch.where(inside, ladj, 0.0)

    def evaluate(
        self, xc: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor, d0: Tensor, d1: Tensor
    ) -> tuple[Tensor, ...]:
        """The spline inside its bin ``[x0, x1] -> [y0, y1]`` with end slopes ``d0, d1``.

        Returns ``y``, ``log dy/dx``, ``ξ``, ``1 - ξ``, ``s``, the bin's width ``w`` and height
        ``h``, the denominator and the slope numerator
        ``δ_{k+1} ξ² + 2 s ξ (1 - ξ) + δ_k (1 - ξ)²`` (all but the first two are what the
        hand-written backward reuses).
        """
        w, h = x1 - x0, y1 - y0
        s = h / w
        xi, xi_c = (xc - x0) / w, (x1 - xc) / w  # ξ, 1 - ξ
        uu, uv, vv, den, slope, ladj = self._slope(xi, xi_c, s, d0, d1)
        # y - y_k = h (s ξ² + δ_k θ) / den and y_{k+1} - y = h (s (1-ξ)² + δ_{k+1} θ) / den are
        # both >= 0: measuring from the nearer knot keeps y inside its bin despite rounding.
        lower = xi <= 0.5
        rise = torch.where(lower, s * uu + d0 * uv, s * vv + d1 * uv)
        y = torch.where(lower, y0, y1) + torch.where(lower, h, -h) * rise / den
        return y, ladj, xi, xi_c, s, w, h, den, slope

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward`: return ``(x, log|dx/dy|)``, both ``(*, D)``.

        With ``Δ = y - y_k`` and ``Δ' = y_{k+1} - y`` (both ``>= 0``), ``r = ξ / (1 - ξ)`` solves
        ``s Δ' r² + β r - s Δ = 0`` with ``β = δ_k Δ' - δ_{k+1} Δ``, whose discriminant
        ``β² + 4 s² Δ Δ'`` is a sum of squares. Its positive root, written in the stable form
        ``2c / (-b - √disc)`` for ``β >= 0`` and ``(√disc - b) / (2a)`` for ``β < 0``, gives

            ξ = 2sΔ / (2sΔ + m)   (β >= 0),     ξ = m / (m + 2sΔ')   (β < 0),   m = |β| + √disc,

        sums of non-negative terms only: no cancellation anywhere, including at the knots.
        """
        inside = y.abs() <= self.bound
        yc = y.clamp(-self.bound, self.bound)
        yc, (x0, x1), (y0, y1), (d0, d1) = self._bin(yc, params, 1)
        w, h = x1 - x0, y1 - y0
        s = h / w
        below, above = yc - y0, y1 - yc  # Δ, Δ'
        beta = d0 * above - d1 * below
        root = (beta.square() + 4 * s.square() * below * above).sqrt()
        # Taking β's sign per branch (not abs) keeps the gradient right at β = 0.
        positive = beta >= 0
        m = root + torch.where(positive, beta, -beta)
        # ξ and 1 - ξ, up to their common positive factor.
        u = torch.where(positive, 2 * s * below, m)
        v = torch.where(positive, m, 2 * s * above)
        total = u + v
        xi, xi_c = u / total, v / total
        ladj = self._slope(xi, xi_c, s, d0, d1)[-1]
        lower = xi <= 0.5
        x = torch.where(lower, x0, x1) + torch.where(lower, xi, -xi_c) * w
        return torch.where(inside, x, y), torch.where(inside, -ladj, 0.0)

    @staticmethod
    def _slope(u: Tensor, v: Tensor, s: Tensor, d0: Tensor, d1: Tensor) -> tuple[Tensor, ...]:
        """``u²``, ``uv``, ``v²``, the denominator, the slope numerator and ``log dy/dx``.

        At ``ξ = u``, ``1 - ξ = v``: ``dy/dx = s² · numerator / denominator²``.

        The denominator ``s + (δ_k + δ_{k+1} - 2s) θ`` is written as the sum of non-negative
        terms ``s (u² + v²) + (δ_k + δ_{k+1}) u v``.
        """
        uu, uv, vv = u.square(), u * v, v.square()
        den = s * (uu + vv) + (d0 + d1) * uv
        slope = d1 * uu + 2 * s * uv + d0 * vv
        return uu, uv, vv, den, slope, slope.log() + 2 * (s / den).log()

    def _slopes(self, raw: Tensor) -> Tensor:
        """``δ = 1 + (1 - m_δ) (softplus(a) - log 2) / log 2``: exactly 1 at ``a = 0``."""
        gain = (1 - self.min_derivative) / _LOG2
        return (F.softplus(raw) - _LOG2) * gain + 1

    def _knot_constants(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``c (2, K + 1, 1)``, ``a (2, 1, 1)``: knot ``0 < i < K`` is ``c_i + a Σ_{j<i} p_j``.

        For widths (row 0) and heights (row 1), knot ``i`` is
        ``-B + 2B (i m + (1 - K m) Σ_{j<i} p_j)`` with ``p`` the softmax of the logits and ``m``
        the minimum width or height; ``c`` also holds the end knots ``-B`` and ``B``.
        """
        key = (like.dtype, like.device)
        k, b = self.bins, self.bound
        if key in self._constants:
            c, a = self._constants[key].split([k + 1, 1], 1)
            return c, a
        minimum = torch.tensor([self.min_width, self.min_height], dtype=torch.float64)
        c = torch.arange(k + 1, dtype=torch.float64) * (2 * b * minimum[:, None]) - b
        c[:, k] = b
        a = 2 * b * (1 - k * minimum)
        c, a = c[..., None].to(like), a[:, None, None].to(like)
        # A tracer's tensors (fake or batched) must not outlive the trace: cache real ones only.
        if not tracing():
            self._constants[key] = torch.cat([c, a], 1)
        return c, a

    def _table(self, params: Tensor) -> Tensor:
        """Knots and raw slopes of ``params (*, D, P)``, shape ``(3, K + 1, *, D)``.

        Rows: the x-knots, the y-knots, and the raw slopes with a 0 at both ends (slope
        exactly 1 at ``±B``). The bins run along dimension 1 and the batch along the last ones,
        so the short per-coordinate reductions below become long vectorized loops.
        """
        self._check_params(params)
        knots, slopes = self.knot_rows(params.reshape(-1, self.params))[:2]
        table = torch.cat([knots, slopes.unsqueeze(0)])  # (3, K + 1, n)
        return table.view(3, self.bins + 1, *params.shape[:-1])

    def _check_params(self, params: Tensor) -> None:
        if params.dim() == 0 or params.shape[-1] != self.params:
            raise ValueError(
                f"RationalQuadraticSpline(bins={self.bins}): params must have shape "
                f"(*, D, {self.params}), got {tuple(params.shape)}"
            )

    def knot_rows(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Knots of ``n`` coordinates' raw ``params (n, P)``, bins along the first dimension.

        Returns the x- and y-knots ``(2, K + 1, n)``, the raw slopes padded with a 0 at both
        ends ``(K + 1, n)``, and the softmax ``p (2, K, n)`` of the width and height logits with
        its running sums ``(2, K, n)``: knot ``i`` is ``c_i + A Σ_{j<i} p_j``.
        """
        k = self.bins
        c, a = self._knot_constants(params)
        # split (not slicing): the gradient is then one cat instead of zero-filled scatters.
        raw = params.t().contiguous()  # (P, n)
        logits, raw_slopes = raw.split([2 * k, k - 1])
        p = torch.softmax(logits.view(2, k, -1), 1)  # (2, K, n)
        cum = p.cumsum(1)
        # Zero-padded, the interior terms A Σ_{j<i} p_j leave the end knots exactly ±B.
        knots = torch.addcmul(c, F.pad(cum[:, :-1], (0, 0, 1, 1)), a)  # (2, K + 1, n)
        slopes = F.pad(raw_slopes, (0, 0, 1, 1))  # (K + 1, n)
        return knots, slopes, p, cum

    def _bin(
        self, v: Tensor, params: Tensor, row: int
    ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``v`` broadcast against ``params``, and the ends of its bin.

        The bin is the one whose knots of row ``row`` (0: x, 1: y) enclose ``v``; returns
        ``v``, ``(x_k, x_{k+1})``, ``(y_k, y_{k+1})`` and ``(δ_k, δ_{k+1})``.
        """
        table = self._table(params)
        batch = table.shape[2:]
        shape = torch.broadcast_shapes(v.shape, batch)
        v = v.expand(shape)
        # Parameters shared over a batch are expanded after the table is built, not before.
        table = table.view(3, self.bins + 1, *(1,) * (len(shape) - len(batch)), *batch)
        table = table.expand(3, self.bins + 1, *shape).reshape(3, self.bins + 1, -1)
        # The number of interior knots <= v is v's bin; NaN counts none.
        index = (table[row, 1:-1] <= v.reshape(-1)).sum(0, keepdim=True)  # (1, n)
        ends = table.gather(1, torch.cat([index, index + 1]).expand(3, 2, -1))  # (3, 2, n)
        ends = ends.unflatten(-1, shape)
        return v, ends[0].unbind(), ends[1].unbind(), self._slopes(ends[2]).unbind()


class Spline(Transform):
    """Learnable elementwise rational-quadratic spline (Durkan et al. 2019).

    Each coordinate ``d`` has its own :class:`RationalQuadraticSpline` on ``[-bound, bound]``
    (identity outside) with raw parameters ``raw[d]``; ``log|det J| = Σ_d log|dy_d/dx_d|``.
    Starts as the identity.

    Args:
        features: Size of the last dimension ``D``.
        bins: Number of bins per coordinate.
        bound: Half-width of the interval the splines act on.
        tails: ``"linear"`` or ``"identity"`` (see :class:`RationalQuadraticSpline`).

    Attributes:
        raw: The raw spline parameters, ``(D, P)``, laid out as in
            :class:`RationalQuadraticSpline`.

    Shapes: ``x (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> y, ladj = ef.transforms.Spline(3, bins=4)(torch.randn(5, 3))
        >>> ladj.shape
        torch.Size([5])

    """

    def __init__(
        self, features: int, bins: int = 8, bound: float = 5.0, tails: str = "linear"
    ) -> None:
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"Spline: features must be an int >= 1, got {features!r}")
        self.features = features
        self.spline = RationalQuadraticSpline(bins=bins, bound=bound, tails=tails)
        self.raw = nn.Parameter(self.spline.identity().repeat(features, 1))

    def _check(self, v: Tensor) -> None:
        if v.dim() < 1 or v.shape[-1] != self.features:
            raise ValueError(f"Spline: expected shape (*, {self.features}), got {tuple(v.shape)}")

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        y, ladj = self.spline.forward(x, self.raw)
        return y, ladj.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y)
        x, ladj = self.spline.inverse(y, self.raw)
        return x, ladj.sum(-1)
