"""Conformance cases of block neural autoregressive flows (BlockNAF and the BNAF preset).

The inverse solves one coordinate at a time with :func:`exactflow.numerics.solve_increasing`
(residual within ``1e-12·(1 + |y|)`` in float64), so the round trips use ``atol=1e-9``; the
log-determinant is exact (log-sum-exp products of the diagonal blocks). Under ``jacrev`` every
solve runs its whole iteration budget (no early stop under a tracer), so the cases cut it to
30 iterations (bracketed Newton converges in under 10 here) to keep the suite fast.
"""

from __future__ import annotations

import exactflow as ef
from exactflow import transforms as T

from casekit import Case

ATOL = 1e-9
MAX_ITER = 30
# BlockNAF stores its layers' parameters divided by 10 (its optimizer gain), so the suite's usual
# noise of 0.2 on every parameter is 0.02 here: the same perturbation of the weights in use.
PERTURB = 0.02


def bnaf_preset(features: int, context: int = 0, hidden: tuple[int, ...] = (8,)) -> T.Transform:
    flow = ef.flows.BNAF(features=features, context=context, transforms=2, hidden=hidden)
    for module in flow.modules():
        if isinstance(module, T.BlockNAF):
            module.max_iter = MAX_ITER
    return flow.transform


CASES = [
    Case(
        "blocknaf-2d",
        lambda: T.BlockNAF(2, hidden=(8, 8), max_iter=MAX_ITER),
        atol=ATOL,
        perturb=PERTURB,
    ),
    Case(
        "blocknaf-4d-context",
        lambda: T.BlockNAF(4, hidden=(12,), context=3, max_iter=MAX_ITER),
        event_shape=(4,),
        context=3,
        atol=ATOL,
        perturb=PERTURB,
    ),
    Case("preset-bnaf", lambda: bnaf_preset(2), atol=ATOL, perturb=PERTURB, covers=("BNAF",)),
    Case(
        "preset-bnaf-3d-context",
        lambda: bnaf_preset(3, context=2, hidden=(6, 6)),
        event_shape=(3,),
        context=2,
        atol=ATOL,
        perturb=PERTURB,
        covers=("BNAF",),
    ),
]
