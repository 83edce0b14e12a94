"""exactflow flows as sbi density estimators: NPE on a simulator with a known posterior.

The posterior of the linear-Gaussian simulator ``θ ~ N(m, s² I)``, ``x = θ + ε``,
``ε ~ N(0, σ² I)`` is Gaussian in closed form; the NPE posterior trained through
:func:`exactflow.integrations.sbi.posterior_nn` must match its mean, covariance and density, and
every posterior method sbi offers must run on it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

sbi = pytest.importorskip("sbi", reason="the sbi integration needs sbi (the test extra has it)")

from sbi.diagnostics import check_sbc, run_sbc, run_tarp  # noqa: E402
from sbi.diagnostics.lc2st import LC2ST_NF  # noqa: E402
from sbi.inference import NLE, NPE, VIPosterior  # noqa: E402
from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters  # noqa: E402
from sbi.samplers.vi.vi_utils import detach_and_deepcopy  # noqa: E402
from sbi.utils.sbiutils import Standardize as SbiStandardize  # noqa: E402

import exactflow as ef  # noqa: E402
from exactflow.integrations.sbi import (  # noqa: E402
    FlowEstimator,
    build_estimator,
    likelihood_nn,
    posterior_nn,
)

D = 2
PRIOR_MEAN, PRIOR_STD, NOISE = 3.0, 2.0, 0.5  # non-unit prior: the z-scoring has work to do


def _prior() -> MultivariateNormal:
    return MultivariateNormal(torch.full((D,), PRIOR_MEAN), PRIOR_STD**2 * torch.eye(D))


def _simulate(theta: torch.Tensor) -> torch.Tensor:
    return theta + NOISE * torch.randn_like(theta)


def _true_posterior(x_o: torch.Tensor) -> MultivariateNormal:
    """``N(μ, v I)`` with ``1/v = 1/s² + 1/σ²`` and ``μ = v (m/s² + x/σ²)``."""
    v = 1 / (1 / PRIOR_STD**2 + 1 / NOISE**2)
    mean = v * (PRIOR_MEAN / PRIOR_STD**2 + x_o / NOISE**2)
    return MultivariateNormal(mean, v * torch.eye(D))


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> object:
    """Small networks train fastest on one thread (and share a busy machine better)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # sbi's trainers write TensorBoard logs to ./sbi-logs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """An NPE posterior from 3000 simulations (a MAF, capped epochs), with its data."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("npe"))  # sbi's trainers write ./sbi-logs
        torch.manual_seed(0)
        prior = _prior()
        theta = prior.sample((3000,))
        x = _simulate(theta)
        # The posterior's mean is affine in x: two affine layers hold it exactly, so a short
        # training run reaches it (the spline presets are exercised below).
        builder = posterior_nn("MAF", transforms=2, hidden=(32,))
        inference = NPE(prior, density_estimator=builder, show_progress_bars=False)
        estimator = inference.append_simulations(theta, x).train(
            max_num_epochs=80, training_batch_size=100, learning_rate=2e-3
        )
        posterior = inference.build_posterior()
    return prior, theta, x, estimator, posterior


X_O = torch.tensor([4.0, 1.5])


def test_builder_returns_flow_estimator(trained: tuple) -> None:
    *_, estimator, _ = trained
    assert isinstance(estimator, FlowEstimator)
    assert isinstance(estimator.flow, ef.Flow)
    assert estimator.input_shape == (D,) and estimator.condition_shape == (D,)


def test_posterior_matches_truth(trained: tuple) -> None:
    *_, posterior = trained
    truth = _true_posterior(X_O)
    draws = posterior.sample((4000,), x=X_O, show_progress_bars=False)
    assert draws.shape == (4000, D)
    # NPE's own error from 3000 simulations (sbi's MAF and NSF show the same): about a
    # sixth of the posterior's standard deviation 0.49 in the mean, a fifth in the variance.
    assert torch.allclose(draws.mean(0), truth.mean, atol=0.15)
    assert torch.allclose(draws.T.cov(), truth.covariance_matrix, atol=0.08)


def test_log_prob_is_the_density_in_data_units(trained: tuple) -> None:
    """KL(p ‖ q) by Monte Carlo over exact posterior draws is small, so log q is in θ's units.

    A z-scoring step without its log-determinant would offset log q by Σ log σ ≈ 1.4 nats.
    """
    *_, posterior = trained
    truth = _true_posterior(X_O)
    theta = truth.sample((4000,))
    kl = (truth.log_prob(theta) - posterior.log_prob(theta, x=X_O)).mean()
    assert abs(float(kl)) < 0.15


def test_batched_methods_and_map(trained: tuple) -> None:
    *_, posterior = trained
    xs = torch.stack([X_O, X_O + 1, X_O - 1])
    draws = posterior.sample_batched((200,), x=xs, show_progress_bars=False)
    assert draws.shape == (200, 3, D)
    log_q = posterior.log_prob_batched(draws, x=xs)
    assert log_q.shape == (200, 3) and torch.isfinite(log_q).all()
    means = torch.stack([_true_posterior(x).mean for x in xs])
    assert torch.allclose(draws.mean(0), means, atol=0.2)
    posterior.set_default_x(X_O)  # sbi's map reads the default x
    mode = posterior.map(num_iter=200, num_init_samples=200, show_progress_bars=False)
    assert torch.allclose(mode.reshape(D), _true_posterior(X_O).mean, atol=0.15)


def test_estimator_methods(trained: tuple) -> None:
    *_, estimator, _ = trained
    condition = torch.stack([X_O, X_O + 1])
    draws, log_q = estimator.sample_and_log_prob(torch.Size((50,)), condition)
    assert draws.shape == (50, 2, D) and log_q.shape == (50, 2)
    again = estimator.log_prob(draws, condition)
    assert torch.allclose(log_q, again, atol=1e-4)
    # At exact posterior draws the base-space points are close to standard normal.
    theta = _true_posterior(X_O).sample((2000,))
    z = estimator.inverse_transform(theta, X_O.expand(2000, D))
    assert z.shape == (2000, D)
    assert torch.allclose(z.mean(0), torch.zeros(D), atol=0.3)
    assert torch.allclose(z.std(0), torch.ones(D), atol=0.2)


def test_sbc_and_tarp(trained: tuple) -> None:
    prior, *_, posterior = trained
    torch.manual_seed(1)
    theta = prior.sample((100,))
    x = _simulate(theta)
    ranks, dap = run_sbc(theta, x, posterior, num_posterior_samples=100, show_progress_bar=False)
    assert ranks.shape == (100, D) and dap.shape == (100, D)
    checks = check_sbc(ranks, theta, dap, num_posterior_samples=100)
    assert (checks["ks_pvals"] > 1e-3).all()  # calibrated ranks: uniformity is not rejected
    ecp, alpha = run_tarp(theta, x, posterior, num_posterior_samples=100, num_bins=20)
    assert ecp.shape == alpha.shape
    assert float((ecp - alpha).abs().max()) < 0.25  # close to the diagonal


def test_lc2st_nf(trained: tuple) -> None:
    prior, *_, estimator, posterior = trained
    torch.manual_seed(2)
    theta = prior.sample((400,))
    x = _simulate(theta)
    draws = posterior.sample_batched((1,), x=x, show_progress_bars=False)[0]
    test = LC2ST_NF(
        prior_samples=theta,
        xs=x,
        posterior_samples=draws,
        flow_inverse_transform=lambda t, c: estimator.inverse_transform(t, c),
        flow_base_dist=MultivariateNormal(torch.zeros(D), torch.eye(D)),
        num_eval=500,
        num_trials_null=3,
    )
    test.train_under_null_hypothesis()
    test.train_on_observed_data()
    statistic = test.get_statistic_on_observed_data(x_o=X_O)
    p_value = test.p_value(x_o=X_O)
    assert math.isfinite(float(statistic)) and 0 <= float(p_value) <= 1


def test_vi_posterior_trains_an_exactflow_q() -> None:
    """``VIPosterior(potential_fn, prior, q=flow())`` builds, copies and trains the flow."""
    prior = _prior()
    truth = _true_posterior(X_O)

    def potential(theta: torch.Tensor, x_o: torch.Tensor) -> torch.Tensor:
        return truth.log_prob(theta)

    torch.manual_seed(3)
    flow = ef.flows.MAF(features=D, transforms=2, hidden=(16,))
    before = [p.detach().clone() for p in flow.parameters()]
    posterior = VIPosterior(potential, prior, q=flow())
    posterior.set_default_x(X_O)
    posterior.train(
        max_num_iters=30,
        n_particles=32,
        learning_rate=1e-2,
        show_progress_bar=False,
        quality_control=False,
    )
    assert any(not torch.equal(a, b) for a, b in zip(before, flow.parameters(), strict=True))
    draws = posterior.sample((100,))
    assert draws.shape == (100, D)
    assert torch.isfinite(posterior.log_prob(draws)).all()


@pytest.mark.parametrize("model", ["NSF", "MAF", "UMNN"], ids=["NSF", "MAF", "UMNN"])
def test_sbi_walks_and_copies_a_flow_distribution(model: str) -> None:
    """sbi's VI copies ``q`` with a walker that rebuilds every list or tuple it meets.

    It cannot rebuild one that sits inside a dict: a flow's ``config`` (``hidden`` is a list)
    and the spline's per-dtype cache (evaluated once, so filled) must not hold such values.
    """
    flow = ef.registry.build({"name": model, "kwargs": {"features": 2, "transforms": 2}})
    x = torch.randn(5, 2)
    expected = flow.log_prob(x)
    copy = detach_and_deepcopy(flow())
    assert copy.flow is not flow
    assert torch.allclose(copy.log_prob(x), expected)
    assert copy.flow.config == flow.config and copy.flow.config["hidden"] == [64, 64]


def test_nle_with_mcmc() -> None:
    torch.manual_seed(4)
    prior = _prior()
    theta = prior.sample((3000,))
    x = _simulate(theta)
    builder = likelihood_nn("MAF", transforms=2, hidden=(32,))
    inference = NLE(prior, density_estimator=builder, show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(
        max_num_epochs=60, training_batch_size=100, learning_rate=2e-3
    )
    assert isinstance(estimator, FlowEstimator)
    # The likelihood's density is in x's units and conditioned on θ.
    log_q = estimator.log_prob(x[:5].unsqueeze(0), theta[:5])
    assert log_q.shape == (1, 5) and torch.isfinite(log_q).all()
    mcmc = MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=10, warmup_steps=50, thin=1
    )
    posterior = inference.build_posterior(posterior_parameters=mcmc)
    np.random.seed(4)  # the slice sampler draws from numpy
    draws = posterior.sample((500,), x=X_O, show_progress_bars=False)
    assert draws.shape == (500, D)
    # Off by at most 0.07 over seeds 4-6 (the posterior's standard deviation is 0.49).
    assert torch.allclose(draws.mean(0), _true_posterior(X_O).mean, atol=0.2)


# ---------------------------------------------------------------------------- the builder


def _first_step(estimator: FlowEstimator) -> nn.Module:
    return estimator.flow.transform.transforms[0]


def test_z_score_input_is_an_exact_affine_step() -> None:
    torch.manual_seed(5)
    theta = torch.randn(500, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([5.0, -2.0, 0.0])
    x = torch.randn(500, 4) * 3 + 1
    estimator = build_estimator(theta, x, "MAF", transforms=1, hidden=(8,))
    affine = _first_step(estimator)
    assert isinstance(affine, ef.transforms.Affine)
    assert not affine.log_scale.requires_grad
    std, mean = theta.std(0), theta.mean(0)
    assert torch.allclose(affine.log_scale, -std.log(), atol=1e-5)
    assert torch.allclose(affine.shift, -mean / std, atol=1e-5)
    # The condition is standardized in front of the (identity) embedding, by sbi's module.
    standardize = estimator.embedding_net[0]
    assert isinstance(standardize, SbiStandardize)
    assert torch.allclose(standardize._mean, x.mean(0)) and torch.allclose(
        standardize._std, x.std(0)
    )
    # The density stays normalized in θ's units: log q shifts by -Σ log σ against z-space.
    inner = estimator.flow.transform.transforms[1]
    _, ladj = estimator.flow.transform(theta[:4], estimator.embedding_net(x[:4]))
    _, inner_ladj = inner((theta[:4] - mean) / std, estimator.embedding_net(x[:4]))
    assert torch.allclose(ladj - inner_ladj, -std.log().sum().expand(4), atol=1e-4)


def test_z_score_structured_and_none() -> None:
    theta = torch.randn(400, 3) * 2 + 1
    x = torch.randn(400, 3)
    structured = build_estimator(theta, x, "MAF", z_score_input="structured", transforms=1)
    log_scale = _first_step(structured).log_scale
    assert torch.allclose(log_scale, log_scale[0].expand(3))  # one scale for every dimension
    plain = build_estimator(theta, x, "MAF", z_score_input=None, z_score_condition="none")
    assert not isinstance(_first_step(plain), ef.transforms.Affine)
    assert isinstance(plain.embedding_net, nn.Identity)


PRESETS = ["MAF", "IAF", "NSF", "RealNVP", "NICE", "NAF", "UMNN", "BNAF", "Planar", "Radial"]


@pytest.mark.parametrize("model", PRESETS, ids=PRESETS)
def test_every_conditional_preset_builds(model: str) -> None:
    torch.manual_seed(6)
    theta, x = torch.randn(64, 2), torch.randn(64, 3)
    estimator = posterior_nn(model.lower(), transforms=1, hidden=(8,))(theta, x)
    loss = estimator.loss(theta[:8], x[:8])
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert estimator.sample(torch.Size((3,)), x[:2]).shape == (3, 2, 2)


def test_embedding_net_reads_structured_conditions() -> None:
    theta, x = torch.randn(64, 2), torch.randn(64, 2, 3)
    embedding = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    estimator = posterior_nn("NSF", embedding_net=embedding, transforms=1, hidden=(8,))(theta, x)
    assert estimator.flow.context == 4
    assert estimator.log_prob(theta[:5], x[:5]).shape == (1, 5)
    assert estimator.sample(torch.Size((2,)), x[:3]).shape == (2, 3, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "NoSuchFlow"}, ValueError, "registered preset"),
        ({"model": "NSF", "features": 3}, TypeError, "set by the builder"),
        ({"model": "NSF", "z_score_input": "sometimes"}, ValueError, "must be one of"),
    ],
    ids=["unknown-model", "features-given", "bad-z-score"],
)
def test_builder_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_estimator(torch.randn(10, 2), torch.randn(10, 2), **kwargs)


def test_inputs_must_be_vectors() -> None:
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        build_estimator(torch.randn(10, 2, 2), torch.randn(10, 2))


def test_posterior_nn_rejects_a_bad_z_score_at_once() -> None:
    with pytest.raises(ValueError, match="z_score_x"):
        posterior_nn("NSF", z_score_x="all")


def test_sbi_zuko_wrapper_runs_an_exactflow_flow() -> None:
    """Code written for zuko flows: sbi's ``ZukoFlow`` needs ``flow(c).transform`` and
    ``rsample_and_log_prob`` on the distribution, and gets the flow's own answers."""
    from sbi.neural_nets.estimators.zuko_flow import ZukoFlow

    torch.manual_seed(5)
    flow = ef.flows.NSF(features=D, context=3, transforms=2, hidden=(16,)).double()
    wrapped = ZukoFlow(flow, nn.Identity(), torch.Size((D,)), torch.Size((3,)))
    theta, x = torch.randn(7, D, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    z = wrapped.inverse_transform(theta, x)
    assert torch.equal(z, flow.transform(theta, x)[0])
    draws, log_q = wrapped.sample_and_log_prob(torch.Size((4,)), x)
    assert draws.shape == (4, 7, D) and log_q.shape == (4, 7)
    torch.testing.assert_close(log_q, flow.log_prob(draws, x))
    torch.testing.assert_close(wrapped.log_prob(theta, x)[0], flow.log_prob(theta, x))
    # One condition for many inputs broadcasts, as sbi's estimators do.
    assert wrapped.inverse_transform(theta, x[:1]).shape == (7, D)
