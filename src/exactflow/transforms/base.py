"""The transform protocol, composition, inversion and shape changes.

Every transform is an :class:`torch.nn.Module` with two methods:

* ``forward(x, context=None) -> (y, ladj)`` — the normalizing direction (data -> base), where
  ``ladj = log|det ∂y/∂x|`` has one value per event (shape ``x.shape[:-event_ndim]``);
* ``inverse(y, context=None) -> (x, ladj)`` — the generative direction (base -> data), whose
  ``ladj = log|det ∂x/∂y|`` is the negative of the forward one at the matching point.

A transform may change the shape of an event: it reads ``event_ndim`` trailing dimensions,
writes ``event_ndim_out`` of them, and maps event shapes with :meth:`Transform.forward_shape` /
:meth:`Transform.inverse_shape`. Everything else (composition, inversion, flows) is built on
these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import constraints

__all__ = ["Compose", "Inverse", "Transform"]


class Transform(nn.Module):
    """Base class of every invertible transform.

    **Exact and estimated log-determinants.** A transform with ``exact_ladj = True`` (the
    default) always returns the exact ``log|det J|``. One whose log-determinant is expensive
    sets ``exact_ladj = False``: while ``self.training`` is true it may return an *unbiased
    stochastic estimate* (``E[ladj] = log|det J|``, e.g. a Hutchinson trace estimate), and
    while ``self.training`` is false it must return the exact value to the tolerance its
    docstring states. Every reported density is computed in eval mode.

    Attributes:
        event_ndim: How many trailing dimensions form one input event (1 for vectors
            ``(*, D)``, 3 for images ``(*, C, H, W)``). ``ladj`` has shape
            ``x.shape[:-event_ndim]``.
        event_ndim_out: How many trailing dimensions form one output event (the inverse's
            input); ``event_ndim`` unless the transform changes the event's rank.
        event_shape: The input event shape, for a transform built for one (a reshape, a
            coupling layer's mask); ``None`` for any shape with ``event_ndim`` dimensions.
        exact_ladj: Whether the train-mode ``ladj`` is exact (see above).
        domain: The set the forward direction accepts (a ``torch.distributions.constraints``
            object). ``Flow.log_prob`` rejects data outside it.
        codomain: The set the inverse direction accepts.
        context: Width of the context vector the transform is conditioned on (0: none).

    """

    event_ndim: int = 1
    event_shape: torch.Size | None = None
    exact_ladj: bool = True
    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real
    context: int = 0

    @property
    def event_ndim_out(self) -> int:
        """Trailing dimensions of one output event (the inverse direction's input)."""
        return self.event_ndim

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        """Shape of the output event for an input event of ``event_shape`` (default: the same).

        Raises ``ValueError`` when the shape does not fit the transform. A transform that
        changes the event's shape overrides this and :meth:`inverse_shape`.
        """
        return _check_shape(self, torch.Size(event_shape), self.event_ndim)

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        """Shape of the input event for an output event of ``event_shape`` (default: the same)."""
        return _check_shape(self, torch.Size(event_shape), self.event_ndim_out)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to base: return ``(y, log|det ∂y/∂x|)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map base to data: return ``(x, log|det ∂x/∂y|)``."""
        raise NotImplementedError


def _check_shape(t: Transform, shape: torch.Size, ndim: int) -> torch.Size:
    """``shape``, after checking it has ``ndim`` dimensions and ends in ``t.event_shape``."""
    if len(shape) < ndim:
        raise ValueError(
            f"{type(t).__name__} acts on events of {ndim} dimension(s), got event shape"
            f" {tuple(shape)}"
        )
    fixed = t.event_shape
    if fixed is not None and shape[len(shape) - len(fixed) :] != fixed:
        raise ValueError(
            f"{type(t).__name__} was built for events of shape {tuple(fixed)}, got {tuple(shape)}"
        )
    return shape


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
        self.event_ndim = transform.event_ndim_out
        self.exact_ladj = transform.exact_ladj
        self.event_shape = None
        if transform.event_shape is not None:
            self.event_shape = transform.forward_shape(transform.event_shape)
        self.domain = transform.codomain
        self.codomain = transform.domain
        self.context = transform.context

    @property
    def event_ndim_out(self) -> int:
        return self.transform.event_ndim

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return self.transform.inverse_shape(event_shape)

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return self.transform.forward_shape(event_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(y, context)


class Compose(Transform):
    """A chain of transforms; ``transforms[0]`` is applied first in the forward direction.

    The log-determinants add up: ``ladj = Σ_k log|det J_k|``, always of the batch shape. Steps
    may read events of different ranks: a step reading fewer trailing dimensions than the
    chain's event has there (an elementwise vector map on an image) has its ``ladj`` summed
    over the rest. Shape-changing steps (:class:`~exactflow.transforms.Reshape`, ``Flatten``,
    ...) change the event between steps. :meth:`forward_shape` threads a shape through every
    step and names the step that does not fit; the constructor does so from the first step
    built for one event shape (``event_shape`` not ``None``) on.

    Args:
        transforms: The steps, in data -> base order.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> t = T.Compose([T.ActNorm(2, event_ndim=3), T.Flatten((2, 3, 3)), T.Affine(18)])
        >>> y, ladj = t(torch.randn(5, 2, 3, 3))
        >>> y.shape, ladj.shape
        (torch.Size([5, 18]), torch.Size([5]))
        >>> t.forward_shape((2, 3, 3))
        torch.Size([18])

    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        if len(self.transforms) == 0:
            raise ValueError("Compose needs at least one transform, got none")
        for k, t in enumerate(self.transforms):
            if not isinstance(t, Transform):
                raise TypeError(f"Compose: step {k} must be a Transform, got {type(t).__name__}")
        # The chain's event rank, found from the last step back (as torch.distributions does).
        ndim = self.transforms[-1].event_ndim_out
        for t in reversed(self.transforms):
            ndim = max(ndim + t.event_ndim - t.event_ndim_out, t.event_ndim)
        self.event_ndim = ndim
        # Trailing dimensions of each step's ladj that belong to the event: summed away.
        self._extra: list[int] = []
        for t in self.transforms:
            self._extra.append(ndim - t.event_ndim)
            ndim += t.event_ndim_out - t.event_ndim
        self._event_ndim_out = ndim
        self.exact_ladj = all(t.exact_ladj for t in self.transforms)
        self.domain = self.transforms[0].domain
        self.codomain = self.transforms[-1].codomain
        self.context = max(t.context for t in self.transforms)
        self._check_fit()

    def _check_fit(self) -> None:
        """Check the steps fit, from the first one built for the chain's whole event on.

        That step's shape also fixes the chain's ``event_shape`` (traced back to the input). A
        step built for fewer dimensions than the chain's event has there fixes only part of it.
        """
        fixed = [
            k
            for k, t in enumerate(self.transforms)
            if t.event_shape is not None and self._extra[k] == 0
        ]
        if not fixed:
            return
        first = fixed[0]
        shape = self.transforms[first].event_shape
        for k in range(first, len(self.transforms)):
            shape = self._step_shape(k, self.transforms[k], shape)
        shape = self.transforms[first].event_shape
        for k in reversed(range(first)):
            shape = self._step_shape(k, self.transforms[k], shape, inverse=True)
        self.event_shape = shape

    @staticmethod
    def _step_shape(k: int, t: Transform, shape: torch.Size, inverse: bool = False) -> torch.Size:
        try:
            return t.inverse_shape(shape) if inverse else t.forward_shape(shape)
        except ValueError as error:
            direction = "output" if inverse else "input"
            raise ValueError(
                f"Compose: step {k} ({type(t).__name__}) does not fit its {direction} event"
                f" shape {tuple(shape)}: {error}"
            ) from None

    @property
    def event_ndim_out(self) -> int:
        return self._event_ndim_out

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        shape = torch.Size(event_shape)
        for k, t in enumerate(self.transforms):
            shape = self._step_shape(k, t, shape)
        return shape

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        shape = torch.Size(event_shape)
        for k in reversed(range(len(self.transforms))):
            shape = self._step_shape(k, self.transforms[k], shape, inverse=True)
        return shape

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = None
        for t, extra in zip(self.transforms, self._extra, strict=True):
            x, ladj = t(x, context)
            ladj = sum_events(ladj, extra)
            total = ladj if total is None else total + ladj
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = None
        for t, extra in zip(reversed(self.transforms), reversed(self._extra), strict=True):
            y, ladj = t.inverse(y, context)
            ladj = sum_events(ladj, extra)
            total = ladj if total is None else total + ladj
        return y, total


def sum_events(elementwise: Tensor, event_ndim: int = 1) -> Tensor:
    """Sum over the last ``event_ndim`` dimensions: ``(*, *event) -> (*)`` (none for 0)."""
    if event_ndim == 0:
        return elementwise
    return elementwise.sum(dim=tuple(range(-event_ndim, 0)))


def zeros_ladj(x: Tensor, event_ndim: int = 1) -> Tensor:
    """A zero log-determinant with the batch shape of ``x`` (for volume-preserving maps)."""
    return x.new_zeros(x.shape[: x.dim() - event_ndim])


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
