from exactflow import transforms as T

from casekit import Case

H = (8, 8)

CASES = [
    Case(
        "made-affine-1d",
        lambda: T.MaskedAutoregressive(T.AffineMap(), 1, hidden=(4,)),
        event_shape=(1,),
        covers=("AffineMap",),
    ),
    Case(
        "made-affine-1d-context",
        lambda: T.MaskedAutoregressive(T.AffineMap(), 1, hidden=(4,), context=2),
        event_shape=(1,),
        context=2,
        covers=("AffineMap",),
    ),
    Case(
        "made-affine-2d",
        lambda: T.MaskedAutoregressive(T.AffineMap(), 2, hidden=H),
        covers=("AffineMap",),
    ),
    Case(
        "made-affine-5d-order-context",
        lambda: T.MaskedAutoregressive(
            T.AffineMap(), 5, hidden=H, context=3, order=[3, 1, 5, 2, 4]
        ),
        event_shape=(5,),
        context=3,
        covers=("AffineMap",),
    ),
    Case(
        "made-affine-4d-random-degrees",
        lambda: T.MaskedAutoregressive(
            T.AffineMap(bound=None), 4, hidden=(12, 6), hidden_degrees="random", seed=1
        ),
        event_shape=(4,),
        covers=("AffineMap",),
    ),
    Case(
        "made-affine-4d-residual-context",
        lambda: T.MaskedAutoregressive(
            T.AffineMap(), 4, hidden=H, context=2, order=[4, 3, 2, 1], residual=True
        ),
        event_shape=(4,),
        context=2,
        covers=("AffineMap",),
    ),
    Case(
        "inverse-made-affine-3d-context",
        lambda: T.Inverse(T.MaskedAutoregressive(T.AffineMap(), 3, hidden=H, context=2)),
        event_shape=(3,),
        context=2,
        covers=("AffineMap", "MaskedAutoregressive"),
    ),
    Case(
        "made-spline-1d",
        lambda: T.MaskedAutoregressive(T.RationalQuadraticSpline(bins=3), 1, hidden=(4,)),
        event_shape=(1,),
        covers=("RationalQuadraticSpline",),
    ),
    Case(
        "made-spline-3d",
        lambda: T.MaskedAutoregressive(T.RationalQuadraticSpline(bins=4, bound=2.0), 3, hidden=H),
        event_shape=(3,),
        covers=("RationalQuadraticSpline",),
    ),
    Case(
        "made-spline-4d-order-context",
        lambda: T.MaskedAutoregressive(
            T.RationalQuadraticSpline(bins=6, bound=3.0),
            4,
            hidden=H,
            context=3,
            order=[2, 4, 1, 3],
        ),
        event_shape=(4,),
        context=3,
        covers=("RationalQuadraticSpline",),
    ),
    Case(
        "inverse-made-spline-3d-context",
        lambda: T.Inverse(
            T.MaskedAutoregressive(T.RationalQuadraticSpline(bins=4), 3, hidden=H, context=2)
        ),
        event_shape=(3,),
        context=2,
        covers=("RationalQuadraticSpline", "MaskedAutoregressive"),
    ),
]
