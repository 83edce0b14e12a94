"""Lipschitz-constrained layers, for residual flows ``y = x + g(x)`` with ``g`` contractive.

* :class:`SpectralLinear` — a linear layer whose weight is divided by its spectral norm
  (estimated by power iteration, Miyato et al. 2018) whenever that exceeds a coefficient ``c``,
  so that ``Lip(x -> W x) <= c`` up to the estimate's error;
* :class:`SpectralConv2d` — the same for a convolution, whose operator norm on images of a
  given size is estimated by power iteration with the convolution and its transpose (Gouk et al.
  2018), as residual flows on images use;
* :class:`LipSwish` — ``x · sigmoid(β x) / 1.1``, 1-Lipschitz for every ``β > 0`` (Chen et al.
  2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..numerics import tracing

__all__ = ["LipSwish", "SpectralConv2d", "SpectralLinear"]


def _check_spectral(name: str, coeff: float, iterations: int) -> None:
    if not 0.0 < coeff <= 1.0:
        raise ValueError(f"{name}: coeff must be in (0, 1], got {coeff}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"{name}: iterations must be an int >= 1, got {iterations!r}")


class _Spectral(nn.Module):
    """A layer ``x -> A x + b`` whose linear operator ``A`` is scaled to norm at most ``coeff``.

    Subclasses say how ``A`` and ``Aᵀ`` act (:meth:`_operate`, :meth:`_transpose`) and hold
    ``weight``, ``bias``, ``coeff``, ``iterations`` and the power-iteration buffers ``u`` (an
    output) and ``v`` (an input).
    """

    weight: Tensor
    u: Tensor
    v: Tensor

    def _operate(self, weight: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _transpose(self, weight: Tensor, u: Tensor) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _normalize(t: Tensor) -> Tensor:
        return t / t.norm().clamp_min(1e-12)

    @torch.no_grad()
    def update(self) -> None:
        """Run ``iterations`` power-iteration steps on ``u`` and ``v`` (what training does)."""
        weight = self.weight.detach()
        u, v = self.u, self.v
        for _ in range(self.iterations):
            v = self._normalize(self._transpose(weight, u))
            u = self._normalize(self._operate(weight, v))
        self.u.copy_(u)
        self.v.copy_(v)

    def _step(self) -> None:
        """What a training forward pass does first: one round of power iteration."""
        if self.training and torch.is_grad_enabled() and not tracing():
            self.update()

    def scaled_weight(self) -> Tensor:
        """``W / max(1, σ̂/c)`` with ``σ̂ = uᵀ A v``, the weight the layer applies."""
        sigma = (self.u * self._operate(self.weight, self.v)).sum()
        return self.weight / torch.clamp(sigma / self.coeff, min=1.0)


class SpectralLinear(_Spectral):
    """``y = (W / max(1, σ̂/c)) x + b`` with ``σ̂`` a power-iteration estimate of ``‖W‖₂``.

    In training mode each forward pass with gradients enabled runs ``iterations`` steps of power
    iteration (:meth:`update`; not under ``torch.func`` transforms, which cannot mutate) on the
    buffers ``u`` and ``v`` (saved in the ``state_dict``, so a reloaded layer carries on from
    them) and rescales ``W`` by the resulting ``σ̂ = uᵀ W v``; gradients flow through ``σ̂``.
    In eval mode the buffers are not updated: the layer is a fixed linear map.

    ``σ̂`` approaches ``‖W‖₂`` from below, so the bound ``c`` holds up to the estimate's error;
    :meth:`lipschitz` computes the layer's exact Lipschitz constant (an SVD) to check it.

    Args:
        in_features: Input width.
        out_features: Output width.
        coeff: The Lipschitz bound ``c`` in ``(0, 1]`` for a contractive residual branch.
        iterations: Power-iteration steps per training forward pass.

    Shapes: ``x (*, in_features) -> (*, out_features)``.

    Example:
        >>> import torch, exactflow as ef
        >>> layer = ef.nn.SpectralLinear(4, 4, coeff=0.9, iterations=50)
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(10)
        >>> _ = layer(torch.randn(2, 4))  # training mode: power iteration runs
        >>> round(float(layer.lipschitz()), 3)
        0.9

    """

    def __init__(
        self, in_features: int, out_features: int, coeff: float = 0.97, iterations: int = 1
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"SpectralLinear: widths must be >= 1, got {in_features} and {out_features}"
            )
        _check_spectral("SpectralLinear", coeff, iterations)
        linear = nn.Linear(in_features, out_features)
        self.weight = linear.weight
        self.bias = linear.bias
        self.coeff = coeff
        self.iterations = iterations
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(in_features), dim=0))

    def _operate(self, weight: Tensor, v: Tensor) -> Tensor:
        return weight @ v

    def _transpose(self, weight: Tensor, u: Tensor) -> Tensor:
        return weight.T @ u

    def lipschitz(self) -> Tensor:
        """The exact Lipschitz constant of the layer as it is now: ``‖W_scaled‖₂`` (an SVD)."""
        with torch.no_grad():
            return torch.linalg.matrix_norm(self.scaled_weight(), ord=2)

    def forward(self, x: Tensor) -> Tensor:
        self._step()
        return F.linear(x, self.scaled_weight(), self.bias)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"{inp}, {out}, coeff={self.coeff}, iterations={self.iterations}"


class SpectralConv2d(_Spectral):
    """A same-size convolution ``y = (K / max(1, σ̂/c)) * x + b`` on images of a fixed size.

    ``σ̂`` estimates the norm of the convolution as a linear operator on ``(C_in, H, W)`` images
    (zero padding ``kernel // 2``), by power iteration with the convolution and its transpose on
    image-shaped buffers ``u (C_out, H, W)`` and ``v (C_in, H, W)``; training, eval mode and the
    saved state behave as in :class:`SpectralLinear`. :meth:`lipschitz` runs the power
    iteration to convergence (an estimate from below, not an SVD: the operator has
    ``C·H·W`` columns).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        size: ``(H, W)`` of the images the layer is normalized for.
        kernel: Odd kernel size (same-size output).
        coeff: The Lipschitz bound ``c`` in ``(0, 1]``.
        iterations: Power-iteration steps per training forward pass.

    Shapes: ``x (*, C_in, H, W) -> (*, C_out, H, W)``.

    Example:
        >>> import torch, exactflow as ef
        >>> layer = ef.nn.SpectralConv2d(2, 3, size=(6, 6), coeff=0.9, iterations=200)
        >>> _ = layer(torch.randn(4, 2, 6, 6))
        >>> float(layer.lipschitz()) <= 0.9 + 1e-3
        True

    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: tuple[int, int],
        kernel: int = 3,
        coeff: float = 0.97,
        iterations: int = 1,
    ) -> None:
        super().__init__()
        size = tuple(size)
        if in_channels < 1 or out_channels < 1 or len(size) != 2 or min(size) < 1:
            raise ValueError(
                "SpectralConv2d: channels and size (H, W) must be >= 1, got"
                f" {in_channels}, {out_channels} and {size}"
            )
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"SpectralConv2d: kernel must be odd and >= 1, got {kernel}")
        _check_spectral("SpectralConv2d", coeff, iterations)
        conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.weight = conv.weight
        self.bias = conv.bias
        self.padding = kernel // 2
        self.size = size
        self.coeff = coeff
        self.iterations = iterations
        self.register_buffer("u", self._normalize(torch.randn(out_channels, *size)))
        self.register_buffer("v", self._normalize(torch.randn(in_channels, *size)))

    def _operate(self, weight: Tensor, v: Tensor) -> Tensor:
        return F.conv2d(v[None], weight, padding=self.padding)[0]

    def _transpose(self, weight: Tensor, u: Tensor) -> Tensor:
        return F.conv_transpose2d(u[None], weight, padding=self.padding)[0]

    def lipschitz(self, iterations: int = 500) -> Tensor:
        """The operator norm of the scaled convolution by ``iterations`` power-iteration steps."""
        with torch.no_grad():
            weight = self.scaled_weight()
            v = self._normalize(torch.randn_like(self.v))
            for _ in range(iterations):
                v = self._normalize(self._transpose(weight, self._operate(weight, v)))
            return self._operate(weight, v).norm()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.size:
            raise ValueError(
                f"SpectralConv2d: normalized for {self.size[0]}x{self.size[1]} images, got"
                f" {tuple(x.shape)}"
            )
        self._step()
        batch = x.shape[:-3]
        y = F.conv2d(
            x.reshape(-1, *x.shape[-3:]), self.scaled_weight(), self.bias, padding=self.padding
        )
        return y.reshape(*batch, *y.shape[-3:])

    def extra_repr(self) -> str:
        out, inp, k, _ = self.weight.shape
        return (
            f"{inp}, {out}, size={self.size}, kernel={k}, coeff={self.coeff},"
            f" iterations={self.iterations}"
        )


class LipSwish(nn.Module):
    """``LipSwish(x) = x · sigmoid(β x) / 1.1`` with a learnable ``β = softplus(ρ) > 0``.

    Swish divided by its largest slope over all ``β`` (about 1.0998), so it is 1-Lipschitz
    whatever ``β`` is learned (Chen et al. 2019, residual flows).

    Example:
        >>> import torch, exactflow as ef
        >>> ef.nn.LipSwish()(torch.zeros(3))
        tensor([0., 0., 0.], grad_fn=<DivBackward0>)

    """

    def __init__(self) -> None:
        super().__init__()
        self.raw_beta = nn.Parameter(torch.tensor(0.5413))  # softplus(0.5413) ≈ 1

    def forward(self, x: Tensor) -> Tensor:
        beta = F.softplus(self.raw_beta)
        return x * torch.sigmoid(beta * x) / 1.1

    def derivative(self, x: Tensor) -> Tensor:
        """The slope at ``x``: ``(s + β x s (1 - s)) / 1.1`` with ``s = sigmoid(β x)``."""
        beta = F.softplus(self.raw_beta)
        s = torch.sigmoid(beta * x)
        return (s + beta * x * s * (1 - s)) / 1.1
