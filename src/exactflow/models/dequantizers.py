"""Dequantization densities ``q(u | x)`` on ``[0, 1)^D``: uniform, and a learned conditional flow.

:class:`~exactflow.models.Dequantized` draws its noise ``u`` from one of these: pixels get a
noise of the image's shape, a table's discrete columns one of width ``m`` (their number) read
from the whole row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data.checks import count
from ..distributions import StandardNormal
from ..nn import MLP, ConvNet, zero_output
from ..transforms import AffineMap, Compose, Coupling, Logit, MaskedAutoregressive
from ..transforms.coupling import coupling_mask

__all__ = ["DEQUANTIZERS", "UniformDequantizer", "VariationalDequantizer"]

DEQUANTIZERS = ("uniform", "variational")
"""The names of the dequantization densities :class:`~exactflow.models.Dequantized` takes."""


class UniformDequantizer(nn.Module):
    """Uniform dequantization noise ``u ~ U[0, 1)^D``, ``log q(u) = 0``, drawn afresh each call.

    Args:
        shape: The event shape (``(D,)`` or ``(C, H, W)``).

    Shapes: ``x (B, *event)`` ``-> u (k, B, *event), log q (k, B)`` (for a table's discrete
    columns ``x`` is the whole row ``(B, D)`` and the event ``(m,)``: only its batch shape counts).

    Example:
        >>> import torch
        >>> from exactflow.models.dequantization import UniformDequantizer
        >>> u, log_q = UniformDequantizer((1, 2, 2))(torch.zeros(3, 1, 2, 2), k=5)
        >>> u.shape, log_q.abs().sum().item()
        (torch.Size([5, 3, 1, 2, 2]), 0.0)

    """

    context = 0  # reads no context

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = torch.Size(shape)

    def forward(
        self, x: Tensor, k: int = 1, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``k`` draws of ``u`` per row of ``x`` and their log density (zero)."""
        batch = x.shape[: x.dim() - len(self.event_shape)]
        u = torch.rand((k, *batch, *self.event_shape), dtype=x.dtype, device=x.device)
        return u, x.new_zeros((k, *batch))


class _FeatureConditioner(nn.Module):
    """Coupling conditioner that reads the kept part and a feature map of ``x``, as channels.

    ``(kept (*, C_in, H, W), features (B, F, H, W)) -> (*, C_out, H, W)``: the two are stacked
    along the channels (the batch dimensions broadcast) and passed through a
    :class:`~exactflow.nn.ConvNet` whose output layer starts at zero (the identity map).
    """

    def __init__(self, in_channels: int, out_channels: int, features: int, hidden: int) -> None:
        super().__init__()
        self.net = ConvNet(in_channels + features, out_channels, hidden, blocks=1)
        zero_output(self.net.output, AffineMap().identity())

    def forward(self, kept: Tensor, features: Tensor) -> Tensor:
        batch = torch.broadcast_shapes(kept.shape[:-3], features.shape[:-3])
        kept = kept.expand(*batch, *kept.shape[-3:])
        features = features.expand(*batch, *features.shape[-3:])
        return self.net(torch.cat((kept, features), dim=-3))


def _image_masks(shape: torch.Size, steps: int) -> list[Tensor]:
    """Transformed entries of each step: checkerboard, channel and their complements in turn."""
    board = coupling_mask(shape, "checkerboard")
    cycle = [board, ~board]
    if shape[0] > 1:
        channel = coupling_mask(shape, "channel")
        cycle = [board, channel, ~board, ~channel]
    return [cycle[i % len(cycle)] for i in range(steps)]


def _channels(mask: Tensor, params: int) -> tuple[int, int]:
    """Input and output channels of a conditioner for ``mask`` (the split rule of ``Coupling``)."""
    rows = mask[:, 0, 0]
    if bool((mask == rows[:, None, None]).all()):  # whole channels: only the kept ones are read
        return int((~rows).sum()), int(rows.sum()) * params
    return mask.shape[0], mask.shape[0] * params


class VariationalDequantizer(nn.Module):
    """A learned dequantization density ``q(u | x)``: a conditional flow onto ``(0, 1)^D``.

    ``ε ~ N(0, I)`` of the event's shape, ``u = σ(T⁻¹(ε; h))`` with ``T`` ``steps`` affine
    couplings and ``h`` features of the quantized ``x`` computed once per batch, so

        log q(u | x) = log N(ε) - log|det ∂u/∂ε|
                     = log N(ε) - log|det ∂T⁻¹/∂ε| - Σ_i [log σ(v_i) + log σ(-v_i)],  v = T⁻¹(ε)

    (Flow++, Ho et al. 2019). Images ``(C, H, W)``: ``h`` is a :class:`~exactflow.nn.ConvNet`
    feature map ``(hidden, H, W)`` of ``2x - 1`` stacked onto each conditioner's input
    channels; the masks alternate checkerboard, channel and their complements (checkerboard
    only for ``C = 1``). Vectors ``(D,)``: ``h`` is an :class:`~exactflow.nn.MLP` feature vector
    ``(hidden,)`` of the row ``x`` (of width ``inputs``: a table's whole row when ``u``
    dequantizes only its discrete columns, so ``q(u | k, x_rest)``), read by MLP conditioners
    with alternating masks; one entry (``D = 1``) gets a single affine step whose MADE reads
    only ``h`` (more affine steps would compose to one). Every conditioner starts at
    zero output, so ``T`` starts as the identity and ``q`` as ``u = σ(ε)`` per entry, a
    logit-normal that is not uniform: at the start ``E_q[log q] ≈ 0.193`` nats per entry (its KL
    from the uniform), which training soon recovers.

    Args:
        shape: The event shape, ``(D,)`` or ``(C, H, W)`` with ``H·W >= 2``.
        steps: Number of coupling steps.
        hidden: Width of the feature map and of the conditioners.
        context: Width of a context vector (a one-hot label) the features also read (0: none).
        inputs: Vectors only: width of the row ``x`` the features read (``None``: ``D``).

    Shapes: ``x (B, *event)`` (vectors: ``(B, inputs)``), ``context (B, K)``
    ``-> u (k, B, *event), log q (k, B)``.

    Example:
        >>> import torch
        >>> from exactflow.models.dequantization import VariationalDequantizer
        >>> q = VariationalDequantizer((1, 4, 4), steps=2, hidden=8)
        >>> u, log_q = q(torch.zeros(3, 1, 4, 4), k=2)
        >>> u.shape, log_q.shape, bool(((u > 0) & (u < 1)).all())
        (torch.Size([2, 3, 1, 4, 4]), torch.Size([2, 3]), True)

    """

    def __init__(
        self,
        shape: Sequence[int],
        steps: int = 4,
        hidden: int = 32,
        context: int = 0,
        inputs: int | None = None,
    ) -> None:
        super().__init__()
        shape = torch.Size(shape)
        if (
            len(shape) not in (1, 3)
            or shape.numel() < 1
            or (len(shape) == 3 and shape[1:].numel() < 2)
        ):
            raise ValueError(
                "variational dequantization needs events (D,) with D >= 1 or (C, H, W) with"
                f" H·W >= 2, got {tuple(shape)}"
            )
        if inputs is not None and len(shape) != 1:
            raise ValueError(
                f"VariationalDequantizer: inputs applies to vector events (D,), got {tuple(shape)}"
            )
        count("VariationalDequantizer: steps", steps, 1)
        count("VariationalDequantizer: hidden", hidden, 1)
        self.context = count("VariationalDequantizer: context", context, 0)
        self.event_shape = shape
        n = len(shape)
        if n == 3:
            self.features = ConvNet(shape[0], hidden, hidden, blocks=1, context=context)
            layers = [
                Coupling(
                    AffineMap(),
                    mask,
                    conditioner=_FeatureConditioner(
                        *_channels(mask, AffineMap.params), hidden, hidden
                    ),
                    context=hidden,
                    shape=shape,
                )
                for mask in _image_masks(shape, steps)
            ]
        else:
            width = (
                shape[0] if inputs is None else count("VariationalDequantizer: inputs", inputs, 1)
            )
            self.features = MLP(width, hidden, (hidden,), context=context)
            index = torch.arange(shape[0])
            layers = [
                Coupling(AffineMap(), index % 2 == i % 2, hidden=(hidden,), context=hidden)
                for i in range(steps if shape[0] > 1 else 0)
            ]
            if shape[0] == 1:  # no split to couple: one affine map of ε read from h
                layers = [MaskedAutoregressive(AffineMap(), 1, hidden=(hidden,), context=hidden)]
        # Normalizing direction u -> v = logit(u) -> ε; q draws through the inverse.
        self.transform = Compose([Logit(0.0, event_ndim=n), *layers])
        self.noise = StandardNormal(shape)

    def forward(
        self, x: Tensor, k: int = 1, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``k`` reparameterized draws ``u ~ q(u | x)`` per row and their log density."""
        batch = x.shape[: x.dim() - len(self.event_shape)]
        h = self.features(2 * x - 1, context if self.context else None)  # (B, hidden[, H, W])
        eps = self.noise.rsample((k, *batch))  # (k, B, *event)
        u, ladj = self.transform.inverse(eps, h)
        return u, self.noise.log_prob(eps) - ladj
