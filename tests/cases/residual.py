"""Residual blocks: exact log-determinant in eval mode, an unbiased estimate in training."""

import torch

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
]
