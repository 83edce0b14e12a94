"""Coupling presets: NICE and RealNVP."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import Additive, Affine, AffineMap, Compose
from ..transforms.bounds import BoundsLike
from .chains import check_preset, config_of, coupling_layers
from .image import image_realnvp, refuse_bounds

__all__ = ["NICE", "RealNVP"]


class NICE(Flow):
    """Non-linear independent components estimation (Dinh et al. 2014).

    ``transforms`` additive coupling layers ``y_B = x_B + t(x_A, c)`` (volume preserving),
    followed by a learnable diagonal scaling (:class:`~exactflow.transforms.Affine`), whose
    log-scales give the whole flow's ``log|det J| = Σ_i s_i``. Base: standard normal.

    Args:
        features: Data width ``D`` (at least 2).
        context: Context width ``C`` the conditioners read (0: unconditional).
        transforms: Number of coupling layers (4 in the paper).
        hidden: Hidden widths of each conditioner.
        permutation: How the coordinates mix between layers: ``"reverse"`` swaps the
            transformed and identity halves (odd/even indices) every layer, ``"random"`` draws
            a random half per layer (from ``seed``), ``"lu"`` swaps halves and adds a learnable
            LU-factorized linear map between layers.
        residual: Residual conditioners (see :class:`~exactflow.transforms.Coupling`).
        seed: Seed of the random masks.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.NICE(features=4, transforms=4, hidden=(32, 32))
        >>> flow.log_prob(torch.randn(10, 4)).shape
        torch.Size([10])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 4,
        hidden: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        config = config_of(locals())
        check_preset("NICE", features, transforms, permutation)
        steps = coupling_layers(
            Additive(), features, context, transforms, hidden, permutation, residual, seed
        )
        base = StandardNormal(features)
        super().__init__(
            Compose([*steps, Affine(features)]), base, validate, bounds=bounds, embedding=embedding
        )
        self.config = config


class RealNVP(Flow):
    """Real-valued non-volume preserving flow (Dinh et al. 2017), on vectors or images.

    **Vectors** (``features=D``): ``transforms`` affine coupling layers
    ``y_B = x_B · exp(s(x_A, c)) + t(x_A, c)``; ``log|det J| = Σ_layers Σ_{i∈B} s_i``. The
    log-scales are softly bounded (:class:`~exactflow.transforms.AffineMap`). Base: standard
    normal.

    **Images** (``shape=(C, H, W)``): the paper's multi-scale architecture
    (:func:`~exactflow.flows.image.image_realnvp_steps`): the logit of the pixels (in
    ``[0, 1)``, margin ``alpha``), then ``levels`` levels of ``steps`` checkerboard couplings, a
    squeeze, ``steps`` channel couplings and a factor-out of half the channels, then ``steps + 1``
    checkerboard couplings; conditioners are convolutional ResNets of ``len(hidden)`` blocks of
    ``hidden[0]`` channels. ``context=K`` makes it class-conditional on a one-hot label, as in
    :class:`~exactflow.flows.Glow`. ``features``, ``transforms``, ``permutation``, ``residual``
    and ``seed`` apply to vectors only; ``levels``, ``steps``, ``alpha`` and ``memory_saving`` to
    images only.

    Args:
        features: Data width ``D`` (at least 2) for vectors.
        context: Context width ``C`` the conditioners read (0: unconditional).
        transforms: Number of coupling layers.
        hidden: Hidden widths of each conditioner.
        permutation: ``"reverse"`` (alternating masks: odd/even indices, swapped every
            layer), ``"random"`` or ``"lu"`` (see :class:`NICE`).
        residual: Residual conditioners.
        seed: Seed of the random masks.
        scale_bound: Largest absolute log-scale per layer, approached softly
            (:class:`~exactflow.transforms.AffineMap`); ``None``: unbounded.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`); vectors only (images have their logit).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).
        shape: The image ``(C, H, W)`` for the multi-scale flow (instead of ``features``).
        levels: Number of levels (squeezes) of the multi-scale flow.
        steps: Couplings per mask type and level (3 in the paper).
        alpha: The logit's margin ``α``: ``logit(α + (1 - 2α)x)``.
        memory_saving: Recompute each level's activations in the backward pass (see
            :class:`~exactflow.flows.Glow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.RealNVP(features=2, context=3, hidden=(32, 32))
        >>> flow.sample((5,), context=torch.randn(3)).shape
        torch.Size([5, 2])
        >>> images = ef.flows.RealNVP(shape=(1, 8, 8), levels=2, steps=1, hidden=(8,))
        >>> images.log_prob(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4])

    """

    def __init__(
        self,
        features: int | None = None,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        scale_bound: float | None = 3.0,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
        shape: Sequence[int] | None = None,
        levels: int = 2,
        steps: int = 3,
        alpha: float = 0.05,
        memory_saving: bool = False,
    ) -> None:
        config = config_of(locals())
        if (features is None) == (shape is None):
            raise ValueError(
                "RealNVP: give features= (vectors) or shape= (images), exactly one; got"
                f" features={features} and shape={shape}"
            )
        if shape is not None:
            refuse_bounds("RealNVP", bounds)
            image_realnvp(self, shape, context, levels, steps, hidden, scale_bound, alpha,
                          memory_saving, validate, embedding)  # fmt: skip
            self.config = {k: config[k] for k in _IMAGE_KEYS if k in config}
            return
        check_preset("RealNVP", features, transforms, permutation)
        steps_list = coupling_layers(
            AffineMap(scale_bound),
            features,
            context,
            transforms,
            hidden,
            permutation,
            residual,
            seed,
        )
        base = StandardNormal(features)
        super().__init__(Compose(steps_list), base, validate, bounds=bounds, embedding=embedding)
        self.config = {k: v for k, v in config.items() if k not in _IMAGE_ONLY}


# The keywords of each RealNVP form: a checkpoint records those of its own.
_IMAGE_KEYS = ("shape", "context", "levels", "steps", "hidden", "scale_bound", "alpha",
               "memory_saving", "embedding")  # fmt: skip
_IMAGE_ONLY = ("shape", "levels", "steps", "alpha", "memory_saving")
