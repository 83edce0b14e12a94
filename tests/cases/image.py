"""Multi-scale image steps and presets: Squeeze, FactorOut, Glow, the image RealNVP."""

import torch

import exactflow as ef
from exactflow import transforms as T

from casekit import Case, unit_interval


def pixels(shape: tuple[int, ...]):
    """Draws inside ``(0, 1)``, where data of the logit presets lie."""
    return lambda n: unit_interval(n, shape)


def moderate(shape: tuple[int, ...]):
    """Base-side draws of moderate size.

    The presets end (data side) in a logit, whose inverse, the sigmoid, rounds to 0 or 1 beyond
    ``|y| ≈ 37`` in float64, so far-out base points do not survive the round trip; the
    perturbed networks amplify unit draws that far.
    """
    return lambda n: 0.1 * torch.randn((n, *shape), dtype=torch.float64)


def shifted(shape: tuple[int, ...]):
    """Draws away from zero mean and unit scale, so that ActNorm's initialization matters."""
    return lambda n: 0.5 + 2.0 * torch.randn((n, *shape), dtype=torch.float64)


def factor_out(prior: bool, context: int = 0) -> T.FactorOut:
    inner = T.Compose(
        [
            T.Coupling(
                T.AffineMap(), "checkerboard", shape=(2, 2, 4), hidden=(4,), context=context
            ),
            T.Flatten((2, 2, 4)),
        ]
    )
    return T.FactorOut((3, 2, 4), inner, prior=prior, context=context)


CASES = [
    Case("squeeze", lambda: T.Squeeze((2, 4, 6)), event_shape=(2, 4, 6), out_shape=(8, 2, 3)),
    Case(
        "squeeze-factor-3",
        lambda: T.Squeeze((1, 3, 6), factor=3),
        event_shape=(1, 3, 6),
        out_shape=(9, 1, 2),
    ),
    Case(
        "inverse-squeeze",
        lambda: T.Inverse(T.Squeeze((1, 4, 4))),
        event_shape=(4, 2, 2),
        out_shape=(1, 4, 4),
    ),
    Case("factor-out-prior", lambda: factor_out(True), event_shape=(3, 2, 4), out_shape=(24,)),
    Case("factor-out-plain", lambda: factor_out(False), event_shape=(3, 2, 4), out_shape=(24,)),
    Case(
        "factor-out-prior-context",
        lambda: factor_out(True, context=2),
        event_shape=(3, 2, 4),
        out_shape=(24,),
        context=2,
    ),
    Case(
        "preset-glow-affine",
        lambda: ef.flows.Glow(shape=(1, 4, 4), levels=2, steps=2, hidden=4).transform,
        event_shape=(1, 4, 4),
        out_shape=(16,),
        sample_x=pixels((1, 4, 4)),
        sample_y=moderate((16,)),
        warmup=True,
        covers=("Glow", "GlowNet"),
    ),
    Case(
        "preset-glow-additive-no-prior-no-logit",
        lambda: (
            ef.flows.Glow(
                shape=(2, 4, 4),
                levels=1,
                steps=2,
                hidden=4,
                coupling="additive",
                prior=False,
                preprocess=None,
            ).transform
        ),
        event_shape=(2, 4, 4),
        out_shape=(32,),
        sample_x=shifted((2, 4, 4)),
        warmup=True,
        covers=("Glow",),
    ),
    Case(
        "preset-glow-spline-context",
        lambda: (
            ef.flows.Glow(
                shape=(1, 4, 4), levels=2, steps=1, hidden=4, coupling="spline", context=3
            ).transform
        ),
        event_shape=(1, 4, 4),
        out_shape=(16,),
        context=3,
        sample_x=pixels((1, 4, 4)),
        sample_y=moderate((16,)),
        warmup=True,
        covers=("Glow",),
    ),
    Case(
        "preset-realnvp-image",
        lambda: ef.flows.RealNVP(shape=(1, 4, 4), levels=1, steps=1, hidden=(4,)).transform,
        event_shape=(1, 4, 4),
        out_shape=(16,),
        sample_x=pixels((1, 4, 4)),
        sample_y=moderate((16,)),
        warmup=True,
        covers=("RealNVP",),
    ),
    Case(
        "preset-realnvp-image-2-levels-context",
        lambda: (
            ef.flows.RealNVP(shape=(2, 4, 4), levels=2, steps=1, hidden=(4, 4), context=2).transform
        ),
        event_shape=(2, 4, 4),
        out_shape=(32,),
        context=2,
        sample_x=pixels((2, 4, 4)),
        sample_y=moderate((32,)),
        warmup=True,
        covers=("RealNVP",),
    ),
]
