"""Masked autoregressive transforms: every coordinate's map is conditioned on the earlier ones.

With input degrees ``d`` (an ordering of the coordinates),

    y_i = f(x_i; θ_i(x_{<i}, c)),    log|det ∂y/∂x| = Σ_i log|f'(x_i; θ_i)|

where ``x_{<i}`` are the coordinates of lower degree. One :class:`~exactflow.nn.MADE` pass
gives every ``θ_i`` at once, so the forward (density) direction is parallel; the inverse must
recover the coordinates one degree at a time, ``D`` passes (MAF, Papamakarios et al. 2017).
Wrapped in :class:`~exactflow.transforms.Inverse` the two costs swap: one-pass sampling and
``D``-pass density (IAF, Kingma et al. 2016).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..nn import MADE
from .base import Transform
from .elementwise import ElementwiseMap

__all__ = ["MaskedAutoregressive"]


class MaskedAutoregressive(Transform):
    """Masked autoregressive layer with any elementwise map and a MADE conditioner.

    ``y_i = f(x_i; θ_i)`` with ``θ = MADE(x, c)`` of shape ``(*, D, P)``, where ``θ_i`` depends
    only on the coordinates of lower degree (and on the whole context);
    ``log|det J| = Σ_i log|f'(x_i; θ_i)|``. The MADE's output layer starts at zero weights
    with the bias at ``map.identity()``, so the layer starts as the identity map.

    ``forward`` (data -> base) is one MADE pass. ``inverse`` takes ``D`` sequential steps, one
    per degree (:meth:`~exactflow.nn.MADE.autoregress`); each evaluates only the output rows of
    the coordinate it recovers, and without autograd (sampling) each hidden unit is computed
    once, in the step from which on it no longer changes, so the ``D`` steps together cost
    about one network pass.

    Args:
        map: The elementwise map ``f`` (``AffineMap``, a spline, ...).
        features: Number of coordinates ``D``.
        hidden: Hidden widths of the MADE.
        context: Width ``C`` of the context the MADE also reads (0: none).
        order: Degrees of the coordinates, a permutation of ``1..D`` (``None``: ``1..D``).
        hidden_degrees: ``"sequential"`` or ``"random"`` hidden degrees (see :class:`MADE`).
        seed: Seed of random hidden degrees.
        residual: Use masked residual blocks in the MADE.

    Shapes: ``x (*, D)``, ``context (*, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> layer = T.MaskedAutoregressive(T.AffineMap(), features=3, hidden=(16,))
        >>> y, ladj = layer(torch.randn(10, 3))
        >>> x, _ = layer.inverse(y)
        >>> x.shape
        torch.Size([10, 3])

    """

    def __init__(
        self,
        map: ElementwiseMap,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        order: Sequence[int] | Tensor | None = None,
        hidden_degrees: str = "sequential",
        seed: int = 0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(map, ElementwiseMap):
            raise TypeError(
                f"MaskedAutoregressive: map must be an ElementwiseMap, got {type(map).__name__}"
            )
        self.map = map
        self.features = features
        self.context = context
        self.made = MADE(
            features,
            map.params,
            hidden,
            context=context,
            order=order,
            hidden_degrees=hidden_degrees,
            seed=seed,
            residual=residual,
        )
        self.made.initialize(map.identity())

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, log_slope = self.map.forward(x, self.made(x, context))
        return y, log_slope.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_slopes: list[Tensor] = []

        def solve(i: int, params: Tensor) -> Tensor:
            x_i, log_slope = self.map.inverse(y[..., i : i + 1], params.unsqueeze(-2))
            log_slopes.append(log_slope)
            return x_i

        x = self.made.autoregress(solve, y.shape[:-1], context)
        return x, torch.cat(log_slopes, dim=-1).sum(-1)
