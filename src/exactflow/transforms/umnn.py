"""Unconstrained monotonic neural network map (UMNN; Wehenkel & Louppe 2019).

:class:`UMNN` is an :class:`~exactflow.transforms.ElementwiseMap` whose value is the integral of
a positive network, ``y = b + ∫_0^x g(t; h) dt``, computed by Clenshaw–Curtis quadrature with
nested node doubling. Unlike the other maps it owns parameters (the integrand network, shared
by every coordinate), so it is also an :class:`torch.nn.Module`: a
:class:`~exactflow.transforms.MaskedAutoregressive` or :class:`~exactflow.transforms.Coupling`
layer that holds it registers it as a submodule (``layer.map``), and its weights move, train
and save with the layer's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MLP, zero_output
from ..numerics import solve_increasing, tolerance, tracing
from .elementwise import ElementwiseMap

__all__ = ["UMNN"]

# Smallest value of the network's positive output phi (and so of g): strictly increasing maps.
_MIN_SLOPE = 1e-3
# softplus(_SHIFT) + _MIN_SLOPE = 1: a network output of 0 means phi = 1, so g = 1.
_SHIFT = math.log(math.expm1(1 - _MIN_SLOPE))


def quadrature_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of :class:`UMNN`'s quadrature: ``1e-10`` in float64, ``1e-5`` in float32.

    Below float32 it is the solvers' :func:`~exactflow.numerics.tolerance` when that is larger.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.transforms.umnn.quadrature_tolerance(torch.float64)
        1e-10

    """
    if dtype == torch.float64:
        return 1e-10
    return max(1e-5, tolerance(dtype))


def clenshaw_curtis(level: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Clenshaw–Curtis rule on ``[0, 1]`` with ``n = 2^level + 1`` nodes, in nested order.

    Nodes ``s_j = (1 - cos(π j / N)) / 2 = sin²(π j / 2N)`` and weights
    ``w_j = c_j / (2N) · (1 - Σ_{m=1}^{N/2} b_m cos(2π m j / N) / (4m² - 1))`` for
    ``N = 2^level`` (``c_j = 1`` at the ends, 2 inside; ``b_m = 1`` for ``m = N/2``, 2 below).
    The rule of level ``k`` holds every node of level ``k - 1``, so the nodes are ordered by
    the level they first appear at: the level-1 nodes ``0, 1/2, 1`` first, then each level's
    new nodes. Doubling the level then appends ``2^{level-1}`` nodes to the previous ones.

    Args:
        level: ``k >= 1``.
        like: Tensor whose dtype and device the rule takes.

    Returns:
        ``(nodes, weights)``, each ``(2^level + 1,)``; the last ``2^{level-1}`` nodes are the
        ones level ``k - 1`` lacks.

    Example:
        >>> import torch, exactflow as ef
        >>> s, w = ef.transforms.umnn.clenshaw_curtis(2, torch.zeros((), dtype=torch.float64))
        >>> [round(v, 4) for v in s.tolist()], round(float((w * s**4).sum()), 12)
        ([0.0, 0.5, 1.0, 0.1464, 0.8536], 0.2)

    """
    size = 2**level
    parts = [torch.tensor([0, size // 2, size], device=like.device)]
    for k in range(2, level + 1):
        step = 2 ** (level - k)
        parts.append(step * torch.arange(1, 2**k, 2, device=like.device))
    j = torch.cat(parts).to(like.dtype)  # (N + 1,) in nested order
    m = torch.arange(1, size // 2 + 1, device=like.device, dtype=like.dtype)
    b = torch.where(m == size // 2, 1.0, 2.0)
    series = (b / (4 * m.square() - 1) * torch.cos(2 * math.pi * j[:, None] * m / size)).sum(-1)
    ends = (j == 0) | (j == size)
    weights = torch.where(ends, 1.0, 2.0) / (2 * size) * (1 - series)
    nodes = torch.sin(0.5 * math.pi * j / size).square()
    return nodes, weights


def _level(nodes: int) -> int:
    """``k`` for ``nodes = 2^k + 1``."""
    return (nodes - 1).bit_length() - 1


def _check_nodes(name: str, value: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 3
        or (value - 1) & (value - 2)
    ):
        raise ValueError(
            f"UMNN: {name} must be 2^k + 1 for some k >= 1 (3, 5, 9, 17, 33, ...), got {value!r}"
        )


class UMNN(ElementwiseMap, nn.Module):
    """Integral of a positive network (UMNN; Wehenkel & Louppe 2019), applied to every coordinate.

    With an embedding ``h`` (size ``E``) and an offset ``b`` per coordinate from the
    conditioner::

        y = F(x) = b + ∫_0^x g(t; h) dt,    log|dy/dx| = log g(x; h),
        g = 1 + e(t) (φ(t; h) - 1),    φ = softplus(N([t, h])) + 10^{-3},    e = sech²(t / B)

    ``N`` is a small network shared by all coordinates and owned by the map (SiLU hidden
    activations, so ``g`` is analytic in ``t``, for which Clenshaw–Curtis converges fast).
    ``g`` is a convex combination of 1 and the positive ``φ``, so ``g >= 10^{-3}``; the
    envelope ``e`` makes it 1 far out (``|t| >> B``), so the map is the network's integral in
    the bulk and an identity shift in the tails, like a spline with linear tails outside
    ``[-B, B]``. That keeps ``F`` onto ``R`` with its roots near ``y - b``, and long integrals
    cheap. The map *is* the exact integral: the log-slope is ``log g(x)`` exactly, and
    autograd's ``dy/dx`` is ``g(x)`` too (Leibniz's rule), not the slope of the quadrature sum.

    **The value.** ``F(x) = b + x + x ∫_0^1 e(xs)(φ(xs) - 1) ds`` by Clenshaw–Curtis
    quadrature on ``nodes = 2^k + 1`` points. In training it uses a fixed ``nodes`` points.
    In eval mode it doubles the node count (the nodes are nested, so each doubling
    evaluates only the new half) until two successive estimates agree within
    ``tol·(1 + |∫_0^x g|)`` over the whole batch (:func:`quadrature_tolerance`: ``1e-10`` in
    float64, ``1e-5`` in float32), one host read per doubling; past ``max_nodes`` it raises
    ``FloatingPointError`` naming the map. ``y`` is thus exact to that tolerance,
    ``log|dy/dx|`` exactly. A tracer (:func:`~exactflow.numerics.tracing`: compile, export,
    vmap) allows no host reads, so there eval mode takes a fixed ``4 (nodes - 1) + 1`` points
    (at most ``max_nodes``): two doublings past training, where eager refinement usually
    stops; a traced value is that rule's, which eager mode is the place to check.

    **Inverse.** ``∫ e = B`` on each half-line and ``φ > 0`` give ``F(x) >= b + x - B`` for
    ``x >= 0`` (and ``F(x) <= b + x + B`` for ``x <= 0``), so the root of ``F(x) = y`` lies
    in ``[0, y - b + B]`` if ``y >= b``, else in ``[y - b - B, 0]``;
    :func:`~exactflow.numerics.solve_increasing` (bracketed Newton from ``y - b``, exact
    implicit gradients) solves it to the quadrature tolerance and raises
    ``FloatingPointError`` naming the map and the residual when it does not converge.

    **Start.** The network's output layer starts at zero (:func:`~exactflow.nn.zero_output`),
    so ``φ = 1`` and ``g = 1``: with the identity parameters ``h = 0``, ``b = 0`` the map is
    the identity.

    Raw parameters per coordinate, ``params[..., d, :]`` of length ``P = E + 1``: ``[0, E)``
    the embedding ``h``, ``E`` the offset ``b``.

    Args:
        hidden: Hidden widths of the integrand network ``N`` (at least one).
        embedding: Size ``E`` of the per-coordinate embedding the conditioner predicts.
        bound: Width ``B`` of the envelope: where the map may depart from a shift.
        nodes: Quadrature points in training, and the first count tried in eval mode
            (``2^k + 1``).
        max_nodes: Most quadrature points in eval mode (``2^k + 1``, more than ``nodes``).
        max_iter: Iteration budget of the numerical inverse.

    Shapes: ``x (*, D)``, ``params (*, D, P)`` (broadcasting against each other)
    ``-> y (*, D)``, ``log|dy/dx| (*, D)``.

    Example:
        >>> import torch, exactflow as ef
        >>> umnn = ef.transforms.UMNN(hidden=(16,), embedding=4).double().eval()
        >>> params = torch.randn(10, 2, umnn.params, dtype=torch.float64)
        >>> x = torch.randn(10, 2, dtype=torch.float64)
        >>> y, ladj = umnn.forward(x, params)
        >>> x2, inv_ladj = umnn.inverse(y, params)
        >>> bool(torch.allclose(x2, x, atol=1e-8)), bool(torch.allclose(inv_ladj, -ladj))
        (True, True)

    """

    def __init__(
        self,
        hidden: Sequence[int] = (32, 32),
        embedding: int = 8,
        bound: float = 5.0,
        nodes: int = 33,
        max_nodes: int = 1025,
        max_iter: int = 100,
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(w, int) and w >= 1 for w in hidden):
            raise ValueError(f"UMNN: hidden must be one or more widths >= 1, got {hidden!r}")
        for name, value in (("embedding", embedding), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UMNN: {name} must be an int >= 1, got {value!r}")
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0:
            raise ValueError(f"UMNN: bound must be a positive number, got {bound!r}")
        _check_nodes("nodes", nodes)
        _check_nodes("max_nodes", max_nodes)
        if max_nodes <= nodes:
            raise ValueError(f"UMNN: max_nodes must be > nodes = {nodes}, got {max_nodes}")
        self.hidden, self.embedding, self.bound = hidden, embedding, float(bound)
        self.nodes, self.max_nodes, self.max_iter = nodes, max_nodes, max_iter
        self.params = embedding + 1
        # N([t, h]) with its first layer split: h's part is computed once per coordinate and
        # t's part (a rank-one term) once per node.
        self.embed = nn.Linear(embedding, hidden[0])
        self.time = nn.Parameter(torch.randn(hidden[0]))
        self.body = MLP(hidden[0], 1, hidden[1:], activation=nn.SiLU)
        zero_output(self.body.output)

    def config(self) -> dict:
        return {
            "hidden": list(self.hidden),
            "embedding": self.embedding,
            "bound": self.bound,
            "nodes": self.nodes,
            "max_nodes": self.max_nodes,
            "max_iter": self.max_iter,
        }

    def extra_repr(self) -> str:
        return (
            f"embedding={self.embedding}, bound={self.bound}, nodes={self.nodes}, "
            f"max_nodes={self.max_nodes}"
        )

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (*, D)``; return ``(y, log|dy/dx|)``, both ``(*, D)``."""
        base, b = self._unpack(params)
        log_slope = self._excess(x.unsqueeze(-1), base).squeeze(-1).log1p()
        # The quadrature carries the gradients of the parameters; the gradient of x is that of
        # the exact integral, g(x), carried by a term whose value is zero.
        y = b + x.detach() + self._integral(x.detach(), base) + (x - x.detach()) * log_slope.exp()
        return y, log_slope

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward` numerically: return ``(x, log|dx/dy|)``, both ``(*, D)``."""
        base, b = self._unpack(params)
        shape = torch.broadcast_shapes(y.shape, b.shape)
        gap = (y - b).expand(shape)
        reach = gap + torch.where(gap >= 0, self.bound, -self.bound)

        def f(v: Tensor) -> Tensor:
            return b + v + self._integral(v, base)

        def derivative(v: Tensor) -> Tensor:
            return self._excess(v.unsqueeze(-1), base).squeeze(-1) + 1

        x = solve_increasing(
            f,
            derivative,
            y.expand(shape),
            torch.minimum(reach, 0 * reach),
            torch.maximum(reach, 0 * reach),
            start=gap,
            name=f"UMNN(embedding={self.embedding}): inverse of y = b + integral_0^x g(t; h) dt",
            tol=quadrature_tolerance(y.dtype),
            max_iter=self.max_iter,
        )
        return x, -self._excess(x.unsqueeze(-1), base).squeeze(-1).log1p()

    def _unpack(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The first layer's output for ``h``, ``(*, D, H)``, and the offset ``b``, ``(*, D)``."""
        if params.dim() == 0 or params.shape[-1] != self.params:
            raise ValueError(
                f"UMNN(embedding={self.embedding}): params must have shape "
                f"(*, D, {self.params}), got {tuple(params.shape)}"
            )
        return self.embed(params[..., :-1]), params[..., -1]

    def _excess(self, t: Tensor, base: Tensor) -> Tensor:
        """``g - 1 = e(t) (φ(t) - 1)`` at ``t (*, D, n)``; ``base (*, D, H)``: h's first layer."""
        z = torch.addcmul(base.unsqueeze(-2), t.unsqueeze(-1), self.time)  # (*, D, n, H)
        phi = F.softplus(self.body(F.silu(z)).squeeze(-1) + _SHIFT) + _MIN_SLOPE  # (*, D, n)
        scaled = 2 * t / self.bound
        envelope = 4 * torch.sigmoid(scaled) * torch.sigmoid(-scaled)  # sech²(t / B), no overflow
        return envelope * (phi - 1)

    def _integral(self, x: Tensor, base: Tensor) -> Tensor:
        """``∫_0^x (g - 1) dt`` at ``x (*, D)`` by Clenshaw–Curtis quadrature (see the class)."""
        adaptive = not self.training and not tracing()
        level = _level(self.nodes)
        if not self.training and not adaptive:  # traced eval: two doublings, no host reads
            level = min(level + 2, _level(self.max_nodes))
        nodes, weights = clenshaw_curtis(level, x)
        values = self._excess(x.unsqueeze(-1) * nodes, base)  # (*, D, n)
        estimate = x * (values @ weights)
        if not adaptive:
            return estimate
        previous = estimate
        tol = quadrature_tolerance(x.dtype)
        while True:
            level += 1
            if level > _level(self.max_nodes):
                change = float((estimate - previous).detach().abs().max())
                raise FloatingPointError(
                    f"UMNN(embedding={self.embedding}): the Clenshaw-Curtis quadrature of "
                    f"integral_0^x g did not converge with max_nodes = {self.max_nodes} nodes: "
                    f"last change {change:.3g}, tolerance {tol:g}·(1 + |integral|)"
                )
            nodes, weights = clenshaw_curtis(level, x)
            fresh = self._excess(x.unsqueeze(-1) * nodes[values.shape[-1] :], base)
            values = torch.cat((values, fresh), dim=-1)
            previous, estimate = estimate, x * (values @ weights)
            if bool(((estimate - previous).abs() <= tol * (1 + (x + estimate).abs())).all()):
                return estimate
