import torch

from exactflow import transforms as T

from casekit import Case

H = (8, 8)

CASES = [
    Case(
        "coupling-additive-2d",
        lambda: T.Coupling(T.Additive(), 2, hidden=H),
        covers=("Additive",),
    ),
    Case(
        "coupling-additive-5d-alternating-context",
        lambda: T.Coupling(T.Additive(), 5, mask="alternating", hidden=H, context=3),
        event_shape=(5,),
        context=3,
        covers=("Additive",),
    ),
    Case(
        "coupling-affine-2d",
        lambda: T.Coupling(T.AffineMap(), 2, hidden=H),
        covers=("AffineMap",),
    ),
    Case(
        "coupling-affine-3d-alternating",
        lambda: T.Coupling(T.AffineMap(), 3, mask="alternating", hidden=H),
        event_shape=(3,),
        covers=("AffineMap",),
    ),
    Case(
        "coupling-affine-6d-random-context",
        lambda: T.Coupling(T.AffineMap(), 6, mask="random", hidden=H, context=2, seed=3),
        event_shape=(6,),
        context=2,
        covers=("AffineMap",),
    ),
    Case(
        "coupling-affine-unbounded-4d-tensor-mask-context",
        lambda: T.Coupling(
            T.AffineMap(bound=None),
            4,
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
        lambda: T.Coupling(T.AffineMap(), 5, hidden=H, context=2, residual=True),
        event_shape=(5,),
        context=2,
        covers=("AffineMap",),
    ),
    Case(
        "coupling-spline-2d",
        lambda: T.Coupling(T.RationalQuadraticSpline(bins=4, bound=3.0), 2, hidden=H),
        covers=("RationalQuadraticSpline",),
    ),
    Case(
        "coupling-spline-5d-alternating-context",
        lambda: T.Coupling(
            T.RationalQuadraticSpline(bins=5, bound=2.0),
            5,
            mask="alternating",
            hidden=H,
            context=2,
        ),
        event_shape=(5,),
        context=2,
        covers=("RationalQuadraticSpline",),
    ),
]
