"""Sylvester transforms: planar flows with ``M`` hidden units (van den Berg et al. 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import Transform
from .planar_activations import Tanh
from .variational import amortize, check_features, positive, raw_parameters

__all__ = ["Sylvester"]


def _vecmat(v: Tensor, m: Tensor) -> Tensor:
    """Row vector times matrix, batched: ``(*, K) x (*, K, L) -> (*, L)``."""
    return (v.unsqueeze(-2) @ m).squeeze(-2)


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

    With ``context=C > 0`` (amortized, the paper's VAE posterior) a network of the context
    shifts ``R₁``, ``R₂``, their diagonals' raw values, ``b`` and ``Q``'s free matrix or
    Householder vectors (see :mod:`exactflow.transforms.variational`); the constraints hold
    for every context.

    :meth:`inverse`: the part of ``z`` outside ``span(Q)`` is unchanged, and ``v = Qᵀz``
    solves ``v + R₁ h(R₂ v + b) = Qᵀy``, an upper-triangular system: equation ``i`` involves
    ``v_i, …, v_M`` only. It is solved from the last coordinate up, one scalar increasing
    equation ``x + r1_ii r2_ii·h(x) = t`` in the pre-activation ``x = (R₂v + b)_i`` at a time,
    by :func:`~exactflow.numerics.solve_increasing` (``|residual| <= tol·(1 + |t|)``,
    ``tol`` = 1e-12 in float64, 64 ulps below); a solve that does not converge raises
    ``FloatingPointError`` naming the step and the coordinate (NaN under tracing). The exact
    implicit-function gradient is attached by one Newton step
    ``v = v* - J⁻¹(v* + R₁h(R₂v* + b) - Qᵀy)`` with ``J = I + R₁ diag(h') R₂`` detached.

    Args:
        features: Size of the last dimension ``D``.
        columns: Number ``M`` of columns of ``Q`` (hidden units of the map), ``1 <= M <= D``;
            ``None`` means ``D``.
        kind: How ``Q`` is parameterized: ``"orthogonal"``, ``"householder"`` or
            ``"triangular"``.
        reflections: Number ``K`` of Householder reflections (``kind="householder"`` only);
            ``None`` means ``M``.
        flip: Use the reversed coordinate order (``kind="triangular"`` only).
        context: Width ``C`` of a context that amortizes the parameters (0: none).
        hidden: Hidden widths of the context network (``context > 0`` only).

    Shapes: ``z (*, D)``, ``context (*B, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Sylvester(4, columns=2)
        >>> y, ladj = t(torch.randn(5, 4))
        >>> z, _ = t.inverse(y)

    """

    kinds = ("orthogonal", "householder", "triangular")
    max_iter = 20
    """Iteration budget of each scalar solve (see :meth:`~exactflow.transforms.Planar`)."""

    def __init__(
        self,
        features: int,
        columns: int | None = None,
        kind: str = "orthogonal",
        reflections: int | None = None,
        flip: bool = False,
        context: int = 0,
        hidden: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        self.features = check_features("Sylvester", features)
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
        self.act = Tanh()
        # Near the identity: r1_ii r2_ii = -1 + softplus(log(e - 1)) = 0, small upper parts.
        self.r1 = nn.Parameter(0.01 * torch.randn(m, m))  # strictly upper part used
        self.r2 = nn.Parameter(0.01 * torch.randn(m, m))  # strictly upper part used
        self.diag_raw = nn.Parameter(torch.full((m,), math.log(math.e - 1)))
        self.r2_log_diag = nn.Parameter(torch.zeros(m))
        self.b = nn.Parameter(torch.zeros(m))
        names = ["r1", "r2", "diag_raw", "r2_log_diag", "b"]
        if kind == "orthogonal":
            self.q_raw = nn.Parameter(torch.randn(features, m))
            names.append("q_raw")
        elif kind == "householder":
            k = m if reflections is None else reflections
            if not isinstance(k, int) or k < 1:
                raise ValueError(f"Sylvester: reflections must be a positive int, got {k!r}")
            self.householder = nn.Parameter(torch.randn(k, features))
            names.append("householder")
        amortize(self, names, context, hidden)

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``Q (*B, D, M)``, ``R₁, R₂ (*B, M, M)``, ``gap = 1 + r1_ii·r2_ii`` and ``b (*B, M)``."""
        r1, r2, diag_raw, r2_log_diag, b, *q_free = raw_parameters(self, context)
        gap = positive(diag_raw)
        r2_diag = r2_log_diag.exp()
        r1 = r1.triu(1) + torch.diag_embed((gap - 1) / r2_diag)
        r2 = r2.triu(1) + torch.diag_embed(r2_diag)
        return self._basis(q_free, r1), r1, r2, gap, b

    def _basis(self, q_free: list[Tensor], like: Tensor) -> Tensor:
        """``Q (*B, D, M)`` with orthonormal columns."""
        if self.kind == "orthogonal":
            return torch.linalg.qr(q_free[0]).Q
        eye = torch.eye(self.features, self.columns, dtype=like.dtype, device=like.device)
        if self.kind == "triangular":
            return eye.flip(0) if self.flip else eye
        q, vs = eye, q_free[0]  # vs (*B, K, D)
        tiny = torch.finfo(like.dtype).tiny
        for k in range(vs.shape[-2]):
            v = vs[..., k, :]  # (*B, D)
            scale = 2 / (v * v).sum(-1).clamp_min(tiny)
            q = q - scale[..., None, None] * v.unsqueeze(-1) * _vecmat(v, q).unsqueeze(-2)
        return q

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q, r1, r2, gap, b = self._params(context)
        pre = _vecmat(_vecmat(x, q), r2.mT) + b  # R₂Qᵀx + b, (*, M)
        y = x + _vecmat(self.act.value(pre), (q @ r1).mT)
        return y, self.act.slope(pre, gap).log().sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q, r1, r2, gap, b = self._params(context)
        target = _vecmat(y, q)  # Qᵀy, (*, M)
        with torch.no_grad():
            v = self._solve(target, r1, r2, gap, b)
        # One autograd Newton step at the detached root attaches the implicit gradient.
        pre = _vecmat(v, r2.mT) + b
        residual = v + _vecmat(self.act.value(pre), r1.mT) - target
        with torch.no_grad():
            # J = I + R₁ diag(h') R₂ is upper triangular with diagonal 1 + s_i·h'_i.
            jac = (r1 * self.act.derivative(pre).unsqueeze(-2)) @ r2  # (*, M, M)
            jac = jac.triu(1) + torch.diag_embed(self.act.slope(pre, gap))
        step = torch.linalg.solve_triangular(jac, residual.unsqueeze(-1), upper=True)
        v = v - step.squeeze(-1)
        pre = _vecmat(v, r2.mT) + b
        x = y - _vecmat(self.act.value(pre), (q @ r1).mT)
        return x, -self.act.slope(pre, gap).log().sum(-1)

    def _solve(self, target: Tensor, r1: Tensor, r2: Tensor, gap: Tensor, b: Tensor) -> Tensor:
        """Back-substitution for ``v + R₁ h(R₂ v + b) = target``, last coordinate first."""
        solved: list[Tensor] = []  # v_{i+1}, ..., v_M, each (*)
        hidden: list[Tensor] = []  # h((R₂v + b)_j) for the same coordinates
        for i in reversed(range(self.columns)):
            shift, rest = b[..., i], 0
            if solved:
                later = torch.stack(solved, -1)  # (*, M - 1 - i)
                shift = shift + (later * r2[..., i, i + 1 :]).sum(-1)
                rest = (torch.stack(hidden, -1) * r1[..., i, i + 1 :]).sum(-1)
            r2_ii = r2[..., i, i]
            pre = self.act.solve(
                r2_ii * (target[..., i] - rest) + shift,
                gap[..., i],
                f"Sylvester.inverse (coordinate {i} of {self.columns})",
                self.max_iter,
            )
            solved.insert(0, (pre - shift) / r2_ii)
            hidden.insert(0, self.act.value(pre))
        return torch.stack(solved, -1)
