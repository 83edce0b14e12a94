"""Conformance cases of ``Recompute``: it must compute exactly what the wrapped transform does.

The suite runs in eval mode, where ``Recompute`` is a plain call; ``tests/test_recompute.py``
checks the training-mode backward (rebuilt activations) against the plain transform.
"""

import torch

from exactflow import transforms as T

from casekit import Case
from cases.normalization import shifted

IMAGE = (2, 4, 4)


def glow_steps(shape: tuple[int, int, int], steps: int, context: int = 0) -> T.Compose:
    """``steps`` Glow steps (ActNorm, 1x1 convolution, affine coupling) on ``shape``."""
    mask = "channel" if shape[0] > 1 else "checkerboard"
    layers: list[T.Transform] = []
    for _ in range(steps):
        layers += [
            T.ActNorm(shape[0], event_ndim=3),
            T.InvertibleConv1x1(shape[0]),
            T.Coupling(T.AffineMap(), mask, hidden=4, context=context, shape=shape),
        ]
    return T.Compose(layers)


CASES = [
    Case(
        "recompute-coupling-image-checkerboard-context",
        lambda: T.Recompute(
            T.Coupling(T.AffineMap(), "checkerboard", hidden=4, context=3, shape=IMAGE)
        ),
        event_shape=IMAGE,
        context=3,
    ),
    Case(
        "recompute-glow-steps-context",
        lambda: T.Recompute(glow_steps(IMAGE, 2, context=2)),
        event_shape=IMAGE,
        context=2,
        sample_x=shifted(IMAGE),
        warmup=True,
    ),
    Case(
        "recompute-squeeze-level",
        lambda: T.Recompute(T.Compose([T.Squeeze((1, 4, 4)), glow_steps((4, 2, 2), 1)])),
        event_shape=(1, 4, 4),
        out_shape=(4, 2, 2),
        sample_x=shifted((1, 4, 4)),
        warmup=True,
    ),
    Case(
        "recompute-factor-out-level",
        lambda: T.Recompute(
            T.FactorOut(IMAGE, T.Compose([glow_steps((1, 4, 4), 1), T.Flatten((1, 4, 4))]))
        ),
        event_shape=IMAGE,
        out_shape=(torch.Size(IMAGE).numel(),),
        sample_x=shifted(IMAGE),
        warmup=True,
    ),
]
