"""Residual blocks: exact log-determinant in eval mode, an unbiased estimate in training."""

import torch

import exactflow as ef
from exactflow import transforms as T

from casekit import Case
from cases.image import moderate, pixels


def block(
    features: int, context: int = 0, estimator: str = "roulette", preact: bool = False
) -> T.ResidualBlock:
    """A residual block whose layers sit at their Lipschitz bound (so ``g`` is not tiny)."""
    torch.manual_seed(0)
    t = T.ResidualBlock(
        features,
        hidden=(8,),
        context=context,
        coeff=0.9,
        iterations=20,
        estimator=estimator,
        preact=preact,
    )
    with torch.no_grad():
        for layer in t.modules():
            if isinstance(layer, ef.nn.SpectralLinear):
                layer.weight.mul_(4)
    t(torch.randn(16, features), None if not context else torch.randn(16, context))
    return t


def conv_block(shape: tuple[int, int, int], context: int = 0) -> T.ConvResidualBlock:
    """A conv residual block at its Lipschitz bound, its power iteration settled."""
    torch.manual_seed(0)
    t = T.ConvResidualBlock(shape, hidden=4, context=context, coeff=0.7, iterations=50)
    with torch.no_grad():
        for layer in t.net:
            if hasattr(layer, "weight"):
                layer.weight.mul_(4)
    t(torch.randn(8, *shape), None if not context else torch.randn(8, context))
    return t


def image_preset(context: int = 0) -> T.Transform:
    torch.manual_seed(0)
    flow = ef.flows.ResidualFlow(
        shape=(1, 4, 4), context=context, levels=2, steps=1, hidden=4, coeff=0.7
    )
    flow.transform(torch.rand(16, 1, 4, 4), None if not context else torch.randn(16, context))
    return flow.transform


def preset(context: int = 0, estimator: str = "roulette") -> T.Transform:
    torch.manual_seed(0)
    flow = ef.flows.ResidualFlow(
        features=2, context=context, transforms=2, hidden=(8,), estimator=estimator
    )
    flow.transform(torch.randn(16, 2), None if not context else torch.randn(16, context))
    return flow.transform


CASES = [
    Case(
        "conv-residual-1x4x4",
        lambda: conv_block((1, 4, 4)),
        event_shape=(1, 4, 4),
        estimated=True,
        perturb=0.0,
    ),
    Case(
        "conv-residual-2x2x4-context",
        lambda: conv_block((2, 2, 4), context=2),
        event_shape=(2, 2, 4),
        context=2,
        estimated=True,
        perturb=0.0,
    ),
    Case(
        "preset-residualflow-image",
        image_preset,
        event_shape=(1, 4, 4),
        out_shape=(16,),
        sample_x=pixels((1, 4, 4)),
        sample_y=moderate((16,)),
        estimated=True,
        perturb=0.0,
        warmup=True,
        covers=("ResidualFlow",),
    ),
    Case(
        "preset-residualflow-image-context",
        lambda: image_preset(3),
        event_shape=(1, 4, 4),
        out_shape=(16,),
        context=3,
        sample_x=pixels((1, 4, 4)),
        sample_y=moderate((16,)),
        estimated=True,
        perturb=0.0,
        warmup=True,
        covers=("ResidualFlow",),
    ),
    Case("residual-2d", lambda: block(2), estimated=True, perturb=0.0),
    Case("residual-2d-exact-training", lambda: block(2, estimator="exact"), perturb=0.0),
    Case(
        "residual-3d-preact-context",
        lambda: block(3, context=2, preact=True),
        event_shape=(3,),
        context=2,
        estimated=True,
        perturb=0.0,
    ),
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
        "preset-residualflow-auto-exact-context",
        lambda: preset(2, estimator="auto"),
        context=2,
        perturb=0.0,
        warmup=True,
        covers=("ResidualFlow",),
    ),
]
