"""Conformance cases of the circular splines and the layers on the torus.

Angles are drawn inside ``[-π, π)`` a little away from the seam, where the map's round trip
holds exactly (at the seam itself ``-π`` and ``π`` are the same point, and the round trip
holds modulo ``2π``); ordinary columns are drawn from ``3 · randn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

import exactflow as ef
from exactflow import transforms as T

from casekit import Case

SEAM = 1e-3  # distance of the drawn angles from ±π


def on_torus(periodic: Sequence[bool]) -> Callable[[int], Tensor]:
    """Draws with the flagged columns uniform on ``[-π + SEAM, π - SEAM]``, the rest ``3 randn``."""
    flags = torch.tensor(periodic)

    def sample(n: int) -> Tensor:
        angles = (2 * torch.rand(n, len(flags), dtype=torch.float64) - 1) * (math.pi - SEAM)
        return torch.where(flags, angles, 3 * torch.randn(n, len(flags), dtype=torch.float64))

    return sample


def torus_case(id: str, make: Callable[[], T.Transform], periodic: Sequence[bool], **kw) -> Case:
    return Case(
        id,
        make,
        event_shape=(len(periodic),),
        sample_x=on_torus(periodic),
        sample_y=on_torus(periodic),
        density=False,  # the codomain is a torus (times a line), not the standard normal's
        **kw,
    )


MIXED = (True, False, True)


def _intervals(n: int) -> Tensor:
    """Column 0 in ``[0, 360)``, column 2 in ``[-1, 1)`` (the intervals of ``to-angles``)."""
    x = 3 * torch.randn(n, 3, dtype=torch.float64)
    x[:, 0] = 1 + 358 * torch.rand(n, dtype=torch.float64)
    x[:, 2] = 0.99 * (2 * torch.rand(n, dtype=torch.float64) - 1)
    return x


CASES = [
    torus_case(
        "circular-spline-coupling",
        lambda: T.Coupling(T.CircularSpline(bins=4), "alternating", features=2, hidden=(8,)),
        (True, True),
        perturb=1.0,
        covers=("CircularSpline",),
    ),
    torus_case(
        "torus-coupling-mixed",
        lambda: T.torus_coupling(T.ColumnSplines(MIXED, bins=4), torch.tensor([True, True, False])),
        MIXED,
        perturb=0.5,
        covers=("ColumnSplines",),
    ),
    torus_case(
        "torus-coupling-mixed-context-residual",
        lambda: T.torus_coupling(
            T.ColumnSplines(MIXED, bins=3),
            torch.tensor([False, True, True]),
            hidden=(8, 8),
            context=2,
            residual=True,
        ),
        MIXED,
        context=2,
        covers=("ColumnSplines",),
    ),
    torus_case(
        "torus-autoregressive-all-periodic",
        lambda: T.TorusAutoregressive(T.ColumnSplines([True, True], bins=4), hidden=(8, 8)),
        (True, True),
        perturb=0.5,
    ),
    torus_case(
        "torus-autoregressive-mixed-order-context",
        lambda: T.TorusAutoregressive(
            T.ColumnSplines(MIXED, bins=4), hidden=(12,), context=2, order=[2, 3, 1]
        ),
        MIXED,
        context=2,
    ),
    torus_case(
        "torus-autoregressive-mixed-residual",
        lambda: T.TorusAutoregressive(
            T.ColumnSplines((False, True, False, True), bins=4), hidden=(8, 8), residual=True
        ),
        (False, True, False, True),
    ),
    Case(
        "to-angles",
        lambda: T.ToAngles(3, [(0, 0.0, 360.0), (2, -1.0, 1.0)]),
        event_shape=(3,),
        sample_x=_intervals,
        sample_y=on_torus(MIXED),
        density=False,
    ),
    torus_case(
        "preset-nsf-periodic",
        lambda: (
            ef.flows.NSF(features=3, transforms=2, hidden=(8,), bins=4, periodic=[0, 2]).transform
        ),
        MIXED,
        covers=("NSF",),
    ),
    torus_case(
        "preset-nsf-periodic-coupling",
        lambda: (
            ef.flows.NSF(
                features=3, transforms=2, hidden=(8,), bins=4, periodic=[0, 2], coupling=True
            ).transform
        ),
        MIXED,
        covers=("NSF",),
    ),
]
