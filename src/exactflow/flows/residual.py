"""Residual flows (Behrmann et al. 2019; Chen et al. 2019), on vectors and on images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import (
    ActNorm,
    Compose,
    ConvResidualBlock,
    Flatten,
    ResidualBlock,
    Squeeze,
    Transform,
)
from ..transforms.bounds import BoundsLike
from .chains import check_preset, config_of
from .image import _base, _preprocess, _squeezed, check_image_preset, refuse_bounds

__all__ = ["ResidualFlow"]

# The keywords each form records in its config (the other form's are left out).
_VECTOR_KEYS = (
    "features", "context", "transforms", "hidden", "coeff", "gradient", "estimator", "preact",
    "bounds", "embedding",
)  # fmt: skip
_IMAGE_KEYS = ("shape", "context", "levels", "steps", "hidden", "coeff", "gradient", "alpha",
               "embedding")  # fmt: skip


class ResidualFlow(Flow):
    """A residual flow: invertible residual blocks, each after an ActNorm.

    Every block is ``y = x + g(x, c)`` with ``g`` spectrally normalized (Lipschitz bound
    ``coeff`` for every layer, so the block is invertible). In training the log-determinants are
    unbiased Russian-roulette estimates (with the memory-saving Neumann-series gradient by
    default), or exact for narrow vectors (``estimator``); in eval mode (every reported figure)
    they are exact. Sampling inverts each block by
    fixed-point iteration, which raises if it does not converge. Base: standard normal.

    **Vectors** (``features=D``): ``transforms`` pairs of ActNorm and
    :class:`~exactflow.transforms.ResidualBlock` (an MLP ``g`` with hidden widths ``hidden``).

    **Images** (``shape=(C, H, W)``, pixels in ``[0, 1]``): the logit of the pixels (as in
    Glow, parameter ``alpha``), then ``levels`` levels of ``steps`` pairs of ActNorm and
    :class:`~exactflow.transforms.ConvResidualBlock` (a CNN ``g`` with ``hidden`` channels),
    every level after the first starting with a squeeze; no dimensions are factored out. A
    context (``context=K``, e.g. a one-hot class label) enters every block as constant channels
    and gives the base a mean and scale linear in it. The exact log-determinant of an image block
    costs ``C·H·W`` backward passes, which suits small images (8×8 digits; 28×28 is slow).

    Args:
        features: Data width ``D`` (vectors).
        context: Context width (0: unconditional).
        transforms: Number of residual blocks (vectors).
        hidden: Hidden widths of each block's MLP (vectors, default ``(64, 64)``); one channel
            count (images, default 64).
        coeff: Lipschitz bound of every layer of ``g``, in ``(0, 1)``.
        gradient: How training differentiates the estimate: ``"neumann"`` (memory-saving
            Neumann series, the default) or ``"backprop"`` (see
            :class:`~exactflow.transforms.ResidualBlock`).
        validate: Check the inputs of direct ``log_prob``/``sample`` calls.
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`); vectors only (images have their logit).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).
        estimator: The training log-determinant of the vector blocks: ``"auto"`` (exact up to
            ``D = 16``, where it is cheaper and trains better, the estimate above), ``"exact"``
            or ``"roulette"``.
        preact: A LipSwish before the first layer of every vector block too (see
            :class:`~exactflow.transforms.ResidualBlock`).
        shape: ``(C, H, W)`` for the image form (instead of ``features``).
        levels: Image levels (the image side must be divisible by ``2^(levels-1)``).
        steps: Residual blocks per level (images).
        alpha: The logit's margin (images).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.ResidualFlow(features=2, transforms=2, hidden=(16,)).eval()
        >>> flow.log_prob(torch.randn(5, 2)).shape, flow.sample((3,)).shape
        (torch.Size([5]), torch.Size([3, 2]))
        >>> images = ef.flows.ResidualFlow(shape=(1, 4, 4), levels=2, steps=1, hidden=8).eval()
        >>> images.log_prob(torch.rand(2, 1, 4, 4)).shape
        torch.Size([2])

    """

    def __init__(
        self,
        features: int | None = None,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] | int | None = None,
        coeff: float = 0.97,
        gradient: str = "neumann",
        validate: bool = True,
        estimator: str = "auto",
        preact: bool = False,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
        shape: Sequence[int] | None = None,
        levels: int = 2,
        steps: int = 4,
        alpha: float = 0.05,
    ) -> None:
        if hidden is None:
            hidden = (64, 64) if shape is None else 64
        config = config_of(locals())
        if (features is None) == (shape is None):
            raise ValueError(
                "ResidualFlow: give features= (vectors) or shape= (images), exactly one; got"
                f" features={features} and shape={shape}"
            )
        if shape is not None:
            refuse_bounds("ResidualFlow", bounds)
            self._images(shape, context, levels, steps, hidden, coeff, gradient, alpha, validate,
                         embedding)  # fmt: skip
            self.config = {k: config[k] for k in _IMAGE_KEYS if k in config}
            return
        check_preset("ResidualFlow", features, transforms)
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        chain: list[Transform] = []
        for _ in range(transforms):
            block = ResidualBlock(
                features, hidden, context, coeff, gradient=gradient, estimator=estimator,
                preact=preact,
            )  # fmt: skip
            chain += [ActNorm(features), block]
        base = StandardNormal(features)
        super().__init__(Compose(chain), base, validate, bounds=bounds, embedding=embedding)
        self.config = {k: config[k] for k in _VECTOR_KEYS if k in config}

    def _images(
        self,
        shape: Sequence[int],
        context: int,
        levels: int,
        steps: int,
        hidden: Sequence[int] | int,
        coeff: float,
        gradient: str,
        alpha: float,
        validate: bool,
        embedding: nn.Module | None,
    ) -> None:
        c, h, w = check_image_preset("ResidualFlow", shape, levels, steps, context, levels - 1)
        widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        if len(widths) != 1:
            raise ValueError(f"ResidualFlow: on images hidden is one channel count, got {widths}")
        current = torch.Size((c, h, w))
        chain: list[Transform] = list(_preprocess("ResidualFlow", "logit", alpha))
        for level in range(levels):
            if level:
                chain.append(Squeeze(current))
                current = _squeezed(current)
            for _ in range(steps):
                block = ConvResidualBlock(
                    current, widths[0], context, coeff=coeff, gradient=gradient
                )
                chain += [ActNorm(current[0], event_ndim=3), block]
        chain.append(Flatten(current))
        base = _base(c * h * w, context)
        super().__init__(Compose(chain), base, validate=validate, embedding=embedding)
