"""The rational-quadratic spline's density pass as one autograd node with a hand-written backward.

Composed of torch operations, a spline layer's forward pass records about a hundred autograd
nodes over ``(n, K)`` tables and the backward replays each of them, so a neural spline flow's
training step spends most of its time outside the conditioner networks. Here the forward pass
runs without recording and the backward is written out: the gradient with respect to the input
and to the raw parameters of the bin each input falls in, pushed through the knots' running
sums and the softmax in a few vectorized expressions.

With ``ξ = (x - x_k)/w``, ``s = h/w`` (bin width ``w``, height ``h``), end slopes ``δ_0, δ_1``,
``N = s ξ² + δ_0 ξ(1-ξ)``, the denominator ``D = s (ξ² + (1-ξ)²) + (δ_0 + δ_1) ξ(1-ξ)``, the
slope numerator ``S = δ_1 ξ² + 2 s ξ(1-ξ) + δ_0 (1-ξ)²`` and ``f = N/D``:

    y = y_k + h f,            ∂y/∂ξ = w s² S / D²,       ∂f/∂s = (ξ² - f (ξ² + (1-ξ)²)) / D,
    ∂f/∂δ_0 = ξ(1-ξ)(1 - f)/D,                           ∂f/∂δ_1 = -f ξ(1-ξ)/D,
    L = log S + 2 log s - 2 log D,
    ∂L/∂ξ = 2 (δ_1 ξ + s (1 - 2ξ) - δ_0 (1-ξ)) / S - 2 (δ_0 + δ_1 - 2s)(1 - 2ξ) / D,
    ∂L/∂s = 2 ξ(1-ξ)/S + 2/s - 2 (ξ² + (1-ξ)²)/D,
    ∂L/∂δ_0 = (1-ξ)²/S - 2 ξ(1-ξ)/D,                     ∂L/∂δ_1 = ξ²/S - 2 ξ(1-ξ)/D,

and ``ξ, s`` depend on ``x, x_k, w, h`` through ``∂ξ/∂x = 1/w``, ``∂ξ/∂x_k = -1/w``,
``∂ξ/∂w = -ξ/w``, ``∂s/∂h = 1/w``, ``∂s/∂w = -s/w``. The knot ``x_k`` is ``-B`` plus the
widths of the bins below ``k``, ``w_j = 2B m + A p_j`` with ``p = softmax(logits)``, so the
gradient of a width logit ``u_j`` is ``A p_j (g_{x_k} [j < k] + g_w [j = k] - g_w p_k - g_{x_k}
P_k)`` with ``P_k = Σ_{j<k} p_j`` (likewise for heights), and an interior slope's raw parameter
gets ``g_δ · dδ/da``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .splines import RationalQuadraticSpline

__all__ = ["spline_forward"]


def spline_forward(
    spline: RationalQuadraticSpline, x: Tensor, params: Tensor
) -> tuple[Tensor, Tensor]:
    """``spline.forward(x, params)`` outside tracers: ``(y, log|dy/dx|)``, both broadcast.

    ``x (*, D)`` and ``params (*, D, P)`` broadcast against each other; parameters shared over
    a batch are expanded to it (the expansion's backward sums their gradient).
    """
    spline._check_params(params)
    shape = torch.broadcast_shapes(x.shape, params.shape[:-1])
    flat_x = x.expand(shape).reshape(-1)
    flat_params = params.expand(*shape, spline.params).reshape(-1, spline.params)
    if torch.is_grad_enabled() and (flat_x.requires_grad or flat_params.requires_grad):
        y, ladj = _SplineForward.apply(flat_x, flat_params, spline)
    else:
        y, ladj = _evaluate(spline, flat_x, flat_params)[:2]
    return y.view(shape), ladj.view(shape)


def _evaluate(
    spline: RationalQuadraticSpline, x: Tensor, params: Tensor
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """``y``, ``log dy/dx`` of ``x (n,)`` under ``params (n, P)``, and what the backward needs."""
    bound = spline.bound
    knots, slopes, p, cum = spline.knot_rows(params)
    inside = x.abs() <= bound
    xc = x.clamp(-bound, bound)
    # The number of interior knots <= x is x's bin; NaN counts none.
    index = (knots[0, 1:-1] <= xc).sum(0, keepdim=True)  # (1, n)
    pair = torch.cat([index, index + 1])  # (2, n)
    (x0, x1), (y0, y1) = knots.gather(1, pair.expand(2, 2, -1)).unbind(0)  # each (2, n)
    raw = slopes.gather(0, pair)  # (2, n): the raw slopes at the bin's ends
    d0, d1 = spline._slopes(raw).unbind()
    y, ladj, *parts = spline.evaluate(xc, x0, x1, y0, y1, d0, d1)
    xi, xi_c, s, w, h, den, numerator = parts
    saved = (inside, index, p, cum, raw, xi, xi_c, s, w, h, d0, d1, den, numerator)
    return torch.where(inside, y, x), torch.where(inside, ladj, 0.0), saved


class _SplineForward(torch.autograd.Function):
    """``(x (n,), params (n, P)) -> (y, log dy/dx)`` with the backward of the module docstring."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, params: Tensor, spline: RationalQuadraticSpline
    ) -> tuple[Tensor, Tensor]:
        y, ladj, saved = _evaluate(spline, x, params)
        ctx.save_for_backward(x, params, *saved)
        ctx.spline = spline
        return y, ladj

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor | None, grad_ladj: Tensor | None) -> tuple:
        spline: RationalQuadraticSpline = ctx.spline
        x, params, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # backward(create_graph=True): a differentiable gradient
            return _composed_backward(spline, x, params, grad_y, grad_ladj, ctx.needs_input_grad)
        inside, index, p, cum, raw, xi, xi_c, s, w, h, d0, d1, den, numerator = saved
        zero = xi.new_zeros(())
        gy = zero if grad_y is None else grad_y
        gl = zero if grad_ladj is None else grad_ladj
        # Outside the bounds the map is the identity: no gradient reaches the parameters.
        gy_in, gl_in = torch.where(inside, gy, zero), torch.where(inside, gl, zero)
        uu, uv, vv = xi.square(), xi * xi_c, xi_c.square()
        r_den, r_num = den.reciprocal(), numerator.reciprocal()
        f = (s * uu + d0 * uv) * r_den
        diff = xi_c - xi  # 1 - 2ξ
        squares = uu + vv
        gh = gy_in * h * r_den  # the factor h / D of every ∂y/∂(s, δ)
        two_l = 2 * gl_in
        # Gradients with respect to ξ (at fixed s), s (at fixed ξ) and the end slopes.
        g_xi = gy_in * w * s.square() * numerator * r_den.square() + two_l * (
            (d1 * xi + s * diff - d0 * xi_c) * r_num - (d0 + d1 - 2 * s) * diff * r_den
        )
        g_s = gh * (uu - f * squares) + two_l * (uv * r_num + s.reciprocal() - squares * r_den)
        g_d0 = gh * uv * (1 - f) + gl_in * (vv * r_num - 2 * uv * r_den)
        g_d1 = gl_in * (uu * r_num - 2 * uv * r_den) - gh * f * uv
        r_w = w.reciprocal()
        grad_x = torch.where(inside, g_xi * r_w, gy) if ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]:
            return grad_x, None, None
        # Rows 0 (x-knot and width) and 1 (y-knot and height) at once, each (2, 1, n).
        g_start = torch.stack([-g_xi * r_w, gy_in]).unsqueeze(1)
        g_size = torch.stack([(-xi * g_xi - s * g_s) * r_w, gy_in * f + g_s * r_w]).unsqueeze(1)
        k = spline.bins
        at = index.expand(2, 1, -1)
        p_k = p.gather(1, at)
        below = torch.where(at > 0, cum.gather(1, (at - 1).clamp(min=0)), zero)  # Σ_{j<k} p_j
        # M_j = g_start [j < k] + g_size [j = k], as the running sum of its steps.
        steps = torch.zeros(2, k + 1, xi.shape[0], dtype=xi.dtype, device=xi.device)
        steps[:, :1] = g_start
        steps.scatter_add_(1, at, g_size - g_start)
        steps.scatter_add_(1, at + 1, -g_size)
        m = steps[:, :k].cumsum(1)
        _, scale = spline._knot_constants(xi)  # (2, 1, 1): A = 2B (1 - K m)
        g_logits = ((m - (g_size * p_k + g_start * below)) * p).mul_(scale)
        # δ = 1 + (1 - m_δ)(softplus(a) - log 2)/log 2: dδ/da = (1 - m_δ) sigmoid(a) / log 2.
        gain = (1 - spline.min_derivative) / math.log(2.0)
        g_ends = torch.stack([g_d0, g_d1]) * torch.sigmoid(raw) * gain  # (2, n)
        g_slopes = torch.zeros(k + 1, xi.shape[0], dtype=xi.dtype, device=xi.device)
        g_slopes.scatter_(0, torch.cat([index, index + 1]), g_ends)
        grad_params = torch.cat([g_logits.view(2 * k, -1), g_slopes[1:-1]]).t()  # (n, P)
        return grad_x, grad_params, None


def _composed_backward(
    spline: RationalQuadraticSpline,
    x: Tensor,
    params: Tensor,
    grad_y: Tensor | None,
    grad_ladj: Tensor | None,
    needs: tuple[bool, ...],
) -> tuple:
    """The gradient through the composed forward, itself differentiable (higher orders)."""
    with torch.enable_grad():
        y, ladj = spline.composed_forward(x, params)
        outputs = [(y, grad_y), (ladj, grad_ladj)]
        outputs = [(out, g) for out, g in outputs if g is not None]
        inputs = [t for t, need in ((x, needs[0]), (params, needs[1])) if need]
        grads = torch.autograd.grad(
            [out for out, _ in outputs], inputs, [g for _, g in outputs], create_graph=True
        )
    grads_iter = iter(grads)
    return (
        next(grads_iter) if needs[0] else None,
        next(grads_iter) if needs[1] else None,
        None,
    )
