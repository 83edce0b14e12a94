"""Periodic columns in presets: reading ``periodic=`` and building layers on the torus."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..transforms import (
    ColumnSplines,
    Coupling,
    ToAngles,
    TorusAutoregressive,
    Transform,
    torus_coupling,
)
from ..transforms.bounds import BoundsLike, check_bounds
from .chains import layer_mask, layer_order

__all__ = ["PeriodicLike", "check_not_bounded", "periodic_intervals", "periodic_layers"]

PeriodicLike = Sequence[object] | Mapping[int, object] | None
"""Columns ``[i, ...]`` (period ``2π`` on ``[-π, π)``), ``{i: period}``, ``{i: (low, high)}``,
or a list of ``(i, period)`` / ``(i, low, high)``."""


def _interval(name: str, column: object, spec: object) -> tuple[int, float, float]:
    """``(column, low, high)`` from a period ``p`` (``[-p/2, p/2)``) or ``(low, high)``."""
    if isinstance(column, bool) or not isinstance(column, int):
        raise TypeError(f"{name}: periodic columns must be ints, got {column!r}")
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        low, high = -spec / 2, spec / 2
    elif isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 2:
        low, high = spec
    else:
        raise ValueError(
            f"{name}: column {column} needs a period or a (low, high) interval, got {spec!r}"
        )
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)):
        raise ValueError(f"{name}: column {column} needs a finite interval, got {spec!r}")
    if not low < high:
        raise ValueError(f"{name}: column {column} needs low < high, got ({low}, {high})")
    return column, float(low), float(high)


def periodic_intervals(
    periodic: PeriodicLike, features: int, name: str = "NSF"
) -> list[list[float | int]]:
    """The periodic columns as ``[column, low, high]`` lists, sorted: the JSON a config keeps.

    Args:
        periodic: ``None``; a list of columns (period ``2π``, interval ``[-π, π)``); a mapping
            ``{column: period}`` (interval ``[-p/2, p/2)``) or ``{column: (low, high)}``; or a
            list of ``(column, period)`` / ``(column, low, high)``.
        features: Event width ``D``.
        name: The preset, for messages.

    Example:
        >>> from exactflow.flows.periodic import periodic_intervals
        >>> periodic_intervals({1: 360.0, 0: (0.0, 1.0)}, 3)
        [[0, 0.0, 1.0], [1, -180.0, 180.0]]

    """
    if periodic is None:
        return []
    if isinstance(periodic, Mapping):
        items = [_interval(name, c, s) for c, s in periodic.items()]
    elif isinstance(periodic, Sequence) and not isinstance(periodic, str):
        items = []
        for entry in periodic:
            if isinstance(entry, Sequence) and not isinstance(entry, str):
                if len(entry) == 3:
                    items.append(_interval(name, entry[0], (entry[1], entry[2])))
                    continue
                if len(entry) == 2:
                    items.append(_interval(name, entry[0], entry[1]))
                    continue
            if isinstance(entry, Sequence):
                raise ValueError(
                    f"{name}: a periodic entry is a column, (column, period) or (column, low,"
                    f" high), got {entry!r}"
                )
            items.append(_interval(name, entry, 2 * math.pi))
    else:
        raise TypeError(
            f"{name}: periodic must be a list of columns or a {{column: period}} mapping, got"
            f" {type(periodic).__name__}"
        )
    columns = [c for c, _, _ in items]
    if len(set(columns)) != len(columns) or not all(0 <= c < features for c in columns):
        raise ValueError(
            f"{name}: periodic columns must be distinct and in 0..{features - 1}, got {columns}"
        )
    return [[c, a, b] for c, a, b in sorted(items)]


def check_not_bounded(intervals: list, bounds: BoundsLike, features: int, name: str) -> None:
    """``ValueError`` for a column that is both periodic and bounded."""
    if bounds is None or not intervals:
        return
    pairs = check_bounds(bounds, features)
    both = [c for c, _, _ in intervals if any(math.isfinite(v) for v in pairs[int(c)])]
    if both:
        raise ValueError(
            f"{name}: columns {both} are both periodic and bounded; a column is one or the other"
        )


def periodic_layers(
    intervals: list,
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    bins: int,
    bound: float,
    coupling: bool,
    permutation: str,
    residual: bool,
    seed: int,
) -> list[Transform]:
    """Spline layers with circular splines on the periodic columns, ordinary ones elsewhere.

    The layers start with :class:`~exactflow.transforms.ToAngles` when an interval is not
    ``[-π, π)``. Coupling layers alternate their halves (``"reverse"``) or draw them
    (``"random"``) as in :func:`~exactflow.flows.chains.coupling_layers`; autoregressive layers
    reverse or draw their order as in :func:`~exactflow.flows.chains.autoregressive_layers`.
    ``"lu"`` is refused: a linear mixing of an angle with other columns is no map of the torus.
    """
    if permutation == "lu":
        raise ValueError(
            "NSF: permutation='lu' mixes columns linearly, which breaks periodic columns; use"
            " 'reverse' or 'random'"
        )
    flags = [False] * features
    for c, _, _ in intervals:
        flags[int(c)] = True
    splines = ColumnSplines(flags, bins=bins, bound=bound)
    steps: list[Transform] = []
    if any((a, b) != (-math.pi, math.pi) for _, a, b in intervals):
        steps.append(ToAngles(features, [(int(c), a, b) for c, a, b in intervals]))
    for k in range(transforms):
        if coupling:
            mask = layer_mask(features, permutation, seed, k)
            layer: Coupling | TorusAutoregressive = torus_coupling(
                splines, mask, hidden, context, residual
            )
        else:
            order = layer_order(features, permutation, seed, k)
            layer = TorusAutoregressive(splines, hidden, context, order, residual)
        steps.append(layer)
    return steps
