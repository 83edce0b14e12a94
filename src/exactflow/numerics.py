"""Numerics shared by the transforms: trace detection, root finding, log-det estimators.

Everything here sits below the transforms: it imports nothing else from exactflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "fixed_point",
    "hutchinson_trace",
    "importance_stats",
    "importance_sums",
    "log_mean_exp_stats",
    "rademacher",
    "solve_increasing",
    "tolerance",
    "tracing",
    "under_functorch",
    "values_readable",
]


def tracing() -> bool:
    """Whether the code runs under a tracer: ``torch.compile``, ``torch.export``, ``vmap``/``grad``.

    Host-side checks (``bool(tensor)``, ``.item()``, data-dependent Python branches) break these
    tracers, so validation and convergence checks are skipped while this is true; code that
    iterates to a tolerance runs its full iteration budget instead of stopping early.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.numerics.tracing()
        False
        >>> torch.func.vmap(lambda x: torch.tensor(ef.numerics.tracing()) + 0 * x)(torch.zeros(2))
        tensor([1., 1.])

    """
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or under_functorch()


def under_functorch() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ...) is active.

    These transforms, unlike ``torch.compile``, cannot batch in-place writes into a tensor
    created inside the call; code with such a fast path takes its functional path here.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.numerics.under_functorch()
        False

    """
    if torch.compiler.is_compiling():  # dynamo handles the transforms itself; asking the
        return False  # interpreter stack there would also slow the compiled graph down
    return torch._C._functorch.peek_interpreter_stack() is not None


def values_readable() -> bool:
    """Whether tensor values can be read on the host here (``bool(t)``, early stopping).

    True outside tracers, and under ``torch.func`` transforms with no ``vmap`` level (``grad``,
    ``vjp``, the forward pass of ``jacrev``), whose tensors carry real values; False under
    ``torch.compile``, ``torch.export``, ``jit`` tracing and ``vmap``.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.numerics.values_readable()
        True
        >>> torch.func.vmap(lambda x: torch.tensor(ef.numerics.values_readable()) + 0 * x)(
        ...     torch.zeros(2)
        ... )
        tensor([0., 0.])

    """
    if not tracing():
        return True
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    stack = torch._C._functorch.get_interpreter_stack() or []
    return all(level.key() != torch._C._functorch.TransformType.Vmap for level in stack)


# ---------------------------------------------------------------------------- root finding
def tolerance(dtype: torch.dtype) -> float:
    """Default relative tolerance of the solvers: ``1e-12`` in float64, ``64·eps`` below.

    64 ulps leave room for the rounding of evaluating a map near its root (``x + s·h(x)`` is
    computed to about ``2·eps·(|x| + |s·h(x)|)``) while staying far below any error that
    would show in a log-density.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.numerics.tolerance(torch.float64)
        1e-12

    """
    return max(1e-12, 64 * torch.finfo(dtype).eps)


def _not_converged(
    name: str, what: str, residual: Tensor, bound: Tensor, tol: float, scale: str
) -> None:
    """Raise ``FloatingPointError`` naming ``name``, the worst residual and the tolerance."""
    excess = torch.where(residual.isnan(), torch.inf, residual - bound)
    worst = excess.flatten().argmax()
    failed = int((excess > 0).sum())
    raise FloatingPointError(
        f"{name}: {what} did not converge at {failed} of {residual.numel()} entries: largest"
        f" residual {residual.flatten()[worst].item():.3g} > tolerance {tol:.3g}·(1 + |{scale}|)"
        f" = {bound.flatten()[worst].item():.3g}"
    )


def solve_increasing(
    f: Callable[[Tensor], Tensor],
    derivative: Callable[[Tensor], Tensor],
    target: Tensor,
    lower: Tensor,
    upper: Tensor,
    *,
    start: Tensor | None = None,
    name: str,
    tol: float | None = None,
    max_iter: int = 60,
) -> Tensor:
    """Root ``x`` of ``f(x) = target``, elementwise, for a strictly increasing scalar map ``f``.

    Bracketed Newton: the bracket ``[lower, upper]`` must hold the root
    (``f(lower) <= target <= f(upper)``) and shrinks to the last points on either side of it;
    a Newton step that would leave its interior is replaced by bisection. Started where its
    tangents cannot overshoot (left of the root where ``f`` is concave, right of it where
    ``f`` is convex), Newton approaches the root monotonically and converges quadratically
    near it. An entry stops once its residual is within the tolerance:

        ``|f(x) - target| <= tol·(1 + |target|)``    (``tol``: :func:`tolerance` by default)

    i.e. ``x`` is the exact root for a target within ``tol`` relative of the given one (its
    error in ``x`` is that residual over ``f'(x)``). Non-finite targets pass through.

    **Non-convergence is an error**: when some entry is still outside the tolerance after
    ``max_iter`` iterations, ``FloatingPointError`` names ``name``, the largest residual and
    the tolerance. Where values cannot be read (:func:`values_readable` is false: compile,
    export, vmap) nothing is read back to the host: the full budget runs and unconverged
    entries come back NaN, never wrong numbers.

    Gradients are exact, not those of the iterations: the iterations run without autograd, and
    one Newton step ``x = x* - (f(x*) - target) / f'(x*)`` is taken with autograd at the
    solution ``x*``, its denominator detached. Its value is ``x*`` to within the tolerance and
    its first derivatives with respect to ``target`` and to every tensor ``f`` uses are those
    of the exact root (the implicit function theorem: ``∂x = -∂f / f'``). ``f`` must therefore
    compute from live parameters; ``derivative`` is only ever evaluated without autograd.

    Args:
        f: The map, elementwise and strictly increasing in ``x`` on the bracket, ``(*) -> (*)``.
        derivative: ``f'``, positive on the bracket.
        target: Right-hand side ``(*)``.
        lower: Lower end of a bracket of the root, broadcastable to ``target``.
        upper: Upper end of the bracket.
        start: First iterate, inside the bracket; ``None``: its midpoint.
        name: What to name in the error (the transform and the equation).
        tol: Relative residual tolerance; ``None``: :func:`tolerance` of the dtype.
        max_iter: Iteration budget.

    Returns:
        The root ``(*)``, shaped like ``target``.

    Raises:
        FloatingPointError: An entry did not reach the tolerance in ``max_iter`` iterations.

    Example:
        >>> import torch, exactflow as ef
        >>> f = lambda x: x + 3 * torch.tanh(x)
        >>> df = lambda x: 1 + 3 * (1 - torch.tanh(x) ** 2)
        >>> t = torch.tensor([-10.0, 0.5, 40.0], dtype=torch.float64)
        >>> x = ef.numerics.solve_increasing(f, df, t, t - 3, t + 3, name="example")
        >>> bool(torch.allclose(f(x), t, rtol=0, atol=1e-11))
        True

    """
    tol = tolerance(target.dtype) if tol is None else tol
    traced = not values_readable()
    with torch.no_grad():
        t = target.detach()
        lo, hi = torch.broadcast_tensors(lower.detach(), upper.detach(), t)[:2]
        bound = tol * (1 + t.abs())
        x = 0.5 * (lo + hi) if start is None else start.detach().expand_as(t)
        for k in range(max_iter + 1):
            g = f(x) - t
            converged = (g.abs() <= bound) | ~t.isfinite()
            if k == max_iter or (not traced and k % 4 == 0 and bool(converged.all())):
                break
            lo = torch.where(g < 0, x, lo)
            hi = torch.where(g > 0, x, hi)
            newton = x - g / derivative(x)
            inside = (newton > lo) & (newton < hi)  # False for NaN too: then bisect
            x = torch.where(converged, x, torch.where(inside, newton, 0.5 * (lo + hi)))
        if traced:
            x = torch.where(converged, x, torch.nan)
        elif not bool(converged.all()):
            what = f"the scalar solve ({max_iter} iterations)"
            _not_converged(name, what, g.abs(), bound, tol, "target")
    residual = torch.where(t.isfinite(), f(x) - target, 0)
    with torch.no_grad():
        slope = derivative(x)
    return x - residual / slope


def fixed_point(
    phi: Callable[..., Tensor],
    x0: Tensor,
    *args: Tensor,
    name: str,
    tol: float | None = None,
    max_iter: int = 200,
) -> Tensor:
    """Fixed point ``x = phi(x, *args)`` of a contraction, by plain iteration ``x <- phi(x)``.

    For a residual step ``y = x + g(x)`` with ``Lip(g) < 1`` the inverse is the fixed point of
    ``phi(x, y) = y - g(x)``. Iterates until, elementwise,

        ``|phi(x) - x| <= tol·(1 + |x|)``    (``tol``: :func:`tolerance` by default),

    which puts ``x`` within ``Lip/(1 - Lip)`` times that of the fixed point. The iteration
    count is about ``log(tol)/log(Lip)``: 40 at ``Lip = 0.5``, 260 at ``Lip = 0.9`` in float64
    (raise ``max_iter`` for slower contractions).

    **Non-convergence is an error**: ``FloatingPointError`` names ``name``, the largest
    residual and the tolerance. Where values cannot be read (:func:`values_readable` is false:
    ``torch.compile``, ``torch.export``, ``vmap``) the full budget runs without host reads and
    unconverged entries come back NaN.

    Gradients are the exact implicit ones, ``∂x = (I - ∂phi/∂x)⁻¹ ∂phi/∂args``: the backward
    pass solves ``w = u + (∂phi/∂x)ᵀ w`` by the same iteration (it converges for the same
    reason) and returns ``(∂phi/∂args)ᵀ w``. So every tensor ``phi`` depends on with a
    gradient must be one of ``args`` (pass a module's parameters through
    :func:`torch.func.functional_call`); outside tracing a ``phi`` that captures one is
    refused with ``ValueError``.

    Args:
        phi: The contraction ``(x, *args) -> x``, shape-preserving in ``x``.
        x0: Starting point ``(*)``.
        *args: The tensors ``phi`` depends on (inputs and parameters).
        name: What to name in the error.
        tol: Relative tolerance; ``None``: :func:`tolerance` of the dtype.
        max_iter: Iteration budget (both passes).

    Returns:
        The fixed point, shaped like ``x0``.

    Raises:
        FloatingPointError: An entry did not reach the tolerance in ``max_iter`` iterations.
        ValueError: ``phi`` depends on a tensor requiring a gradient that is not in ``args``.

    Example:
        >>> import torch, exactflow as ef
        >>> phi = lambda x, y, a: y - a * torch.sin(x)  # inverse of y = x + a·sin(x), |a| < 1
        >>> y = torch.tensor([0.3, 2.0], dtype=torch.float64)
        >>> a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        >>> x = ef.numerics.fixed_point(phi, y, y, a, name="example")
        >>> bool(torch.allclose(x + a * torch.sin(x), y))
        True

    """
    tol = tolerance(x0.dtype) if tol is None else tol
    traced = not values_readable()
    if not tracing():
        with torch.enable_grad():
            if phi(x0.detach(), *(a.detach() for a in args)).requires_grad:
                raise ValueError(
                    f"{name}: phi depends on a tensor that requires a gradient and is not one"
                    " of args; pass it in args so that its implicit gradient is computed"
                )
    with torch.no_grad():
        x = _iterate(lambda v: phi(v, *args), x0.detach(), name, tol, max_iter, traced)
    return _FixedPoint.apply(phi, tol, max_iter, name, x, *args)


def _iterate(
    phi: Callable[[Tensor], Tensor], x: Tensor, name: str, tol: float, max_iter: int, traced: bool
) -> Tensor:
    """``x <- phi(x)`` to ``|phi(x) - x| <= tol·(1 + |x|)``; raise or NaN if not reached.

    Entries that start non-finite pass through as they are; an entry that *becomes* non-finite
    diverged, and counts as not converged.
    """
    passthrough = ~x.isfinite()
    for k in range(max_iter + 1):
        new = phi(x)
        residual = (new - x).abs()
        bound = tol * (1 + new.abs())
        converged = ((residual <= bound) & new.isfinite()) | passthrough
        x = new
        if k == max_iter or (not traced and k % 4 == 0 and bool(converged.all())):
            break
    if traced:
        return torch.where(converged, x, torch.nan)
    if not bool(converged.all()):
        what = f"the fixed-point iteration ({max_iter} iterations)"
        _not_converged(name, what, residual, bound, tol, "x")
    return x


class _FixedPoint(torch.autograd.Function):
    """Identity on the solution ``x*``, with the implicit-function backward pass."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        phi: Callable[..., Tensor], tol: float, max_iter: int, name: str, x: Tensor, *args: Tensor
    ) -> Tensor:
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        phi, tol, max_iter, name, _, *args = inputs
        ctx.phi, ctx.tol, ctx.max_iter, ctx.name = phi, tol, max_iter, name
        ctx.save_for_backward(output, *args)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        x, *args = ctx.saved_tensors
        _, vjp = torch.func.vjp(ctx.phi, x, *args)
        w = _iterate(
            lambda w: grad + vjp(w)[0],
            grad,
            f"{ctx.name} (backward)",
            ctx.tol,
            ctx.max_iter,
            not values_readable(),
        )
        return (None, None, None, None, None, *vjp(w)[1:])


# ---------------------------------------------------------------------------------------------
# Log-determinant estimators: unbiased stochastic estimates of traces, for transforms whose
# exact log-determinant is expensive (residual and continuous-time flows, in training mode).


def rademacher(like: Tensor) -> Tensor:
    """Independent random signs ``±1`` with the shape, dtype and device of ``like``.

    A probe ``v`` with ``E[v vᵀ] = I`` and the smallest variance for Hutchinson's estimator.
    """
    signs = torch.randint(0, 2, like.shape, device=like.device)
    return (2 * signs - 1).to(like.dtype)


def hutchinson_trace(
    matvec: Callable[[Tensor], Tensor], probe: Tensor, event_ndim: int = 1
) -> Tensor:
    """Hutchinson's unbiased estimate ``vᵀ A v`` of ``tr(A)``, one per event.

    For a probe with ``E[v vᵀ] = I`` (:func:`rademacher` or standard normal draws),
    ``E[vᵀ A v] = tr(A)`` (Hutchinson 1990). It is an *estimate*: average independent probes to
    shrink its variance, and report its standard error with any figure made from it.

    Args:
        matvec: ``v -> A v`` for a batch of events ``(*B, *event)``, one matrix per event.
        probe: The probes ``v``, shape ``(*B, *event)``: one independent probe per event.
        event_ndim: Trailing dimensions of one event.

    Returns:
        The estimates, shape ``(*B)``.

    Example:
        >>> import torch, exactflow as ef
        >>> _ = torch.manual_seed(0)
        >>> a = torch.tensor([[1.0, 5.0], [1.0, 2.0]])
        >>> v = ef.numerics.rademacher(torch.zeros(100_000, 2))
        >>> estimate = ef.numerics.hutchinson_trace(lambda v: v @ a.T, v)  # (100000,)
        >>> bool((estimate.mean() - 3).abs() < 4 * estimate.std() / 100_000**0.5)  # tr(a) = 3
        True

    """
    return (probe * matvec(probe)).sum(dim=tuple(range(-event_ndim, 0)))


# ---------------------------------------------------------------------------------------------
# Importance sampling: log-mean-exp estimates with their standard errors and effective sample
# sizes, from running sums that can be accumulated chunk by chunk (memory-bounded).


def importance_sums(log_w: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """``(log Σ w, log Σ w²)`` over ``dim`` of weights given by their logs ``log_w``.

    Sums of several chunks combine with ``torch.logaddexp``; :func:`importance_stats` turns
    them into estimates.
    """
    return torch.logsumexp(log_w, dim), torch.logsumexp(2 * log_w, dim)


def importance_stats(log_s1: Tensor, log_s2: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The importance-sampling estimate ``log((1/n) Σ w)``, its standard error and the ESS.

    With ``n`` weights ``w_i = p̃(z_i)/q(z_i)``, ``Ẑ = (1/n) Σ w`` is unbiased for ``Z``;
    ``log Ẑ`` is consistent but biased low by about ``Var(w)/(2 n Z²)`` (Jensen). The standard
    error of ``log Ẑ`` is the delta method's ``sd(w)/(√n · mean(w))``, computed stably as
    ``sqrt((n/ESS - 1)/(n - 1))`` with Kish's effective sample size ``ESS = (Σw)²/Σw²``
    (``inf`` when ``n = 1``).

    Args:
        log_s1: ``log Σ w`` (any shape).
        log_s2: ``log Σ w²`` (same shape).
        n: Number of weights summed.

    Returns:
        ``(log Ẑ, stderr of log Ẑ, ESS)``, each of the shape of ``log_s1``.

    Example:
        >>> import torch
        >>> from exactflow.numerics import importance_stats, importance_sums
        >>> log_w = torch.zeros(4, 3)  # equal weights: exact estimate, full ESS
        >>> log_z, stderr, ess = importance_stats(*importance_sums(log_w), n=4)
        >>> log_z.tolist(), stderr.tolist(), ess.tolist()
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0])

    """
    log_mean = log_s1 - math.log(n)
    ess = torch.exp(2 * log_s1 - log_s2)
    if n < 2:
        return log_mean, torch.full_like(log_mean, math.inf), ess
    stderr = ((n / ess - 1).clamp(min=0) / (n - 1)).sqrt()
    return log_mean, stderr, ess


def log_mean_exp_stats(log_w: Tensor, dim: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`importance_stats` of the weights ``exp(log_w)`` along ``dim``.

    Example:
        >>> import torch
        >>> from exactflow.numerics import log_mean_exp_stats
        >>> _ = torch.manual_seed(0)
        >>> log_w = torch.randn(100_000, dtype=torch.float64)  # E[exp(N(0,1))] = e^0.5
        >>> log_z, stderr, ess = log_mean_exp_stats(log_w)
        >>> bool(abs(log_z - 0.5) < 4 * stderr)
        True

    """
    return importance_stats(*importance_sums(log_w, dim), n=log_w.shape[dim])
