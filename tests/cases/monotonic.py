"""Conformance cases of the monotonic neural maps (NAF's deep sigmoidal map).

Their inverses are numerical (:func:`exactflow.numerics.solve_increasing`, residual within
``1e-12·(1 + |y|)`` in float64), so the round trips use a matching ``atol``.
"""

from __future__ import annotations

from collections.abc import Callable

from exactflow import transforms as T

from casekit import Case

ATOL = 1e-9


def deep_sigmoid_case(id: str, make: Callable[[], T.Transform], features: int) -> Case:
    return Case(id, make, event_shape=(features,), atol=ATOL, covers=("DeepSigmoid",))


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
]
