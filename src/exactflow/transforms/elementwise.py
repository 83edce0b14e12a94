"""Elementwise transforms: maps that act on each coordinate separately.

Two kinds live here:

* **Elementwise maps** (:class:`ElementwiseMap`): monotonic scalar maps whose parameters come from
  outside, ``params`` of shape ``(*, D, P)``. Coupling and autoregressive layers take any of them
  together with a conditioner network that predicts ``params``.
* **Elementwise transforms** with their own parameters (or none): :class:`Affine`,
  :class:`Sigmoid`, :class:`Logit`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import OpenInterval, Transform, open_unit_interval, sum_events

__all__ = ["Additive", "Affine", "AffineMap", "ElementwiseMap", "Logit", "Sigmoid"]


class ElementwiseMap:
    """A monotonic scalar map applied to every coordinate, with externally supplied parameters.

    Subclasses set ``params`` (parameters per coordinate) and implement :meth:`forward` and
    :meth:`inverse`; both return the per-coordinate ``log|dy/dx|`` (resp. ``log|dx/dy|``) of
    shape ``(*, D)``, which the caller sums.
    """

    params: int = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (*, D)`` by ``params (*, D, P)``; return ``(y, log|dy/dx|)``, each (*, D)."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward`: return ``(x, log|dx/dy|)``, both ``(*, D)``."""
        raise NotImplementedError

    def identity(self) -> Tensor:
        """Parameters ``(P,)`` for which the map is the identity (used to initialize layers)."""
        return torch.zeros(self.params)

    def config(self) -> dict:
        """The constructor arguments, as JSON-serializable values."""
        return {}


class Additive(ElementwiseMap):
    """Shift map ``y = x + t`` (NICE; Dinh et al. 2014). Volume preserving: ``log|dy/dx| = 0``."""

    params = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params[..., 0], torch.zeros_like(x)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params[..., 0], torch.zeros_like(y)


class AffineMap(ElementwiseMap):
    """Affine map ``y = x · exp(s) + t`` with a softly bounded log-scale.

    The raw parameter ``a`` becomes ``s = bound · tanh(a / bound)``: the identity near zero
    (``ds/da = 1`` at ``a = 0``) and never beyond ``±bound``, which keeps deep coupling and
    autoregressive stacks from blowing up early in training (RealNVP; Dinh et al. 2017).
    ``log|dy/dx| = s``.

    Args:
        bound: Largest absolute log-scale; ``None`` leaves it unbounded (``s = a``).

    """

    params = 2

    def __init__(self, bound: float | None = 3.0) -> None:
        if bound is not None and not bound > 0:
            raise ValueError(f"AffineMap: bound must be positive or None, got {bound}")
        self.bound = bound

    def log_scale(self, raw: Tensor) -> Tensor:
        """The bounded log-scale ``s`` for raw parameters ``a``."""
        if self.bound is None:
            return raw
        return torch.tanh(raw / self.bound) * self.bound

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        s = self.log_scale(params[..., 1])
        return torch.addcmul(params[..., 0], x, s.exp()), s

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        s = self.log_scale(params[..., 1])
        return (y - params[..., 0]) * torch.exp(-s), -s

    def config(self) -> dict:
        return {"bound": self.bound}


class Affine(Transform):
    """Learnable elementwise affine transform ``y = x · exp(s) + t``.

    The scale is stored as its logarithm ``s`` so it stays positive and moves smoothly across
    orders of magnitude; ``log|det J| = Σ_i s_i``. Starts as the identity.

    Args:
        features: Size of the last dimension ``D``.

    Shapes: ``x (*, D) -> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> y, ladj = ef.transforms.Affine(3)(torch.randn(4, 3))

    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = torch.addcmul(self.shift, x, self.log_scale.exp())
        return y, self.log_scale.sum().expand(x.shape[:-1])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (y - self.shift) * torch.exp(-self.log_scale)
        return x, (-self.log_scale.sum()).expand(y.shape[:-1])


def _log_sigmoid_slope(x: Tensor) -> Tensor:
    """``log σ'(x) = log σ(x) + log σ(-x)``, computed without cancellation."""
    return -F.softplus(-x) - F.softplus(x)


class Sigmoid(Transform):
    """Logistic sigmoid ``y = σ(x) = 1 / (1 + e^{-x})``, mapping the reals onto ``(0, 1)``.

    ``log|dy/dx| = log σ(x) + log σ(-x)``. The inverse accepts ``y`` in the open interval only.

    Args:
        event_ndim: Trailing dimensions that form one event (1 for vectors, 3 for images).

    """

    codomain = open_unit_interval

    def __init__(self, event_ndim: int = 1) -> None:
        super().__init__()
        self.event_ndim = event_ndim

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(x), sum_events(_log_sigmoid_slope(x), self.event_ndim)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = torch.logit(y)
        return x, -sum_events(_log_sigmoid_slope(x), self.event_ndim)


class Logit(Transform):
    """Logit with an optional squeeze: ``u = α + (1 - 2α) x``, ``y = log(u / (1 - u))``.

    The usual preprocessing for bounded data such as dequantized images (RealNVP; Dinh et al.
    2017): with ``α > 0`` the edges 0 and 1 map to finite values.
    ``log|dy/dx| = log(1 - 2α) - log u - log(1 - u)``.

    Domain: the open interval ``(-α/(1 - 2α), (1 - α)/(1 - 2α))`` where ``u ∈ (0, 1)``, which
    the map takes onto the whole real line: ``(0, 1)`` for ``α = 0``, a little wider than
    ``[0, 1]`` for ``α > 0``. A flow that starts with it is a normalized density on that
    interval; data in ``[0, 1]`` lie inside it, and its samples may land just outside ``[0, 1]``.

    Args:
        alpha: Squeeze ``α`` in ``[0, 0.5)``.
        event_ndim: Trailing dimensions that form one event.

    """

    def __init__(self, alpha: float = 0.0, event_ndim: int = 1) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"Logit: alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha
        self.event_ndim = event_ndim
        margin = alpha / (1 - 2 * alpha)
        self.domain = OpenInterval(-margin, 1 + margin) if alpha > 0 else open_unit_interval

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.logit(u)
        log_slope = math.log1p(-2 * self.alpha) - _log_sigmoid_slope(y)
        return y, sum_events(log_slope, self.event_ndim)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        log_slope = _log_sigmoid_slope(y) - math.log1p(-2 * self.alpha)
        return x, sum_events(log_slope, self.event_ndim)
