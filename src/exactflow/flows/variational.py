"""Presets of the classic variational-inference flows: planar, radial and Sylvester."""

from __future__ import annotations

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import Compose, Inverse
from ..transforms.variational import Planar as PlanarStep
from ..transforms.variational import Radial as RadialStep
from ..transforms.variational import Sylvester as SylvesterStep

__all__ = ["Planar", "Radial", "Sylvester"]


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
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).

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
        validate: bool = True,
    ) -> None:
        _vi_check("Planar", features, context, transforms)
        steps = [Inverse(PlanarStep(features, activation)) for _ in range(transforms)]
        super().__init__(Compose(steps), StandardNormal(features), validate=validate)
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
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).

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
        hidden: object = None,
        validate: bool = True,
    ) -> None:
        _vi_check("Radial", features, context, transforms)
        steps = [Inverse(RadialStep(features)) for _ in range(transforms)]
        super().__init__(Compose(steps), StandardNormal(features), validate=validate)
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
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).

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
        validate: bool = True,
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
        super().__init__(Compose(steps), StandardNormal(features), validate=validate)
        self.config = {
            "features": features,
            "context": context,
            "transforms": transforms,
            "hidden": hidden,
            "kind": kind,
        }
