"""Bounded columns: maps from each column's interval onto the real line.

A flow with ``bounds=`` starts with :class:`Bounds`, which takes every column's interval onto
``R`` with an exact log-Jacobian, so the rest of the flow works on unconstrained values and the
flow's density is zero (``log_prob = -inf``) outside the box and its samples always inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from .base import Transform

__all__ = ["Bounds", "bounds_config", "check_bounds"]

Pair = tuple[float, float]
BoundsLike = Sequence[object] | None
"""``(low, high)`` for all columns, or one ``(low, high)`` or ``None`` per column."""


def _end(value: object, column: int, side: str, pair: object) -> float:
    """One end of a column's interval as a float (``None`` -> ``∓inf``); ``ValueError`` else."""
    if value is None:
        return -math.inf if side == "low" else math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"bounds of column {column}: {side} must be a number or None, got {pair!r}"
        )
    if math.isnan(value):
        raise ValueError(f"bounds of column {column}: {side} is NaN in {pair!r}")
    return float(value)


def _pair(pair: object, column: int) -> Pair:
    if pair is None:
        return (-math.inf, math.inf)
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(
            f"bounds of column {column} must be a (low, high) pair or None, got {pair!r}"
        )
    low, high = _end(pair[0], column, "low", pair), _end(pair[1], column, "high", pair)
    if not low < high:
        raise ValueError(f"bounds of column {column}: low must be < high, got ({low}, {high})")
    return low, high


def _is_pair(bounds: Sequence[object]) -> bool:
    """Whether ``bounds`` is one ``(low, high)`` pair (two numbers or ``None``) for every column."""
    scalar = (type(None), int, float)
    return len(bounds) == 2 and all(isinstance(b, scalar) for b in bounds)


def check_bounds(bounds: BoundsLike, features: int) -> list[Pair]:
    """Every column's ``(low, high)`` as floats, open ends ``∓inf``; ``ValueError`` otherwise.

    Args:
        bounds: One ``(low, high)`` pair for all ``features`` columns, or a sequence of
            ``features`` entries, each ``(low, high)`` or ``None`` (unbounded). Either end of
            a pair may be ``None`` or ``∓inf`` (open).
        features: The number of columns ``D``.

    Returns:
        ``D`` pairs with ``low < high``.

    Example:
        >>> from exactflow.transforms.bounds import check_bounds
        >>> check_bounds([(0, 1), None, (0, None)], 3)
        [(0.0, 1.0), (-inf, inf), (0.0, inf)]
        >>> check_bounds((0, 1), 2)
        [(0.0, 1.0), (0.0, 1.0)]

    """
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence):
        raise ValueError(
            f"bounds must be a (low, high) pair or a list of {features} pairs, got {bounds!r}"
        )
    if _is_pair(bounds):  # [None, None] reads the same either way: all open
        return [_pair(bounds, column) for column in range(features)]
    if len(bounds) != features:
        raise ValueError(
            f"bounds must have one entry per column ({features}), got {len(bounds)}: {bounds!r}"
        )
    return [_pair(pair, column) for column, pair in enumerate(bounds)]


def bounds_config(bounds: BoundsLike) -> list | None:
    """``bounds`` as the JSON value a preset's config records: ``[low, high]`` lists, open -> null.

    One pair for all columns stays one ``[low, high]``; a column without bounds is ``None``.

    Example:
        >>> from exactflow.transforms.bounds import bounds_config
        >>> bounds_config([(0, 1), None, (float("-inf"), 5.0)])
        [[0, 1], None, [None, 5.0]]

    """
    if bounds is None:
        return None

    def end(value: object) -> object:
        return None if isinstance(value, float) and math.isinf(value) else value

    def pair(value: object) -> object:
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return [end(v) for v in value]
        return value

    if isinstance(bounds, Sequence) and not isinstance(bounds, (str, bytes)):
        if _is_pair(bounds):
            return pair(bounds)
        return [pair(p) for p in bounds]
    return bounds  # not a sequence: the flow's check names it


class _Box(constraints.Constraint):
    """The open box of a :class:`Bounds`, read from its current buffers (dtype, device)."""

    def __init__(self, owner: Bounds) -> None:
        super().__init__()
        self.owner = owner

    def check(self, value: Tensor) -> Tensor:
        return (value > self.owner.low) & (value < self.owner.high)

    def __repr__(self) -> str:
        return f"Box({self.owner.pairs})"


class Bounds(Transform):
    """Each column's interval onto the real line, with an exact log-Jacobian (data -> ``R^D``).

    Per column ``i`` with ``a = x_i - low_i`` and ``b = high_i - x_i``:

    * ``(low, high)``: the scaled logit ``y = log a - log b = logit((x - low) / (high - low))``,
      ``log|dy/dx| = log(high - low) - log a - log b``; inverse
      ``x = low + (high - low) σ(y)`` (computed from the nearer end);
    * ``(low, ∞)``: the log ``y = log a``, ``log|dy/dx| = -log a``; inverse ``x = low + e^y``;
    * ``(-∞, high)``: its mirror image ``y = -log b``, ``log|dy/dx| = -log b``; inverse
      ``x = high - e^{-y}``;
    * ``(-∞, ∞)``: the identity.

    The half-bounded map is the log rather than the softplus inverse ``log(e^a - 1)``: the two
    agree near the bound, but far from it the softplus inverse is the identity and would keep
    the data's raw scale, while the log is scale-free (a column in thousands maps to values
    near 7), which is what lets a standardization leave bounded columns alone (see
    :meth:`exactflow.data.Standardize.prepend`).

    Both distances ``a`` and ``b`` are exact near their own end, so the forward map is finite
    for every point strictly inside, however close to a bound (nothing is clamped: the map is
    exact everywhere inside); points outside, or on an end, get ``log|dy/dx| = -inf`` (so a
    flow's ``log_prob`` is ``-inf`` there, never NaN) and a finite stand-in ``y``. The inverse
    keeps its results strictly inside (the nearest representable value of the dtype when
    rounding would reach an end), so samples never land on a bound.

    Args:
        bounds: One ``(low, high)`` for all columns, or one ``(low, high)`` or ``None`` per
            column; ``None`` or ``∓inf`` ends are open (see :func:`check_bounds`).
        features: The number of columns ``D``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.Bounds([(0, 1), (0, None), None], features=3)
        >>> y, ladj = t(torch.tensor([[0.5, 2.0, -7.0], [1.5, 2.0, -7.0]]))
        >>> ladj[1]
        tensor(-inf)
        >>> x, _ = t.inverse(torch.tensor([[50.0, -200.0, 1.0]]))
        >>> bool(((x[:, :2] > 0) & (x[:, :1] < 1)).all())
        True

    """

    def __init__(self, bounds: BoundsLike, features: int) -> None:
        super().__init__()
        self.pairs = check_bounds(bounds, features)
        self.features = features
        low = torch.tensor([p[0] for p in self.pairs], dtype=torch.float64)
        high = torch.tensor([p[1] for p in self.pairs], dtype=torch.float64)
        has_low, has_high = low.isfinite(), high.isfinite()
        # Buffers follow .to(); none is persistent: the bounds live in the preset's config.
        # What derives from the ends is computed per call, in the dtype of the call.
        self.register_buffer("low", low.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("high", high.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("has_low", has_low, persistent=False)
        self.register_buffer("has_high", has_high, persistent=False)
        self.register_buffer("two", has_low & has_high, persistent=False)
        self.register_buffer("one", has_low ^ has_high, persistent=False)
        self.domain = _Box(self)

    def extra_repr(self) -> str:
        return f"{self.pairs}"

    def _ends(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Finite ends (0 where open), widths and log-widths (0 where not two-sided).

        No arithmetic on infinities then reaches a result or a gradient.
        """
        low_end = torch.where(self.has_low, self.low, 0.0)
        high_end = torch.where(self.has_high, self.high, 0.0)
        width = torch.where(self.two, high_end - low_end, 1.0)
        return low_end, high_end, width, width.log()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        low_end, high_end, _, log_width = self._ends()
        inside = (x > self.low) & (x < self.high)  # False for NaN too
        # A point strictly inside each column stands in for the points outside.
        inner = torch.where(
            self.two,
            low_end / 2 + high_end / 2,
            torch.where(self.has_low, low_end + 1, torch.where(self.has_high, high_end - 1, 0.0)),
        )
        safe = torch.where(inside, x, inner)
        # a = x - low and b = high - x, 1 at an open end (log 0): one formula for every
        # bounded column, y = log a - log b and log|dy/dx| = log(high - low) - log a - log b.
        log_a = torch.where(self.has_low, safe - low_end, 1.0).log()
        log_b = torch.where(self.has_high, high_end - safe, 1.0).log()
        bounded = self.two | self.one
        y = torch.where(bounded, log_a - log_b, safe)
        slope = torch.where(bounded, log_width - log_a - log_b, 0.0)
        slope = torch.where(inside, slope, -math.inf)
        return y, slope.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        low_end, high_end, width, log_width = self._ends()
        # Two-sided: from the nearer end, so points near high keep the precision of high - x.
        up = y > 0
        scaled = width * torch.sigmoid(torch.where(up, -y, y))
        two = torch.where(up, high_end - scaled, low_end + scaled)
        # Half-bounded: exp of at most the largest finite log, and only where it is used, so
        # no infinite derivative meets a zero gradient (which would make a NaN).
        most = math.log(torch.finfo(y.dtype).max)
        rise = torch.where(self.has_low, y, -y).clamp(max=most)
        rise = torch.where(self.one, rise, 0.0).exp()
        one = torch.where(self.has_low, low_end + rise, high_end - rise)
        x = torch.where(self.two, two, torch.where(self.one, one, y))
        # Strictly inside: rounding can reach an end (and an open end: the largest finite).
        low_in = torch.nextafter(self.low, self.high)
        high_in = torch.nextafter(self.high, self.low)
        x = torch.minimum(torch.maximum(x, low_in), high_in)
        log_both = nn.functional.logsigmoid(y) + nn.functional.logsigmoid(-y)
        slope = torch.where(
            self.two,
            log_width + log_both,
            torch.where(self.one, torch.where(self.has_low, y, -y), 0.0),
        )
        return x, slope.sum(-1)
