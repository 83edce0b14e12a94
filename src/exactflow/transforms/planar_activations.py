"""The scalar nonlinearities ``h`` of planar and Sylvester steps, with their inverse solves.

Each holds ``h``, ``h'``, the slope ``1 + s·h'(x)`` of the scalar map ``x + s·h(x)`` (written
through ``gap = 1 + s`` so that it has no cancellation) and the root of ``x + s·h(x) = t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..numerics import solve_increasing

__all__: list[str] = []


class Tanh:
    """``h = tanh``: ``h' = 1 - tanh²`` lies in ``(0, 1]``, so ``s > -1`` suffices."""

    # Even at s = -1 the map x - tanh(x) is strictly increasing (flat at one point only).
    margin = 0.0

    def value(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 - torch.tanh(x).square()

    def slope(self, x: Tensor, gap: Tensor) -> Tensor:
        """``1 + s·h'(x)`` for ``s = gap - 1``, as ``tanh² + gap·(1 - tanh²)`` (no cancellation)."""
        t2 = torch.tanh(x).square()
        return t2 + gap * (1 - t2)

    def solve(self, t: Tensor, gap: Tensor, name: str, max_iter: int) -> Tensor:
        """Root of ``x + s·tanh(x) = t`` (``s = gap - 1 > -1``), with implicit gradients.

        The root has the sign of ``t`` and lies between ``t`` and ``t - s·sign(t)``
        (``|tanh| <= 1``). Newton starts on the side of the root from which it approaches it
        monotonically (for ``t > 0``; odd symmetry for ``t < 0``): for ``s > 0`` the map is
        concave there, and the start is the lower bound ``max(t/(1 + s), t - s)``; for
        ``s < 0`` it is convex, and the start is the least of the upper bounds ``t - s``,
        ``t/(1 + s)`` and ``∛(6t/|s|)`` (or ``6t/|s|`` above 1), which follow from
        ``x - tanh(x) >= x³/(3(1 + x²))``. The last keeps the near-singular case
        ``s -> -1`` (``x³/3 ≈ t``) within a few iterations: at most 11 in float64 over
        ``|s|`` up to 10⁸ and ``|t|`` from 10⁻²⁰ to 10⁸ (tests/test_variational.py).
        """
        s = gap - 1
        with torch.no_grad():  # the bracket and the start carry no gradient
            far = t - s * torch.sign(t)
            lo, hi = torch.minimum(t, far), torch.maximum(t, far)
            lo = torch.where(t > 0, lo.clamp_min(0), lo)
            hi = torch.where(t < 0, hi.clamp_max(0), hi)
            a, linear = t.abs(), t.abs() / gap
            q = 6 * a / s.abs().clamp_min(torch.finfo(t.dtype).tiny)
            cubic = torch.where(q <= 1, q.pow(1 / 3), q)
            below = torch.maximum(linear, a - s)
            above = torch.minimum(torch.minimum(a - s, linear), cubic)
            start = torch.sign(t) * torch.where(s > 0, below, above)
        return solve_increasing(
            lambda x: x + s * torch.tanh(x),
            lambda x: self.slope(x, gap),
            t,
            lo,
            hi,
            start=torch.minimum(torch.maximum(start, lo), hi),
            name=f"{name}: x + s·tanh(x) = t",
            max_iter=max_iter,
        )


class LeakyReLU:
    """``h(x) = x`` for ``x >= 0``, ``slope·x`` below; ``h'`` in ``{slope, 1}``, ``slope <= 1``."""

    # x + s·h(x) has slope exactly 1 + s on the whole half-line x >= 0, so s -> -1 would
    # flatten it there: planar steps keep 1 + s >= margin (a contraction of at most 1000).
    margin = 1e-3

    def __init__(self, negative_slope: float) -> None:
        self.negative_slope = negative_slope

    def value(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, self.negative_slope))

    def slope(self, x: Tensor, gap: Tensor) -> Tensor:
        """``1 + s·h'(x)``: ``gap`` for ``x >= 0``, ``(1 - slope) + slope·gap`` below."""
        a = self.negative_slope
        return torch.where(x >= 0, gap, (1 - a) + a * gap)

    def solve(self, t: Tensor, gap: Tensor, name: str, max_iter: int) -> Tensor:
        """Exact root of ``x + s·h(x) = t``, piecewise linear through 0: ``sign(x) = sign(t)``."""
        return t / self.slope(t, gap)


def activation_of(name: str, activation: str, negative_slope: float) -> Tanh | LeakyReLU:
    if activation == "tanh":
        return Tanh()
    if activation == "leaky_relu":
        if not 0 <= negative_slope <= 1:
            raise ValueError(
                f"{name}: negative_slope must be in [0, 1] for an invertible map,"
                f" got {negative_slope}"
            )
        return LeakyReLU(negative_slope)
    raise ValueError(f"{name}: activation must be 'tanh' or 'leaky_relu', got {activation!r}")
