"""Planar and radial transforms: classic flows of variational inference (Sylvester: sylvester.py).

Each class implements its paper's closed-form map ``f`` as :meth:`forward` and ``f^{-1}`` as
:meth:`inverse`. In variational inference the closed form runs from base to data, so the presets
(:func:`exactflow.flows.Planar`, ...) wrap these steps in :class:`~exactflow.transforms.Inverse`:
sampling and ``rsample_and_log_prob`` then run the closed form, ``log_prob`` the inverse.

The planar (and Sylvester) inverses reduce to scalar equations ``x + s·h(x) = t`` that are
strictly increasing in ``x`` (the parameterization guarantees ``1 + s·h'(x) > 0``), solved by
:func:`exactflow.numerics.solve_increasing`: to a stated tolerance, with exact implicit-function
gradients, and an error (never a wrong number) when a solve does not converge.

**Amortized parameters.** With ``context=C > 0`` a step's raw parameters are the free ones
plus the output of a network of the context (an :class:`~exactflow.nn.MLP` with hidden widths
``hidden``, its output layer zero-initialized so that every context starts at the free
parameters), as in the VAE posteriors of van den Berg et al. (2018). The invertibility
constraints act on the raw values, so they hold for every context. Parameters then carry the
context's batch shape ``(*B, ...)``, and ``x (*, *B, D)`` broadcasts against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MLP, zero_output
from ..nn.mlp import check_context
from ..numerics import solve_increasing
from .base import Transform

__all__ = ["Planar", "Radial"]


def positive(raw: Tensor) -> Tensor:
    """``softplus(raw)``, kept away from zero so that logarithms of it stay finite."""
    return F.softplus(raw).clamp_min(torch.finfo(raw.dtype).tiny)


def check_features(name: str, features: int) -> int:
    """``features`` after checking it is a positive int."""
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"{name}: features must be a positive int, got {features!r}")
    return features


def amortize(step: Transform, names: Sequence[str], context: int, hidden: Sequence[int]) -> None:
    """Give ``step`` a context network whose output shifts its raw parameters ``names``.

    With ``context == 0`` nothing is added and the step stays unconditional.
    """
    if not isinstance(context, int) or context < 0:
        raise ValueError(f"{type(step).__name__}: context must be an int >= 0, got {context!r}")
    step.context = context
    step.amortized = tuple(names)
    if context:
        width = sum(getattr(step, name).numel() for name in names)
        step.net = MLP(context, width, tuple(hidden))
        zero_output(step.net[-1])


def raw_parameters(step: Transform, context: Tensor | None) -> list[Tensor]:
    """The raw parameters ``step.amortized``: free ones, plus the net's output ``(*B, ...)``."""
    free = [getattr(step, name) for name in step.amortized]
    if not step.context:
        return free
    out = step.net(check_context(type(step).__name__, step.context, context))  # (*B, P)
    shifted, start = [], 0
    for p in free:
        chunk = out[..., start : start + p.numel()]
        shifted.append(p + chunk.reshape(out.shape[:-1] + p.shape))
        start += p.numel()
    return shifted


def dot(a: Tensor, b: Tensor) -> Tensor:
    """``aᵀb`` over the last dimension, broadcasting the leading ones: ``(*, D) -> (*)``."""
    return (a * b).sum(-1)


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


def _activation(name: str, activation: str, negative_slope: float) -> Tanh | LeakyReLU:
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


class Planar(Transform):
    """Planar flow ``f(z) = z + û·h(wᵀz + b)`` (Rezende & Mohamed 2015).

    Invertibility is built into the parameterization: ``û = u + (m(wᵀu) - wᵀu)·w/‖w‖²`` with
    ``m(a) = -1 + softplus(a)``, so ``wᵀû = m(wᵀu) > -1`` whatever the raw ``u`` and ``w``;
    with ``0 < h' <= 1`` (tanh) the map is strictly increasing along ``w`` and the identity
    orthogonally to it. With leaky ReLU (``h'`` in ``{slope, 1}``) the slope along ``w`` is
    ``1 + wᵀû`` on a whole half-line, so there ``m(a) = -1 + 10⁻³ + softplus(a)`` keeps that
    half-line from flattening as ``wᵀu -> -∞``.

    ``log|det ∂f/∂z| = log(1 + h'(wᵀz + b)·ûᵀw)``, evaluated as
    ``log((1 - h') + h'·(1 + m(wᵀu)))``, which stays finite as ``ûᵀw`` approaches -1.

    :meth:`inverse` has no closed form. With ``x = wᵀz + b`` and ``s = wᵀû``, the direction
    along ``w`` satisfies ``x + s·h(x) = wᵀy + b``, a scalar increasing equation: solved by
    :func:`~exactflow.numerics.solve_increasing` to ``|x + s·h(x) - t| <= tol·(1 + |t|)``
    (``tol`` = 1e-12 in float64, 64 ulps below) for tanh, or exactly for leaky ReLU; then
    ``z = y - û·h(x)``. Gradients are the exact implicit-function ones. A solve that does not
    converge raises ``FloatingPointError`` naming this step (NaN under tracing).

    Args:
        features: Size of the last dimension ``D``.
        activation: ``"tanh"`` (the paper's) or ``"leaky_relu"``.
        negative_slope: Slope of the leaky ReLU below zero, in ``[0, 1]``.
        context: Width ``C`` of a context that amortizes ``w``, ``u``, ``b`` (0: none).
        hidden: Hidden widths of the context network (``context > 0`` only).

    Shapes: ``z (*, D)``, ``context (*B, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Planar(3, context=2)
        >>> y, ladj = t(torch.randn(5, 3), torch.randn(5, 2))
        >>> z, _ = t.inverse(y, torch.randn(5, 2))

    """

    max_iter = 20
    """Iteration budget of the scalar solves (at most 11 are needed: :meth:`Tanh.solve`)."""

    def __init__(
        self,
        features: int,
        activation: str = "tanh",
        negative_slope: float = 0.01,
        context: int = 0,
        hidden: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        self.features = check_features("Planar", features)
        self.activation = activation
        self.negative_slope = negative_slope
        self.act = _activation("Planar", activation, negative_slope)
        scale = features**-0.5
        self.w = nn.Parameter(scale * torch.randn(features))
        self.u = nn.Parameter(scale * torch.randn(features))
        self.b = nn.Parameter(torch.zeros(()))
        amortize(self, ("w", "u", "b"), context, hidden)

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``w, û (*B, D)``, ``b (*B)`` and ``gap = 1 + wᵀû = softplus(wᵀu) + margin (*B)``."""
        w, u, b = raw_parameters(self, context)
        ww = dot(w, w)
        ww_safe = ww.clamp_min(torch.finfo(w.dtype).tiny)
        # r is exactly 1 unless ‖w‖² underflows; then the map degrades to a shift with wᵀû ≈ 0
        # and gap follows wᵀû exactly instead of the softplus.
        r = ww / ww_safe
        wu = dot(w, u)
        # û = (u without its component along w) + m·w/‖w‖². The projection runs twice: for a
        # large raw u the first pass leaves a rounding error along w, which would make the
        # map's wᵀû differ from the m that the log-det and the inverse use.
        u_perp = u - (wu / ww_safe).unsqueeze(-1) * w
        u_perp = u_perp - ((dot(w, u_perp) - wu * (1 - r)) / ww_safe).unsqueeze(-1) * w
        one_plus_m = F.softplus(wu) + self.act.margin
        u_hat = u_perp + ((one_plus_m - 1) / ww_safe).unsqueeze(-1) * w
        gap = (one_plus_m * r + (1 + wu) * (1 - r)).clamp_min(torch.finfo(w.dtype).tiny)
        return w, u_hat, b, gap

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w, u_hat, b, gap = self._params(context)
        pre = dot(x, w) + b  # (*)
        y = x + self.act.value(pre).unsqueeze(-1) * u_hat
        return y, self.act.slope(pre, gap).log()

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w, u_hat, b, gap = self._params(context)
        pre = self.act.solve(dot(y, w) + b, gap, "Planar.inverse", self.max_iter)  # wᵀz + b
        x = y - self.act.value(pre).unsqueeze(-1) * u_hat
        return x, -self.act.slope(pre, gap).log()


def _norm(v: Tensor) -> Tensor:
    """Euclidean norm over the last dimension: no overflow, a finite gradient at zero."""
    scale = v.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return scale.squeeze(-1) * (v / scale).square().sum(-1).clamp_min(1e-30).sqrt()


class Radial(Transform):
    """Radial flow ``f(z) = z + β·h(α, r)·(z - z₀)``, ``h = 1/(α + r)``, ``r = ‖z - z₀‖``.

    From Rezende & Mohamed (2015). The parameterization ``α = softplus(a)``,
    ``β = -α + softplus(b)`` keeps ``β > -α``, which makes ``f`` a bijection of ``R^D``: it
    scales ``z - z₀`` by ``(softplus(b) + r)/(α + r) > 0`` and the radius map is increasing.

    ``log|det ∂f/∂z| = (D - 1)·log(1 + βh) + log(1 + βh + βh'r)``, evaluated as
    ``(D - 1)·log((softplus(b) + r)/(α + r)) + log(q² + 2pq + p·softplus(b)/(α + r))`` with
    ``q = r/(α + r)``, ``p = α/(α + r)``: every term is positive and bounded, so it is finite
    for all parameters and all radii (no ``r²`` to overflow).

    :meth:`inverse`: the output radius is ``ρ = r·(r + softplus(b))/(α + r)``, increasing in
    ``r``; solving it for ``r`` is a quadratic, ``r² - (ρ - softplus(b))·r - αρ = 0``, whose
    positive root is taken in closed form (the cancellation-free variant of the formula, its
    discriminant scaled against overflow), so the inverse is exact; the direction of
    ``z - z₀`` is that of ``y - z₀``.

    Args:
        features: Size of the last dimension ``D``.
        context: Width ``C`` of a context that amortizes ``z₀``, ``α``, ``β`` (0: none).
        hidden: Hidden widths of the context network (``context > 0`` only).

    Shapes: ``z (*, D)``, ``context (*B, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Radial(3)
        >>> y, ladj = t(torch.randn(5, 3))

    """

    def __init__(self, features: int, context: int = 0, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        self.features = check_features("Radial", features)
        self.center = nn.Parameter(torch.randn(features))
        # a = b = 0 gives β = 0: the identity.
        self.alpha_raw = nn.Parameter(torch.zeros(()))
        self.beta_raw = nn.Parameter(torch.zeros(()))
        amortize(self, ("center", "alpha_raw", "beta_raw"), context, hidden)

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``z₀ (*B, D)``, ``α (*B)`` and ``gap = α + β (*B)``."""
        center, alpha_raw, beta_raw = raw_parameters(self, context)
        return center, positive(alpha_raw), positive(beta_raw)

    def _log_det(self, r: Tensor, alpha: Tensor, gap: Tensor) -> Tensor:
        ar = alpha + r
        q, p = r / ar, alpha / ar
        radial = (q * q + 2 * p * q + p * (gap / ar)).log()
        return (self.features - 1) * ((gap + r).log() - ar.log()) + radial

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        center, alpha, gap = self._params(context)
        diff = x - center
        r = _norm(diff)
        y = x + ((gap - alpha) / (alpha + r)).unsqueeze(-1) * diff
        return y, self._log_det(r, alpha, gap)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        center, alpha, gap = self._params(context)
        diff = y - center
        rho = _norm(diff)
        p = rho - gap
        # disc = sqrt(p² + 4αρ), scaled so that nothing overflows; it is homogeneous of
        # degree 1 in (p, α, ρ), so the detached scale leaves its gradient exact.
        scale = torch.maximum(torch.maximum(p.abs(), rho), alpha).detach()
        disc = scale * ((p / scale).square() + 4 * (alpha / scale) * (rho / scale)).sqrt()
        # Positive root (p + disc)/2, rewritten as 2αρ/(disc - p) where p <= 0 to avoid
        # cancellation; both branches are finite, so torch.where passes clean gradients.
        r = torch.where(p > 0, 0.5 * (p + disc), 2 * alpha * rho / (disc + p.abs()))
        x = center + ((alpha + r) / (gap + r)).unsqueeze(-1) * diff
        return x, -self._log_det(r, alpha, gap)
