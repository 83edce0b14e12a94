"""Conformance cases of the monotonic neural maps: NAF's deep sigmoidal map and UMNN's integral.

Their inverses are numerical (:func:`exactflow.numerics.solve_increasing`): the deep sigmoidal
map's residual is within ``1e-12·(1 + |y|)`` in float64, so its round trips use ``atol=1e-9``.
UMNN's value is a Clenshaw–Curtis quadrature refined until successive estimates agree within
``1e-10·(1 + |∫|)`` and its inverse solves to that tolerance, so its round trips use ``1e-7``;
its log-slope ``log g(x)`` is exact, so the autograd checks keep their default ``1e-8``.
UMNN's 2-D density is checked on a coarser grid in ``tests/test_neural_flows.py`` (the suite's
10⁶-point grid would hold ``points × nodes × width`` activations).
"""

from __future__ import annotations

from collections.abc import Callable

import exactflow as ef
from exactflow import transforms as T

from casekit import Case

ATOL = 1e-9
UMNN_ATOL = 1e-7
H = (8,)


def deep_sigmoid_case(id: str, make: Callable[[], T.Transform], features: int) -> Case:
    return Case(id, make, event_shape=(features,), atol=ATOL, covers=("DeepSigmoid",))


def umnn_map() -> T.UMNN:
    return T.UMNN(hidden=(8,), embedding=3, max_nodes=129, max_iter=30)


def umnn_preset(features: int, context: int = 0) -> T.Transform:
    """A small UMNN preset with the case maps' budgets.

    Under ``jacrev`` the inverse runs its full iteration budget (no early stop under a
    tracer) with the traced rule of 129 points: the smaller budgets keep the suite fast.
    """
    flow = ef.flows.UMNN(
        features=features,
        context=context,
        transforms=2,
        hidden=H,
        integrand=(8,),
        embedding=3,
    )
    for module in flow.modules():
        if isinstance(module, T.UMNN):
            module.max_nodes, module.max_iter = 129, 30
    return flow.transform


CASES = [
    deep_sigmoid_case(
        "made-deep-sigmoid-3d",
        lambda: T.MaskedAutoregressive(T.DeepSigmoid(4), features=3, hidden=(8,)),
        3,
    ),
    deep_sigmoid_case(
        "coupling-deep-sigmoid-4d",
        lambda: T.Coupling(T.DeepSigmoid(4), features=4, hidden=(8,)),
        4,
    ),
    Case(
        "made-umnn-3d",
        lambda: T.MaskedAutoregressive(umnn_map(), features=3, hidden=H),
        event_shape=(3,),
        atol=UMNN_ATOL,
        covers=("UMNN",),
    ),
    Case(
        "coupling-umnn-4d-context",
        lambda: T.Coupling(umnn_map(), features=4, hidden=H, context=2),
        event_shape=(4,),
        context=2,
        atol=UMNN_ATOL,
        covers=("UMNN",),
    ),
    Case(
        "preset-naf",
        lambda: ef.flows.NAF(features=2, transforms=2, hidden=H, sigmoids=3).transform,
        atol=ATOL,
        covers=("NAF", "DeepSigmoid"),
    ),
    Case(
        "preset-naf-3d-context-random",
        lambda: (
            ef.flows.NAF(
                features=3, context=2, transforms=2, hidden=H, sigmoids=3, permutation="random"
            ).transform
        ),
        event_shape=(3,),
        context=2,
        atol=ATOL,
        covers=("NAF", "DeepSigmoid"),
    ),
    Case(
        "preset-umnn-3d",
        lambda: umnn_preset(3),
        event_shape=(3,),
        atol=UMNN_ATOL,
        covers=("UMNN",),
    ),
    Case(
        "preset-umnn-2d-context",
        lambda: umnn_preset(2, context=2),
        context=2,
        atol=UMNN_ATOL,
        covers=("UMNN",),
    ),
]
