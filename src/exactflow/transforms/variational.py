"""Planar, radial and Sylvester transforms: the classic flows of variational inference.

Each class implements its paper's closed-form map ``f`` as :meth:`forward` and ``f^{-1}`` as
:meth:`inverse`. In variational inference the closed form runs from base to data, so the presets
(:func:`exactflow.flows.Planar`, ...) wrap these steps in :class:`~exactflow.transforms.Inverse`:
sampling and ``rsample_and_log_prob`` then run the closed form, ``log_prob`` the inverse.

The planar and Sylvester inverses reduce to scalar equations ``x + s·h(x) = t`` that are strictly
increasing in ``x`` (the parameterization guarantees ``1 + s·h'(x) > 0``). They are solved
without gradient, then the exact implicit-function gradient is attached by one Newton step taken
with autograd at the detached solution ``x*``: ``x = x* - (x* + s·h(x*) - t) / (1 + s·h'(x*))``
with the denominator detached. Its value is the solution; its first derivatives with respect to
the inputs and the parameters are those of the exact inverse, so ``torch.func.jacrev`` and
``log_prob`` gradients are exact, not derivatives of the iterations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Transform

__all__ = ["Planar", "Radial", "Sylvester"]

_MAX_ITERATIONS = 200


def _tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of the scalar solves: 1e-12 in float64, ~16 ulps in lower precision."""
    return max(1e-12, 16 * torch.finfo(dtype).eps)


def _positive(raw: Tensor) -> Tensor:
    """``softplus(raw)``, kept away from zero so that logarithms of it stay finite."""
    return F.softplus(raw).clamp_min(torch.finfo(raw.dtype).tiny)


def _check_features(name: str, features: int) -> int:
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"{name}: features must be a positive int, got {features!r}")
    return features


class _Tanh:
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

    def solve(self, t: Tensor, gap: Tensor) -> Tensor:
        """Root of ``x + s·tanh(x) = t``: Newton, safeguarded by bisection on a shrinking bracket.

        Since ``|tanh| <= 1`` the root lies in ``[t - |s|, t + |s|]``. Iterates until every step
        is below ``tol·(1 + |x|)`` (:func:`_tolerance`); Newton converges quadratically, so the
        error at exit is far below that.
        """
        s = gap - 1
        lo, hi = t - s.abs(), t + s.abs()
        x = torch.minimum(torch.maximum(t - s * torch.tanh(t), lo), hi)
        tol = _tolerance(t.dtype)
        for _ in range(_MAX_ITERATIONS):
            th = torch.tanh(x)
            g = x + s * th - t
            hi = torch.where(g > 0, x, hi)
            lo = torch.where(g < 0, x, lo)
            newton = x - g / (th * th + gap * (1 - th * th))
            inside = (newton >= lo) & (newton <= hi)  # False for NaN too
            new = torch.where(inside, newton, 0.5 * (lo + hi))
            done = (new - x).abs() <= tol * (1 + new.abs())
            x = new
            if bool(done.all()):
                break
        return x


class _LeakyReLU:
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

    def solve(self, t: Tensor, gap: Tensor) -> Tensor:
        """Exact root of ``x + s·h(x) = t``, piecewise linear through 0: ``sign(x) = sign(t)``."""
        return t / self.slope(t, gap)


def _activation(name: str, activation: str, negative_slope: float) -> _Tanh | _LeakyReLU:
    if activation == "tanh":
        return _Tanh()
    if activation == "leaky_relu":
        if not 0 <= negative_slope <= 1:
            raise ValueError(
                f"{name}: negative_slope must be in [0, 1] for an invertible map,"
                f" got {negative_slope}"
            )
        return _LeakyReLU(negative_slope)
    raise ValueError(f"{name}: activation must be 'tanh' or 'leaky_relu', got {activation!r}")


def _solve(act: _Tanh | _LeakyReLU, t: Tensor, gap: Tensor) -> Tensor:
    """Root ``x`` of ``x + (gap - 1)·h(x) = t`` with exact implicit-function gradients."""
    with torch.no_grad():
        root = act.solve(t.detach(), gap.detach())
    residual = root + (gap - 1) * act.value(root) - t
    return root - residual / act.slope(root, gap).detach()


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
    safeguarded Newton to a relative tolerance of 1e-12 in float64 (``|Δx| <= 1e-12·(1 + |x|)``;
    16 ulps in lower precision) for tanh and exactly for leaky ReLU; then ``z = y - û·h(x)``.
    Gradients of the inverse are the exact implicit-function ones (see the module docstring).

    Args:
        features: Size of the last dimension ``D``.
        activation: ``"tanh"`` (the paper's) or ``"leaky_relu"``.
        negative_slope: Slope of the leaky ReLU below zero, in ``[0, 1]``.

    Shapes: ``z (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Planar(3)
        >>> y, ladj = t(torch.randn(5, 3))
        >>> z, _ = t.inverse(y)

    """

    def __init__(self, features: int, activation: str = "tanh", negative_slope: float = 0.01):
        super().__init__()
        self.features = _check_features("Planar", features)
        self.activation = activation
        self.negative_slope = negative_slope
        self.act = _activation("Planar", activation, negative_slope)
        scale = features**-0.5
        self.w = nn.Parameter(scale * torch.randn(features))
        self.u = nn.Parameter(scale * torch.randn(features))
        self.b = nn.Parameter(torch.zeros(()))

    def _reparameterized(self) -> tuple[Tensor, Tensor]:
        """``û (D,)`` and ``gap = 1 + wᵀû = softplus(wᵀu) + margin`` (a scalar)."""
        w, u = self.w, self.u
        ww = w.dot(w)
        ww_safe = ww.clamp_min(torch.finfo(w.dtype).tiny)
        # r is exactly 1 unless ‖w‖² underflows; then the map degrades to a shift with wᵀû ≈ 0
        # and gap follows wᵀû exactly instead of the softplus.
        r = ww / ww_safe
        wu = w.dot(u)
        # û = (u without its component along w) + m·w/‖w‖². The projection runs twice: for a
        # large raw u the first pass leaves a rounding error along w, which would make the
        # map's wᵀû differ from the m that the log-det and the inverse use.
        u_perp = u - (wu / ww_safe) * w
        u_perp = u_perp - ((w.dot(u_perp) - wu * (1 - r)) / ww_safe) * w
        one_plus_m = F.softplus(wu) + self.act.margin
        u_hat = u_perp + ((one_plus_m - 1) / ww_safe) * w
        gap = (one_plus_m * r + (1 + wu) * (1 - r)).clamp_min(torch.finfo(w.dtype).tiny)
        return u_hat, gap

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u_hat, gap = self._reparameterized()
        pre = x @ self.w + self.b  # (*)
        y = x + self.act.value(pre).unsqueeze(-1) * u_hat
        return y, self.act.slope(pre, gap).log()

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u_hat, gap = self._reparameterized()
        pre = _solve(self.act, y @ self.w + self.b, gap)  # wᵀz + b, (*)
        x = y - self.act.value(pre).unsqueeze(-1) * u_hat
        return x, -self.act.slope(pre, gap).log()


def _norm(v: Tensor) -> Tensor:
    """Euclidean norm over the last dimension, with a finite gradient at zero."""
    return v.square().sum(-1).clamp_min(torch.finfo(v.dtype).tiny).sqrt()


class Radial(Transform):
    """Radial flow ``f(z) = z + β·h(α, r)·(z - z₀)``, ``h = 1/(α + r)``, ``r = ‖z - z₀‖``.

    From Rezende & Mohamed (2015). The parameterization ``α = softplus(a)``,
    ``β = -α + softplus(b)`` keeps ``β > -α``, which makes ``f`` a bijection of ``R^D``: it
    scales ``z - z₀`` by ``(softplus(b) + r)/(α + r) > 0`` and the radius map is increasing.

    ``log|det ∂f/∂z| = (D - 1)·log(1 + βh) + log(1 + βh + βh'r)``, evaluated as
    ``(D - 1)·log((softplus(b) + r)/(α + r)) + log(r² + α(2r + softplus(b))) - 2 log(α + r)``
    (every term positive, so it is finite for all parameters).

    :meth:`inverse`: the output radius is ``ρ = r·(r + softplus(b))/(α + r)``, increasing in
    ``r``; solving it for ``r`` is a quadratic, ``r² - (ρ - softplus(b))·r - αρ = 0``, whose
    positive root is taken in closed form (the cancellation-free variant of the formula), so
    the inverse is exact; the direction of ``z - z₀`` is that of ``y - z₀``.

    Args:
        features: Size of the last dimension ``D``.

    Shapes: ``z (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Radial(3)
        >>> y, ladj = t(torch.randn(5, 3))

    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = _check_features("Radial", features)
        self.center = nn.Parameter(torch.randn(features))
        # a = b = 0 gives β = 0: the identity.
        self.alpha_raw = nn.Parameter(torch.zeros(()))
        self.beta_raw = nn.Parameter(torch.zeros(()))

    def _log_det(self, r: Tensor, alpha: Tensor, gap: Tensor) -> Tensor:
        log_ar = (alpha + r).log()
        radial = (r * r + alpha * (2 * r + gap)).log() - 2 * log_ar
        return (self.features - 1) * ((gap + r).log() - log_ar) + radial

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        alpha, gap = _positive(self.alpha_raw), _positive(self.beta_raw)  # gap = α + β
        diff = x - self.center
        r = _norm(diff)
        y = x + ((gap - alpha) / (alpha + r)).unsqueeze(-1) * diff
        return y, self._log_det(r, alpha, gap)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        alpha, gap = _positive(self.alpha_raw), _positive(self.beta_raw)
        diff = y - self.center
        rho = _norm(diff)
        p = rho - gap
        disc = (p * p + 4 * alpha * rho).sqrt()
        # Positive root (p + disc)/2, rewritten as 2αρ/(disc - p) where p <= 0 to avoid
        # cancellation; both branches are finite, so torch.where passes clean gradients.
        r = torch.where(p > 0, 0.5 * (p + disc), 2 * alpha * rho / (disc + p.abs()))
        x = self.center + ((alpha + r) / (gap + r)).unsqueeze(-1) * diff
        return x, -self._log_det(r, alpha, gap)


class Sylvester(Transform):
    """Sylvester flow ``f(z) = z + Q R₁ h(R₂ Qᵀ z + b)`` (van den Berg et al. 2018).

    ``Q (D, M)`` has orthonormal columns, ``R₁, R₂ (M, M)`` are upper triangular and
    ``h = tanh``. By Sylvester's determinant identity

        ``log|det ∂f/∂z| = Σ_i log(1 + h'(R₂Qᵀz + b)_i · r1_ii r2_ii)``.

    Invertibility (``r1_ii r2_ii > -1/‖h'‖∞ = -1``) is built into the parameterization:
    ``r1_ii r2_ii = -1 + softplus(a_i)`` and ``r2_ii = exp(c_i) > 0`` from free ``a``, ``c``
    (so ``r1_ii = (-1 + softplus(a_i))/r2_ii``); the strictly upper parts are free.
    ``Q`` depends on ``kind``:

    * ``"orthogonal"``: the Q factor of a QR decomposition of a free ``(D, M)`` matrix;
    * ``"householder"``: ``H_K ⋯ H_1`` applied to the first ``M`` columns of the identity, with
      ``H_k = I - 2 v_k v_kᵀ/‖v_k‖²`` for ``K = reflections`` free vectors ``v_k``;
    * ``"triangular"``: the first ``M`` coordinate axes, or the last ``M`` in reverse order with
      ``flip=True`` (presets alternate the two); no parameters.

    :meth:`inverse`: the part of ``z`` outside ``span(Q)`` is unchanged, and ``v = Qᵀz``
    solves ``v + R₁ h(R₂ v + b) = Qᵀy``, an upper-triangular system: equation ``i`` involves
    ``v_i, …, v_M`` only. It is solved from the last coordinate up, one scalar increasing
    equation ``x + r1_ii r2_ii·h(x) = t`` in the pre-activation ``x = (R₂v + b)_i`` at a
    time, by safeguarded Newton to a relative tolerance of 1e-12 in float64
    (``|Δx| <= 1e-12·(1 + |x|)``; 16 ulps in lower precision). The exact implicit-function
    gradient is attached by one Newton step ``v = v* - J⁻¹(v* + R₁h(R₂v* + b) - Qᵀy)`` with
    ``J = I + R₁ diag(h') R₂`` detached.

    Args:
        features: Size of the last dimension ``D``.
        columns: Number ``M`` of columns of ``Q`` (hidden units of the map), ``1 <= M <= D``;
            ``None`` means ``D``.
        kind: How ``Q`` is parameterized: ``"orthogonal"``, ``"householder"`` or
            ``"triangular"``.
        reflections: Number ``K`` of Householder reflections (``kind="householder"`` only);
            ``None`` means ``M``.
        flip: Use the reversed coordinate order (``kind="triangular"`` only).

    Shapes: ``z (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Sylvester(4, columns=2)
        >>> y, ladj = t(torch.randn(5, 4))
        >>> z, _ = t.inverse(y)

    """

    kinds = ("orthogonal", "householder", "triangular")

    def __init__(
        self,
        features: int,
        columns: int | None = None,
        kind: str = "orthogonal",
        reflections: int | None = None,
        flip: bool = False,
    ) -> None:
        super().__init__()
        self.features = _check_features("Sylvester", features)
        m = features if columns is None else columns
        if not isinstance(m, int) or not 1 <= m <= features:
            raise ValueError(
                f"Sylvester: columns must be an int in [1, features={features}], got {columns!r}"
            )
        if kind not in self.kinds:
            raise ValueError(f"Sylvester: kind must be one of {self.kinds}, got {kind!r}")
        if reflections is not None and kind != "householder":
            raise ValueError(f"Sylvester: reflections is for kind='householder', not {kind!r}")
        if flip and kind != "triangular":
            raise ValueError(f"Sylvester: flip is for kind='triangular', not {kind!r}")
        self.columns, self.kind, self.flip = m, kind, flip
        self.act = _Tanh()
        # Near the identity: r1_ii r2_ii = -1 + softplus(log(e - 1)) = 0, small upper parts.
        self.r1 = nn.Parameter(0.01 * torch.randn(m, m))  # strictly upper part used
        self.r2 = nn.Parameter(0.01 * torch.randn(m, m))  # strictly upper part used
        self.diag_raw = nn.Parameter(torch.full((m,), math.log(math.e - 1)))
        self.r2_log_diag = nn.Parameter(torch.zeros(m))
        self.b = nn.Parameter(torch.zeros(m))
        if kind == "orthogonal":
            self.q_raw = nn.Parameter(torch.randn(features, m))
        elif kind == "householder":
            k = m if reflections is None else reflections
            if not isinstance(k, int) or k < 1:
                raise ValueError(f"Sylvester: reflections must be a positive int, got {k!r}")
            self.householder = nn.Parameter(torch.randn(k, features))

    def _basis(self) -> Tensor:
        """``Q (D, M)`` with orthonormal columns."""
        if self.kind == "orthogonal":
            return torch.linalg.qr(self.q_raw).Q
        ref = self.r1
        eye = torch.eye(self.features, self.columns, dtype=ref.dtype, device=ref.device)
        if self.kind == "triangular":
            return eye.flip(0) if self.flip else eye
        q = eye
        tiny = torch.finfo(ref.dtype).tiny
        for v in self.householder:
            q = q - (2 / v.dot(v).clamp_min(tiny)) * torch.outer(v, v @ q)
        return q

    def _triangles(self) -> tuple[Tensor, Tensor, Tensor]:
        """``R₁, R₂ (M, M)`` and ``gap = 1 + diag(R₁)·diag(R₂) (M,)``."""
        gap = _positive(self.diag_raw)
        r2_diag = self.r2_log_diag.exp()
        r1 = self.r1.triu(1) + torch.diag((gap - 1) / r2_diag)
        r2 = self.r2.triu(1) + torch.diag(r2_diag)
        return r1, r2, gap

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q = self._basis()
        r1, r2, gap = self._triangles()
        pre = (x @ q) @ r2.T + self.b  # R₂Qᵀx + b, (*, M)
        y = x + self.act.value(pre) @ (q @ r1).T
        return y, self.act.slope(pre, gap).log().sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q = self._basis()
        r1, r2, gap = self._triangles()
        target = y @ q  # Qᵀy, (*, M)
        v = self._solve(target.detach(), r1.detach(), r2.detach(), gap.detach())
        # One autograd Newton step at the detached root attaches the implicit gradient.
        pre = v @ r2.T + self.b
        residual = v + self.act.value(pre) @ r1.T - target
        with torch.no_grad():
            jac = (r1 * self.act.derivative(pre).unsqueeze(-2)) @ r2  # R₁ diag(h') R₂, (*, M, M)
            jac = jac + torch.eye(self.columns, dtype=jac.dtype, device=jac.device)
            jac.diagonal(dim1=-2, dim2=-1).copy_(self.act.slope(pre, gap))
        step = torch.linalg.solve_triangular(jac, residual.unsqueeze(-1), upper=True)
        v = v - step.squeeze(-1)
        pre = v @ r2.T + self.b
        x = y - self.act.value(pre) @ (q @ r1).T
        return x, -self.act.slope(pre, gap).log().sum(-1)

    @torch.no_grad()
    def _solve(self, target: Tensor, r1: Tensor, r2: Tensor, gap: Tensor) -> Tensor:
        """Back-substitution for ``v + R₁ h(R₂ v + b) = target``, last coordinate first."""
        b = self.b.detach()
        v = torch.zeros_like(target)  # (*, M)
        hidden = torch.zeros_like(target)  # h(R₂v + b) for the coordinates solved so far
        for i in reversed(range(self.columns)):
            shift = v[..., i + 1 :] @ r2[i, i + 1 :] + b[i]
            rest = hidden[..., i + 1 :] @ r1[i, i + 1 :]
            pre = self.act.solve(r2[i, i] * (target[..., i] - rest) + shift, gap[i])
            v[..., i] = (pre - shift) / r2[i, i]
            hidden[..., i] = self.act.value(pre)
        return v
