"""The transform protocol, composition and inversion.

Every transform is an :class:`torch.nn.Module` with two methods:

* ``forward(x, context=None) -> (y, ladj)`` — the normalizing direction (data -> base), where
  ``ladj = log|det ∂y/∂x|`` has one value per event (shape ``x.shape[:-event_ndim]``);
* ``inverse(y, context=None) -> (x, ladj)`` — the generative direction (base -> data), whose
  ``ladj = log|det ∂x/∂y|`` is the negative of the forward one at the matching point.

Everything else (composition, inversion, flows) is built on these two methods.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.distributions import constraints

__all__ = ["Compose", "Inverse", "Transform"]


class Transform(nn.Module):
    """Base class of every invertible transform.

    Attributes:
        event_ndim: How many trailing dimensions form one event (1 for vectors ``(*, D)``,
            3 for images ``(*, C, H, W)``). ``ladj`` has shape ``x.shape[:-event_ndim]``.
        domain: The set the forward direction accepts (a ``torch.distributions.constraints``
            object). ``Flow.log_prob`` rejects data outside it.
        codomain: The set the inverse direction accepts.
        context: Width of the context vector the transform is conditioned on (0: none).

    """

    event_ndim: int = 1
    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real
    context: int = 0

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to base: return ``(y, log|det ∂y/∂x|)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map base to data: return ``(x, log|det ∂x/∂y|)``."""
        raise NotImplementedError


class Inverse(Transform):
    """The inverse of a transform: its ``forward`` is ``t.inverse`` and vice versa.

    Args:
        transform: The transform to invert.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Inverse(ef.transforms.Sigmoid())
        >>> y, ladj = t(torch.tensor([[0.25]]))

    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.transform = transform
        self.event_ndim = transform.event_ndim
        self.domain = transform.codomain
        self.codomain = transform.domain
        self.context = transform.context

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(y, context)


class Compose(Transform):
    """A chain of transforms; ``transforms[0]`` is applied first in the forward direction.

    The log-determinants add up: ``ladj = Σ_k log|det J_k|``.

    Args:
        transforms: The steps, in data -> base order. They must agree on ``event_ndim``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Compose([ef.transforms.Affine(2), ef.transforms.Reverse(2)])
        >>> y, ladj = t(torch.randn(5, 2))
        >>> ladj.shape
        torch.Size([5])

    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        if len(self.transforms) == 0:
            raise ValueError("Compose needs at least one transform, got none")
        ndims = {t.event_ndim for t in self.transforms}
        if len(ndims) != 1:
            raise ValueError(f"Compose: the steps disagree on event_ndim, got {sorted(ndims)}")
        self.event_ndim = ndims.pop()
        self.domain = self.transforms[0].domain
        self.codomain = self.transforms[-1].codomain
        self.context = max(t.context for t in self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = None
        for t in self.transforms:
            x, ladj = t(x, context)
            total = ladj if total is None else total + ladj
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = None
        for t in reversed(self.transforms):
            y, ladj = t.inverse(y, context)
            total = ladj if total is None else total + ladj
        return y, total


def sum_events(elementwise: Tensor, event_ndim: int = 1) -> Tensor:
    """Sum a per-coordinate log-derivative over the event dimensions: ``(*, D) -> (*)``."""
    return elementwise.sum(dim=tuple(range(-event_ndim, 0)))


def zeros_ladj(x: Tensor, event_ndim: int = 1) -> Tensor:
    """A zero log-determinant with the batch shape of ``x`` (for volume-preserving maps)."""
    return x.new_zeros(x.shape[: x.dim() - event_ndim])


def batch_shape_of(x: Tensor, event_ndim: int = 1) -> torch.Size:
    """The batch part of ``x``'s shape."""
    return x.shape[: x.dim() - event_ndim]


class OpenInterval(constraints.Constraint):
    """The open interval ``(lower, upper)``, elementwise (torch ships only closed ones)."""

    def __init__(self, lower: float, upper: float) -> None:
        super().__init__()
        self.lower = lower
        self.upper = upper

    def check(self, value: Tensor) -> Tensor:
        return (value > self.lower) & (value < self.upper)

    def __repr__(self) -> str:
        return f"OpenInterval(lower={self.lower}, upper={self.upper})"


open_unit_interval = OpenInterval(0.0, 1.0)
