"""Flow-level checks: densities integrate to one, samples match the density, torch view."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, constraints

import exactflow as ef
from exactflow import distributions as D
from exactflow import transforms as T
from exactflow.transforms.base import OpenInterval

from registry import CASES, Case, build

DENSITY_2D = [
    c
    for c in CASES
    if c.event_shape == c.y_shape == (2,) and c.context == 0 and c.density and c.inverse
]


def _bounded(t: T.Transform) -> bool:
    return isinstance(t.domain, OpenInterval) or t.domain is constraints.unit_interval


def _box(t: T.Transform) -> tuple[float, float]:
    """The interval a bounded transform's domain spans in every coordinate."""
    if isinstance(t.domain, OpenInterval):
        return t.domain.lower, t.domain.upper
    return 0.0, 1.0


def _grid(lo: float, hi: float, n: int) -> tuple[torch.Tensor, float]:
    """Midpoints of an ``n × n`` grid on ``[lo, hi]²`` and the area of one cell."""
    h = (hi - lo) / n
    axis = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), h * h


def _integral(flow: ef.Flow, lo: float, hi: float, n: int = 1000) -> float:
    points, cell = _grid(lo, hi, n)
    with torch.no_grad():
        density = torch.cat([flow.log_prob(p).exp() for p in points.split(250_000)])
    return float(density.sum() * cell)


@pytest.mark.parametrize("case", DENSITY_2D, ids=[c.id for c in DENSITY_2D])
def test_density_integrates_to_one(case: Case) -> None:
    t = build(case)
    flow = ef.Flow(t, D.StandardNormal(2)).double()
    lo, hi = _box(t) if _bounded(t) else (-12.0, 12.0)
    assert abs(_integral(flow, lo, hi) - 1.0) < 1e-3


@pytest.mark.parametrize(
    "base",
    [
        D.DiagNormal(2),
        D.GaussianMixture(2, components=3),
    ],
    ids=["diag-normal", "mixture"],
)
def test_base_densities_integrate_to_one(base: D.BaseDistribution) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.3 * torch.randn_like(p))
    flow = ef.Flow(T.Affine(2), base).double()
    assert abs(_integral(flow, -12.0, 12.0) - 1.0) < 1e-3


def test_conditional_base_integrates_to_one_for_each_context() -> None:
    torch.manual_seed(0)
    base = D.ConditionalDiagNormal(2, context=3, hidden=(8,)).double()
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.3 * torch.randn_like(p))
    flow = ef.Flow(T.Affine(2), base).double()
    points, cell = _grid(-12.0, 12.0, 800)
    for c in torch.randn(3, 3, dtype=torch.float64):
        with torch.no_grad():
            mass = flow.log_prob(points, context=c).exp().sum() * cell
        assert abs(float(mass) - 1.0) < 1e-3


@pytest.mark.parametrize("case", DENSITY_2D, ids=[c.id for c in DENSITY_2D])
def test_sample_moments_match_importance_weights(case: Case) -> None:
    """Moments of samples agree with self-normalized importance sampling on ``log_prob``."""
    t = build(case)
    flow = ef.Flow(t, D.StandardNormal(2)).double()
    torch.manual_seed(1)
    n = 40_000
    x = flow.sample((n,))
    if _bounded(t):
        lo, hi = _box(t)
        proposal = torch.distributions.Independent(
            torch.distributions.Uniform(torch.full((2,), lo, dtype=torch.float64), hi), 1
        )
    else:
        cov = torch.cov(x.T) * 4 + 1e-3 * torch.eye(2, dtype=torch.float64)
        proposal = torch.distributions.MultivariateNormal(x.mean(0), cov)
    xq = proposal.sample((4 * n,))
    with torch.no_grad():
        logw = flow.log_prob(xq) - proposal.log_prob(xq)
    w = torch.softmax(logw, 0)
    std = x.std(0)
    for f in (lambda v: v, lambda v: v.square(), lambda v: v[:, :1] * v[:, 1:]):
        sampled, weighted = f(x).mean(0), (w[:, None] * f(xq)).sum(0)
        scale = f(x).std(0)
        # Both estimates have Monte Carlo error ~ scale / sqrt(n); allow 6 of those.
        assert torch.all((sampled - weighted).abs() < 6 * scale / math.sqrt(n) + 0.01 * std.mean())


# ---------------------------------------------------------------- distribution view and shapes
def _conditional_flow(features: int = 2, context: int = 3) -> ef.Flow:
    torch.manual_seed(0)
    base = D.ConditionalDiagNormal(features, context, hidden=(8,))
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ef.Flow(T.Compose([T.Affine(features)]), base)


def test_distribution_view_shapes_with_context() -> None:
    flow = _conditional_flow()
    c = torch.randn(4, 5, 3)
    dist = flow(c)
    assert isinstance(dist, torch.distributions.Distribution)
    assert dist.batch_shape == (4, 5) and dist.event_shape == (2,)
    assert dist.sample((7,)).shape == (7, 4, 5, 2)
    assert dist.rsample().shape == (4, 5, 2)
    assert dist.log_prob(torch.randn(7, 4, 5, 2)).shape == (7, 4, 5)
    assert dist.log_prob(torch.randn(2)).shape == (4, 5)  # broadcasts over the batch
    ind = Independent(dist, 2)
    assert ind.log_prob(torch.randn(3, 4, 5, 2)).shape == (3,)
    assert ind.rsample((3,)).shape == (3, 4, 5, 2)


def test_distribution_view_without_context() -> None:
    flow = ef.Flow(T.Affine(3), D.StandardNormal(3))
    dist = flow()
    assert dist.batch_shape == () and dist.event_shape == (3,)
    assert dist.sample((2, 5)).shape == (2, 5, 3)
    assert flow.log_prob(torch.randn(2, 5, 3)).shape == (2, 5)
    x, logq = dist.sample_and_log_prob((6,))
    torch.testing.assert_close(logq, flow.log_prob(x))


def test_unconditional_distribution_view_expands() -> None:
    flow = ef.Flow(T.Affine(3), D.StandardNormal(3))
    dist = flow().expand((4, 2))
    assert dist.batch_shape == (4, 2) and dist.event_shape == (3,)
    assert dist.sample((5,)).shape == (5, 4, 2, 3)
    assert dist.rsample().shape == (4, 2, 3)
    x = torch.randn(5, 4, 2, 3)
    torch.testing.assert_close(dist.log_prob(x), flow.log_prob(x))
    assert dist.log_prob(torch.randn(3)).shape == (4, 2)  # broadcast to the batch shape
    assert Independent(dist, 2).log_prob(x).shape == (5,)
    assert dist.expand((7, 4, 2)).batch_shape == (7, 4, 2)


def test_checks_step_aside_under_a_tracer() -> None:
    flow = ef.Flow(T.Affine(2), D.StandardNormal(2))
    x = torch.tensor([[0.0, float("nan")], [1.0, 2.0]])
    with pytest.raises(ValueError, match="non-finite"):
        flow.log_prob(x)
    traced = torch.func.vmap(flow.log_prob)(x)  # no bool(tensor) under vmap: no check
    assert traced.isnan()[0] and traced[1].isfinite()


def test_sample_with_single_and_batched_context() -> None:
    flow = _conditional_flow()
    assert flow.sample((10,), context=torch.randn(3)).shape == (10, 2)
    assert flow.sample((10,), context=torch.randn(4, 3)).shape == (10, 4, 2)


def test_rsample_is_differentiable_and_its_log_prob_exact() -> None:
    flow = _conditional_flow().double()
    c = torch.randn(5, 3, dtype=torch.float64)
    x, logq = flow.rsample_and_log_prob((4,), context=c)
    torch.testing.assert_close(logq, flow.log_prob(x, context=c))
    (x.sum() + logq.sum()).backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_mixture_base_has_no_rsample_but_samples() -> None:
    flow = ef.Flow(T.Affine(2), D.GaussianMixture(2, components=4))
    assert flow.sample((5,)).shape == (5, 2)
    with pytest.raises(NotImplementedError, match="sample"):
        flow.rsample((5,))


# ---------------------------------------------------------------- bad input
def test_bad_input_is_reported_clearly() -> None:
    flow = ef.Flow(T.Affine(2), D.StandardNormal(2))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\), got \(4, 3\)"):
        flow.log_prob(torch.randn(4, 3))
    with pytest.raises(TypeError, match="floating-point.*int64"):
        flow.log_prob(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="float64 but the flow's parameters are torch.float32"):
        flow.log_prob(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        flow.log_prob([[0.0, 1.0]])
    bad = torch.randn(4, 2)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite value at index \(2, 1\)"):
        flow.log_prob(bad)
    with pytest.raises(ValueError, match="unconditional"):
        flow.log_prob(torch.randn(4, 2), context=torch.randn(4, 1))


def test_context_errors() -> None:
    flow = _conditional_flow()
    with pytest.raises(ValueError, match=r"needs context= of shape \(\.\.\., 3\), got None"):
        flow.log_prob(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"needs context"):
        flow.sample((3,))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 3\), got \(4, 2\)"):
        flow.log_prob(torch.randn(4, 2), context=torch.randn(4, 2))
    with pytest.raises(ValueError, match="needs context"):
        flow()


def test_outside_the_domain_is_rejected() -> None:
    flow = ef.Flow(T.Logit(), D.StandardNormal(2))
    with pytest.raises(ValueError, match=r"outside the flow's domain .* index \(1, 0\)"):
        flow.log_prob(torch.tensor([[0.5, 0.5], [1.5, 0.5]]))
    assert torch.isfinite(flow.log_prob(torch.tensor([[0.5, 0.25]]))).all()
