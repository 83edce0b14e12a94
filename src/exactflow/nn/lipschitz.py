"""Lipschitz-constrained layers, for residual flows ``y = x + g(x)`` with ``g`` contractive.

* :class:`SpectralLinear` — a linear layer whose weight is divided by its spectral norm
  (estimated by power iteration, Miyato et al. 2018) whenever that exceeds a coefficient ``c``,
  so that ``Lip(x -> W x) <= c`` up to the estimate's error;
* :class:`LipSwish` — ``x · sigmoid(β x) / 1.1``, 1-Lipschitz for every ``β > 0`` (Chen et al.
  2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..numerics import tracing

__all__ = ["LipSwish", "SpectralLinear"]


class SpectralLinear(nn.Module):
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
        if not 0.0 < coeff <= 1.0:
            raise ValueError(f"SpectralLinear: coeff must be in (0, 1], got {coeff}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"SpectralLinear: iterations must be an int >= 1, got {iterations!r}")
        linear = nn.Linear(in_features, out_features)
        self.weight = linear.weight
        self.bias = linear.bias
        self.coeff = coeff
        self.iterations = iterations
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(in_features), dim=0))

    @torch.no_grad()
    def update(self) -> None:
        """Run ``iterations`` power-iteration steps on ``u`` and ``v`` (what training does)."""
        weight = self.weight.detach()
        u, v = self.u, self.v
        for _ in range(self.iterations):
            v = F.normalize(weight.T @ u, dim=0)
            u = F.normalize(weight @ v, dim=0)
        self.u.copy_(u)
        self.v.copy_(v)

    def scaled_weight(self) -> Tensor:
        """``W / max(1, σ̂/c)``, the weight the layer applies."""
        if self.training and torch.is_grad_enabled() and not tracing():
            self.update()
        sigma = torch.dot(self.u, self.weight @ self.v)
        return self.weight / torch.clamp(sigma / self.coeff, min=1.0)

    def lipschitz(self) -> Tensor:
        """The exact Lipschitz constant of the layer as it is now: ``‖W_scaled‖₂`` (an SVD)."""
        with torch.no_grad():
            return torch.linalg.matrix_norm(self.scaled_weight(), ord=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.scaled_weight(), self.bias)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"{inp}, {out}, coeff={self.coeff}, iterations={self.iterations}"


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
