"""The conformance suite: every public transform, in float64, against autograd.

For each registry case: output shapes and the declared shape maps; both round trips; ``ladj``
against ``log|det|`` of the autograd Jacobian in both directions (events flattened, so
shape-changing steps are checked too); inverse ``ladj`` is minus the forward one at the matching
point; every parameter gets a finite gradient; a ``state_dict`` round trip reproduces outputs.
Capability flags adapt the checks: a case without an inverse must raise ``NotImplementedError``
naming what to use instead; a case with an estimated log-determinant is checked in eval mode
against autograd and in train mode for unbiasedness.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import pytest
import torch

import exactflow as ef
from exactflow.transforms import ElementwiseMap, Transform

from cases.base import hutchinson_exp_linear
from registry import CASES, Case, build, draw_context, draw_x, draw_y

ids = [c.id for c in CASES]
N = 6  # batch size of the checks
WITH_INVERSE = [c for c in CASES if c.inverse]
ESTIMATED = [c for c in CASES if c.estimated]


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-8, atol=atol)


def _jacobian_logdet(fn, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log|det ∂fn/∂x|`` per batch row, from the autograd Jacobian of one row at a time.

    The input and output events are flattened, so a step that reshapes its events (same number
    of entries) is checked like any other.
    """
    out = []
    for i in range(x.shape[0]):
        c = None if context is None else context[i : i + 1]

        def single(xi: torch.Tensor, c=c) -> torch.Tensor:
            return fn(xi.unsqueeze(0), c)[0][0]

        jac = torch.func.jacrev(single)(x[i])
        n = x[i].numel()
        assert jac.numel() == n * n, f"not square: {n} inputs, {jac.numel() // n} outputs"
        sign, logabsdet = torch.linalg.slogdet(jac.reshape(-1, n))
        assert sign != 0, "singular Jacobian"
        out.append(logabsdet)
    return torch.stack(out)


def public_transforms() -> list[str]:
    """Every public transform class, elementwise map and preset name."""
    public = []
    for name in ef.transforms.__all__:
        obj = getattr(ef.transforms, name)
        if inspect.isclass(obj) and issubclass(obj, Transform | ElementwiseMap):
            if obj not in (Transform, ElementwiseMap):
                public.append(name)
    return public + list(ef.flows.__all__)


def missing_from(cases: Iterable[Case]) -> list[str]:
    """The public names no case builds or covers."""
    covered: set[str] = set()
    for case in cases:
        covered.add(type(case.make()).__name__)
        covered.update(case.covers)
    return sorted(set(public_transforms()) - covered)


def test_registry_covers_public_api() -> None:
    missing = missing_from(CASES)
    assert not missing, (
        f"public transforms/presets missing from the conformance registry: {missing}"
    )


def test_registry_check_notices_a_missing_transform() -> None:
    def reshapes(case: Case) -> bool:
        return type(case.make()).__name__ == "Reshape" or "Reshape" in case.covers

    assert missing_from([c for c in CASES if not reshapes(c)]) == ["Reshape"]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_shapes(case: Case) -> None:
    t = build(case)
    assert t.forward_shape(case.event_shape) == case.y_shape
    assert t.inverse_shape(case.y_shape) == case.event_shape
    assert t.exact_ladj is not case.estimated
    x, c = draw_x(case, N), draw_context(case, N)
    y, ladj = t(x, c)
    assert y.shape == (N, *case.y_shape)
    assert ladj.shape == (N,)
    assert y.dtype == ladj.dtype == torch.float64
    if not case.inverse:
        return
    yy = draw_y(case, N)
    xx, ladj_inv = t.inverse(yy, c)
    assert xx.shape == (N, *case.event_shape)
    assert ladj_inv.shape == (N,)


@pytest.mark.parametrize("case", [c for c in CASES if not c.inverse], ids=lambda c: c.id)
def test_missing_inverse_says_what_to_use(case: Case) -> None:
    t = build(case)
    with pytest.raises(NotImplementedError, match="use"):
        t.inverse(draw_y(case, N), draw_context(case, N))


@pytest.mark.parametrize("case", WITH_INVERSE, ids=lambda c: c.id)
def test_round_trips(case: Case) -> None:
    t = build(case)
    x, c = draw_x(case, N), draw_context(case, N)
    y, _ = t(x, c)
    _close(t.inverse(y, c)[0], x, case.atol)
    yy = draw_y(case, N, seed=1)
    xx, _ = t.inverse(yy, c)
    _close(t(xx, c)[0], yy, case.atol)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward_ladj_matches_autograd(case: Case) -> None:
    t = build(case)
    x, c = draw_x(case, N), draw_context(case, N)
    _, ladj = t(x, c)
    _close(ladj, _jacobian_logdet(t, x, c), max(case.atol, 1e-8))


@pytest.mark.parametrize("case", WITH_INVERSE, ids=lambda c: c.id)
def test_inverse_ladj_matches_autograd(case: Case) -> None:
    t = build(case)
    y, c = draw_y(case, N), draw_context(case, N)
    _, ladj = t.inverse(y, c)
    _close(ladj, _jacobian_logdet(t.inverse, y, c), max(case.atol, 1e-8))


@pytest.mark.parametrize("case", WITH_INVERSE, ids=lambda c: c.id)
def test_inverse_ladj_is_negative_forward(case: Case) -> None:
    t = build(case)
    x, c = draw_x(case, N), draw_context(case, N)
    y, ladj = t(x, c)
    _, ladj_inv = t.inverse(y, c)
    _close(ladj_inv, -ladj, max(case.atol, 1e-8))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_every_parameter_gets_a_finite_gradient(case: Case) -> None:
    t = build(case)
    params = dict(t.named_parameters())
    if not params:
        pytest.skip("no parameters")
    flow = ef.Flow(t, ef.distributions.StandardNormal(case.y_shape).double())
    assert flow.event_shape == case.event_shape
    x, c = draw_x(case, N), draw_context(case, N)
    flow.log_prob(x, c).sum().backward()
    for name, p in params.items():
        assert p.grad is not None, f"{name} got no gradient from log_prob"
        assert torch.isfinite(p.grad).all(), f"{name} got a non-finite gradient"
    if not case.density or not case.inverse:
        return  # samples would leave the transform's codomain, or cannot be drawn
    t.zero_grad()
    y, c = draw_y(case, N), draw_context(case, N)
    xs, ladj = t.inverse(y, c)
    (xs.sum() + ladj.sum()).backward()
    for name, p in params.items():
        assert p.grad is not None, f"{name} got no gradient from the inverse"
        assert torch.isfinite(p.grad).all(), f"{name} got a non-finite inverse gradient"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_state_dict_round_trip(case: Case) -> None:
    t = build(case, seed=0)
    fresh = build(case, seed=123)
    fresh.load_state_dict(t.state_dict())
    fresh.eval()
    x, c = draw_x(case, N, seed=5), draw_context(case, N)
    y1, l1 = t(x, c)
    y2, l2 = fresh(x, c)
    assert torch.equal(y1, y2)
    assert torch.equal(l1, l2)


# ------------------------------------------------------------------ estimated log-determinants
DRAWS = 4000


def check_unbiased(t: Transform, x: torch.Tensor, c: torch.Tensor | None) -> None:
    """Train-mode ``ladj`` draws average to the eval-mode (exact) value, within 4 standard errors.

    The draws of one row are independent (one batched call over ``DRAWS`` copies of ``x``).
    Raises ``AssertionError`` otherwise.
    """
    with torch.no_grad():
        t.eval()
        exact = t(x, c)[1]  # (N,)
        t.train()
        copies = x.expand(DRAWS, *x.shape)
        context = None if c is None else c.expand(DRAWS, *c.shape)
        draws = t(copies, context)[1]  # (DRAWS, N)
        t.eval()
    assert draws.shape == (DRAWS, *exact.shape)
    error = draws.std(0) / DRAWS**0.5
    assert (error > 0).all(), "the train-mode ladj does not vary: not an estimate"
    z = (draws.mean(0) - exact) / error
    assert (z.abs() < 4).all(), f"biased: the mean is {z.abs().max():.1f} standard errors away"


@pytest.mark.parametrize("case", ESTIMATED, ids=lambda c: c.id)
def test_estimated_ladj_is_unbiased(case: Case) -> None:
    t = build(case)
    check_unbiased(t, draw_x(case, N), draw_context(case, N))


def test_unbiasedness_check_catches_a_biased_estimator() -> None:
    torch.manual_seed(0)
    t = hutchinson_exp_linear(3, probe="uniform").double()  # E[v vᵀ] = I/3: biased
    with torch.no_grad():
        t.log_matrix.add_(torch.eye(3))  # a trace far from zero, so the bias shows
    with pytest.raises(AssertionError, match="biased"):
        check_unbiased(t, torch.randn(N, 3, dtype=torch.float64), None)
