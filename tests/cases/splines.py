"""Conformance cases of the rational-quadratic splines.

``perturb=1.0`` takes the splines far from their identity start, and inputs are drawn wider
than ``bound`` (with the bounds themselves and far-out values in the first rows), so both the
spline and its identity tails are checked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from exactflow import transforms as T

from casekit import Case

BOUND = 2.0


def spread(features: int, bound: float = BOUND) -> Callable[[int], Tensor]:
    """Draws ``3 · randn`` inputs; rows 0-2 hold ``±bound`` and ``±1e4`` (for ``n >= 6``)."""

    def sample(n: int) -> Tensor:
        x = 3 * torch.randn(n, features, dtype=torch.float64)
        if n >= 6:
            signs = torch.ones(features, dtype=torch.float64)
            signs[1::2] = -1
            x[:3] = torch.stack([signs * bound, -signs * bound, signs * 1e4])
        return x

    return sample


def spline_case(
    id: str, features: int, bins: int, tails: str = "linear", bound: float = BOUND
) -> Case:
    return Case(
        id,
        lambda: T.Spline(features, bins=bins, bound=bound, tails=tails),
        event_shape=(features,),
        sample_x=spread(features, bound),
        sample_y=spread(features, bound),
        perturb=1.0,
        covers=("RationalQuadraticSpline",),
    )


# The 2-D cases also go through the flow tests, whose density integral on a 1000² grid over
# [-12, 12]² cannot resolve bins much narrower than those of a bound of 3.
CASES = [
    spline_case("spline-2d-4bins", 2, 4, bound=3.0),
    spline_case("spline-2d-8bins-identity-tails", 2, 8, tails="identity", bound=3.0),
    spline_case("spline-5d-8bins", 5, 8),
    spline_case("spline-5d-4bins-identity-tails", 5, 4, tails="identity"),
    spline_case("spline-3d-8bins-wide", 3, 8, bound=5.0),
]
