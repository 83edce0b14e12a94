"""Multi-scale image steps: space-to-depth squeezing and factoring out half the channels.

A multi-scale flow (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018) alternates steps on
an image ``(C, H, W)`` with a :class:`Squeeze` ``(C, H, W) -> (4C, H/2, W/2)``, which trades
resolution for channels, and at the end of each level a :class:`FactorOut`, which sends half of
the channels straight to the base density and the rest on to the next level. Both are one step of
a :class:`~exactflow.transforms.Compose`, so a whole image flow maps ``(*B, C, H, W)`` to
``(*B, C·H·W)``, with a standard normal base over the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import with_context, zero_output
from .base import Transform
from .shape import _as_event_shape, _check_event, _expect_shape

__all__ = ["FactorOut", "Squeeze"]


def _image_shape(name: str, shape: Sequence[int]) -> torch.Size:
    shape = _as_event_shape(name, shape)
    if len(shape) != 3:
        raise ValueError(f"{name}: shape must be (C, H, W), got {tuple(shape)}")
    return shape


class Squeeze(Transform):
    """Space-to-depth: every ``f×f`` block of pixels becomes ``f²`` channels; ``log|det J| = 0``.

    ``(C, H, W) -> (C·f², H/f, W/f)`` with ``y[c·f² + i·f + j, h, w] = x[c, h·f + i, w·f + j]``
    (a permutation of the entries, so volume preserving). After a squeeze, a channel-wise
    coupling mixes pixels that were neighbours.

    Args:
        shape: The input event ``(C, H, W)``; ``H`` and ``W`` must be multiples of ``factor``.
        factor: Side ``f`` of the blocks.

    Shapes: ``x (*, C, H, W) -> y (*, C·f², H/f, W/f)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Squeeze((1, 4, 4))
        >>> y, ladj = t(torch.arange(16.0).view(1, 1, 4, 4))
        >>> y.shape, y[0, :, 0, 0].tolist()
        (torch.Size([1, 4, 2, 2]), [0.0, 1.0, 4.0, 5.0])

    """

    event_ndim = 3

    def __init__(self, shape: Sequence[int], factor: int = 2) -> None:
        super().__init__()
        shape = _image_shape("Squeeze", shape)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"Squeeze: factor must be a positive int, got {factor!r}")
        c, h, w = shape
        if h % factor or w % factor:
            raise ValueError(
                f"Squeeze: height and width must be multiples of factor={factor}, got {h}x{w}"
                " (crop or pad the images, or use fewer levels)"
            )
        self.factor = factor
        self.in_shape = shape
        self.out_shape = torch.Size((c * factor * factor, h // factor, w // factor))
        self.event_shape = shape

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("Squeeze", event_shape, self.in_shape, self.out_shape)

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("Squeeze", event_shape, self.out_shape, self.in_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = _check_event("Squeeze", x, self.in_shape)
        c, h, w = self.in_shape
        f = self.factor
        n = len(batch)
        blocks = x.reshape(*batch, c, h // f, f, w // f, f)
        y = blocks.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
        return y.reshape(batch + self.out_shape), x.new_zeros(batch)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = _check_event("Squeeze", y, self.out_shape)
        c, h, w = self.in_shape
        f = self.factor
        n = len(batch)
        blocks = y.reshape(*batch, c, f, f, h // f, w // f)
        x = blocks.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
        return x.reshape(batch + self.in_shape), y.new_zeros(batch)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.in_shape)}, factor={self.factor}"


class FactorOut(Transform):
    """Multi-scale factor-out: half the channels go to the base, the rest through ``inner``.

    The event ``(C, H, W)`` splits into the first ``C_h = C - ⌊C/2⌋`` channels ``h`` and the last
    ``⌊C/2⌋`` channels ``z``. ``h`` goes through ``inner`` (the next levels of the flow, ending in
    a vector); ``z`` leaves the flow here. With ``prior=True``, ``z`` gets a learned conditional
    prior ``z ~ N(μ(h, c), diag σ(h, c)²)`` as in Glow, written as the affine map
    ``ε = (z - μ)/σ`` so the base stays ``N(0, I)``:

        y = (flatten(ε), inner(h)),    log|det J| = -Σ log σ(h, c) + ladj_inner(h)

    ``μ, log σ`` come from one 3x3 convolution of ``h`` (and the context, as constant channels),
    zero-initialized: the prior starts as ``N(0, I)``. Sampling at temperature ``T`` scales ``ε``,
    so ``z = μ + T·σ·ε``, Glow's reduced-temperature draw at every level.

    Args:
        shape: The event ``(C, H, W)`` (``C >= 2``).
        inner: The rest of the flow for ``h``: a transform from ``(C_h, H, W)`` to a vector.
        prior: Learn the conditional prior of ``z`` (False: ``z`` goes to the base as is).
        context: Width of the context the prior reads (0: none). ``inner`` gets the context too.

    Shapes: ``x (*, C, H, W) -> y (*, C·H·W)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> t = T.FactorOut((2, 4, 4), T.Flatten((1, 4, 4)))
        >>> y, ladj = t(torch.randn(3, 2, 4, 4))
        >>> y.shape, ladj.shape
        (torch.Size([3, 32]), torch.Size([3]))

    """

    event_ndim = 3

    def __init__(
        self, shape: Sequence[int], inner: Transform, prior: bool = True, context: int = 0
    ) -> None:
        super().__init__()
        shape = _image_shape("FactorOut", shape)
        if not isinstance(inner, Transform):
            raise TypeError(f"FactorOut: inner must be a Transform, got {type(inner).__name__}")
        c, h, w = shape
        if c < 2:
            raise ValueError(
                f"FactorOut: needs at least 2 channels to split, got shape {tuple(shape)}"
            )
        self.kept = c - c // 2
        kept_shape = torch.Size((self.kept, h, w))
        try:
            out = inner.forward_shape(kept_shape)
        except ValueError as error:
            raise ValueError(
                f"FactorOut: inner does not fit the kept channels {tuple(kept_shape)}: {error}"
            ) from None
        if len(out) != 1 or out[0] != kept_shape.numel():
            raise ValueError(
                f"FactorOut: inner must map {tuple(kept_shape)} to a vector of"
                f" {kept_shape.numel()} entries, got event shape {tuple(out)}"
            )
        self.inner = inner
        self.in_shape = shape
        self.event_shape = shape
        self.out_shape = torch.Size((shape.numel(),))
        self.factored = (c // 2) * h * w
        self.context = max(context, inner.context)
        self._prior_context = context
        self.prior = None
        if prior:
            self.prior = nn.Conv2d(self.kept + context, 2 * (c // 2), 3, padding=1)
            zero_output(self.prior)

    @property
    def event_ndim_out(self) -> int:
        return 1

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("FactorOut", event_shape, self.in_shape, self.out_shape)

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("FactorOut", event_shape, self.out_shape, self.in_shape)

    def _prior(self, h: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(μ, log σ)`` of the factored channels, each ``(*, ⌊C/2⌋, H, W)``."""
        batch_in, batch = with_context("FactorOut", h, context, self._prior_context)
        params = self.prior(batch_in)
        params = params.reshape(*batch, *params.shape[-3:])
        loc, log_scale = params.chunk(2, dim=-3)
        return loc, log_scale

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_event("FactorOut", x, self.in_shape)
        h, z = x[..., : self.kept, :, :], x[..., self.kept :, :, :]
        y_h, ladj = self.inner(h, context)
        if self.prior is not None:
            loc, log_scale = self._prior(h, context)
            z = (z - loc) * torch.exp(-log_scale)
            ladj = ladj - log_scale.sum((-3, -2, -1))
        if z.shape[:-3] != y_h.shape[:-1]:  # a context with more batch dimensions than x
            z = z.expand(*y_h.shape[:-1], *z.shape[-3:])
        return torch.cat((z.flatten(-3), y_h), dim=-1), ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_event("FactorOut", y, self.out_shape)
        eps, y_h = y[..., : self.factored], y[..., self.factored :]
        h, ladj = self.inner.inverse(y_h, context)
        z = eps.unflatten(-1, (self.in_shape[0] - self.kept, *self.in_shape[1:]))
        if self.prior is not None:
            loc, log_scale = self._prior(h, context)
            z = torch.addcmul(loc, z, log_scale.exp())
            ladj = ladj + log_scale.sum((-3, -2, -1))
        if z.shape[:-3] != h.shape[:-3]:
            batch = torch.broadcast_shapes(z.shape[:-3], h.shape[:-3])
            z, h = z.expand(*batch, *z.shape[-3:]), h.expand(*batch, *h.shape[-3:])
        return torch.cat((h, z), dim=-3), ladj

    def extra_repr(self) -> str:
        return f"shape={tuple(self.in_shape)}, prior={self.prior is not None}"
