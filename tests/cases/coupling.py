import torch

import exactflow as ef
from exactflow import transforms as T

from casekit import Case

H = (8, 8)
IMAGE = (2, 4, 4)


def conv(in_channels: int, out_channels: int, context: int = 0) -> ef.nn.ConvNet:
    """A small convolutional conditioner passed in by hand (its output zeroed, the contract)."""
    net = ef.nn.ConvNet(in_channels, out_channels, hidden=4, blocks=1, context=context)
    ef.nn.zero_output(net.output)
    return net


CASES = [
    Case(
        "coupling-additive-2d",
        lambda: T.Coupling(T.Additive(), features=2, hidden=H),
        covers=("Additive",),
    ),
    Case(
        "coupling-additive-5d-alternating-context",
        lambda: T.Coupling(T.Additive(), features=5, mask="alternating", hidden=H, context=3),
        event_shape=(5,),
        context=3,
        covers=("Additive",),
    ),
    Case(
        "coupling-affine-2d",
        lambda: T.Coupling(T.AffineMap(), features=2, hidden=H),
        covers=("AffineMap",),
    ),
    Case(
        "coupling-affine-3d-alternating",
        lambda: T.Coupling(T.AffineMap(), features=3, mask="alternating", hidden=H),
        event_shape=(3,),
        covers=("AffineMap",),
    ),
    Case(
        "coupling-affine-6d-random-context",
        lambda: T.Coupling(T.AffineMap(), features=6, mask="random", hidden=H, context=2, seed=3),
        event_shape=(6,),
        context=2,
        covers=("AffineMap",),
    ),
    Case(
        "coupling-affine-unbounded-4d-tensor-mask-context",
        lambda: T.Coupling(
            T.AffineMap(bound=None),
            mask=torch.tensor([True, False, False, True]),
            hidden=H,
            context=1,
        ),
        event_shape=(4,),
        context=1,
        covers=("AffineMap",),
    ),
    Case(
        "coupling-affine-5d-residual-context",
        lambda: T.Coupling(T.AffineMap(), features=5, hidden=H, context=2, residual=True),
        event_shape=(5,),
        context=2,
        covers=("AffineMap",),
    ),
    Case(
        "coupling-spline-2d",
        lambda: T.Coupling(T.RationalQuadraticSpline(bins=4, bound=3.0), features=2, hidden=H),
        covers=("RationalQuadraticSpline",),
    ),
    Case(
        "coupling-spline-5d-alternating-context",
        lambda: T.Coupling(
            T.RationalQuadraticSpline(bins=5, bound=2.0),
            features=5,
            mask="alternating",
            hidden=H,
            context=2,
        ),
        event_shape=(5,),
        context=2,
        covers=("RationalQuadraticSpline",),
    ),
    Case(
        "coupling-affine-image-channel-conv",
        lambda: T.Coupling(T.AffineMap(), "channel", conv(1, 2), shape=IMAGE),
        event_shape=IMAGE,
        covers=("AffineMap", "ConvNet"),
    ),
    Case(
        "coupling-affine-image-checkerboard-conv-context",
        lambda: T.Coupling(T.AffineMap(), "checkerboard", conv(2, 4, 3), context=3, shape=IMAGE),
        event_shape=IMAGE,
        context=3,
        covers=("AffineMap", "ConvNet"),
    ),
    Case(
        "coupling-spline-image-checkerboard-default",
        lambda: T.Coupling(
            T.RationalQuadraticSpline(bins=3, bound=3.0), "checkerboard", hidden=4, shape=IMAGE
        ),
        event_shape=IMAGE,
        covers=("RationalQuadraticSpline", "ConvNet"),
    ),
    Case(
        "coupling-additive-image-channel-default-context",
        lambda: T.Coupling(T.Additive(), "channel", hidden=(4, 4), context=2, shape=(3, 2, 3)),
        event_shape=(3, 2, 3),
        context=2,
        covers=("Additive", "ConvNet"),
    ),
]
