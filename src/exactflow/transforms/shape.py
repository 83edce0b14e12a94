"""Shape-changing transforms: reshape and flatten events, volume preserving (``ladj = 0``).

They let one :class:`~exactflow.transforms.Compose` hold image steps ``(*B, C, H, W)`` and vector
steps ``(*B, D)``; the batch shape is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Transform

__all__ = ["Flatten", "Reshape"]


def _as_event_shape(name: str, shape: Sequence[int]) -> torch.Size:
    shape = torch.Size(shape)
    if len(shape) == 0 or any(n < 1 for n in shape):
        raise ValueError(f"{name}: shape must be non-empty with sizes >= 1, got {tuple(shape)}")
    return shape


def _check_event(name: str, x: Tensor, shape: torch.Size) -> torch.Size:
    """The batch shape of ``x``, after checking its trailing dimensions are ``shape``."""
    n = len(shape)
    if x.dim() < n or x.shape[x.dim() - n :] != shape:
        raise ValueError(
            f"{name}: expected events of shape {tuple(shape)}, got input of shape {tuple(x.shape)}"
        )
    return x.shape[: x.dim() - n]


class Reshape(Transform):
    """Reshape every event: ``(*B, *in_shape) -> (*B, *out_shape)``; ``log|det J| = 0``.

    A relabelling of the coordinates (row-major order is kept), so volume preserving.

    Args:
        in_shape: Event shape of the input.
        out_shape: Event shape of the output (same number of entries).

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Reshape((4, 3), (2, 6))
        >>> y, ladj = t(torch.randn(5, 4, 3))
        >>> y.shape, ladj.shape
        (torch.Size([5, 2, 6]), torch.Size([5]))

    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape = _as_event_shape("Reshape", in_shape)
        self.out_shape = _as_event_shape("Reshape", out_shape)
        if self.in_shape.numel() != self.out_shape.numel():
            raise ValueError(
                f"Reshape: {tuple(self.in_shape)} has {self.in_shape.numel()} entries but"
                f" {tuple(self.out_shape)} has {self.out_shape.numel()}"
            )
        self.event_shape = self.in_shape
        self.event_ndim = len(self.in_shape)

    @property
    def event_ndim_out(self) -> int:
        return len(self.out_shape)

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("Reshape", event_shape, self.in_shape, self.out_shape)

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("Reshape", event_shape, self.out_shape, self.in_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = _check_event("Reshape", x, self.in_shape)
        return x.reshape(batch + self.out_shape), x.new_zeros(batch)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = _check_event("Reshape", y, self.out_shape)
        return y.reshape(batch + self.in_shape), y.new_zeros(batch)

    def extra_repr(self) -> str:
        return f"in_shape={tuple(self.in_shape)}, out_shape={tuple(self.out_shape)}"


class Flatten(Transform):
    """Flatten every event to a vector: ``(*B, *shape) -> (*B, D)``, ``D = ∏ shape``; ladj 0.

    The step between image transforms ``(*B, C, H, W)`` and vector transforms ``(*B, D)``;
    its inverse unflattens.

    Args:
        shape: Event shape of the input.

    Example:
        >>> import torch, exactflow as ef
        >>> y, ladj = ef.transforms.Flatten((2, 4, 4))(torch.randn(3, 2, 4, 4))
        >>> y.shape, ladj.shape
        (torch.Size([3, 32]), torch.Size([3]))

    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape = _as_event_shape("Flatten", shape)
        self.out_shape = torch.Size((self.in_shape.numel(),))
        self.event_shape = self.in_shape
        self.event_ndim = len(self.in_shape)

    @property
    def event_ndim_out(self) -> int:
        return 1

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("Flatten", event_shape, self.in_shape, self.out_shape)

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return _expect_shape("Flatten", event_shape, self.out_shape, self.in_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = _check_event("Flatten", x, self.in_shape)
        return x.flatten(len(batch)), x.new_zeros(batch)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = _check_event("Flatten", y, self.out_shape)
        return y.unflatten(-1, self.in_shape), y.new_zeros(batch)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.in_shape)}"


def _expect_shape(
    name: str, event_shape: Sequence[int], expected: torch.Size, result: torch.Size
) -> torch.Size:
    """``event_shape`` with its trailing ``expected`` replaced by ``result``; else ValueError.

    Leading dimensions are kept: a reshape of rows inside a larger event reshapes every row.
    """
    shape = torch.Size(event_shape)
    lead = len(shape) - len(expected)
    if lead < 0 or shape[lead:] != expected:
        raise ValueError(f"{name}: expected event shape {tuple(expected)}, got {tuple(shape)}")
    return shape[:lead] + result
