"""Continuous-time flows: ``dz/dt = f(z, t, c)`` solved by an ODE solver (Chen et al. 2018, FFJORD).

The map from ``z(0)`` to ``z(T)`` is invertible (run the ODE backwards), and its log-determinant
obeys the instantaneous change of variables ``d log|det ∂z(t)/∂z(0)| / dt = tr(∂f/∂z)``, so it
is integrated beside ``z`` in one augmented state (Grathwohl et al. 2019). The dynamics ``f``
may be any network: the Jacobian is unrestricted. Kinetic-energy and Jacobian-norm
regularization (Finlay et al. 2020) integrate along the same solve, switched on by
:func:`regularization` (the objective's option, :class:`exactflow.objectives.NLL`).

The solver is torchdiffeq's (installed with ``pip install 'exactflow[ode]'``), imported when a
solve runs: exactflow itself imports without it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..nn import zero_output
from ..numerics import rademacher, tracing
from .base import Transform

__all__ = ["ContinuousFlow", "regularization"]

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
TRACES = ("hutchinson", "exact")
#: Smooth activations of the dynamics: ``pre -> (σ(pre), σ'(pre))``, sharing their work.
ACTIVATIONS: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "tanh": lambda h: (a := torch.tanh(h), 1 - a * a),
    "softplus": lambda h: (nn.functional.softplus(h), torch.sigmoid(h)),
}
#: The right-hand side of an ODE on a tuple of tensors: ``(t, state) -> d state / dt``.
Field = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]


def _torchdiffeq():  # the module
    try:
        import torchdiffeq
    except ImportError:
        raise ImportError(
            "ContinuousFlow solves its ODE with torchdiffeq, which is not installed:"
            " pip install 'exactflow[ode]'"
        ) from None
    return torchdiffeq


class Dynamics(nn.Module):
    """``f(z, t, c)``: a fully connected network whose every layer also reads the time ``t``.

    Layer ``k`` maps ``[h, t]`` (and, in the first layer, the context ``c``) through a linear
    map and a smooth activation. Beside ``f`` it returns Jacobian-vector products ``(∂f/∂z) v``
    for a stack of tangents ``v``, pushed forward layer by layer
    (``u ← σ'(a_k) ⊙ W_k[:, :in] u``): the full Jacobian for ``v = I``, Hutchinson's
    ``(∂f/∂z) ε`` for one probe — plain tensor algebra, no nested autograd.
    """

    def __init__(self, features: int, hidden: Sequence[int], context: int, activation: str) -> None:
        super().__init__()
        widths = [features, *hidden, features]
        self.layers = nn.ModuleList(
            nn.Linear(a + 1 + (context if k == 0 else 0), b)
            for k, (a, b) in enumerate(itertools.pairwise(widths))
        )
        self.activation = activation
        zero_output(self.layers[-1])  # f = 0: the flow starts at the identity

    def context_terms(self, c: Tensor | None) -> Tensor | None:
        """The first layer's context columns applied to ``c (N, C)``: constant along a solve."""
        if c is None:
            return None
        first = self.layers[0]
        return c @ first.weight[:, first.in_features - c.shape[-1] :].T

    def forward(
        self, z: Tensor, t: Tensor, context_terms: Tensor | None, tangent: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``f (N, D)`` and ``(∂f/∂z) v`` for tangents ``v (N or 1, K, D)``, as ``(N, K, D)``.

        ``context_terms`` is :meth:`context_terms` of the context (``None`` without one).
        """
        h, u = z, tangent
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            width = h.shape[-1]
            weight = layer.weight[:, :width]
            # The time column folds into the bias: [h, t] W^T + b = h W_h^T + (b + t w_t).
            pre = nn.functional.linear(h, weight, layer.bias + t * layer.weight[:, width])
            if k == 0 and context_terms is not None:
                pre = pre + context_terms
            u = u @ weight.T  # (N, K, width): t and c do not move with z
            if k < last:
                h, slope = ACTIVATIONS[self.activation](pre)
                u = slope[:, None, :] * u
            else:
                h = pre
        return h, u


class ContinuousFlow(Transform):
    """``y = z(T)`` for ``dz/dt = f(z, t, c)``, ``z(0) = x`` (FFJORD, Grathwohl et al. 2019).

    ``f`` is :class:`Dynamics`, a network with ``hidden`` widths and a smooth activation whose
    layers read the time; its output layer starts at zero, so the flow starts as the identity.
    The log-determinant is integrated in the same solve,

        log|det ∂y/∂x| = ∫_0^T tr(∂f/∂z(t)) dt.

    **Eval mode** (every reported figure): the trace is exact, from the ``D`` columns of
    ``∂f/∂z`` (Jacobian-vector products pushed through the layers, ``O(D)`` times a pass of
    ``f``), and the solve runs at ``eval_atol``/``eval_rtol``: ``ladj`` is exact *up to the ODE
    solver's error*, which the adaptive solver keeps near those tolerances.
    **Training** (``trace="hutchinson"``): one Rademacher probe ``ε`` per row, drawn once per
    solve and held along it, gives ``∫ εᵀ(∂f/∂z)ε dt``, whose mean over ``ε`` is the integral of
    the traces (linearity) — unbiased, up to the solver's error (the adaptive steps depend on
    the estimate too). ``trace="exact"`` trains on the exact trace instead.

    **Inverse**: the same ODE from ``T`` back to ``0``, ``ladj`` negated; a round trip is
    exact to the solver's tolerance. **Cost**: every step of an adaptive solver reads its error
    on the host (one synchronization per step); :attr:`nfe` counts the evaluations of ``f`` of
    the last solve. With ``adjoint=True`` training gradients come from the adjoint ODE (memory
    independent of the number of steps); in eval mode gradients go through the solver's steps
    (the exact derivative of the computed map). **Tracers** (``torch.func`` transforms,
    ``torch.compile``, ``torch.export``) cannot follow host-side step control nor torchdiffeq's
    internals: under them the solve is the classic RK4 on ``traced_steps`` equal steps
    (error ``O(h⁴)``, no adjoint), which agrees with the adaptive solve to about the solvers'
    error, not bit for bit.

    Args:
        features: Width ``D``.
        hidden: Hidden widths of ``f``.
        context: Context width ``C``, concatenated to ``f``'s input (0: none).
        time: Integration time ``T > 0``.
        solver: A torchdiffeq method: adaptive (``"dopri5"``, ...) or fixed-grid (``"rk4"``,
            ..., with ``step_size``).
        atol: Absolute tolerance of the solve in training.
        rtol: Relative tolerance of the solve in training.
        eval_atol: Absolute tolerance in eval mode; ``None``: ``min(atol, 1e-8)`` in float64,
            ``min(atol, 1e-6)`` in float32.
        eval_rtol: Relative tolerance in eval mode; ``None`` as ``eval_atol``.
        adjoint: Differentiate by the adjoint method (memory) rather than through the steps.
        trace: Training estimator of the trace, ``"hutchinson"`` or ``"exact"``.
        activation: ``"tanh"`` or ``"softplus"``.
        step_size: Step of a fixed-grid solver (required for those, unused otherwise).
        traced_steps: Steps of the fixed RK4 grid that replaces the solver under a tracer.

    Attributes:
        nfe: Evaluations of ``f`` in the last forward or inverse solve (0 before any).

    Shapes: ``x (*, D)``, ``context (*, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> ode = ef.transforms.ContinuousFlow(2, hidden=(16,)).eval()
        >>> y, ladj = ode(torch.randn(5, 2))
        >>> x, back = ode.inverse(y)
        >>> bool(torch.allclose(ladj, -back, atol=1e-4)), ode.nfe > 0
        (True, True)

    """

    exact_ladj = False

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        time: float = 1.0,
        solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        eval_atol: float | None = None,
        eval_rtol: float | None = None,
        adjoint: bool = True,
        trace: str = "hutchinson",
        activation: str = "tanh",
        step_size: float | None = None,
        traced_steps: int = 16,
    ) -> None:
        super().__init__()
        if features < 1 or context < 0 or any(h < 1 for h in hidden):
            raise ValueError(
                f"ContinuousFlow: features and hidden widths must be >= 1 and context >= 0, got"
                f" {features}, {tuple(hidden)} and {context}"
            )
        if not (math.isfinite(time) and time > 0):
            raise ValueError(f"ContinuousFlow: time must be a finite number > 0, got {time}")
        if solver not in ADAPTIVE + FIXED:
            raise ValueError(
                f"ContinuousFlow: solver must be one of {ADAPTIVE + FIXED}, got {solver!r}"
            )
        if solver in FIXED and not (step_size is not None and 0 < step_size <= time):
            raise ValueError(
                f"ContinuousFlow: the fixed-grid solver {solver!r} needs step_size in (0, time],"
                f" got {step_size}"
            )
        tolerances = {"atol": atol, "rtol": rtol, "eval_atol": eval_atol, "eval_rtol": eval_rtol}
        for name, value in tolerances.items():
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"ContinuousFlow: {name} must be a number > 0, got {value}")
        if isinstance(traced_steps, bool) or not isinstance(traced_steps, int) or traced_steps < 1:
            raise ValueError(
                f"ContinuousFlow: traced_steps must be a positive integer, got {traced_steps!r}"
            )
        if trace not in TRACES:
            raise ValueError(f"ContinuousFlow: trace must be one of {TRACES}, got {trace!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"ContinuousFlow: activation must be one of {tuple(ACTIVATIONS)}, got"
                f" {activation!r}"
            )
        self.net = Dynamics(features, hidden, context, activation)
        self.features = features
        self.context = context
        self.time = float(time)
        self.solver = solver
        self.atol, self.rtol = atol, rtol
        self.eval_atol, self.eval_rtol = eval_atol, eval_rtol
        self.adjoint = adjoint
        self.trace = trace
        self.step_size = step_size
        self.traced_steps = traced_steps
        self.nfe = 0
        # Set by `regularization`: the weights of the two terms, and each solve's penalties.
        self._weights: tuple[float, float] | None = None
        self._penalties: list[Tensor] = []

    def _check(self, x: Tensor, context: Tensor | None) -> None:
        if x.dim() < 1 or x.shape[-1] != self.features:
            raise ValueError(
                f"ContinuousFlow: expected (..., {self.features}), got {tuple(x.shape)}"
            )
        if self.context and context is None:
            raise ValueError(
                f"ContinuousFlow: needs a context of shape (..., {self.context}), got None"
            )

    def _tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        if self.training:
            return self.atol, self.rtol
        floor = 1e-8 if dtype == torch.float64 else 1e-6
        atol = min(self.atol, floor) if self.eval_atol is None else self.eval_atol
        rtol = min(self.rtol, floor) if self.eval_rtol is None else self.eval_rtol
        return atol, rtol

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, context)
        return self._solve(x, context, 0.0, self.time)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y, context)
        return self._solve(y, context, self.time, 0.0)

    def _solve(
        self, z: Tensor, context: Tensor | None, start: float, end: float
    ) -> tuple[Tensor, Tensor]:
        """``z(end)`` from ``z(start)`` and ``∫_start^end tr(∂f/∂z) dt``, row by row."""
        c = context if self.context else None
        shape = z.shape
        if c is not None:  # broadcast the batch dimensions of z and the context
            batch = torch.broadcast_shapes(z.shape[:-1], c.shape[:-1])
            shape = torch.Size((*batch, self.features))
            c = c.expand(*batch, self.context).reshape(-1, self.context)
        rows = z.expand(shape).reshape(-1, self.features)
        n = rows.shape[0]
        if n == 0:  # nothing to solve (and an empty state has no error norm)
            self.nfe = 0
            return rows.reshape(shape), rows.new_zeros(shape[:-1])
        estimate = self.training and self.trace == "hutchinson"
        if estimate:
            tangent = rademacher(rows)[:, None, :]  # (N, 1, D): one probe per row, held
        else:
            tangent = torch.eye(self.features, dtype=rows.dtype, device=rows.device)[None]
        weights = self._weights
        terms = self.net.context_terms(c)
        calls = [0]

        def dynamics(t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            calls[0] += 1
            f, jv = self.net(state[0], t, terms, tangent)
            jv = jv.expand(f.shape[0], -1, -1)  # (N, K, D), also for f without hidden layers
            if estimate:
                trace = (jv[:, 0] * tangent[:, 0]).sum(-1)  # εᵀ (∂f/∂z) ε
            else:
                trace = jv.diagonal(dim1=-2, dim2=-1).sum(-1)
            if weights is None:
                return f, trace
            # ‖∂f/∂z‖_F²: exact from the D columns, or ‖(∂f/∂z) ε‖² (unbiased) from the probe
            return f, trace, f.square().sum(-1), jv.square().sum((-2, -1))

        zeros = rows.new_zeros(n)
        state = (rows, zeros) if weights is None else (rows, zeros, zeros, zeros)
        solution = self._odeint(dynamics, state, rows.new_tensor([start, end]), c)
        self.nfe = calls[0]
        final = [s[-1] for s in solution]
        if weights is not None:
            sign = 1.0 if end > start else -1.0  # the terms integrate over [0, T] either way
            kinetic, jacobian = weights
            penalty = sign * (kinetic * final[2] + jacobian * final[3])
            self._penalties.append(penalty.reshape(shape[:-1]))
        return final[0].reshape(shape), final[1].reshape(shape[:-1])

    def _odeint(
        self, dynamics: Field, state: tuple[Tensor, ...], times: Tensor, c: Tensor | None
    ) -> tuple[Tensor, ...]:
        if tracing():  # no host-side step control under a tracer: a fixed RK4 grid
            return _rk4(dynamics, state, times, self.traced_steps)
        torchdiffeq = _torchdiffeq()
        atol, rtol = self._tolerances(times.dtype)
        options = {"step_size": self.step_size} if self.solver in FIXED else None
        kwargs = dict(rtol=rtol, atol=atol, method=self.solver, options=options)
        if self.adjoint and self.training and torch.is_grad_enabled():
            # The adjoint differentiates through f's parameters, and through a context that
            # needs a gradient (torchdiffeq drops the entries that need none). In eval mode
            # gradients go through the solver's steps instead: the exact derivative of the map
            # computed (the one the exactness certificate compares against), not the adjoint
            # ODE's approximation of it.
            params = (*self.net.parameters(), *(() if c is None else (c,)))
            return torchdiffeq.odeint_adjoint(
                dynamics, state, times, adjoint_params=params, **kwargs
            )
        return torchdiffeq.odeint(dynamics, state, times, **kwargs)


def _rk4(dynamics: Field, state: tuple[Tensor, ...], times: Tensor, steps: int) -> tuple:
    """The classic fourth-order Runge–Kutta method on ``steps`` equal steps.

    From ``times[0]`` to ``times[1]``; returns the states at both ends (stacked as torchdiffeq
    does). Plain tensor algebra without host reads, so tracers (``torch.func``, ``torch.compile``,
    ``torch.export``) can follow it; global error ``O(h⁴)``.
    """

    def moved(base: tuple[Tensor, ...], slope: tuple[Tensor, ...], by: Tensor) -> tuple:
        return tuple(b + by * s for b, s in zip(base, slope, strict=True))

    h = (times[1] - times[0]) / steps
    y = state
    for k in range(steps):
        t = times[0] + k * h
        k1 = dynamics(t, y)
        k2 = dynamics(t + h / 2, moved(y, k1, h / 2))
        k3 = dynamics(t + h / 2, moved(y, k2, h / 2))
        k4 = dynamics(t + h, moved(y, k3, h))
        y = tuple(
            v + h / 6 * (a + 2 * b + 2 * c + d)
            for v, a, b, c, d in zip(y, k1, k2, k3, k4, strict=True)
        )
    return tuple(torch.stack((s, e)) for s, e in zip(state, y, strict=True))


@contextlib.contextmanager
def regularization(
    model: nn.Module, kinetic: float, jacobian: float
) -> Iterator[Callable[[], Tensor | float]]:
    """Integrate Finlay et al.'s (2020) regularizers along every continuous flow's solves.

    Inside the block, every :class:`ContinuousFlow` of ``model`` adds two terms to its
    augmented state and records, per row,

        kinetic · ∫_0^T ‖f(z(t), t)‖² dt + jacobian · ∫_0^T ‖∂f/∂z(t)‖_F² dt

    (the Frobenius norm exact in eval mode or with ``trace="exact"``, otherwise Hutchinson's
    unbiased ``‖(∂f/∂z) ε‖²`` with the solve's probe). The yielded callable returns the sum of
    the penalties recorded inside the block, over the flows and their solves (shape: the batch
    shape of the calls; ``0.0`` if none ran), also after the block has ended. Both terms
    favour straight, slowly varying trajectories, which the adaptive solver integrates in
    fewer steps.

    Args:
        model: Any module; its :class:`ContinuousFlow` submodules are regularized.
        kinetic: Weight of the kinetic energy.
        jacobian: Weight of the Jacobian's squared Frobenius norm.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.FFJORD(features=2, hidden=(8,))
        >>> with ef.transforms.regularization(flow, 0.1, 0.1) as penalty:
        ...     log_p = flow.log_prob(torch.randn(4, 2))
        >>> penalty().shape
        torch.Size([4])

    """
    blocks = [m for m in model.modules() if isinstance(m, ContinuousFlow)]
    recorded: list[Tensor] = []  # shared by the blocks; kept for reading after the block
    for block in blocks:
        block._weights, block._penalties = (float(kinetic), float(jacobian)), recorded

    def penalty() -> Tensor | float:
        return sum(recorded, 0.0)

    try:
        yield penalty
    finally:
        for block in blocks:
            block._weights, block._penalties = None, []
