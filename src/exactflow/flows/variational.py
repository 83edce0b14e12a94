"""Presets of the classic variational-inference flows: planar, radial and Sylvester."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import Compose, Inverse
from ..transforms.bounds import BoundsLike
from ..transforms.sylvester import Sylvester as SylvesterStep
from ..transforms.variational import Planar as PlanarStep
from ..transforms.variational import Radial as RadialStep
from .chains import config_of

__all__ = ["Planar", "Radial", "Sylvester"]

_HIDDEN = (64,)


_OLD_STEP = re.compile(r"transform\.transforms\.(\d+)\.transform\.(\w+)")


def _stack_old_steps(
    name: str, weights: dict[str, Tensor], transforms: int, names: tuple[str, ...]
) -> dict[str, Tensor]:
    """Weights of a version-1 preset (one transform per step) in the stacked layout.

    Version 1 held step ``k`` (applied ``k``-th from the base) as
    ``transform.transforms.{K-1-k}``; the stacked transform applies its index ``k`` ``k``-th in
    the same direction, so the old steps are stacked in reverse order.
    """
    steps: dict[str, dict[int, Tensor]] = {key: {} for key in names}
    for key, value in weights.items():
        match = _OLD_STEP.fullmatch(key)
        if match is None or match[2] not in steps:
            raise ValueError(
                f"its {name} weights have an unexpected entry {key!r}: a {name} preset with a"
                " context saved by exactflow 0.1 cannot be mapped onto this version's stacked"
                " steps (its per-step context networks are one network now)"
            )
        steps[match[2]][int(match[1])] = value
    if any(sorted(found) != list(range(transforms)) for found in steps.values()):
        raise ValueError(f"its {name} weights do not hold {transforms} complete steps")
    prefix = "transform.transforms.0.transform."
    if transforms == 1:
        return {prefix + key: found[0] for key, found in steps.items()}
    return {
        prefix + key: torch.stack([found[transforms - 1 - k] for k in range(transforms)])
        for key, found in steps.items()
    }


def _vi_check(name: str, features: int, context: int, transforms: int, hidden: object) -> tuple:
    """Check the shared keywords; return the context network's hidden widths as a tuple."""
    if not isinstance(context, int) or context < 0:
        raise ValueError(f"{name}: context must be an int >= 0, got {context!r}")
    if features < 1 or transforms < 1:
        raise ValueError(
            f"{name}: features and transforms must be >= 1, got {features} and {transforms}"
        )
    widths = _HIDDEN if hidden is None else hidden
    if not isinstance(widths, Sequence) or not all(isinstance(h, int) and h >= 1 for h in widths):
        raise TypeError(
            f"{name}: the context network's hidden widths must be a sequence of positive ints,"
            f" got {hidden!r}"
        )
    return tuple(widths)


class Planar(Flow):
    """Planar flow for variational inference (Rezende & Mohamed 2015).

    ``transforms`` planar steps ``x <- x + û·h(wᵀx + b)`` (:class:`~exactflow.transforms.Planar`,
    invertible by construction; one transform with the steps' parameters stacked, ``steps=``)
    applied from base to data: sampling,
    :meth:`~exactflow.Flow.rsample` and :meth:`~exactflow.Flow.rsample_and_log_prob` run the
    closed form, with ``log|det|`` for free. ``log_prob`` of other data inverts each step
    numerically (a scalar Newton solve to a residual of 1e-12 relative in float64, see
    :func:`~exactflow.numerics.solve_increasing`), with exact gradients; a solve that does
    not converge raises ``FloatingPointError`` naming the step. Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` (0: unconditional). With ``C > 0`` the steps' ``w``,
            ``u``, ``b`` come from the context through one network (amortized, as in the VAE
            posteriors of van den Berg et al. 2018).
        transforms: Number of planar steps.
        hidden: Hidden widths of the context network (``context > 0`` only);
            ``None``: ``(64,)``.
        activation: ``"tanh"`` (the paper's) or ``"leaky_relu"``.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.Planar(features=2, transforms=4)
        >>> x, log_q = flow.rsample_and_log_prob((10,))
        >>> log_q.shape
        torch.Size([10])
        >>> posterior = ef.flows.Planar(features=2, context=3, transforms=2, hidden=(16,))
        >>> posterior.sample((5,), context=torch.randn(4, 3)).shape
        torch.Size([5, 4, 2])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 8,
        hidden: Sequence[int] | None = None,
        activation: str = "tanh",
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        config = config_of(locals())
        widths = _vi_check("Planar", features, context, transforms, hidden)
        steps = PlanarStep(features, activation, context=context, hidden=widths, steps=transforms)
        base = StandardNormal(features)
        super().__init__(
            Compose([Inverse(steps)]), base, validate, bounds=bounds, embedding=embedding
        )
        self.config = config

    def upgrade_weights(self, weights: dict[str, Tensor], version: int) -> dict[str, Tensor]:
        """Version-1 weights (one transform per step) stacked into this version's layout."""
        if version >= 2:
            return weights
        return _stack_old_steps("Planar", weights, self.config["transforms"], ("w", "u", "b"))


class Radial(Flow):
    """Radial flow for variational inference (Rezende & Mohamed 2015).

    ``transforms`` radial steps ``x <- x + β/(α + r)·(x - x₀)``, ``r = ‖x - x₀‖``
    (:class:`~exactflow.transforms.Radial`, invertible by construction; one transform with the
    steps' parameters stacked, ``steps=``) applied from base to data. Both directions are
    closed form (the inverse radius solves a quadratic). Each step starts as a mild
    contraction or expansion around a random centre (the initialization of
    :class:`~exactflow.transforms.Radial`). Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` (0: unconditional). With ``C > 0`` the steps' ``z₀``,
            ``α``, ``β`` come from the context through one network (amortized).
        transforms: Number of radial steps.
        hidden: Hidden widths of the context network (``context > 0`` only);
            ``None``: ``(64,)``.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.Radial(features=2, transforms=4)
        >>> flow.log_prob(torch.randn(10, 2)).shape
        torch.Size([10])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 8,
        hidden: Sequence[int] | None = None,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        config = config_of(locals())
        widths = _vi_check("Radial", features, context, transforms, hidden)
        steps = RadialStep(features, context=context, hidden=widths, steps=transforms)
        base = StandardNormal(features)
        super().__init__(
            Compose([Inverse(steps)]), base, validate, bounds=bounds, embedding=embedding
        )
        self.config = config

    def upgrade_weights(self, weights: dict[str, Tensor], version: int) -> dict[str, Tensor]:
        """Version-1 weights stacked into this version's layout, with ``α`` kept.

        Version 1 had ``α = softplus(a)``; this version has ``α = |a|``, so ``a`` becomes
        ``softplus(a)``.
        """
        if version >= 2:
            return weights
        names = ("center", "alpha_raw", "beta_raw")
        stacked = _stack_old_steps("Radial", weights, self.config["transforms"], names)
        key = "transform.transforms.0.transform.alpha_raw"
        stacked[key] = torch.nn.functional.softplus(stacked[key])
        return stacked


class Sylvester(Flow):
    """Sylvester normalizing flow for variational inference (van den Berg et al. 2018).

    ``transforms`` steps ``x <- x + Q R₁ tanh(R₂ Qᵀ x + b)``
    (:class:`~exactflow.transforms.Sylvester`, invertible by construction) applied from base
    to data: sampling and :meth:`~exactflow.Flow.rsample_and_log_prob` run the closed form;
    ``log_prob`` of other data inverts each step by triangular back-substitution of scalar
    Newton solves (residual 1e-12 relative in float64), with exact gradients; a solve that
    does not converge raises ``FloatingPointError`` naming the step. Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` (0: unconditional). With ``C > 0`` each step's ``R₁``,
            ``R₂``, ``b`` and ``Q``'s free parameters come from the context through a network
            (amortized, the VAE posterior of van den Berg et al. 2018).
        transforms: Number of Sylvester steps.
        hidden: Number ``M`` of hidden units of each step, i.e. columns of ``Q``
            (``1 <= M <= D``); ``None`` means ``D``. (Here ``hidden`` keeps its meaning of
            the step's own hidden units; the context network is sized by ``context_hidden``.)
        kind: ``"orthogonal"`` (``Q`` from a QR decomposition), ``"householder"`` (``M``
            Householder reflections) or ``"triangular"`` (``Q`` the identity and the reversal,
            alternating between steps).
        context_hidden: Hidden widths of each step's context network (``context > 0`` only).
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).

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
        context_hidden: Sequence[int] = _HIDDEN,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        config = config_of(locals())
        widths = _vi_check("Sylvester", features, context, transforms, context_hidden)
        if hidden is not None and not isinstance(hidden, int):
            raise TypeError(
                "Sylvester: hidden is the number M of hidden units per step, an int or None;"
                f" got {hidden!r} (the context network's widths are context_hidden)"
            )
        steps = []
        for k in range(transforms):
            flip = kind == "triangular" and k % 2 == 1
            step = SylvesterStep(features, hidden, kind, flip=flip, context=context, hidden=widths)
            steps.append(Inverse(step))
        base = StandardNormal(features)
        super().__init__(Compose(steps), base, validate, bounds=bounds, embedding=embedding)
        self.config = config
