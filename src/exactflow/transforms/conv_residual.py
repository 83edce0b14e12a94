"""Invertible residual blocks on images: ``y = x + g(x)``, ``g`` a contractive CNN.

The image form of :mod:`exactflow.transforms.residual` (residual flows on images, Chen et al.
2019): the same training estimate, gradients and fixed-point inverse, with ``g`` made of
spectrally normalized convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import LipSwish, SpectralConv2d
from .residual import Residual, check_series

__all__ = ["ConvResidualBlock"]

# Entries of the Jacobians a ConvResidualBlock holds at once in eval mode (64 MiB in float32).
_JACOBIAN_ENTRIES = 2**24


class ConvResidualBlock(Residual):
    """``y = x + g(x, c)`` on images, ``g`` a CNN of spectrally normalized convolutions.

    ``g`` is ``LipSwish -> conv k×k -> LipSwish -> conv 1×1 -> LipSwish -> conv k×k`` (the
    pre-activation form of Chen et al. 2019),
    every convolution capped at operator norm ``coeff`` on ``H × W`` images
    (:class:`~exactflow.nn.SpectralConv2d`), so ``Lip(g) <= coeff < 1``. A class context
    ``c (*, K)`` enters the first convolution as ``K`` constant channels.

    **Log-determinant.** Training: the same unbiased Russian-roulette estimate and gradients as
    :class:`ResidualBlock`. Eval mode: exact, ``slogdet(I + J_g)`` of the full ``D × D``
    Jacobian of every image (``D = C·H·W``; ``D`` backward passes, batched, and an ``O(D³)``
    determinant). The power series cannot be summed exactly without ``D``-fold work either,
    so the brute-force determinant is the exact choice; it suits small images (8×8 digits:
    ``D = 64``; 28×28: ``D = 784``, about 0.1 s an image on a CPU core).

    Args:
        shape: ``(C, H, W)``.
        hidden: Channels of ``g``'s hidden layers.
        context: Width ``K`` of the context (0: none).
        kernel: Odd kernel size of the outer convolutions.
        coeff: Lipschitz bound of every convolution, in ``(0, 1)``.
        iterations: Power-iteration steps per training pass.
        exact_terms: Series terms always computed in training, as in :class:`ResidualBlock`.
        continue_probability: The chance of computing one more term, as in
            :class:`ResidualBlock`.
        gradient: ``"neumann"`` (memory-saving) or ``"backprop"``, as in :class:`ResidualBlock`.

    Shapes: ``x (*, C, H, W)``, ``context (*, K)`` ``-> y (*, C, H, W)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> block = ef.transforms.ConvResidualBlock((1, 4, 4), hidden=8).eval()
        >>> y, ladj = block(torch.randn(2, 1, 4, 4))
        >>> x, back = block.inverse(y)
        >>> bool(torch.allclose(ladj, -back, atol=1e-5))
        True

    """

    def __init__(
        self,
        shape: Sequence[int],
        hidden: int = 64,
        context: int = 0,
        kernel: int = 3,
        coeff: float = 0.97,
        iterations: int = 1,
        exact_terms: int = 2,
        continue_probability: float = 0.5,
        gradient: str = "neumann",
    ) -> None:
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3 or min(shape) < 1 or hidden < 1 or context < 0:
            raise ValueError(
                "ConvResidualBlock: shape must be (C, H, W) of sizes >= 1, hidden >= 1 and"
                f" context >= 0, got {shape}, {hidden} and {context}"
            )
        check_series("ConvResidualBlock", coeff, exact_terms, continue_probability, gradient)
        channels, size = shape[0], shape[1:]
        self.net = nn.Sequential(
            LipSwish(),
            SpectralConv2d(channels + context, hidden, size, kernel, coeff, iterations),
            LipSwish(),
            SpectralConv2d(hidden, hidden, size, 1, coeff, iterations),
            LipSwish(),
            SpectralConv2d(hidden, channels, size, kernel, coeff, iterations),
        )
        self.shape = shape
        self._setup(shape, context, coeff, exact_terms, continue_probability, gradient)

    def _join(self, x: Tensor, c: Tensor) -> Tensor:
        planes = c[..., :, None, None].expand(*c.shape, *x.shape[-2:])
        return torch.cat((x, planes), -3)

    def _exact(self, rows: Tensor, c: Tensor | None) -> Tensor:
        """``slogdet(I + J_g)`` of every image's full Jacobian, in chunks of bounded memory."""
        features = math.prod(self.event)

        def flat(x: Tensor, ctx: Tensor | None) -> Tensor:
            return self._g(x[None], None if ctx is None else ctx[None]).reshape(-1)

        jacobian = torch.func.vmap(torch.func.jacrev(flat), in_dims=(0, None if c is None else 0))
        eye = torch.eye(features, dtype=rows.dtype, device=rows.device)
        chunk = max(1, _JACOBIAN_ENTRIES // features**2)
        out = []
        for start in range(0, rows.shape[0], chunk):
            part = rows[start : start + chunk]
            jac = jacobian(part, None if c is None else c[start : start + chunk])
            out.append(torch.linalg.slogdet(eye + jac.reshape(-1, features, features))[1])
        return torch.cat(out) if out else rows.new_zeros(0)
