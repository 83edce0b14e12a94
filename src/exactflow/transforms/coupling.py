"""Coupling transforms: half the coordinates parametrize an elementwise map of the other half.

A coupling layer splits ``x`` into an identity part ``x_A`` and a transformed part ``x_B``:

    y_A = x_A,    y_B = f(x_B; θ(x_A, c)),    log|det ∂y/∂x| = Σ_{i∈B} log|f'(x_i; θ_i)|

The Jacobian is triangular, and the inverse needs one conditioner pass too, because ``θ``
depends only on the part that passes through unchanged (NICE, Dinh et al. 2014; RealNVP,
Dinh et al. 2017; neural spline flows, Durkan et al. 2019). Any
:class:`~exactflow.transforms.ElementwiseMap` can be ``f``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..nn import MLP, ResidualMLP, zero_output
from .base import Transform
from .elementwise import ElementwiseMap

__all__ = ["Coupling"]


def coupling_mask(features: int, kind: str | Tensor = "half", seed: int = 0) -> Tensor:
    """Boolean mask ``(D,)`` of the coordinates a coupling layer transforms.

    Args:
        features: Number of coordinates ``D``.
        kind: ``"half"`` (the last ``⌈D/2⌉``), ``"alternating"`` (the odd indices),
            ``"random"`` (a random ``⌊D/2⌋`` of them, from ``seed``), or a boolean tensor ``(D,)``
            (returned as is).
        seed: Seed of the random mask.

    """
    if isinstance(kind, Tensor):
        return kind.bool()
    index = torch.arange(features)
    if kind == "half":
        return index >= features // 2
    if kind == "alternating":
        return index % 2 == 1
    if kind == "random":
        chosen = torch.randperm(features, generator=torch.Generator().manual_seed(seed))
        return torch.isin(index, chosen[: features // 2])
    raise ValueError(
        f"mask must be 'half', 'alternating', 'random' or a boolean tensor, got {kind!r}"
    )


class Coupling(Transform):
    """Coupling layer with any elementwise map and a fully connected conditioner.

    ``y_B = f(x_B; θ)``, ``θ = net(x_A, c)`` reshaped to ``(*, |B|, P)``, ``y_A = x_A``, and
    ``log|det J| = Σ_{i∈B} log|f'(x_i; θ_i)|``. One network pass in each direction. The
    network's last layer starts at zero weights with the bias at ``map.identity()``, so the layer
    starts as the identity map.

    Args:
        map: The elementwise map ``f`` (``Additive``, ``AffineMap``, a spline, ...).
        features: Number of coordinates ``D`` (at least 2).
        mask: Which coordinates are transformed: ``"half"``, ``"alternating"``, ``"random"``
            or a boolean tensor ``(D,)`` (``True``: transformed). Both parts must be non-empty.
        hidden: Hidden widths of the conditioner. With ``residual=True``: ``len(hidden)``
            residual blocks of width ``hidden[0]`` (all widths must be equal).
        context: Width ``C`` of the context the conditioner also reads (0: none).
        residual: Use a :class:`~exactflow.nn.ResidualMLP` conditioner instead of an MLP.
        seed: Seed of the ``"random"`` mask.

    Shapes: ``x (*, D)``, ``context (*, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> layer = T.Coupling(T.AffineMap(), features=4, mask="alternating", hidden=(32,))
        >>> y, ladj = layer(torch.randn(10, 4))
        >>> ladj.shape
        torch.Size([10])

    """

    def __init__(
        self,
        map: ElementwiseMap,
        features: int,
        mask: str | Tensor = "half",
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        residual: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(map, ElementwiseMap):
            raise TypeError(f"Coupling: map must be an ElementwiseMap, got {type(map).__name__}")
        transformed = coupling_mask(features, mask, seed)
        if transformed.shape != (features,):
            raise ValueError(
                f"Coupling: mask must have shape ({features},), got {tuple(transformed.shape)}"
            )
        n_transformed = int(transformed.sum())
        if not 0 < n_transformed < features:
            raise ValueError(
                f"Coupling: the mask must transform some but not all of the {features}"
                f" coordinates, got {n_transformed} transformed"
            )
        hidden = tuple(hidden)
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"Coupling: residual=True needs equal hidden widths, got {hidden}")
        self.map = map
        self.features = features
        self.context = context
        n_identity = features - n_transformed
        out = n_transformed * map.params
        if residual:
            self.net = ResidualMLP(n_identity, out, hidden[0], len(hidden), context=context)
        else:
            self.net = MLP(n_identity, out, hidden, context=context)
        last = self.net.output if residual else self.net[-1]
        zero_output(last, map.identity())
        self.register_buffer("identity_index", (~transformed).nonzero().flatten())
        self.register_buffer("transformed_index", transformed.nonzero().flatten())

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        """The map's parameters ``(*, |B|, P)`` from the identity part of ``x``."""
        theta = self.net(x.index_select(-1, self.identity_index), context)
        return theta.unflatten(-1, (self.transformed_index.shape[0], self.map.params))

    def _merge(self, x: Tensor, part: Tensor) -> Tensor:
        """``x`` with its transformed coordinates replaced by ``part``."""
        if part.shape[:-1] != x.shape[:-1]:  # a context with more batch dimensions than x
            x = x.expand(*part.shape[:-1], x.shape[-1])
        return x.index_copy(-1, self.transformed_index, part)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        params = self._params(x, context)
        y_b, log_slope = self.map.forward(x.index_select(-1, self.transformed_index), params)
        return self._merge(x, y_b), log_slope.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        params = self._params(y, context)
        x_b, log_slope = self.map.inverse(y.index_select(-1, self.transformed_index), params)
        return self._merge(y, x_b), log_slope.sum(-1)
