"""Convolutional conditioner networks, for transforms of images ``(*, C, H, W)``.

* :class:`ConvNet` — a small convolutional ResNet; a context vector enters as extra input
  channels, constant over the image.
* :class:`GlowNet` — Glow's coupling network: 3x3, 1x1 and 3x3 convolutions.
* :func:`with_context` — an image batch with its context vector appended as constant channels,
  flattened to the 4-D batch convolutions take.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..numerics import tracing
from .mlp import check_context

__all__ = ["ConvNet", "GlowNet", "with_context"]


def with_context(
    name: str, x: Tensor, context: Tensor | None, width: int
) -> tuple[Tensor, torch.Size]:
    """``x (*, C, H, W)`` with ``context (*, width)`` appended as constant channels, as 4-D.

    Returns the batch ``(N, C + width, H, W)`` (``N`` the product of the broadcast leading
    dimensions) and those leading dimensions, to restore the output's shape with
    ``out.reshape(*batch, *out.shape[-3:])``. ``width=0`` ignores ``context``.

    Example:
        >>> import torch
        >>> h, batch = with_context("net", torch.zeros(2, 3, 1, 4, 4), torch.ones(3, 5), 5)
        >>> h.shape, batch
        (torch.Size([6, 6, 4, 4]), torch.Size([2, 3]))

    """
    if width:
        c = check_context(name, width, context)
        batch = torch.broadcast_shapes(x.shape[:-3], c.shape[:-1])
        image = x.shape[-2:]
        x = x.expand(*batch, *x.shape[-3:])
        c = c[..., None, None].expand(*batch, width, *image)
        x = torch.cat((x, c), dim=-3)
    batch = x.shape[:-3]
    return x.reshape(batch.numel(), *x.shape[-3:]), batch


def _channels_last(h: Tensor) -> Tensor:
    """``h (N, C, H, W)`` laid out channels last, which the CPU's convolutions run faster on.

    Left as is under ``torch.func`` transforms, which cannot query memory formats.
    """
    return h if tracing() else h.contiguous(memory_format=torch.channels_last)


def _check_image(name: str, x: Tensor, channels: int) -> None:
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(
            f"{name}: expected input of shape (..., {channels}, H, W), got {tuple(x.shape)}"
        )


class _ConvBlock(nn.Module):
    """``h -> h + conv(σ(conv(σ(h))))`` (pre-activation residual block, 3x3 then 1x1)."""

    def __init__(self, width: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            activation(),
            nn.Conv2d(width, width, 3, padding=1),
            activation(),
            nn.Conv2d(width, width, 1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class ConvNet(nn.Module):
    """Convolutional ResNet ``(C_in, H, W) -> (C_out, H, W)`` (same spatial size).

    A 3x3 convolution to ``hidden`` channels, ``blocks`` pre-activation residual blocks
    ``h + W₂ σ(W₁ σ(h))`` (3x3 then 1x1 convolutions), and a 3x3 convolution to the output,
    as in RealNVP's and Glow's coupling networks (Dinh et al. 2017; Kingma & Dhariwal 2018).
    With ``context=C > 0`` the context vector is broadcast over the image and concatenated as
    ``C`` extra input channels. Its output layer is ``self.output`` (for
    :func:`~exactflow.nn.zero_output`).

    Args:
        in_channels: Input channels ``C_in``.
        out_channels: Output channels ``C_out``.
        hidden: Channels of the residual blocks.
        blocks: Number of residual blocks (0: a plain three-layer network).
        context: Width ``C`` of the context vector (0: none).
        activation: Activation class.

    Shapes: ``x (*, C_in, H, W)``, ``context (*, C)`` ``-> (*, C_out, H, W)``; the leading
    dimensions of ``x`` and ``context`` broadcast.

    Example:
        >>> import torch, exactflow as ef
        >>> net = ef.nn.ConvNet(2, 6, hidden=16, blocks=1, context=3)
        >>> net(torch.randn(5, 2, 8, 8), torch.randn(5, 3)).shape
        torch.Size([5, 6, 8, 8])

    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 64,
        blocks: int = 2,
        context: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or hidden < 1 or blocks < 0:
            raise ValueError(
                "ConvNet: in_channels, out_channels and hidden must be >= 1 and blocks >= 0, got"
                f" {in_channels}, {out_channels}, {hidden} and {blocks}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.context = context
        self.input = nn.Conv2d(in_channels + context, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*(_ConvBlock(hidden, activation) for _ in range(blocks)))
        self.activation = activation()
        self.output = nn.Conv2d(hidden, out_channels, 3, padding=1)
        self.to(memory_format=torch.channels_last)  # faster convolutions on the CPU

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        _check_image("ConvNet", x, self.in_channels)
        h, batch = with_context("ConvNet", x, context, self.context)
        out = self.output(self.activation(self.blocks(self.input(_channels_last(h)))))
        return out.reshape(*batch, *out.shape[-3:])


class GlowNet(nn.Module):
    """Glow's coupling network ``(C_in, H, W) -> (C_out, H, W)``: 3x3, 1x1, 3x3 convolutions.

    ``conv3x3 → ReLU → conv1x1 → ReLU → conv3x3`` with ``hidden`` channels in between
    (Kingma & Dhariwal 2018); a context vector enters as ``C`` constant input channels. Its
    output layer is ``self.output`` (for :func:`~exactflow.nn.zero_output`).

    Args:
        in_channels: Input channels ``C_in``.
        out_channels: Output channels ``C_out``.
        hidden: Channels of the two hidden layers.
        context: Width ``C`` of the context vector (0: none).

    Shapes: ``x (*, C_in, H, W)``, ``context (*, C)`` ``-> (*, C_out, H, W)``.

    Example:
        >>> import torch, exactflow as ef
        >>> net = ef.nn.GlowNet(2, 4, hidden=16, context=3)
        >>> net(torch.randn(5, 2, 8, 8), torch.randn(5, 3)).shape
        torch.Size([5, 4, 8, 8])

    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 512, context: int = 0):
        super().__init__()
        if in_channels < 1 or out_channels < 1 or hidden < 1 or context < 0:
            raise ValueError(
                "GlowNet: in_channels, out_channels and hidden must be >= 1 and context >= 0, got"
                f" {in_channels}, {out_channels}, {hidden} and {context}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.context = context
        self.net = nn.Sequential(  # in-place activations: the convolutions' outputs are fresh
            nn.Conv2d(in_channels + context, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
        )
        self.output = nn.Conv2d(hidden, out_channels, 3, padding=1)
        self.to(memory_format=torch.channels_last)  # faster convolutions on the CPU

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        _check_image("GlowNet", x, self.in_channels)
        h, batch = with_context("GlowNet", x, context, self.context)
        out = self.output(self.net(_channels_last(h)))
        return out.reshape(*batch, *out.shape[-3:])
