"""Fully connected conditioner networks.

* :class:`MLP` — fully connected network, optionally fed a context vector;
* :class:`ResidualMLP` — the same with residual blocks, for deeper conditioners;
* :func:`zero_output` — start a conditioner at a constant output (its transform at the identity).

Every conditioner takes ``(x, context=None)``; a network built with ``context=C > 0`` needs a
context of shape ``(*, C)``, which broadcasts against ``x``'s leading dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "ResidualMLP", "zero_output"]


def check_context(name: str, width: int, context: Tensor | None) -> Tensor:
    """Return ``context`` after checking it is a tensor of width ``width``."""
    if context is None:
        raise ValueError(
            f"{name} is conditional: it needs a context of shape (..., {width}), got None"
        )
    if context.dim() == 0 or context.shape[-1] != width:
        raise ValueError(
            f"{name} needs a context of shape (..., {width}), got {tuple(context.shape)}"
        )
    return context


def _join(name: str, x: Tensor, width: int, context: Tensor | None) -> Tensor:
    """``[x, context]`` along the last dimension, broadcasting the leading ones."""
    context = check_context(name, width, context)
    if x.shape[:-1] != context.shape[:-1]:
        batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        x = x.expand(*batch, x.shape[-1])
        context = context.expand(*batch, width)
    return torch.cat((x, context), dim=-1)


def zero_output(layer: nn.Module, bias: Tensor | None = None) -> None:
    """Start a conditioner at a constant output: zero weight, bias ``bias`` tiled (or zero).

    The one way exactflow makes a freshly built layer start at the identity of its map: the
    conditioner's last layer (``nn.Linear``, a masked or convolutional layer: anything with a
    ``weight`` and a ``bias`` over its outputs) outputs ``bias`` repeated over its outputs
    whatever its input, so the map's parameters start at ``bias``; the layers below keep their
    random initialization, so gradients reach them once the output moves.

    Args:
        layer: The conditioner's output layer.
        bias: Parameters of one coordinate's map ``(P,)``, tiled over the outputs;
            ``None``: zero.

    Example:
        >>> import torch, exactflow as ef
        >>> layer = torch.nn.Linear(3, 4)
        >>> ef.nn.zero_output(layer, torch.tensor([1.0, 2.0]))
        >>> layer(torch.randn(2, 3))
        tensor([[1., 2., 1., 2.],
                [1., 2., 1., 2.]], grad_fn=<AddmmBackward0>)

    """
    weight, out_bias = layer.weight, layer.bias
    with torch.no_grad():
        weight.zero_()
        if out_bias is None:
            return
        if bias is None:
            out_bias.zero_()
            return
        bias = bias.to(out_bias).flatten()
        if out_bias.numel() % bias.numel():
            raise ValueError(
                f"zero_output: the layer has {out_bias.numel()} outputs, not a multiple of the"
                f" {bias.numel()} parameters to tile"
            )
        out_bias.copy_(bias.repeat(out_bias.numel() // bias.numel()))


class MLP(nn.Sequential):
    """Fully connected network ``in -> hidden... -> out`` with an activation between layers.

    With ``context=C > 0`` the context is concatenated to the input, so the network computes
    ``f([x, c])``.

    Args:
        in_features: Input width.
        out_features: Output width.
        hidden: Widths of the hidden layers.
        activation: Activation class placed after every hidden layer.
        context: Width ``C`` of the context vector (0: none).

    Shapes: ``x (*, in_features)``, ``context (*, C)`` ``-> (*, out_features)``.

    Example:
        >>> import torch, exactflow as ef
        >>> net = ef.nn.MLP(3, 4, hidden=(16,), context=2)
        >>> net(torch.randn(5, 3), torch.randn(5, 2)).shape
        torch.Size([5, 4])

    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        context: int = 0,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features + context
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features
        self.context = context

    @property
    def output(self) -> nn.Linear:
        """The output layer (for :func:`zero_output`)."""
        return self[-1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context:
            x = _join("MLP", x, self.context, context)
        return super().forward(x)


class _ResidualBlock(nn.Module):
    """``h -> h + W₂ σ(W₁ σ(h))`` (pre-activation residual block; He et al. 2016)."""

    def __init__(self, width: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            activation(), nn.Linear(width, width), activation(), nn.Linear(width, width)
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class ResidualMLP(nn.Module):
    """Fully connected network of residual blocks: ``in -> width -> blocks -> out``.

    The input (with the context concatenated when ``context > 0``) is projected to ``hidden``
    units, passed through ``blocks`` pre-activation residual blocks ``h + W₂ σ(W₁ σ(h))``, and
    projected to the output. Skip connections keep deep conditioners trainable.

    Args:
        in_features: Input width.
        out_features: Output width.
        hidden: Width of the residual blocks.
        blocks: Number of residual blocks.
        context: Width ``C`` of the context vector (0: none).
        activation: Activation class.

    Shapes: ``x (*, in_features)``, ``context (*, C)`` ``-> (*, out_features)``.

    Example:
        >>> import torch, exactflow as ef
        >>> net = ef.nn.ResidualMLP(3, 4, hidden=16, blocks=2)
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 4])

    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 64,
        blocks: int = 2,
        context: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"ResidualMLP: blocks must be >= 1, got {blocks}")
        self.in_features = in_features
        self.out_features = out_features
        self.context = context
        self.input = nn.Linear(in_features + context, hidden)
        self.blocks = nn.Sequential(*(_ResidualBlock(hidden, activation) for _ in range(blocks)))
        self.activation = activation()
        self.output = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context:
            x = _join("ResidualMLP", x, self.context, context)
        return self.output(self.activation(self.blocks(self.input(x))))
