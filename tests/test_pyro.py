"""``flow(context)`` as a Pyro distribution: guides, likelihoods, plates, particles, Predictive.

The reference problem is the conjugate Gaussian model ``z ~ N(0, I_D)``,
``x_i | z ~ N(z, S² I_D)`` for ``i = 1..n``, whose posterior is ``N(m, v I)`` with
``v = 1 / (1 + n / S²)`` and ``m = v Σ_i x_i / S²``, and whose evidence is Gaussian too: each
coordinate's column ``x_{1..n, d} ~ N(0, S² I_n + 1 1ᵀ)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

pyro = pytest.importorskip(
    "pyro", reason="the Pyro integration's tests need pyro-ppl (the test extra installs it)"
)
import pyro.distributions as dist  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO  # noqa: E402
from pyro.optim import ClippedAdam  # noqa: E402

import exactflow as ef  # noqa: E402
from density_passes import CountDensityPasses  # noqa: E402
from exactflow import distributions as D  # noqa: E402
from exactflow import transforms as T  # noqa: E402
from exactflow.integrations.pyro import PyroFlowDistribution  # noqa: E402

F64 = torch.float64
LATENT, POINTS, NOISE = 2, 8, 1.0  # D, n, S of the conjugate model


@pytest.fixture(autouse=True)
def _fresh_pyro() -> None:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # seeds torch too


def _data(n: int = POINTS) -> Tensor:
    z = torch.tensor([0.5, -1.0], dtype=F64)
    return z + NOISE * torch.randn(n, LATENT, dtype=F64)


def _posterior(x: Tensor) -> tuple[Tensor, float]:
    """Mean ``(*, D)`` and variance of ``p(z | x)`` for data sets ``x (*, n, D)``."""
    variance = 1.0 / (1.0 + x.shape[-2] / NOISE**2)
    return variance * x.sum(-2) / NOISE**2, variance


def _log_evidence(x: Tensor) -> Tensor:
    n = x.shape[-2]
    cov = NOISE**2 * torch.eye(n, dtype=F64) + torch.ones(n, n, dtype=F64)
    columns = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64), cov)
    return columns.log_prob(x.transpose(-1, -2)).sum(-1)


def model(x: Tensor | None, n: int = POINTS) -> None:
    z = pyro.sample("z", dist.Normal(torch.zeros(LATENT, dtype=F64), 1.0).to_event(1))
    with pyro.plate("data", n if x is None else len(x)):
        pyro.sample("x", dist.Normal(z, NOISE).to_event(1), obs=x)


def _guide(flow: ef.Flow) -> Callable[..., None]:
    def guide(x: Tensor | None, n: int = POINTS) -> None:
        pyro.module("q", flow)
        pyro.sample("z", flow())

    return guide


def _exact_guide_flow(x: Tensor) -> ef.Flow:
    """An affine flow equal to the posterior: data -> base is ``(z - m) / sqrt(v)``."""
    mean, variance = _posterior(x)
    flow = ef.Flow(T.Affine(LATENT), D.StandardNormal(LATENT)).double()
    with torch.no_grad():
        flow.transform.log_scale.fill_(-0.5 * math.log(variance))
        flow.transform.shift.copy_(-mean / math.sqrt(variance))
    return flow


def amortized_model(x: Tensor, predict: bool = False) -> None:
    """The conjugate model for data sets ``x (M, n, D)``; ``predict``: draw new ones instead."""
    with pyro.plate("sets", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT, dtype=F64), 1.0).to_event(1))
        loc = z.unsqueeze(-2).expand(*z.shape[:-1], x.shape[-2], LATENT)  # (..., M, n, D)
        points = dist.Normal(loc, NOISE).to_event(2)
        pyro.sample("x", points, obs=None if predict else x)


def _amortized_guide(flow: ef.Flow, seen: list[Tensor] | None = None) -> Callable[..., None]:
    """``q(z | x)`` for each data set of ``x (M, n, D)``, reading the set flattened."""

    def guide(x: Tensor, predict: bool = False) -> None:
        pyro.module("q", flow)
        with pyro.plate("sets", len(x)):
            z = pyro.sample("z", flow(x.flatten(-2)))
        if seen is not None:
            seen.append(z)

    return guide


def _exact_amortized_flow(n: int) -> ef.Flow:
    """A conditional flow equal to the posterior of any data set of ``n`` points.

    Its base is ``N(μ(c), diag(σ(c)²))`` with a linear ``c -> (μ, log σ)``: the posterior mean
    is linear in the flattened data set ``c`` and its variance constant.
    """
    variance = 1.0 / (1.0 + n / NOISE**2)
    base = D.ConditionalDiagNormal(LATENT, n * LATENT, hidden=())
    flow = ef.Flow(T.Affine(LATENT), base).double()
    linear = base.net[-1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        for d in range(LATENT):  # μ_d = v Σ_i x_{i,d} / S²; c flattens (n, D) row by row
            linear.weight[d, d::LATENT] = variance / NOISE**2
        linear.bias[LATENT:] = 0.5 * math.log(variance)
    return flow


def _iaf(context: int = 0, hidden: tuple[int, ...] = (16, 16)) -> ef.Flow:
    return ef.flows.IAF(features=LATENT, context=context, transforms=2, hidden=hidden).double()


# ---------------------------------------------------------------- a Pyro distribution
def test_flow_is_a_pyro_distribution_with_pyro_shapes() -> None:
    flow, cond = _iaf(), _iaf(context=3)
    c = torch.randn(5, 3, dtype=F64)
    assert isinstance(flow(), PyroFlowDistribution) and isinstance(cond(c), PyroFlowDistribution)
    assert pyro.sample("z", flow()).shape == (LATENT,)
    assert type(flow().expand((4,))) is PyroFlowDistribution
    assert type(cond(c).expand((2, 5))) is PyroFlowDistribution
    assert flow().expand_by((4,)).batch_shape == (4,) and flow().event_dim == 1
    assert flow().shape((6,)) == (6, LATENT) and cond(c).shape() == (5, LATENT)
    independent = flow().expand((4,)).to_event(1)
    assert independent.batch_shape == () and independent.event_shape == (4, LATENT)
    masked = cond(c).mask(torch.tensor([True, False, True, True, False]))
    x = masked.rsample()
    assert masked.log_prob(x)[1] == 0 and masked.log_prob(x)[0] != 0

    def sites() -> None:
        pyro.sample("u", flow())
        with pyro.plate("outer", 3, dim=-2), pyro.plate("inner", 5, dim=-1):
            pyro.sample("e", flow())  # an unconditional flow, expanded by the plates
            pyro.sample("c", cond(c))  # batch (5,) broadcast to (3, 5)

    trace = poutine.trace(sites).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["u"]["value"].shape == (LATENT,)
    assert trace.nodes["u"]["log_prob"].shape == ()
    for name in ("e", "c"):
        assert trace.nodes[name]["value"].shape == (3, 5, LATENT)
        assert trace.nodes[name]["log_prob"].shape == (3, 5)
    torch.testing.assert_close(
        trace.nodes["c"]["log_prob"], cond.log_prob(trace.nodes["c"]["value"], c)
    )


def test_a_guides_log_density_costs_no_inverse_pass() -> None:
    x = _data()
    flow = _iaf()
    passes = CountDensityPasses(flow)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, _guide(flow), ClippedAdam({"lr": 1e-2}), elbo)
    for _ in range(3):
        svi.step(x)
    assert passes.calls == 0  # every log q(z) was the kept one
    with poutine.trace() as tracer:
        _guide(flow)(x)
    site = tracer.trace.nodes["z"]
    torch.testing.assert_close(site["fn"].log_prob(site["value"]), flow.log_prob(site["value"]))
    assert passes.calls == 1


# ---------------------------------------------------------------- ELBOs and particles
ELBOS = {
    "trace": lambda: Trace_ELBO(max_plate_nesting=1),
    "trace-vectorized": lambda: Trace_ELBO(
        num_particles=16, vectorize_particles=True, max_plate_nesting=1
    ),
    "meanfield": lambda: TraceMeanField_ELBO(max_plate_nesting=1),
    "meanfield-vectorized": lambda: TraceMeanField_ELBO(
        num_particles=16, vectorize_particles=True, max_plate_nesting=1
    ),
}


@pytest.mark.parametrize("amortized", [False, True], ids=["one-set", "amortized"])
@pytest.mark.parametrize("elbo_name", list(ELBOS))
def test_the_exact_posterior_as_guide_makes_the_elbo_the_evidence(
    elbo_name: str, amortized: bool
) -> None:
    # log p(x, z) - log q(z) = log p(x) for every z when q is the posterior: no Monte-Carlo
    # noise, so a wrong density, shape or particle broadcast shows at 1e-9.
    elbo = ELBOS[elbo_name]()
    seen: list[Tensor] = []
    if amortized:
        x = torch.randn(6, 1, LATENT, dtype=F64) + torch.randn(6, 4, LATENT, dtype=F64)
        the_model, guide = amortized_model, _amortized_guide(_exact_amortized_flow(4), seen)
    else:
        x = _data()
        flow = _exact_guide_flow(x)

        def guide(x: Tensor) -> None:
            pyro.module("q", flow)
            seen.append(pyro.sample("z", flow()))

        the_model = model
    loss = elbo.loss(the_model, guide, x)
    assert loss == pytest.approx(-_log_evidence(x).sum().item(), abs=1e-9)
    if elbo.vectorize_particles:  # the particle plate sits at dim -2, left of the sets' plate
        expected = (elbo.num_particles, len(x) if amortized else 1, LATENT)
    else:
        expected = (len(x), LATENT) if amortized else (LATENT,)
    assert seen[-1].shape == expected


def test_an_iaf_guide_recovers_the_conjugate_posterior() -> None:
    x = _data()
    mean, variance = _posterior(x)
    flow = _iaf()
    elbo = Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    steps = 500
    optim = ClippedAdam({"lr": 2e-2, "lrd": 0.05 ** (1 / steps)})
    svi = SVI(model, _guide(flow), optim, elbo)
    for _ in range(steps):
        svi.step(x)
    z = flow.sample((20_000,))
    sd = math.sqrt(variance)
    # Monte-Carlo error of these estimates: 0.007 sd on the mean, 1% on the variance.
    assert ((z.mean(0) - mean).abs() / sd).max() < 0.2, (z.mean(0), mean)
    assert ((z.var(0) / variance - 1).abs()).max() < 0.1, (z.var(0), variance)


def test_an_amortized_guide_recovers_each_data_sets_posterior() -> None:
    # q(z | x) reads a whole data set (n = 4 points, flattened); trained on fresh data sets
    # from the prior predictive, inside a plate over data sets, 4 vectorized particles each.
    n, sets, steps = 4, 64, 500

    def simulate(m: int) -> Tensor:
        z = torch.randn(m, 1, LATENT, dtype=F64)
        return z + NOISE * torch.randn(m, n, LATENT, dtype=F64)

    flow = _iaf(context=n * LATENT, hidden=(32, 32))
    guide = _amortized_guide(flow)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    optim = ClippedAdam({"lr": 2e-2, "lrd": 0.05 ** (1 / steps)})
    svi = SVI(amortized_model, guide, optim, elbo)
    for _ in range(steps):
        svi.step(simulate(sets))
    held_out = simulate(5)
    mean, variance = _posterior(held_out)  # (5, D): the posterior means differ by ~2 sd
    z = flow.sample((4000,), held_out.flatten(-2))  # (4000, 5, D)
    sd = math.sqrt(variance)
    # Monte-Carlo error: 0.016 sd on the mean, 2% on the variance; the rest is the
    # amortization gap of a small network after 500 steps.
    assert ((z.mean(0) - mean).abs() / sd).max() < 0.3, (z.mean(0), mean)
    assert ((z.var(0) / variance - 1).abs()).max() < 0.2, (z.var(0), variance)


# ---------------------------------------------------------------- Predictive
@pytest.mark.parametrize(
    ("amortized", "parallel"),
    [(False, False), (True, False), (True, True)],
    ids=["one-set", "amortized", "amortized-parallel"],
)
def test_predictive_draws_the_guide_and_the_posterior_predictive(
    amortized: bool, parallel: bool
) -> None:
    # Pyro's parallel Predictive needs the guide's plates to match the model's: with a guide
    # outside every plate it reshapes the draws wrongly for any distribution, so the
    # vectorized case is the amortized one.
    samples = 4000 if parallel else 1500
    if amortized:
        x = torch.randn(3, 1, LATENT, dtype=F64) + torch.randn(3, 4, LATENT, dtype=F64)
        the_model, guide = amortized_model, _amortized_guide(_exact_amortized_flow(4))
        z_shape, x_shape = (samples, 3, LATENT), (samples, 3, 4, LATENT)
    else:
        x = _data()
        the_model, guide = model, _guide(_exact_guide_flow(x))
        z_shape, x_shape = (samples, 1, LATENT), (samples, POINTS, LATENT)
    mean, variance = _posterior(x)
    predictive = Predictive(the_model, guide=guide, num_samples=samples, parallel=parallel)
    out = predictive(x, True) if amortized else predictive(None)
    z, x_new = out["z"], out["x"]
    assert z.shape == z_shape and x_new.shape == x_shape
    z = z.reshape(samples, -1, LATENT)  # (S, sets, D)
    # 5 standard errors of each moment estimate.
    assert ((z.mean(0) - mean).abs()).max() < 5 * math.sqrt(variance / samples)
    assert ((z.var(0) / variance - 1).abs()).max() < 5 * math.sqrt(2 / samples)
    spread = NOISE**2 + variance  # of a new point around the posterior mean
    x_new = x_new.reshape(samples, -1, x_shape[-2], LATENT)  # (S, sets, n, D)
    assert ((x_new.mean(0) - mean.unsqueeze(-2)).abs()).max() < 5 * math.sqrt(spread / samples)
    assert ((x_new.var(0) / spread - 1).abs()).max() < 5 * math.sqrt(2 / samples)
    posterior = Predictive(the_model, posterior_samples={"z": out["z"]}, parallel=parallel)
    again = posterior(x, True) if amortized else posterior(None)
    assert again["x"].shape == x_shape


# ---------------------------------------------------------------- a flow as the likelihood
@pytest.mark.parametrize("context", [0, 3], ids=["unconditional", "conditional"])
def test_a_flow_as_likelihood_scores_the_observations(context: int) -> None:
    flow = ef.flows.MAF(features=LATENT, context=context, transforms=2, hidden=(8,)).double()
    with torch.no_grad():  # away from the identity, so a mismatch would show
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(7, LATENT, dtype=F64)
    c = torch.randn(7, context, dtype=F64) if context else None

    def likelihood(x: Tensor) -> None:
        pyro.module("p", flow)
        with pyro.plate("data", len(x)):
            pyro.sample("x", flow(c) if c is not None else flow(), obs=x)

    trace = poutine.trace(likelihood).get_trace(x)
    torch.testing.assert_close(trace.log_prob_sum(), flow.log_prob(x, c).sum())
    assert trace.nodes["x"]["fn"].batch_shape == (7,)
