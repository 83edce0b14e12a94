"""Residual blocks: exact log-determinant in eval mode, an unbiased estimate in training."""

import torch

import exactflow as ef
from exactflow import transforms as T

from casekit import Case


def block(features: int, context: int = 0) -> T.ResidualBlock:
    """A residual block whose layers sit at their Lipschitz bound (so ``g`` is not tiny)."""
    torch.manual_seed(0)
    t = T.ResidualBlock(features, hidden=(8,), context=context, coeff=0.9, iterations=20)
    with torch.no_grad():
        for layer in t.modules():
            if isinstance(layer, torch.nn.Linear | type(t.net[0])):
                layer.weight.mul_(4)
    t(torch.randn(16, features), None if not context else torch.randn(16, context))
    return t


def preset(context: int = 0) -> T.Transform:
    torch.manual_seed(0)
    flow = ef.flows.ResidualFlow(features=2, context=context, transforms=2, hidden=(8,))
    flow.transform(torch.randn(16, 2), None if not context else torch.randn(16, context))
    return flow.transform


CASES = [
    Case("residual-2d", lambda: block(2), estimated=True, perturb=0.0),
    Case(
        "residual-4d-context",
        lambda: block(4, context=3),
        event_shape=(4,),
        context=3,
        estimated=True,
        perturb=0.0,
    ),
    Case(
        "preset-residualflow",
        preset,
        estimated=True,
        perturb=0.0,
        warmup=True,
        covers=("ResidualFlow",),
    ),
    Case(
        "preset-residualflow-context",
        lambda: preset(2),
        context=2,
        estimated=True,
        perturb=0.0,
        warmup=True,
        covers=("ResidualFlow",),
    ),
]
