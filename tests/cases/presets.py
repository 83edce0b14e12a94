import exactflow as ef

from casekit import Case

H = (8, 8)

CASES = [
    Case(
        "preset-nice",
        lambda: ef.flows.NICE(features=2, transforms=3, hidden=H).transform,
        covers=("NICE",),
    ),
    Case(
        "preset-nice-5d-random-context",
        lambda: (
            ef.flows.NICE(
                features=5, context=2, transforms=2, hidden=H, permutation="random"
            ).transform
        ),
        event_shape=(5,),
        context=2,
        covers=("NICE",),
    ),
    Case(
        "preset-realnvp",
        lambda: ef.flows.RealNVP(features=3, transforms=3, hidden=H).transform,
        event_shape=(3,),
        covers=("RealNVP",),
    ),
    Case(
        "preset-realnvp-4d-residual-context",
        lambda: (
            ef.flows.RealNVP(features=4, context=3, transforms=2, hidden=H, residual=True).transform
        ),
        event_shape=(4,),
        context=3,
        covers=("RealNVP",),
    ),
    Case(
        "preset-maf",
        lambda: ef.flows.MAF(features=3, transforms=2, hidden=H).transform,
        event_shape=(3,),
        covers=("MAF",),
    ),
    Case(
        "preset-maf-4d-random-context",
        lambda: (
            ef.flows.MAF(
                features=4, context=2, transforms=2, hidden=H, permutation="random"
            ).transform
        ),
        event_shape=(4,),
        context=2,
        covers=("MAF",),
    ),
    Case(
        "preset-iaf",
        lambda: ef.flows.IAF(features=3, transforms=2, hidden=H).transform,
        event_shape=(3,),
        covers=("IAF",),
    ),
    Case(
        "preset-iaf-2d-context",
        lambda: ef.flows.IAF(features=2, context=3, transforms=2, hidden=H).transform,
        context=3,
        covers=("IAF",),
    ),
    Case(
        "preset-maf-3d-lu",
        lambda: ef.flows.MAF(features=3, transforms=2, hidden=H, permutation="lu").transform,
        event_shape=(3,),
        covers=("MAF", "LULinear"),
    ),
    Case(
        "preset-nsf",
        lambda: ef.flows.NSF(features=3, transforms=2, hidden=H, bins=4, bound=3.0).transform,
        event_shape=(3,),
        covers=("NSF",),
    ),
    Case(
        "preset-nsf-2d-context",
        lambda: ef.flows.NSF(features=2, context=2, transforms=2, hidden=H, bins=4).transform,
        context=2,
        covers=("NSF",),
    ),
    Case(
        "preset-nsf-coupling-4d",
        lambda: (
            ef.flows.NSF(
                features=4, transforms=2, hidden=H, bins=4, coupling=True, permutation="lu"
            ).transform
        ),
        event_shape=(4,),
        covers=("NSF",),
    ),
    Case(
        "preset-nsf-coupling-3d-residual-context",
        lambda: (
            ef.flows.NSF(
                features=3,
                context=3,
                transforms=3,
                hidden=H,
                bins=5,
                coupling=True,
                residual=True,
                permutation="random",
            ).transform
        ),
        event_shape=(3,),
        context=3,
        covers=("NSF",),
    ),
]
