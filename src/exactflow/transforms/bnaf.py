"""Block neural autoregressive flow (BNAF; De Cao et al. 2019).

One network whose weight matrices are block lower triangular with positive diagonal blocks:
output coordinate ``d`` depends on the inputs ``x_{<=d}`` only, and increases with ``x_d``. The
Jacobian is therefore lower triangular, and its diagonal is the product of the diagonal blocks
of the layers' Jacobians, accumulated in log space.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.mlp import check_context
from ..numerics import solve_increasing
from .base import Transform

__all__ = ["BlockNAF"]

# The layers' parameters are stored divided by this gain (and multiplied back when used), so
# that an optimizer's step moves the weights _GAIN times as far: the paper trains BNAF at
# learning rates of 1e-2 to 1e-1 (De Cao et al. 2019); with the gain the rates the other
# presets use (1e-3 to 2e-3) train it as well.
_GAIN = 10.0


class _BlockLinear(nn.Module):
    """Block lower-triangular linear map ``D·a -> D·b`` with positive diagonal blocks.

    ``W = exp(s) ⊙ Ŵ / ||Ŵ||`` row by row (weight normalization), where ``Ŵ`` is ``exp(V)`` on
    the diagonal blocks, ``V`` below them and zero above; so the diagonal blocks are positive
    and ``log W_ij = s_i + V_ij - log||Ŵ_i||`` there.
    """

    def __init__(self, blocks: int, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.blocks, self.fan_in, self.fan_out = blocks, fan_in, fan_out
        rows, cols = (
            torch.arange(blocks * fan_out) // fan_out,
            torch.arange(blocks * fan_in) // fan_in,
        )
        self.register_buffer("diagonal", rows[:, None] == cols, persistent=False)
        # Row and column of every diagonal-block entry, (D, b, a): the diagonal blocks.
        block = torch.arange(blocks)[:, None, None]
        self.register_buffer(
            "block_rows", block * fan_out + torch.arange(fan_out)[:, None], persistent=False
        )
        self.register_buffer("block_cols", block * fan_in + torch.arange(fan_in), persistent=False)
        self.register_buffer("below", rows[:, None] > cols, persistent=False)
        # Start: diagonal entries exp(V) with V ~ U(-1/2, 1/2) (distinct, so the units of a
        # block differ), entries below them ~ U(-1/sqrt(n), 1/sqrt(n)) for the n inputs a row
        # reads, and row scales exp(s) = 1/sqrt(fan_in): the positive diagonal entries of a row
        # add up coherently, to about sqrt(fan_in) times their mean, and the scale cancels that
        # gain, so every layer starts near a unit gain instead of saturating its tanh units.
        bound = 1 / math.sqrt(blocks * fan_in)
        weight = torch.empty(blocks * fan_out, blocks * fan_in).uniform_(-bound, bound)
        weight = torch.where(self.diagonal, torch.rand_like(weight) - 0.5, weight)
        self.weight = nn.Parameter(weight / _GAIN)
        self.log_scale = nn.Parameter(
            torch.full((blocks * fan_out, 1), -0.5 * math.log(fan_in) / _GAIN)
        )
        self.bias = nn.Parameter(torch.empty(blocks * fan_out).uniform_(-bound, bound) / _GAIN)

    def matrix(self) -> tuple[Tensor, Tensor]:
        """The weight ``W (D·b, D·a)`` and the ``log`` of its diagonal blocks ``(D, b, a)``."""
        v, log_scale = _GAIN * self.weight, _GAIN * self.log_scale
        raw = torch.where(self.diagonal, v.exp(), v * self.below)
        log_norm = raw.square().sum(-1, keepdim=True).log().mul(0.5)
        weight = raw * (log_scale - log_norm).exp()
        log_weight = log_scale + v - log_norm
        return weight, log_weight[self.block_rows, self.block_cols]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``W x + bias`` for ``x (*, D·a)``, and ``log`` of the diagonal blocks ``(D, b, a)``."""
        weight, log_diagonal = self.matrix()
        return F.linear(x, weight, _GAIN * self.bias), log_diagonal


class BlockNAF(Transform):
    """Block neural autoregressive transform (BNAF; De Cao et al. 2019), with a gated residual.

    A network ``f = L_K ∘ tanh ∘ ... ∘ tanh ∘ L_1`` of block lower-triangular linear maps
    ``L_k`` (``D`` blocks, ``a_k`` units per coordinate in hidden layer ``k``) with positive
    diagonal blocks (``exp``-parameterized, weight normalized as in the paper), then::

        y = σ(α) ⊙ f(x, c) + (1 - σ(α)) ⊙ x

    with a learned gate ``α ∈ R^D``. ``∂y_d/∂x_j = 0`` for ``j > d``: the Jacobian is lower
    triangular, and

        log|det ∂y/∂x| = Σ_d log(σ(α_d) J_d + 1 - σ(α_d)),   J_d = ∂f_d/∂x_d > 0

    where ``J_d`` is the product of the ``d``-th diagonal blocks of the layers' Jacobians
    (``a_k × a_{k-1}`` matrices times the ``tanh'`` diagonals), multiplied out with
    log-sum-exps so it never under- or overflows. The gate is what makes the map onto
    ``R^D``: ``f`` is bounded (its last layer reads ``tanh`` units), so without it the image
    would be a bounded set and the density would not integrate to one. Exact in both modes.

    The context, if any, enters the first layer through an unmasked linear map (it does not
    change the Jacobian in ``x``).

    **Inverse.** No closed form. Coordinate by coordinate (``x_1`` first), ``y_d`` is strictly
    increasing in ``x_d`` given ``x_{<d}``, and ``|f_d| <= M_d`` (the last layer's row
    ``l_1`` norm plus its bias) brackets ``x_d`` in
    ``[(y_d - σ M_d) / (1 - σ), (y_d + σ M_d) / (1 - σ)]``; each of the ``D`` scalar solves is
    :func:`~exactflow.numerics.solve_increasing` (bracketed Newton, derivative the exact
    diagonal entry, exact implicit gradients), which raises ``FloatingPointError`` naming this
    transform and the residual when it does not converge. ``D`` sequential solves, each a few
    network passes.

    **Parameters** are stored divided by 10 and multiplied back when used, so that an
    optimizer's step moves the weights ten times as far: the usual learning rates (``1e-3`` to
    ``2e-3``) then train BNAF as the paper's ``1e-2`` to ``1e-1`` do.

    Args:
        features: Number of coordinates ``D``.
        hidden: Hidden widths; layer ``k`` has ``a_k = ceil(hidden[k] / D)`` units per
            coordinate.
        context: Width ``C`` of the context (0: none).
        max_iter: Iteration budget of each scalar solve of the inverse.

    Shapes: ``x (*, D)``, ``context (*, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.BlockNAF(3, hidden=(12,)).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> y, ladj = t(x)
        >>> x2, inv_ladj = t.inverse(y)
        >>> bool(torch.allclose(x2, x, atol=1e-9)), bool(torch.allclose(inv_ladj, -ladj))
        (True, True)

    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        max_iter: int = 100,
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)
        counts = (("features", features, 1), ("context", context, 0), ("max_iter", max_iter, 1))
        for name, value, least in counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"BlockNAF: {name} must be an int >= {least}, got {value!r}")
        if not hidden or not all(isinstance(w, int) and w >= 1 for w in hidden):
            raise ValueError(f"BlockNAF: hidden must be one or more widths >= 1, got {hidden!r}")
        self.features, self.hidden, self.context = features, hidden, context
        self.max_iter = max_iter
        widths = [1, *(-(-w // features) for w in hidden), 1]  # units per coordinate
        self.layers = nn.ModuleList(
            _BlockLinear(features, a, b) for a, b in itertools.pairwise(widths)
        )
        self.embed = nn.Linear(context, features * widths[1], bias=False) if context else None
        self.gate = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, log_slope = self._evaluate(x, context)
        return y, log_slope.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.context:
            check_context("BlockNAF", self.context, context)
            shape = torch.broadcast_shapes(y.shape[:-1], context.shape[:-1])
            y, context = y.expand(*shape, self.features), context.expand(*shape, self.context)
        gate = torch.sigmoid(self.gate)
        last = self.layers[-1]
        with torch.no_grad():
            # |f_d| <= Σ_j |W_dj| + |bias_d| since every tanh unit lies in [-1, 1].
            bound = last.matrix()[0].abs().sum(-1) + _GAIN * last.bias.abs()
        columns: list[Tensor] = []
        for d in range(self.features):
            spread = gate[d] * bound[d]
            lower = (y[..., d] - spread) / (1 - gate[d])
            upper = (y[..., d] + spread) / (1 - gate[d])
            known = torch.stack(columns, -1) if columns else y[..., :0]
            columns.append(self._solve(d, known, y[..., d], lower, upper, context))
        x = torch.stack(columns, -1)
        return x, -self._evaluate(x, context)[1].sum(-1)

    def _solve(
        self,
        d: int,
        known: Tensor,
        target: Tensor,
        lower: Tensor,
        upper: Tensor,
        context: Tensor | None,
    ) -> Tensor:
        """``x_d (*)`` with ``y_d(known, x_d) = target``, given ``known = x_{<d} (*, d)``."""
        rest = known.new_zeros(*known.shape[:-1], self.features - d - 1)

        def f(v: Tensor) -> Tensor:
            return self._evaluate(torch.cat((known, v.unsqueeze(-1), rest), -1), context)[0][..., d]

        def derivative(v: Tensor) -> Tensor:
            x = torch.cat((known, v.unsqueeze(-1), rest), -1)
            return self._evaluate(x, context)[1][..., d].exp()

        return solve_increasing(
            f,
            derivative,
            target,
            lower,
            upper,
            start=target.clamp(lower, upper),
            name=f"BlockNAF(features={self.features}): inverse of coordinate {d}",
            max_iter=self.max_iter,
        )

    def _evaluate(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``y`` and the log-diagonal ``log ∂y_d/∂x_d``, both ``(*, D)``."""
        h, log_jac = x, None
        for k, layer in enumerate(self.layers):
            h, log_w = layer(h)  # log_w (D, b, a)
            if k == 0 and self.embed is not None:
                h = h + self.embed(check_context("BlockNAF", self.context, context))
            # log of the diagonal blocks of the Jacobian so far, (*, D, b): chain rule in logs.
            if log_jac is None:
                log_jac = log_w.squeeze(-1)
            else:
                log_jac = torch.logsumexp(log_w + log_jac.unsqueeze(-2), -1)
            if k < len(self.layers) - 1:
                # log tanh'(h) = log(1 - tanh(h)^2) = 2 (log 2 - h - softplus(-2h))
                log_act = 2 * (math.log(2) - h - F.softplus(-2 * h))
                log_jac = log_jac + log_act.view(*h.shape[:-1], self.features, layer.fan_out)
                h = torch.tanh(h)
        log_f = log_jac.squeeze(-1)  # (*, D)
        y = torch.lerp(x, h, torch.sigmoid(self.gate))
        log_slope = torch.logaddexp(F.logsigmoid(self.gate) + log_f, F.logsigmoid(-self.gate))
        return y, log_slope
