"""Replays, as a user would, each Pyro, sbi and torch.distributions call that exactflow 0.1 failed.

Each line says `ok` and what it measured, or `FAILED` and the error; the exit code is the number
of failures. Small budgets: about a minute on 2 CPU cores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ecosystem_check.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam, ClippedAdam
from sbi.diagnostics.lc2st import LC2ST_NF
from sbi.inference import NPE, VIPosterior
from sbi.utils.tracking import TensorBoardTracker
from torch.distributions import MultivariateNormal
from torch.utils.tensorboard import SummaryWriter

import exactflow as ef
from exactflow.integrations.sbi import posterior_nn

CHECKS: list[tuple[str, Callable[[], str]]] = []


def check(name: str) -> Callable:
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        CHECKS.append((name, fn))
        return fn

    return register


# ---------------------------------------------------------------------------- Pyro
X = torch.tensor([0.5, -1.0]) + torch.randn(8, 2, generator=torch.Generator().manual_seed(0))


def model(x: torch.Tensor) -> None:  # z ~ N(0, I), x_i | z ~ N(z, I): posterior N(Σx/9, I/9)
    z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def fit_guide(elbo: Trace_ELBO, steps: int = 500) -> tuple[ef.Flow, Callable]:
    pyro.clear_param_store()
    q = ef.flows.IAF(features=2, transforms=2, hidden=(16, 16))

    def guide(x: torch.Tensor) -> None:
        pyro.module("q", q)
        pyro.sample("z", q())

    svi = SVI(model, guide, ClippedAdam({"lr": 2e-2, "lrd": 0.995}), elbo)
    for _ in range(steps):
        svi.step(X)
    return q, guide


@check("pyro.sample('z', flow()) in a guide, Trace_ELBO")
def _guide() -> str:
    q, _ = fit_guide(Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1))
    mean = q.sample((20_000,)).mean(0)
    return f"posterior mean {mean.tolist()} vs exact {(X.sum(0) / 9).tolist()}"


@check("vectorize_particles=True and plates, TraceMeanField_ELBO")
def _vectorized() -> str:
    elbo = TraceMeanField_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    q, _ = fit_guide(elbo)
    var = q.sample((20_000,)).var(0)
    return f"posterior variance {var.tolist()} vs exact {1 / 9:.4f}"


@check("flow().to_event, .expand in a plate")
def _to_event() -> str:
    d = ef.flows.MAF(features=2, transforms=1)().expand((3,)).to_event(1)
    with pyro.plate("p", 5):
        z = pyro.sample("z", d)
    return f"batch {tuple(d.batch_shape)} event {tuple(d.event_shape)}; draw {tuple(z.shape)}"


@check("Predictive with an exactflow guide")
def _predictive() -> str:
    _, guide = fit_guide(Trace_ELBO(), steps=50)
    draws = Predictive(model, guide=guide, num_samples=200)(X)
    return f"sites {sorted(draws)}: z {tuple(draws['z'].shape)}, x {tuple(draws['x'].shape)}"


@check("IAF guide: SVI step vs the raw rsample_and_log_prob loss")
def _speed() -> str:
    q = ef.flows.IAF(features=16, transforms=5, hidden=(64, 64))
    x = torch.randn(100, 16)

    def model16(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(16), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide16(x: torch.Tensor) -> None:
        pyro.module("q16", q)
        pyro.sample("z", q())

    pyro.clear_param_store()
    elbo = Trace_ELBO(num_particles=32, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model16, guide16, Adam({"lr": 1e-3}), elbo)
    opt = torch.optim.Adam(q.parameters(), lr=1e-3)
    normal = dist.Normal(torch.zeros(16), 1.0)

    def raw() -> None:
        z, log_q = q.rsample_and_log_prob((32,))
        log_lik = dist.Normal(z[:, None], 1.0).log_prob(x).sum((-1, -2))
        loss = (log_q - log_lik - normal.log_prob(z).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(5):
                fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2] / 5

    raw()
    svi.step(x)
    t_svi, t_raw = timed(lambda: svi.step(x)), timed(raw)
    return f"SVI {1e3 * t_svi:.1f} ms vs raw {1e3 * t_raw:.1f} ms per step: {t_svi / t_raw:.2f}x"


@check("pyro.sample('x', flow(c), obs=x): a flow as likelihood")
def _likelihood() -> str:
    flow = ef.flows.MAF(features=2, context=3, transforms=2)
    c, x = torch.randn(6, 3), torch.randn(6, 2)

    def lik() -> None:
        with pyro.plate("n", 6):
            pyro.sample("x", flow(c), obs=x)

    trace = pyro.poutine.trace(lik).get_trace()
    gap = float((trace.log_prob_sum() - flow.log_prob(x, c).sum()).abs().detach())
    return f"|trace log_prob_sum - flow.log_prob sum| = {gap:.1e}"


# ---------------------------------------------------------------------------- sbi
def trained_npe() -> tuple:
    torch.manual_seed(0)
    prior = MultivariateNormal(torch.zeros(2), torch.eye(2))
    theta = prior.sample((2000,))
    x = theta + 0.5 * torch.randn_like(theta)  # p(θ | x) = N(0.8 x, 0.2 I)
    estimator = posterior_nn("NSF", transforms=3, hidden=(32, 32))
    tracker = TensorBoardTracker(SummaryWriter(tempfile.mkdtemp()))  # not ./sbi-logs
    npe = NPE(prior, density_estimator=estimator, tracker=tracker, show_progress_bars=False)
    npe.append_simulations(theta, x)
    estimator = npe.train(max_num_epochs=300, show_train_summary=False)
    return prior, estimator, npe.build_posterior()


SBI: dict = {}


@check("sbi NPE(density_estimator=posterior_nn('NSF')): sample, log_prob, map")
def _npe() -> str:
    SBI["npe"] = trained_npe()
    posterior = SBI["npe"][2]
    x_o = torch.tensor([1.0, -0.5])
    draws = posterior.sample((2000,), x=x_o, show_progress_bars=False)
    lp = posterior.log_prob(draws[:5], x=x_o)
    posterior.set_default_x(x_o)
    mode = posterior.map(show_progress_bars=False)
    return (
        f"mean {draws.mean(0).tolist()} vs exact [0.8, -0.4]; var {draws.var(0).tolist()}"
        f" vs 0.2; log_prob {tuple(lp.shape)}; map {mode.flatten().tolist()}"
    )


@check("estimator.sample_and_log_prob and inverse_transform")
def _estimator() -> str:
    _, estimator, _ = SBI["npe"]
    c = torch.tensor([[1.0, -0.5]])
    draws, log_q = estimator.sample_and_log_prob(torch.Size((100,)), c)
    z = estimator.inverse_transform(draws[:, 0], c.expand(100, 2))
    return f"draws {tuple(draws.shape)}, log_q {tuple(log_q.shape)}, noise {tuple(z.shape)}"


@check("LC2ST_NF on the exactflow posterior")
def _lc2st() -> str:
    prior, estimator, posterior = SBI["npe"]
    theta = prior.sample((300,))
    x = theta + 0.5 * torch.randn_like(theta)
    draws = posterior.sample_batched((1,), x=x, show_progress_bars=False)[0]
    test = LC2ST_NF(
        prior_samples=theta,
        xs=x,
        posterior_samples=draws,
        flow_inverse_transform=lambda t, c: estimator.inverse_transform(t, c),
        flow_base_dist=MultivariateNormal(torch.zeros(2), torch.eye(2)),
        num_eval=300,
        num_trials_null=3,
    )
    test.train_under_null_hypothesis(verbosity=0)
    test.train_on_observed_data()
    return f"p-value at x_o: {float(test.p_value(x_o=torch.tensor([1.0, -0.5]))):.2f}"


@check("VIPosterior(potential_fn, prior, q=flow())")
def _vi() -> str:
    prior = MultivariateNormal(torch.zeros(2), torch.eye(2))
    truth = MultivariateNormal(torch.tensor([0.8, -0.4]), 0.2 * torch.eye(2))
    flow = ef.flows.NSF(features=2, transforms=2, hidden=(16, 16))
    posterior = VIPosterior(lambda theta, x_o: truth.log_prob(theta), prior, q=flow())
    posterior.set_default_x(torch.tensor([1.0, -0.5]))
    posterior.train(max_num_iters=300, show_progress_bar=False, quality_control=False)
    draws = posterior.sample((4000,))
    return f"mean {draws.mean(0).tolist()} vs [0.8, -0.4]"


# ---------------------------------------------------------------------------- torch
@check("torch.distributions: .mean, .variance, .entropy() say what to use")
def _moments() -> str:
    d = ef.flows.MAF(features=2, transforms=1)()
    lines = []
    for what in ("mean", "variance", "entropy"):
        try:
            value = getattr(d, what)
            value() if callable(value) else None
        except NotImplementedError as error:
            lines.append(str(error))
        else:
            raise AssertionError(f"{what} did not raise")
    assert all("\n" not in line and "flow.sample" in line for line in lines), lines
    return lines[0]


def main() -> int:
    pyro.set_rng_seed(0)
    failures = 0
    for name, fn in CHECKS:
        start = time.perf_counter()
        try:
            result = fn()
        except Exception:
            failures += 1
            print(f"FAILED  {name}\n{traceback.format_exc()}")
            continue
        print(f"ok      {name} [{time.perf_counter() - start:.1f} s]: {result}")
    print(f"{len(CHECKS) - failures}/{len(CHECKS)} ok")
    return failures


if __name__ == "__main__":
    sys.exit(main())
