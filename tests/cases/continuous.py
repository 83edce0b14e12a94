"""Continuous-time flows: exact trace in eval mode (to the ODE solver's error), Hutchinson's
estimate in training. Round trips and log-determinants agree with autograd to about the eval
tolerance (1e-8 in float64) times the length of the solve, hence ``atol=1e-6``."""

import torch

import exactflow as ef
from exactflow import transforms as T

from casekit import Case

ATOL = 1e-6  # the adaptive solver's global error at the default float64 eval tolerance


def ode(features: int, context: int = 0) -> T.ContinuousFlow:
    """A small ODE flow whose zero-initialized output layer is moved, so that ``f != 0``."""
    torch.manual_seed(0)
    t = T.ContinuousFlow(features, hidden=(8,), context=context, time=0.5)
    with torch.no_grad():
        last = t.net.layers[-1]
        last.weight.normal_(0.0, 0.5)
        last.bias.normal_(0.0, 0.5)
    return t


def preset(context: int = 0) -> T.Transform:
    torch.manual_seed(0)
    return ef.flows.FFJORD(
        features=2, context=context, transforms=1, hidden=(8,), time=0.5
    ).transform


CASES = [
    Case("continuous-2d", lambda: ode(2), estimated=True, atol=ATOL),
    Case(
        "continuous-3d-context",
        lambda: ode(3, context=2),
        event_shape=(3,),
        context=2,
        estimated=True,
        atol=ATOL,
    ),
    Case("preset-ffjord", preset, estimated=True, atol=ATOL, covers=("FFJORD",)),
    Case(
        "preset-ffjord-context",
        lambda: preset(2),
        context=2,
        estimated=True,
        atol=ATOL,
        covers=("FFJORD",),
    ),
]
