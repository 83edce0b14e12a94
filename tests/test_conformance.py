"""The conformance suite: every public transform, in float64, against autograd.

For each registry case: output shapes; both round trips; ``ladj`` against ``log|det|`` of the
autograd Jacobian in both directions; inverse ``ladj`` is minus the forward one at the matching
point; every parameter gets a finite gradient; a ``state_dict`` round trip reproduces outputs.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import exactflow as ef
from exactflow.transforms import ElementwiseMap, Transform

from registry import CASES, Case, build, draw_context, draw_x, draw_y

ids = [c.id for c in CASES]
N = 6  # batch size of the checks


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-8, atol=atol)


def _jacobian_logdet(fn, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log|det ∂fn/∂x|`` per batch row, from the autograd Jacobian of one row at a time."""
    out = []
    for i in range(x.shape[0]):
        c = None if context is None else context[i : i + 1]

        def single(xi: torch.Tensor, c=c) -> torch.Tensor:
            return fn(xi.unsqueeze(0), c)[0][0]

        jac = torch.func.jacrev(single)(x[i])
        n = x[i].numel()
        sign, logabsdet = torch.linalg.slogdet(jac.reshape(n, n))
        assert sign != 0, "singular Jacobian"
        out.append(logabsdet)
    return torch.stack(out)


def test_registry_covers_public_api() -> None:
    covered: set[str] = set()
    for case in CASES:
        covered.add(type(case.make()).__name__)
        covered.update(case.covers)
    public = []
    for name in ef.transforms.__all__:
        obj = getattr(ef.transforms, name)
        if inspect.isclass(obj) and issubclass(obj, Transform | ElementwiseMap):
            if obj not in (Transform, ElementwiseMap):
                public.append(name)
    public += list(ef.flows.__all__)
    missing = sorted(set(public) - covered)
    assert not missing, (
        f"public transforms/presets missing from the conformance registry: {missing}"
    )


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_shapes(case: Case) -> None:
    t = build(case)
    x, c = draw_x(case, N), draw_context(case, N)
    y, ladj = t(x, c)
    assert y.shape == x.shape
    assert ladj.shape == (N,)
    assert y.dtype == ladj.dtype == torch.float64
    yy = draw_y(case, N)
    xx, ladj_inv = t.inverse(yy, c)
    assert xx.shape == yy.shape
    assert ladj_inv.shape == (N,)


@pytest.mark.parametrize("case", CASES, ids=ids)
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


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_inverse_ladj_matches_autograd(case: Case) -> None:
    t = build(case)
    y, c = draw_y(case, N), draw_context(case, N)
    _, ladj = t.inverse(y, c)
    _close(ladj, _jacobian_logdet(t.inverse, y, c), max(case.atol, 1e-8))


@pytest.mark.parametrize("case", CASES, ids=ids)
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
    flow = ef.Flow(t, ef.distributions.StandardNormal(case.event_shape).double())
    x, c = draw_x(case, N), draw_context(case, N)
    flow.log_prob(x, c).sum().backward()
    for name, p in params.items():
        assert p.grad is not None, f"{name} got no gradient from log_prob"
        assert torch.isfinite(p.grad).all(), f"{name} got a non-finite gradient"
    if not case.density:
        return  # samples would leave the transform's codomain
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
