"""Presets: ready-made flows assembled from the transforms.

Every preset takes the same keywords: ``features`` (data width), ``context`` (context width,
0 for none), ``transforms`` (number of steps) and ``hidden`` (conditioner hidden widths),
plus its own (``bins`` for splines, ...). Each returns an :class:`exactflow.Flow`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .distributions import Flow, StandardNormal
from .transforms import (
    Additive,
    Affine,
    AffineMap,
    Compose,
    Coupling,
    ElementwiseMap,
    Inverse,
    LULinear,
    MaskedAutoregressive,
    RationalQuadraticSpline,
    Transform,
)
from .transforms.coupling import coupling_mask
from .transforms.planar import Planar as PlanarStep
from .transforms.planar import Radial as RadialStep
from .transforms.planar import Sylvester as SylvesterStep

__all__: list[str] = ["IAF", "MAF", "NICE", "NSF", "Planar", "Radial", "RealNVP", "Sylvester"]

# --- coupling and masked autoregressive presets: NICE, RealNVP, MAF, IAF, NSF ---

_PERMUTATIONS = ("reverse", "random", "lu")


def _check(name: str, features: int, transforms: int, permutation: str) -> None:
    if features < 1 or transforms < 1:
        raise ValueError(
            f"{name}: features and transforms must be >= 1, got {features} and {transforms}"
        )
    if permutation not in _PERMUTATIONS:
        raise ValueError(f"{name}: permutation must be one of {_PERMUTATIONS}, got {permutation!r}")


def _chain(layers: list[Transform], features: int, permutation: str) -> list[Transform]:
    """The layers, with a learnable LU linear map between consecutive ones for ``"lu"``."""
    steps: list[Transform] = []
    for k, layer in enumerate(layers):
        if k and permutation == "lu":
            steps.append(LULinear(features))
        steps.append(layer)
    return steps


def _couplings(
    map: ElementwiseMap,
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    permutation: str,
    residual: bool,
    seed: int,
) -> list[Transform]:
    """Coupling layers whose transformed coordinates change from layer to layer.

    ``"reverse"`` and ``"lu"`` swap the odd and even indices every layer; ``"random"`` draws a
    random half per layer from ``seed``. (A permutation before a coupling layer only relabels
    its fully connected conditioner's inputs, so the choice of mask is the whole of it.)
    """
    layers: list[Transform] = []
    for k in range(transforms):
        if permutation == "random":
            mask = coupling_mask(features, "random", seed + k)
        else:
            mask = coupling_mask(features, "alternating") ^ (k % 2 == 1)
        layers.append(Coupling(map, features, mask, hidden, context, residual=residual))
    return _chain(layers, features, permutation)


def _autoregressive(
    map: ElementwiseMap,
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    permutation: str,
    residual: bool,
    seed: int,
    inverse: bool = False,
) -> list[Transform]:
    """Masked autoregressive layers whose order changes from layer to layer.

    ``"reverse"`` and ``"lu"`` reverse the order every layer; ``"random"`` draws a random order
    per layer from ``seed``. (Permuting the coordinates before a layer is the same as giving its
    MADE permuted degrees, which costs nothing.) ``inverse`` wraps every layer in
    :class:`~exactflow.transforms.Inverse`.
    """
    layers: list[Transform] = []
    for k in range(transforms):
        if permutation == "random":
            order = torch.randperm(features, generator=torch.Generator().manual_seed(seed + k))
            order = order + 1
        else:
            order = torch.arange(1, features + 1)
            order = order.flip(0) if k % 2 == 1 else order
        layer = MaskedAutoregressive(map, features, hidden, context, order=order, residual=residual)
        layers.append(Inverse(layer) if inverse else layer)
    return _chain(layers, features, permutation)


def _config(**kwargs: object) -> dict:
    """The constructor keywords, as the JSON values they round-trip to."""
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in kwargs.items()}


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
    ) -> None:
        _check("NICE", features, transforms, permutation)
        steps = _couplings(
            Additive(), features, context, transforms, hidden, permutation, residual, seed
        )
        super().__init__(Compose([*steps, Affine(features)]), StandardNormal(features))
        self.config = _config(
            features=features,
            context=context,
            transforms=transforms,
            hidden=hidden,
            permutation=permutation,
            residual=residual,
            seed=seed,
        )


class RealNVP(Flow):
    """Real-valued non-volume preserving flow (Dinh et al. 2017).

    ``transforms`` affine coupling layers ``y_B = x_B · exp(s(x_A, c)) + t(x_A, c)``;
    ``log|det J| = Σ_layers Σ_{i∈B} s_i``. The log-scales are softly bounded
    (:class:`~exactflow.transforms.AffineMap`). Base: standard normal.

    Args:
        features: Data width ``D`` (at least 2).
        context: Context width ``C`` the conditioners read (0: unconditional).
        transforms: Number of coupling layers.
        hidden: Hidden widths of each conditioner.
        permutation: ``"reverse"`` (alternating masks: odd/even indices, swapped every
            layer), ``"random"`` or ``"lu"`` (see :class:`NICE`).
        residual: Residual conditioners.
        seed: Seed of the random masks.
        scale_bound: Largest absolute log-scale per layer, approached softly
            (:class:`~exactflow.transforms.AffineMap`); ``None``: unbounded.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.RealNVP(features=2, context=3, hidden=(32, 32))
        >>> flow.sample((5,), context=torch.randn(3)).shape
        torch.Size([5, 2])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        scale_bound: float | None = 3.0,
    ) -> None:
        _check("RealNVP", features, transforms, permutation)
        steps = _couplings(
            AffineMap(scale_bound),
            features,
            context,
            transforms,
            hidden,
            permutation,
            residual,
            seed,
        )
        super().__init__(Compose(steps), StandardNormal(features))
        self.config = _config(
            features=features,
            context=context,
            transforms=transforms,
            hidden=hidden,
            permutation=permutation,
            residual=residual,
            seed=seed,
            scale_bound=scale_bound,
        )


class MAF(Flow):
    """Masked autoregressive flow (Papamakarios et al. 2017).

    ``transforms`` masked autoregressive affine layers
    ``y_i = x_i · exp(s_i(x_{<i}, c)) + t_i(x_{<i}, c)``, each conditioned by a
    :class:`~exactflow.nn.MADE`; ``log|det J| = Σ_layers Σ_i s_i``. Density: one network pass
    per layer. Sampling: ``D`` passes per layer. Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` the MADEs read (0: unconditional).
        transforms: Number of autoregressive layers.
        hidden: Hidden widths of each MADE.
        permutation: How the coordinates mix between layers: ``"reverse"`` reverses the
            autoregressive order every layer, ``"random"`` draws a random order per layer (from
            ``seed``), ``"lu"`` reverses it and adds a learnable LU-factorized linear map
            between layers.
        residual: Masked residual blocks in the MADEs.
        seed: Seed of the random orders.
        scale_bound: Largest absolute log-scale per layer, approached softly
            (:class:`~exactflow.transforms.AffineMap`); ``None``: unbounded.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.MAF(features=3, transforms=2, hidden=(16, 16))
        >>> flow.log_prob(torch.randn(10, 3)).shape
        torch.Size([10])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        scale_bound: float | None = 3.0,
    ) -> None:
        _check("MAF", features, transforms, permutation)
        steps = _autoregressive(
            AffineMap(scale_bound),
            features,
            context,
            transforms,
            hidden,
            permutation,
            residual,
            seed,
        )
        super().__init__(Compose(steps), StandardNormal(features))
        self.config = _config(
            features=features,
            context=context,
            transforms=transforms,
            hidden=hidden,
            permutation=permutation,
            residual=residual,
            seed=seed,
            scale_bound=scale_bound,
        )


class IAF(Flow):
    """Inverse autoregressive flow (Kingma et al. 2016).

    The layers of :class:`MAF`, each inverted: sampling computes
    ``x_i = z_i · exp(s_i(z_{<i}, c)) + t_i(z_{<i}, c)`` in one network pass per layer, while
    the density of data not drawn from the flow needs ``D`` passes per layer. The natural
    choice for variational posteriors, which are sampled and scored on their own samples
    (:meth:`~exactflow.Flow.rsample_and_log_prob` is one pass). Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` the MADEs read (0: unconditional).
        transforms: Number of autoregressive layers.
        hidden: Hidden widths of each MADE.
        permutation: ``"reverse"``, ``"random"`` or ``"lu"`` (see :class:`MAF`).
        residual: Masked residual blocks in the MADEs.
        seed: Seed of the random orders.
        scale_bound: Largest absolute log-scale per layer, approached softly
            (:class:`~exactflow.transforms.AffineMap`); ``None``: unbounded.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.IAF(features=3, transforms=2, hidden=(16, 16))
        >>> x, log_p = flow.rsample_and_log_prob((10,))
        >>> log_p.shape
        torch.Size([10])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        scale_bound: float | None = 3.0,
    ) -> None:
        _check("IAF", features, transforms, permutation)
        steps = _autoregressive(
            AffineMap(scale_bound),
            features,
            context,
            transforms,
            hidden,
            permutation,
            residual,
            seed,
            inverse=True,
        )
        super().__init__(Compose(steps), StandardNormal(features))
        self.config = _config(
            features=features,
            context=context,
            transforms=transforms,
            hidden=hidden,
            permutation=permutation,
            residual=residual,
            seed=seed,
            scale_bound=scale_bound,
        )


class NSF(Flow):
    """Neural spline flow (Durkan et al. 2019): rational-quadratic spline layers.

    Each layer maps every coordinate by a monotonic rational-quadratic spline with ``bins``
    bins on ``[-bound, bound]`` (identity, i.e. linear, tails outside;
    :class:`~exactflow.transforms.RationalQuadraticSpline`), whose knots come from a
    :class:`~exactflow.nn.MADE` (autoregressive, the default: one pass for the density, ``D``
    for sampling) or from the other half of the coordinates (``coupling=True``: one pass each
    way). ``log|det J| = Σ_layers Σ_i log g_i'(x_i)``. Base: standard normal.

    Args:
        features: Data width ``D`` (at least 2 with ``coupling=True``).
        context: Context width ``C`` the conditioners read (0: unconditional).
        transforms: Number of spline layers.
        hidden: Hidden widths of each conditioner.
        bins: Number of spline bins ``K``.
        bound: Half-width ``B`` of the spline interval ``[-B, B]``.
        coupling: Coupling layers instead of masked autoregressive ones.
        permutation: ``"reverse"``, ``"random"`` or ``"lu"`` (see :class:`NICE` for coupling
            layers, :class:`MAF` for autoregressive ones).
        residual: Residual conditioners.
        seed: Seed of the random masks or orders.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.NSF(features=2, transforms=2, hidden=(16, 16), coupling=True)
        >>> flow.sample((4,)).shape
        torch.Size([4, 2])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        bins: int = 8,
        bound: float = 5.0,
        coupling: bool = False,
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
    ) -> None:
        _check("NSF", features, transforms, permutation)
        spline = RationalQuadraticSpline(bins=bins, bound=bound, tails="linear")
        layers = _couplings if coupling else _autoregressive
        steps = layers(spline, features, context, transforms, hidden, permutation, residual, seed)
        super().__init__(Compose(steps), StandardNormal(features))
        self.config = _config(
            features=features,
            context=context,
            transforms=transforms,
            hidden=hidden,
            bins=bins,
            bound=bound,
            coupling=coupling,
            permutation=permutation,
            residual=residual,
            seed=seed,
        )


# --- variational-inference classics: planar, radial, Sylvester ---


def _vi_check(name: str, features: int, context: int, transforms: int) -> None:
    if context:
        raise ValueError(
            f"{name}: planar, radial and Sylvester steps take no context, got context={context};"
            " for a conditional variational posterior use ef.flows.IAF(features, context=...)"
        )
    if features < 1 or transforms < 1:
        raise ValueError(
            f"{name}: features and transforms must be >= 1, got {features} and {transforms}"
        )


class Planar(Flow):
    """Planar flow for variational inference (Rezende & Mohamed 2015).

    ``transforms`` planar steps ``x <- x + û·h(wᵀx + b)`` (:class:`~exactflow.transforms.Planar`,
    invertible by construction) applied from base to data: sampling,
    :meth:`~exactflow.Flow.rsample` and :meth:`~exactflow.Flow.rsample_and_log_prob` run the
    closed form, with ``log|det|`` for free. ``log_prob`` of other data inverts each step
    numerically (a scalar Newton solve, relative tolerance 1e-12 in float64), with exact
    gradients. Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Must be 0: the steps are unconditional (use :class:`IAF` for a conditional
            posterior).
        transforms: Number of planar steps.
        hidden: Accepted for the shared preset signature and unused: a planar step has no
            hidden layer to size (it is a one-unit residual map).
        activation: ``"tanh"`` (the paper's) or ``"leaky_relu"``.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.Planar(features=2, transforms=4)
        >>> x, log_q = flow.rsample_and_log_prob((10,))
        >>> log_q.shape
        torch.Size([10])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 8,
        hidden: object = None,
        activation: str = "tanh",
    ) -> None:
        _vi_check("Planar", features, context, transforms)
        steps = [Inverse(PlanarStep(features, activation)) for _ in range(transforms)]
        super().__init__(Compose(steps), StandardNormal(features))
        self.config = {
            "features": features,
            "context": context,
            "transforms": transforms,
            "activation": activation,
        }


class Radial(Flow):
    """Radial flow for variational inference (Rezende & Mohamed 2015).

    ``transforms`` radial steps ``x <- x + β/(α + r)·(x - x₀)``, ``r = ‖x - x₀‖``
    (:class:`~exactflow.transforms.Radial`, invertible by construction) applied from base to
    data. Both directions are closed form (the inverse radius solves a quadratic). Base:
    standard normal.

    Args:
        features: Data width ``D``.
        context: Must be 0: the steps are unconditional (use :class:`IAF` for a conditional
            posterior).
        transforms: Number of radial steps.
        hidden: Accepted for the shared preset signature and unused: a radial step has no
            hidden layer.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.Radial(features=2, transforms=4)
        >>> flow.log_prob(torch.randn(10, 2)).shape
        torch.Size([10])

    """

    def __init__(
        self, features: int, context: int = 0, transforms: int = 8, hidden: object = None
    ) -> None:
        _vi_check("Radial", features, context, transforms)
        steps = [Inverse(RadialStep(features)) for _ in range(transforms)]
        super().__init__(Compose(steps), StandardNormal(features))
        self.config = {"features": features, "context": context, "transforms": transforms}


class Sylvester(Flow):
    """Sylvester normalizing flow for variational inference (van den Berg et al. 2018).

    ``transforms`` steps ``x <- x + Q R₁ tanh(R₂ Qᵀ x + b)``
    (:class:`~exactflow.transforms.Sylvester`, invertible by construction) applied from base
    to data: sampling and :meth:`~exactflow.Flow.rsample_and_log_prob` run the closed form;
    ``log_prob`` of other data inverts each step by triangular back-substitution of scalar
    Newton solves (relative tolerance 1e-12 in float64), with exact gradients. Base: standard
    normal.

    Args:
        features: Data width ``D``.
        context: Must be 0: the steps are unconditional (use :class:`IAF` for a conditional
            posterior).
        transforms: Number of Sylvester steps.
        hidden: Number ``M`` of hidden units of each step, i.e. columns of ``Q``
            (``1 <= M <= D``); ``None`` means ``D``.
        kind: ``"orthogonal"`` (``Q`` from a QR decomposition), ``"householder"`` (``M``
            Householder reflections) or ``"triangular"`` (``Q`` the identity and the reversal,
            alternating between steps).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.Sylvester(features=4, transforms=2, hidden=2)
        >>> flow.sample((3,)).shape
        torch.Size([3, 4])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 4,
        hidden: int | None = None,
        kind: str = "orthogonal",
    ) -> None:
        _vi_check("Sylvester", features, context, transforms)
        if hidden is not None and not isinstance(hidden, int):
            raise TypeError(
                "Sylvester: hidden is the number M of hidden units per step, an int or None;"
                f" got {hidden!r}"
            )
        steps = [
            Inverse(SylvesterStep(features, hidden, kind, flip=kind == "triangular" and k % 2 == 1))
            for k in range(transforms)
        ]
        super().__init__(Compose(steps), StandardNormal(features))
        self.config = {
            "features": features,
            "context": context,
            "transforms": transforms,
            "hidden": hidden,
            "kind": kind,
        }
