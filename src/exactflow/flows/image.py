"""Multi-scale image flows: Glow and the multi-scale RealNVP.

Both take ``shape=(C, H, W)`` and map images ``(*B, C, H, W)`` to vectors ``(*B, C·H·W)`` with a
standard normal base (class-conditional: a learned Gaussian whose mean and scale depend on the
label). Pixels are expected dequantized to ``[0, 1)`` (:class:`~exactflow.data.
UniformDequantization`): the first step is the logit ``y = logit(α + (1 - 2α)x)`` of RealNVP,
whose log-Jacobian is part of ``log_prob``, so bits/dim computed from ``log_prob`` are those of the
pixels themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..distributions import BaseDistribution, ConditionalDiagNormal, StandardNormal
from ..flow import Flow
from ..nn import GlowNet, zero_output
from ..transforms import (
    ActNorm,
    Additive,
    AffineMap,
    Compose,
    Coupling,
    ElementwiseMap,
    FactorOut,
    Flatten,
    InvertibleConv1x1,
    Logit,
    RationalQuadraticSpline,
    Recompute,
    Squeeze,
    Transform,
)
from ..transforms.bounds import BoundsLike
from ..transforms.coupling import coupling_mask
from .chains import config_of

__all__ = ["Glow"]

COUPLINGS = ("affine", "additive", "spline")
PREPROCESS = ("logit", None)


def check_image_preset(
    name: str,
    shape: Sequence[int],
    levels: int,
    steps: int,
    context: int,
    squeezes: int | None = None,
) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)``, after checking it; ValueError else.

    The image must survive ``squeezes`` halvings (default: ``levels``).
    """
    shape = tuple(shape)
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
        raise ValueError(f"{name}: shape must be (C, H, W) of ints, got {shape}")
    if min(shape) < 1 or levels < 1 or steps < 1 or context < 0:
        raise ValueError(
            f"{name}: shape sizes, levels and steps must be >= 1 and context >= 0, got"
            f" shape={shape}, levels={levels}, steps={steps}, context={context}"
        )
    c, h, w = shape
    squeezes = levels if squeezes is None else squeezes
    side = 2**squeezes
    if h % side or w % side:
        raise ValueError(
            f"{name}: {levels} level(s) halve the image {squeezes} time(s), so height and width"
            f" must be multiples of {side}, got {h}x{w} (use fewer levels, or pad/crop)"
        )
    return c, h, w


def refuse_bounds(name: str, bounds: object) -> None:
    """``ValueError`` for ``bounds=`` on an image flow (its pixels have their own map)."""
    if bounds is not None:
        raise ValueError(
            f"{name}: bounds= applies to vector flows; image pixels in [0, 1) already go through"
            f" the logit, got bounds={bounds!r}"
        )


def _preprocess(name: str, preprocess: str | None, alpha: float) -> list[Transform]:
    if preprocess not in PREPROCESS:
        raise ValueError(f"{name}: preprocess must be one of {PREPROCESS}, got {preprocess!r}")
    return [Logit(alpha, event_ndim=3)] if preprocess == "logit" else []


def _base(features: int, context: int) -> BaseDistribution:
    """``N(0, I)``, or for a class label a Gaussian whose mean and scale are linear in it."""
    if context == 0:
        return StandardNormal(features)
    return ConditionalDiagNormal(features, context, hidden=())


def _squeezed(shape: torch.Size) -> torch.Size:
    c, h, w = shape
    return torch.Size((4 * c, h // 2, w // 2))


def _kept(shape: torch.Size) -> torch.Size:
    c, h, w = shape
    return torch.Size((c - c // 2, h, w))


def nest_levels(
    blocks: list[list[Transform]],
    split_shapes: list[torch.Size],
    prior: bool,
    context: int,
    wrap: Callable[[list[Transform]], Transform],
) -> list[Transform]:
    """The steps of a multi-scale flow from its levels' blocks, inner levels nested.

    ``blocks[l]`` runs from level ``l``'s input to its split point, where the event has shape
    ``split_shapes[l]``; every level but the last ends in a
    :class:`~exactflow.transforms.FactorOut` whose ``inner`` is the next levels, and the last
    in a :class:`~exactflow.transforms.Flatten`. ``wrap`` turns each block's own steps into one
    transform (a ``Compose``, or a ``Recompute`` of one).
    """
    chain = [wrap(blocks[-1]), Flatten(split_shapes[-1])]
    for level in reversed(range(len(blocks) - 1)):
        inner = Compose(chain)
        chain = [wrap(blocks[level]), FactorOut(split_shapes[level], inner, prior, context)]
    return chain


def _memory_wrap(memory_saving: bool) -> Callable[[list[Transform]], Transform]:
    """Each level's own steps as one ``Compose``, recomputed in the backward pass if asked.

    :class:`~exactflow.transforms.Recompute` saves the weights under the wrapped transform's
    names, so a flow trained with ``memory_saving=True`` loads into one without, and back.
    """
    if not memory_saving:
        return Compose
    return lambda block: Recompute(Compose(block))


def _glow_map(name: str, coupling: str, bins: int, bound: float) -> ElementwiseMap:
    if coupling == "affine":
        return AffineMap()
    if coupling == "additive":
        return Additive()
    if coupling == "spline":
        return RationalQuadraticSpline(bins=bins, bound=bound, tails="linear")
    raise ValueError(f"{name}: coupling must be one of {COUPLINGS}, got {coupling!r}")


def glow_step(
    shape: torch.Size, map: ElementwiseMap, hidden: int, context: int, lu: bool = True
) -> list[Transform]:
    """One step of Glow on ``(C, H, W)``: ActNorm, invertible 1x1 convolution, coupling.

    The coupling transforms the last ``⌈C/2⌉`` channels given the first ``⌊C/2⌋`` (and the
    context) through a zero-initialized :class:`~exactflow.nn.GlowNet`.
    """
    c = shape[0]
    net = GlowNet(c // 2, (c - c // 2) * map.params, hidden, context)
    zero_output(net.output, map.identity())
    return [
        ActNorm(c, event_ndim=3),
        InvertibleConv1x1(c, lu=lu),
        Coupling(map, "channel", conditioner=net, context=context, shape=shape),
    ]


class Glow(Flow):
    """Glow (Kingma & Dhariwal 2018): a multi-scale flow of ActNorm, 1x1 convolutions, couplings.

    Data ``(C, H, W)`` in ``[0, 1)`` go through the logit (``preprocess="logit"``), then
    ``levels`` levels; each one squeezes (``(C, H, W) -> (4C, H/2, W/2)``), applies ``steps``
    steps of :class:`~exactflow.transforms.ActNorm`,
    :class:`~exactflow.transforms.InvertibleConv1x1` (LU-parameterized) and a channel-wise
    coupling (affine, additive or rational-quadratic spline) whose conditioner is Glow's
    3x3–1x1–3x3 network with ``hidden`` channels, zero-initialized; every level but the last then
    factors out half of its channels (:class:`~exactflow.transforms.FactorOut`) with a learned
    conditional prior ``N(μ(h), σ(h)²)`` on them (``prior=True``). ``log p(x)`` is exact: the sum
    of every step's log-determinant and the base density.

    Class-conditional (``context=K``): the context is a one-hot label ``(…, K)``; it enters every
    coupling network and prior as ``K`` constant input channels (each network's first layer
    learns its own embedding of the label) and the base is a Gaussian whose mean and log-scale
    are linear in the label (a learned class-conditional prior). ``sample((n,),
    context=one_hot)`` then draws that class.

    Args:
        shape: The image ``(C, H, W)``; ``H`` and ``W`` multiples of ``2**levels``.
        levels: Number of levels (squeezes).
        steps: Steps per level.
        hidden: Channels of the coupling networks.
        coupling: ``"affine"`` (log-scales softly bounded), ``"additive"`` (volume preserving)
            or ``"spline"``.
        context: Width ``K`` of a one-hot class label (0: unconditional).
        prior: Learned conditional priors on the factored-out channels.
        preprocess: ``"logit"`` (data in ``[0, 1)``) or ``None`` (data on the real line).
        alpha: The logit's margin ``α``: ``logit(α + (1 - 2α)x)``.
        bins: Spline bins (``coupling="spline"``).
        bound: Spline interval ``[-bound, bound]`` (``coupling="spline"``).
        memory_saving: Recompute each level's activations from its outputs in the backward
            pass instead of keeping them (:class:`~exactflow.transforms.Recompute`): less
            memory, about one more forward pass of time.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls.
        bounds: Refused (``ValueError``): pixels have their own map, the logit.
        embedding: A module from the raw context to the ``context`` features the networks and
            the base read, trained with the flow (see :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.Glow(shape=(1, 8, 8), levels=2, steps=2, hidden=16)
        >>> x = torch.rand(5, 1, 8, 8)
        >>> flow.log_prob(x).shape, flow.sample((3,), temperature=0.7).shape
        (torch.Size([5]), torch.Size([3, 1, 8, 8]))

    """

    def __init__(
        self,
        shape: Sequence[int],
        levels: int = 3,
        steps: int = 8,
        hidden: int = 256,
        coupling: str = "affine",
        context: int = 0,
        prior: bool = True,
        preprocess: str | None = "logit",
        alpha: float = 0.05,
        bins: int = 8,
        bound: float = 5.0,
        memory_saving: bool = False,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        config = config_of(locals())
        refuse_bounds("Glow", bounds)
        c, h, w = check_image_preset("Glow", shape, levels, steps, context)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"Glow: hidden must be a positive int (channels), got {hidden!r}")
        map = _glow_map("Glow", coupling, bins, bound)
        current = torch.Size((c, h, w))
        blocks, splits = [], []
        for _ in range(levels):
            squeezed = _squeezed(current)
            block: list[Transform] = [Squeeze(current)]
            for _ in range(steps):
                block += glow_step(squeezed, map, hidden, context)
            blocks.append(block)
            splits.append(squeezed)
            current = _kept(squeezed)
        chain = nest_levels(blocks, splits, prior, context, _memory_wrap(memory_saving))
        steps_all = [*_preprocess("Glow", preprocess, alpha), *chain]
        base = _base(c * h * w, context)
        super().__init__(Compose(steps_all), base, validate=validate, embedding=embedding)
        self.config = config


def _complement(mask: torch.Tensor, flip: bool) -> torch.Tensor:
    return ~mask if flip else mask


def image_realnvp_steps(
    shape: Sequence[int],
    levels: int,
    steps: int,
    hidden: Sequence[int],
    context: int,
    scale_bound: float | None,
    memory_saving: bool,
) -> list[Transform]:
    """The steps of the multi-scale RealNVP of Dinh et al. (2017) on ``(C, H, W)`` images.

    Each of the ``levels`` levels: ``steps`` checkerboard affine couplings (alternating masks),
    a squeeze, ``steps`` channel-wise affine couplings (alternating halves), and a factor-out of
    half the channels (no learned prior, as in the paper); then a last block of ``steps + 1``
    checkerboard couplings (channel couplings where the image is down to 1x1). Conditioners are
    convolutional ResNets (``len(hidden)`` blocks of
    ``hidden[0]`` channels); an ActNorm before each coupling stands in for the paper's batch
    normalization.
    """

    def couplings(at: torch.Size, kind: str, count: int) -> list[Transform]:
        layers: list[Transform] = []
        if kind == "checkerboard" and at[1] * at[2] == 1:  # a 1x1 image has no checkerboard
            kind = "channel"
        mask = coupling_mask(at, kind)
        for k in range(count):
            coupling = Coupling(
                AffineMap(scale_bound),
                _complement(mask, k % 2 == 1),
                hidden=hidden,
                context=context,
                shape=at,
            )
            layers += [ActNorm(at[0], event_ndim=3), coupling]
        return layers

    current = torch.Size(shape)
    blocks, splits = [], []
    for _ in range(levels):
        block = couplings(current, "checkerboard", steps)
        squeezed = _squeezed(current)
        block += [Squeeze(current), *couplings(squeezed, "channel", steps)]
        blocks.append(block)
        splits.append(squeezed)
        current = _kept(squeezed)
    blocks.append(couplings(current, "checkerboard", steps + 1))
    splits.append(current)
    return nest_levels(blocks, splits, False, context, _memory_wrap(memory_saving))


def image_realnvp(
    flow: Flow,
    shape: Sequence[int],
    context: int,
    levels: int,
    steps: int,
    hidden: Sequence[int] | int,
    scale_bound: float | None,
    alpha: float,
    memory_saving: bool,
    validate: bool,
    embedding: nn.Module | None = None,
) -> None:
    """Initialize ``flow`` (a ``RealNVP``) as the multi-scale image flow of ``shape``."""
    c, h, w = check_image_preset("RealNVP", shape, levels, steps, context)
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    chain = image_realnvp_steps((c, h, w), levels, steps, hidden, context, scale_bound,
                                memory_saving)  # fmt: skip
    transform = Compose([*_preprocess("RealNVP", "logit", alpha), *chain])
    base = _base(c * h * w, context)
    Flow.__init__(flow, transform, base, validate=validate, embedding=embedding)
