"""Layers for events with periodic columns: conditioners that read angles as ``(cos, sin)``.

A conditioner that reads an angle ``x`` itself sees a jump of ``2π`` where the circle is cut at
``±π``, so the density it parametrizes would jump there too. Reading ``(cos x, sin x)``
instead makes every parameter a continuous function on the torus, and with
:class:`~exactflow.transforms.CircularSpline` on the periodic columns the whole flow is smooth
across the seam (Rezende et al. 2020).

* :class:`AngleFeatures` — ``x (*, D) -> (*, D + n)``: each periodic column becomes
  ``(cos x, sin x)``.
* :class:`TorusAutoregressive` — a masked autoregressive layer whose MADE reads those features:
  the two features of a column share its place in the order (consecutive degrees, the second
  feature's own outputs left unused), so the layer stays autoregressive in the columns.
* :func:`torus_coupling` — a :class:`~exactflow.transforms.Coupling` layer whose conditioner
  reads those features of the kept columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import MADE, MLP, ResidualMLP, zero_output
from .base import Transform
from .circular import ColumnSplines
from .coupling import Coupling

__all__ = ["AngleFeatures", "TorusAutoregressive", "torus_coupling"]


def _slots(periodic: Sequence[bool]) -> tuple[list[int], list[int]]:
    """Per column, its first feature slot; per slot, the index into ``[x, cos x, sin x]``."""
    d = len(periodic)
    first, index = [], []
    for j, p in enumerate(periodic):
        first.append(len(index))
        index += [d + j, 2 * d + j] if p else [j]
    return first, index


class AngleFeatures(nn.Module):
    """``x (*, D) -> (*, D + n)``: each periodic column replaced by ``(cos x, sin x)`` in place.

    Features keep the columns' order; the ``n`` periodic columns take two slots each.

    Args:
        periodic: One flag per column.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.transforms.AngleFeatures([False, True])(torch.tensor([[2.0, 0.0]]))
        tensor([[2., 1., 0.]])

    """

    def __init__(self, periodic: Sequence[bool]) -> None:
        super().__init__()
        self.periodic = [bool(p) for p in periodic]
        first, index = _slots(self.periodic)
        self.width = len(index)
        self.first = first
        self.register_buffer("index", torch.tensor(index), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not any(self.periodic):
            return x
        if all(self.periodic):  # (cos, sin) pairs: a stack is cheaper than a gather
            return torch.stack([x.cos(), x.sin()], -1).flatten(-2)
        return torch.cat([x, x.cos(), x.sin()], -1).index_select(-1, self.index)


class _AngleConditioner(nn.Module):
    """A coupling conditioner ``(kept, context) -> θ`` reading kept angles as ``(cos, sin)``."""

    def __init__(
        self,
        periodic: Sequence[bool],
        out_features: int,
        hidden: Sequence[int],
        context: int,
        residual: bool,
    ) -> None:
        super().__init__()
        self.features = AngleFeatures(periodic)
        width = self.features.width
        if residual:
            self.net: nn.Module = ResidualMLP(
                width, out_features, hidden[0], len(hidden), context=context
            )
        else:
            self.net = MLP(width, out_features, hidden, context=context)

    @property
    def output(self) -> nn.Module:
        return self.net.output

    def forward(self, kept: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(self.features(kept), context)


def torus_coupling(
    map: ColumnSplines,
    mask: Tensor,
    hidden: Sequence[int] = (64, 64),
    context: int = 0,
    residual: bool = False,
) -> Coupling:
    """A vector coupling layer whose conditioner reads the kept angles as ``(cos, sin)``.

    The transformed columns (``mask`` true) are mapped by ``map`` restricted to them (circular
    splines on the periodic ones); the conditioner is an MLP (a residual one for
    ``residual=True``) of :class:`AngleFeatures` of the kept columns, starting at the identity.

    Args:
        map: The splines of all ``D`` columns; ``map.periodic`` says which are angles.
        mask: Boolean ``(D,)``, the columns the layer transforms.
        hidden: Hidden widths of the conditioner.
        context: Context width.
        residual: Residual conditioner (equal hidden widths).

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> layer = T.torus_coupling(T.ColumnSplines([True, True]), torch.tensor([False, True]))
        >>> y, ladj = layer(torch.rand(5, 2) * 6 - 3)

    """
    flags = torch.tensor(map.periodic)
    if mask.shape != flags.shape:
        raise ValueError(
            f"torus_coupling: mask must have shape {tuple(flags.shape)}, got {tuple(mask.shape)}"
        )
    mask = mask.bool()
    moved = ColumnSplines(flags[mask].tolist(), bins=map.bins, bound=map.bound)
    hidden = tuple(hidden)
    if residual and len(set(hidden)) != 1:
        raise ValueError(f"torus_coupling: residual needs equal hidden widths, got {hidden}")
    n_out = int(mask.sum()) * moved.params
    conditioner = _AngleConditioner(flags[~mask].tolist(), n_out, hidden, context, residual)
    zero_output(conditioner.output, moved.identity())
    return Coupling(moved, mask, conditioner, context=context)


class TorusAutoregressive(Transform):
    """Masked autoregressive layer of :class:`ColumnSplines` whose MADE reads angles as features.

    ``y_i = f_i(x_i; θ_i)`` with ``θ = MADE(AngleFeatures(x), c)``, ``θ_i`` a function of the
    columns earlier in ``order`` only; ``log|det J| = Σ_i log|f_i'(x_i; θ_i)|``. A periodic
    column's ``(cos, sin)`` features get consecutive MADE degrees in its place of the order;
    its parameters come from the first feature's outputs, which see neither feature. Starts as
    the identity. ``forward`` is one MADE pass; ``inverse`` rebuilds the columns in order
    (:meth:`~exactflow.nn.MADE.autoregress`, one step per feature).

    Args:
        map: The splines of the ``D`` columns (:class:`ColumnSplines`).
        hidden: Hidden widths of the MADE.
        context: Context width ``C``.
        order: Degrees of the columns, a permutation of ``1..D`` (``None``: ``1..D``).
        residual: Masked residual blocks in the MADE.

    Shapes: ``x (*, D)``, ``context (*, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> layer = T.TorusAutoregressive(T.ColumnSplines([True, False, True]), hidden=(16,))
        >>> x = torch.rand(4, 3) * 6 - 3
        >>> y, ladj = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True

    """

    def __init__(
        self,
        map: ColumnSplines,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        order: Sequence[int] | Tensor | None = None,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(map, ColumnSplines):
            raise TypeError(
                f"TorusAutoregressive: map must be a ColumnSplines, got {type(map).__name__}"
            )
        periodic = map.periodic
        d = len(periodic)
        degrees = torch.arange(1, d + 1) if order is None else torch.as_tensor(order).long()
        if degrees.numel() != d or not torch.equal(degrees.sort().values, torch.arange(1, d + 1)):
            raise ValueError(
                f"TorusAutoregressive: order must be a permutation of 1..{d}, got"
                f" {degrees.tolist()}"
            )
        flags = torch.tensor(periodic)
        # A column's first feature moves up by the periodic columns before it in the order.
        earlier = (flags[None, :] & (degrees[None, :] < degrees[:, None])).sum(1)
        first = degrees + earlier
        slot_degrees = torch.cat([first[:, None], first[:, None] + 1], 1)
        slot_degrees = torch.cat(
            [row[: 1 + int(p)] for row, p in zip(slot_degrees, periodic, strict=True)]
        )
        self.map = map
        self.features = d
        self.context = context
        self.angles = AngleFeatures(periodic)
        self.made = MADE(
            self.angles.width,
            map.params,
            hidden,
            context=context,
            order=slot_degrees,
            residual=residual,
        )
        self.made.initialize(map.identity())
        self.register_buffer("first", torch.tensor(self.angles.first), persistent=False)
        # Per feature slot: its column, and whether it is a periodic column's sine slot.
        self._column = [j for j, p in enumerate(periodic) for _ in range(1 + int(p))]
        self._sine = [s > 0 for j, p in enumerate(periodic) for s in range(1 + int(p))]
        self._maps = [map.column(j) for j in range(d)]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.made(self.angles(x), context)  # (*, D + n, P)
        if all(self.map.periodic):  # the first slots are the even ones: a view, not a gather
            params = out[..., ::2, :]
        else:
            params = out.index_select(-2, self.first)  # (*, D, P)
        y, log_slope = self.map.forward(x, params)
        return y, log_slope.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        xs: list[Tensor] = [y[..., :1]] * self.features
        log_slopes: list[Tensor] = [y[..., :1]] * self.features

        def solve(slot: int, params: Tensor) -> Tensor:
            j = self._column[slot]
            if self._sine[slot]:
                return xs[j].sin()
            x_j, log_slope = self._maps[j].inverse(y[..., j : j + 1], params.unsqueeze(-2))
            xs[j], log_slopes[j] = x_j, log_slope
            return x_j.cos() if self.map.periodic[j] else x_j

        self.made.autoregress(solve, y.shape[:-1], context)
        batch = torch.broadcast_shapes(*(x.shape for x in xs))
        x = torch.cat([x.expand(batch) for x in xs], -1)
        ladj = torch.cat([s.expand(batch) for s in log_slopes], -1).sum(-1)
        return x, ladj
