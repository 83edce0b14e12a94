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

**Stacked steps.** ``steps=K`` makes one transform of ``K`` maps of the family, applied in
order, their parameters stacked along a leading axis (``(K, D)``, ``(K,)``; one network output
for all ``K`` with a context). The constrained parameters of all steps then come from one
vectorized pass, and an unconditional step runs each map as two or three fused kernels
(``addmv``, ``addr``) with the log-determinants of all steps taken in one pass at the end: the
presets hold their steps this way, which is what makes a variational training step cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MLP, zero_output
from ..nn.mlp import check_context
from .base import Transform
from .planar_activations import activation_of

__all__ = ["Planar", "Radial"]


def positive(raw: Tensor) -> Tensor:
    """``softplus(raw)``, kept away from zero so that logarithms of it stay finite."""
    return F.softplus(raw).clamp_min(torch.finfo(raw.dtype).tiny)


def check_features(name: str, features: int) -> int:
    """``features`` after checking it is a positive int."""
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"{name}: features must be a positive int, got {features!r}")
    return features


def check_steps(name: str, steps: int) -> int:
    """``steps`` after checking it is a positive int."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name}: steps must be a positive int, got {steps!r}")
    return steps


def stack_shape(steps: int) -> tuple[int, ...]:
    """Leading shape of a step's stacked parameters: none for one step (the paper's shapes)."""
    return (steps,) if steps > 1 else ()


def with_step_axis(step: Transform, raw: list[Tensor], vectors: int) -> list[Tensor]:
    """Raw parameters with the step axis ``K``: ``(*B, K, D)`` vectors, ``(*B, K)`` scalars.

    ``raw`` holds ``vectors`` vector parameters, then scalar ones. A single step stores the
    paper's shapes (``(D,)``, ``()``), given here a ``K = 1`` axis.
    """
    if step.steps > 1:
        return raw
    return [p.unsqueeze(-2) if k < vectors else p.unsqueeze(-1) for k, p in enumerate(raw)]


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

    ``steps = K`` composes ``K`` planar maps in one transform (``forward`` applies step 0
    first), their parameters stacked (``w, u (K, D)``, ``b (K,)``); :meth:`inverse` solves
    them in reverse order. One step keeps the shapes ``(D,)`` and ``()``.

    Args:
        features: Size of the last dimension ``D``.
        activation: ``"tanh"`` (the paper's) or ``"leaky_relu"``.
        negative_slope: Slope of the leaky ReLU below zero, in ``[0, 1]``.
        context: Width ``C`` of a context that amortizes ``w``, ``u``, ``b`` (0: none).
        hidden: Hidden widths of the context network (``context > 0`` only).
        steps: Number ``K`` of planar maps composed.

    Shapes: ``z (*, D)``, ``context (*B, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Planar(3, context=2)
        >>> y, ladj = t(torch.randn(5, 3), torch.randn(5, 2))
        >>> z, _ = t.inverse(y, torch.randn(5, 2))
        >>> ef.transforms.Planar(3, steps=16).w.shape
        torch.Size([16, 3])

    """

    max_iter = 20
    """Iteration budget of the scalar solves (at most 11 are needed: see
    :meth:`exactflow.transforms.planar_activations.Tanh.solve`)."""

    def __init__(
        self,
        features: int,
        activation: str = "tanh",
        negative_slope: float = 0.01,
        context: int = 0,
        hidden: Sequence[int] = (64,),
        steps: int = 1,
    ) -> None:
        super().__init__()
        self.features = check_features("Planar", features)
        self.steps = check_steps("Planar", steps)
        self.activation = activation
        self.negative_slope = negative_slope
        self.act = activation_of("Planar", activation, negative_slope)
        scale = features**-0.5
        shape = stack_shape(steps)
        self.w = nn.Parameter(scale * torch.randn(*shape, features))
        self.u = nn.Parameter(scale * torch.randn(*shape, features))
        self.b = nn.Parameter(torch.zeros(shape))
        amortize(self, ("w", "u", "b"), context, hidden)

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``w, û (*B, K, D)``, ``b (*B, K)``, ``gap = 1 + wᵀû = softplus(wᵀu) + margin (*B, K)``.

        One pass for all ``K`` steps.
        """
        w, u, b = with_step_axis(self, raw_parameters(self, context), 2)
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
        if not self.context and x.numel():  # a flat batch: one fused op per product
            y = x.reshape(-1, self.features)
            pres = []
            for w_k, u_k, b_k in zip(w.unbind(0), u_hat.unbind(0), b.unbind(0), strict=True):
                pre = torch.addmv(b_k, y, w_k)  # wᵀy + b, (N,)
                y = torch.addr(y, self.act.value(pre), u_k)
                pres.append(pre)
            # log|det| of every step at once: (K, N) slopes, one log, one sum.
            slopes = self.act.slope(torch.stack(pres), gap.unsqueeze(-1))
            return y.reshape(x.shape), slopes.log().sum(0).reshape(x.shape[:-1])
        ladj = None
        for k in range(self.steps):
            w_k, u_k, b_k, gap_k = w[..., k, :], u_hat[..., k, :], b[..., k], gap[..., k]
            pre = dot(x, w_k) + b_k  # (*)
            x = x + self.act.value(pre).unsqueeze(-1) * u_k
            term = self.act.slope(pre, gap_k).log()
            ladj = term if ladj is None else ladj + term
        return x, ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w, u_hat, b, gap = self._params(context)
        ladj = None
        for k in reversed(range(self.steps)):
            w_k, u_k, b_k, gap_k = w[..., k, :], u_hat[..., k, :], b[..., k], gap[..., k]
            pre = self.act.solve(dot(y, w_k) + b_k, gap_k, self._name(k), self.max_iter)
            y = y - self.act.value(pre).unsqueeze(-1) * u_k
            term = -self.act.slope(pre, gap_k).log()
            ladj = term if ladj is None else ladj + term
        return y, ladj

    def _name(self, k: int) -> str:
        """How a solve of step ``k`` is named in errors."""
        return "Planar.inverse" if self.steps == 1 else f"Planar.inverse (step {k})"


def _norm(v: Tensor) -> Tensor:
    """Euclidean norm over the last dimension: no overflow, a finite gradient at zero.

    A float32 ``v`` is normed in float64, whose range holds the square of every float32 (one
    fused kernel); wider types are scaled by their largest entry first.
    """
    if v.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.linalg.vector_norm(v, dim=-1, dtype=torch.float64).to(v.dtype)
    scale = v.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return scale.squeeze(-1) * (v / scale).square().sum(-1).clamp_min(1e-30).sqrt()


class Radial(Transform):
    """Radial flow ``f(z) = z + β·h(α, r)·(z - z₀)``, ``h = 1/(α + r)``, ``r = ‖z - z₀‖``.

    From Rezende & Mohamed (2015). The parameterization ``α = |a|`` (kept above the smallest
    positive float), ``β = -α + softplus(b)`` keeps ``α > 0`` and ``β > -α``, which makes ``f``
    a bijection of ``R^D``: it scales ``z - z₀`` by ``(softplus(b) + r)/(α + r) > 0`` and the
    radius map is increasing and onto ``[0, ∞)``.

    **Initialization** (the one normflows uses): ``a ~ U(-1/D, 1/D)`` and
    ``b ~ U(-1 - 1/D, -1 + 1/D)``, with centres ``z₀ ~ N(0, I)``. Each step then starts as a
    mild contraction or expansion around its own centre (``softplus(b) ≈ 0.3`` against
    ``α <= 1/D``) rather than as the identity, and ``α = |a|`` reaches the small values that
    make sharp radial features as ``a`` crosses zero, where ``α = softplus(a)`` needs
    ``a -> -∞`` (and vanishing gradients). Why: on the U1-U4 energies of
    ``benchmarks/vi_compare.py`` (16 steps, 1000 Adam steps) the identity start with
    ``α = softplus(a)`` ends at a reverse KL about twice as large on U1 (0.26 against 0.12
    nats), and ``softplus`` with this start still ends above ``|a|``.

    ``log|det ∂f/∂z| = (D - 1)·log(1 + βh) + log(1 + βh + βh'r)``, evaluated as
    ``(D - 1)·log((softplus(b) + r)/(α + r)) + log(q² + 2pq + p·softplus(b)/(α + r))`` with
    ``q = r/(α + r)``, ``p = α/(α + r)``: every term is positive and bounded, so it is finite
    for all parameters and all radii (no ``r²`` to overflow).

    :meth:`inverse`: the output radius is ``ρ = r·(r + softplus(b))/(α + r)``, increasing in
    ``r``; solving it for ``r`` is a quadratic, ``r² - (ρ - softplus(b))·r - αρ = 0``, whose
    positive root is taken in closed form (the cancellation-free variant of the formula, its
    discriminant scaled against overflow), so the inverse is exact; the direction of
    ``z - z₀`` is that of ``y - z₀``.

    ``steps = K`` composes ``K`` radial maps in one transform (``forward`` applies step 0
    first), their parameters stacked (``z₀ (K, D)``, ``a, b (K,)``) so that one pass computes
    every step's ``α`` and ``β``; the presets use this. One step keeps the shapes ``(D,)``
    and ``()``.

    Args:
        features: Size of the last dimension ``D``.
        context: Width ``C`` of a context that amortizes ``z₀``, ``a``, ``b`` (0: none).
        hidden: Hidden widths of the context network (``context > 0`` only).
        steps: Number ``K`` of radial maps composed.

    Shapes: ``z (*, D)``, ``context (*B, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Radial(3, steps=2)
        >>> y, ladj = t(torch.randn(5, 3))
        >>> x, _ = t.inverse(y)

    """

    def __init__(
        self, features: int, context: int = 0, hidden: Sequence[int] = (64,), steps: int = 1
    ) -> None:
        super().__init__()
        self.features = check_features("Radial", features)
        self.steps = check_steps("Radial", steps)
        lim = 1 / features
        shape = stack_shape(steps)
        self.center = nn.Parameter(torch.randn(*shape, features))
        self.alpha_raw = nn.Parameter(torch.empty(shape).uniform_(-lim, lim))
        self.beta_raw = nn.Parameter(torch.empty(shape).uniform_(-1 - lim, -1 + lim))
        amortize(self, ("center", "alpha_raw", "beta_raw"), context, hidden)

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``z₀ (*B, K, D)``, ``α (*B, K)`` and ``gap = α + β (*B, K)``."""
        center, alpha_raw, beta_raw = with_step_axis(self, raw_parameters(self, context), 1)
        return (
            center,
            alpha_raw.abs().clamp_min(torch.finfo(alpha_raw.dtype).tiny),
            positive(beta_raw),
        )

    def _log_det(self, r: Tensor, alpha: Tensor, gap: Tensor) -> Tensor:
        ar = alpha + r
        q, p = r / ar, alpha / ar
        radial = (q * q + 2 * p * q + p * (gap / ar)).log()
        return (self.features - 1) * ((gap + r).log() - ar.log()) + radial

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        center, alpha, gap = self._params(context)
        beta = gap - alpha
        if not self.context:  # flat batch; the log-dets of all steps at once at the end
            y = x.reshape(-1, self.features)
            radii = []
            for c_k, a_k, beta_k in zip(
                center.unbind(0), alpha.unbind(0), beta.unbind(0), strict=True
            ):
                diff = y - c_k
                r = _norm(diff)
                y = torch.addcmul(y, (beta_k / (a_k + r)).unsqueeze(-1), diff)
                radii.append(r)
            ladj = self._log_det(torch.stack(radii), alpha.unsqueeze(-1), gap.unsqueeze(-1))
            return y.reshape(x.shape), ladj.sum(0).reshape(x.shape[:-1])
        ladj = None
        for k in range(self.steps):
            c_k, a_k, gap_k = center[..., k, :], alpha[..., k], gap[..., k]
            diff = x - c_k
            r = _norm(diff)
            x = x + ((gap_k - a_k) / (a_k + r)).unsqueeze(-1) * diff
            term = self._log_det(r, a_k, gap_k)
            ladj = term if ladj is None else ladj + term
        return x, ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        center, alpha, gap = self._params(context)
        ladj = None
        for k in reversed(range(self.steps)):
            c_k, a_k, gap_k = center[..., k, :], alpha[..., k], gap[..., k]
            diff = y - c_k
            rho = _norm(diff)
            p = rho - gap_k
            # disc = sqrt(p² + 4αρ), scaled so that nothing overflows; it is homogeneous of
            # degree 1 in (p, α, ρ), so the detached scale leaves its gradient exact.
            scale = torch.maximum(torch.maximum(p.abs(), rho), a_k).detach()
            disc = scale * ((p / scale).square() + 4 * (a_k / scale) * (rho / scale)).sqrt()
            # Positive root (p + disc)/2, rewritten as 2αρ/(disc - p) where p <= 0 to avoid
            # cancellation; both branches are finite, so torch.where passes clean gradients.
            r = torch.where(p > 0, 0.5 * (p + disc), 2 * a_k * rho / (disc + p.abs()))
            y = c_k + ((a_k + r) / (gap_k + r)).unsqueeze(-1) * diff
            term = -self._log_det(r, a_k, gap_k)
            ladj = term if ladj is None else ladj + term
        return y, ladj
