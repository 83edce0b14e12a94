from exactflow import transforms as T

from casekit import Case

CASES = [
    Case("permutation-3", lambda: T.Permutation(3), event_shape=(3,)),
    Case("permutation-7-seed", lambda: T.Permutation(7, seed=4), event_shape=(7,)),
    Case(
        "permutation-4-given",
        lambda: T.Permutation(4, permutation=[2, 0, 3, 1]),
        event_shape=(4,),
    ),
    Case("reverse-2", lambda: T.Reverse(2)),
    Case("reverse-5", lambda: T.Reverse(5), event_shape=(5,)),
    Case("lu-linear-2", lambda: T.LULinear(2)),
    Case("lu-linear-5", lambda: T.LULinear(5), event_shape=(5,)),
    Case("lu-linear-4-nobias", lambda: T.LULinear(4, bias=False), event_shape=(4,)),
    Case("conv1x1-lu", lambda: T.InvertibleConv1x1(3), event_shape=(3, 4, 4)),
    Case("conv1x1-lu-2ch", lambda: T.InvertibleConv1x1(2), event_shape=(2, 3, 5)),
    Case("conv1x1-plain", lambda: T.InvertibleConv1x1(3, lu=False), event_shape=(3, 4, 4)),
    Case("householder-3-1", lambda: T.Householder(3, reflections=1), event_shape=(3,)),
    Case("householder-5-3", lambda: T.Householder(5, reflections=3), event_shape=(5,)),
    Case("householder-4-4", lambda: T.Householder(4, reflections=4), event_shape=(4,)),
]
