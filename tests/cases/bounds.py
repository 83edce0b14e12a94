"""Conformance cases of the bound maps: each column's interval onto the real line."""

import torch
from torch import Tensor

import exactflow as ef
from exactflow import transforms as T

from casekit import Case

# One column of each kind: two-sided, lower-bounded, upper-bounded, open; ends exact in float32.
MIXED = [(0.0, 1.0), (-2.0, None), (None, 3.0), None]
WIDE = [(-1024.0, 0.0009765625), (1e-3, None)]  # a wide interval and a tiny offset


def _inside(bounds: list, n: int) -> Tensor:
    """Points inside every column's interval, away from its ends."""
    columns = []
    for pair in bounds:
        low, high = (None, None) if pair is None else pair
        if low is not None and high is not None:
            u = 0.05 + 0.9 * torch.rand(n, dtype=torch.float64)
            columns.append(low + (high - low) * u)
        elif low is not None:
            columns.append(low + torch.randn(n, dtype=torch.float64).exp())
        elif high is not None:
            columns.append(high - torch.randn(n, dtype=torch.float64).exp())
        else:
            columns.append(torch.randn(n, dtype=torch.float64))
    return torch.stack(columns, -1)


CASES = [
    Case(
        "bounds-mixed",
        lambda: T.Bounds(MIXED, features=4),
        event_shape=(4,),
        sample_x=lambda n: _inside(MIXED, n),
        density=False,
    ),
    Case(
        "bounds-wide",
        lambda: T.Bounds(WIDE, features=2),
        sample_x=lambda n: _inside(WIDE, n),
        sample_y=lambda n: 4 * torch.randn(n, 2, dtype=torch.float64),
        density=False,
    ),
    Case(
        "bounds-one-pair",
        lambda: T.Bounds((-1.0, 2.0), features=3),
        event_shape=(3,),
        sample_x=lambda n: _inside([(-1.0, 2.0)] * 3, n),
        density=False,
    ),
    Case(
        "preset-nsf-bounded",
        lambda: ef.flows.NSF(features=4, transforms=2, hidden=(8,), bounds=MIXED).transform,
        event_shape=(4,),
        sample_x=lambda n: _inside(MIXED, n),
        density=False,
        covers=("NSF",),
    ),
]
