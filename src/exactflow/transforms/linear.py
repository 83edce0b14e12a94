"""Linear transforms: permutations, LU-parameterized matrices, 1x1 convolutions, reflections.

Each map here is ``y = W x (+ b)`` for an invertible matrix ``W`` whose log-determinant is cheap:
zero for permutations and orthogonal maps, the sum of a triangular factor's log-diagonal for the
LU-parameterized ones. Inverses use permutations and triangular solves, never an explicit inverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Transform, zeros_ladj

__all__ = ["Householder", "InvertibleConv1x1", "LULinear", "Permutation", "Reverse"]

# Smallest value of the positive diagonal of U: keeps W away from singular matrices.
_DIAGONAL_FLOOR = 1e-3


def _check_size(name: str, label: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: {label} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: {label} must be at least 1, got {value}")


def _check_input(name: str, x: Tensor, size: int, event_ndim: int) -> None:
    """Raise a ValueError unless ``x`` has ``size`` entries along dimension ``-event_ndim``."""
    if x.dim() < event_ndim or x.shape[-event_ndim] != size:
        expected = ("(*, D)", "(*, C, H, W)")[event_ndim == 3]
        raise ValueError(
            f"{name}: expected input of shape {expected} with {size} at dimension"
            f" {-event_ndim}, got {tuple(x.shape)}"
        )


def _softplus_inverse(y: Tensor) -> Tensor:
    """``x`` with ``softplus(x) = y`` for ``y > 0``, i.e. ``log(exp(y) - 1)`` without overflow."""
    return y + torch.log(-torch.expm1(-y))


def _mix_channels(matrix: Tensor, x: Tensor) -> Tensor:
    """``matrix @ x[..., :, h, w]`` at every pixel of ``x (*, C, H, W)``, as a 1x1 convolution."""
    batch = x.shape[:-3]
    out = F.conv2d(x.reshape(-1, *x.shape[-3:]), matrix[:, :, None, None])
    return out.reshape(*batch, *out.shape[-3:])


class _LUMatrix(nn.Module):
    """An invertible matrix ``W = P L U`` with a cheap log-determinant and triangular solves.

    ``P`` is a fixed permutation (a buffer), ``L`` unit lower triangular, and ``U`` upper
    triangular with diagonal ``sign · (softplus(r) + floor)``, where ``sign`` is a fixed buffer
    of ±1. Hence ``log|det W| = Σ_i log(softplus(r_i) + floor)``, and ``W`` can never become
    singular.

    Args:
        features: Size ``D`` of the square matrix.
        init: Matrix to start from (factored with pivoted LU); ``None`` starts from ``W = P``
            with a random permutation ``P`` (``L = U = I``).

    """

    def __init__(self, features: int, init: Tensor | None = None) -> None:
        super().__init__()
        if init is None:
            perm = torch.randperm(features)
            lower = torch.zeros(features, features)
            upper = torch.eye(features)
        else:
            p, lower, upper = torch.linalg.lu(init)
            perm = p.argmax(dim=1)  # (P v)_i = v[perm[i]]
        diagonal = upper.diagonal()
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))
        self.register_buffer("sign", torch.where(diagonal < 0, -1.0, 1.0))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        magnitude = (diagonal.abs() - _DIAGONAL_FLOOR).clamp_min(_DIAGONAL_FLOOR)
        self.raw_diagonal = nn.Parameter(_softplus_inverse(magnitude))

    def log_abs_diagonal(self) -> Tensor:
        """``log|diag U|``, shape ``(D,)``."""
        return torch.log(F.softplus(self.raw_diagonal) + _DIAGONAL_FLOOR)

    def factors(self) -> tuple[Tensor, Tensor]:
        """The triangular factors ``(L, U)``, each ``(D, D)``."""
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        diagonal = self.sign * (F.softplus(self.raw_diagonal) + _DIAGONAL_FLOOR)
        upper = torch.triu(self.upper, 1) + torch.diag(diagonal)
        return lower, upper

    def matrix(self) -> Tensor:
        """``W = P L U``, shape ``(D, D)``."""
        lower, upper = self.factors()
        return (lower @ upper)[self.perm]

    def solve(self, b: Tensor) -> Tensor:
        """Solve ``W x = b`` for ``b (D, K)`` by two triangular solves."""
        lower, upper = self.factors()
        b = b[self.inverse_perm]  # P⁻¹ b
        b = torch.linalg.solve_triangular(lower, b, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, b, upper=True)


class Permutation(Transform):
    """A fixed permutation of the last dimension: ``y_i = x_{π(i)}``.

    Volume preserving: ``log|det J| = 0``. The permutation is a buffer, so it is saved in the
    ``state_dict`` and moves with ``.to()``.

    Args:
        features: Size of the last dimension ``D``.
        permutation: The indices ``π``, a permutation of ``range(D)``; random if ``None``.
        seed: Seed of the random permutation (the global generator if ``None``). Only used when
            ``permutation`` is not given.

    Shapes: ``x (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Permutation(3, permutation=[2, 0, 1])
        >>> t(torch.tensor([[10.0, 20.0, 30.0]]))[0]
        tensor([[30., 10., 20.]])

    """

    def __init__(
        self,
        features: int,
        permutation: Sequence[int] | Tensor | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_size("Permutation", "features", features)
        if permutation is None:
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            perm = torch.randperm(features, generator=generator)
        elif seed is not None:
            raise ValueError("Permutation: give either permutation or seed, got both")
        else:
            perm = self._validated(features, permutation)
        self.features = features
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    @staticmethod
    def _validated(features: int, permutation: Sequence[int] | Tensor) -> Tensor:
        perm = torch.as_tensor(permutation)
        if perm.dtype == torch.bool or perm.is_floating_point() or perm.is_complex():
            raise TypeError(f"Permutation: permutation must hold integers, got {perm.dtype}")
        perm = perm.to(torch.long)
        if perm.shape != (features,):
            raise ValueError(
                f"Permutation: permutation must have shape ({features},), got {tuple(perm.shape)}"
            )
        if not torch.equal(perm.sort().values, torch.arange(features)):
            raise ValueError(
                f"Permutation: permutation must hold each of 0..{features - 1} exactly once,"
                f" got {perm.tolist()}"
            )
        return perm

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("Permutation", x, self.features, 1)
        return x[..., self.permutation], zeros_ladj(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("Permutation", y, self.features, 1)
        return y[..., self.inverse_permutation], zeros_ladj(y)


class Reverse(Transform):
    """Reverses the order of the last dimension: ``y_i = x_{D-1-i}``; its own inverse.

    The usual step between coupling layers, so that every coordinate gets transformed.
    Volume preserving: ``log|det J| = 0``.

    Args:
        features: Size of the last dimension ``D``.

    Shapes: ``x (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.transforms.Reverse(3)(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])

    """

    def __init__(self, features: int) -> None:
        super().__init__()
        _check_size("Reverse", "features", features)
        self.features = features

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("Reverse", x, self.features, 1)
        return x.flip(-1), zeros_ladj(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.forward(y, context)


class LULinear(Transform):
    """Learnable invertible linear map ``y = W x + b`` with ``W = P L U``.

    ``P`` is a fixed random permutation (a buffer), ``L`` is unit lower triangular and ``U`` upper
    triangular with the positive diagonal ``softplus(r) + 10⁻³``, so ``W`` is invertible for every
    parameter value and ``log|det J| = Σ_i log U_ii`` costs ``O(D)``. The inverse
    ``x = U⁻¹ L⁻¹ P⁻¹ (y - b)`` uses two triangular solves (Kingma & Dhariwal 2018, Glow;
    Durkan et al. 2019, Neural Spline Flows). Starts with ``L = U = I`` and ``b = 0``, i.e. as the
    permutation ``P``: orthogonal, hence perfectly conditioned.

    Args:
        features: Size of the last dimension ``D``.
        bias: Learn the offset ``b``; without it the map is ``y = W x``.

    Shapes: ``x (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> y, ladj = ef.transforms.LULinear(4)(torch.randn(8, 4))
        >>> ladj.shape
        torch.Size([8])

    """

    def __init__(self, features: int, bias: bool = True) -> None:
        super().__init__()
        _check_size("LULinear", "features", features)
        self.features = features
        self.weight = _LUMatrix(features)
        self.bias = nn.Parameter(torch.zeros(features)) if bias else None

    def matrix(self) -> Tensor:
        """The current matrix ``W``, shape ``(D, D)``."""
        return self.weight.matrix()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("LULinear", x, self.features, 1)
        y = x @ self.weight.matrix().mT
        if self.bias is not None:
            y = y + self.bias
        ladj = self.weight.log_abs_diagonal().sum()
        return y, ladj.expand(x.shape[:-1])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("LULinear", y, self.features, 1)
        if self.bias is not None:
            y = y - self.bias
        columns = y.reshape(-1, self.features).mT  # (D, B): one solve for the whole batch
        x = self.weight.solve(columns).mT.reshape(y.shape)
        ladj = -self.weight.log_abs_diagonal().sum()
        return x, ladj.expand(y.shape[:-1])


class InvertibleConv1x1(Transform):
    """Invertible 1x1 convolution: the same ``C × C`` matrix mixes the channels of every pixel.

    ``y[:, h, w] = W x[:, h, w]`` for images ``(*, C, H, W)``, so
    ``log|det J| = H · W · log|det W|`` per image (Kingma & Dhariwal 2018, Glow). ``W`` starts as
    a random orthogonal matrix (``log|det W| = 0``). With ``lu=True`` it is stored as
    ``W = P L U`` (fixed permutation ``P`` and sign of ``diag U``; ``L`` unit lower triangular;
    ``|diag U| = softplus(r) + 10⁻³``), which makes the log-determinant ``Σ log|U_ii|`` and the
    inverse two triangular solves; with ``lu=False`` it is a plain matrix, the log-determinant
    comes from ``slogdet`` and the inverse from a linear solve.

    Args:
        channels: Number of channels ``C``.
        lu: Use the LU parameterization.

    Shapes: ``x (*, C, H, W) -> y (*, C, H, W)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> y, ladj = ef.transforms.InvertibleConv1x1(3)(torch.randn(2, 3, 8, 8))
        >>> ladj.shape
        torch.Size([2])

    """

    event_ndim = 3

    def __init__(self, channels: int, lu: bool = True) -> None:
        super().__init__()
        _check_size("InvertibleConv1x1", "channels", channels)
        self.channels = channels
        self.lu = lu
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        if lu:
            self.weight = _LUMatrix(channels, init=rotation)
        else:
            self.weight = nn.Parameter(rotation)

    def matrix(self) -> Tensor:
        """The current channel-mixing matrix ``W``, shape ``(C, C)``."""
        if isinstance(self.weight, _LUMatrix):
            return self.weight.matrix()
        return self.weight

    def _log_abs_det(self) -> Tensor:
        if isinstance(self.weight, _LUMatrix):
            return self.weight.log_abs_diagonal().sum()
        return torch.linalg.slogdet(self.weight)[1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("InvertibleConv1x1", x, self.channels, 3)
        pixels = math.prod(x.shape[-2:])
        return _mix_channels(self.matrix(), x), (pixels * self._log_abs_det()).expand(x.shape[:-3])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("InvertibleConv1x1", y, self.channels, 3)
        pixels = math.prod(y.shape[-2:])
        # W⁻¹ from one small (C, C) solve, then a 1x1 convolution like the forward pass: far
        # cheaper than solving for every pixel. (A broadcast (C, C) against (*, C, K) solve is
        # also slower, and its Jacobian under torch.func.jacrev is wrong in torch 2.13.)
        eye = torch.eye(self.channels, dtype=y.dtype, device=y.device)
        if isinstance(self.weight, _LUMatrix):
            inverse = self.weight.solve(eye)
        else:
            inverse = torch.linalg.solve(self.weight, eye)
        ladj = (-pixels * self._log_abs_det()).expand(y.shape[:-3])
        return _mix_channels(inverse, y), ladj


class Householder(Transform):
    """Orthogonal map ``y = Q x`` with ``Q = H_K ⋯ H_1`` a product of Householder reflections.

    Each reflection is ``H_k = I - 2 v_k v_kᵀ / ‖v_k‖²`` with a learnable ``v_k`` (Tomczak &
    Welling 2016). Orthogonal, hence volume preserving: ``log|det J| = 0``. Each ``H_k`` is its
    own inverse, so the inverse applies the reflections in reverse order. Applied as vector
    operations, ``O(K D)`` per row, without forming ``Q``.

    Args:
        features: Size of the last dimension ``D``.
        reflections: Number of reflections ``K`` (``K = D`` reaches every orthogonal matrix
            with the right determinant sign).

    Shapes: ``x (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> y, ladj = ef.transforms.Householder(4, reflections=3)(torch.randn(8, 4))
        >>> ladj.shape
        torch.Size([8])

    """

    def __init__(self, features: int, reflections: int = 2) -> None:
        super().__init__()
        _check_size("Householder", "features", features)
        _check_size("Householder", "reflections", reflections)
        self.features = features
        self.vectors = nn.Parameter(torch.randn(reflections, features))  # (K, D): v_1..v_K

    def matrix(self) -> Tensor:
        """The orthogonal matrix ``Q``, shape ``(D, D)`` (for inspection; not used to apply)."""
        eye = torch.eye(self.features, dtype=self.vectors.dtype, device=self.vectors.device)
        return self.forward(eye)[0].mT  # row i of the output is Q e_i

    @staticmethod
    def _reflect(x: Tensor, v: Tensor) -> Tensor:
        coefficient = 2 * (x @ v) / (v @ v)  # (*)
        return x - coefficient.unsqueeze(-1) * v

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("Householder", x, self.features, 1)
        y = x
        for v in self.vectors:
            y = self._reflect(y, v)
        return y, zeros_ladj(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("Householder", y, self.features, 1)
        x = y
        for v in self.vectors.flip(0):
            x = self._reflect(x, v)
        return x, zeros_ladj(y)
