"""Continuous-time flows (FFJORD): traces, estimators, adjoint gradients, NFE, regularizers."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import exactflow as ef
from exactflow import transforms as T

pytest.importorskip("torchdiffeq")

F64 = torch.float64


def _ode(features: int = 3, context: int = 0, scale: float = 0.5, **kwargs) -> T.ContinuousFlow:
    """A float64 ODE flow whose dynamics are not zero (the output layer is moved)."""
    torch.manual_seed(0)
    t = T.ContinuousFlow(features, hidden=(8,), context=context, **kwargs).double()
    with torch.no_grad():
        t.net.layers[-1].weight.normal_(0.0, scale)
        t.net.layers[-1].bias.normal_(0.0, scale)
    return t


def test_starts_at_the_identity() -> None:
    torch.manual_seed(0)
    t = T.ContinuousFlow(2, hidden=(8,)).double().eval()
    x = torch.randn(5, 2, dtype=F64)
    y, ladj = t(x)  # f = 0: only the solver's interpolation rounds
    torch.testing.assert_close(y, x, rtol=1e-13, atol=1e-13)
    assert torch.equal(ladj, torch.zeros(5, dtype=F64))


def test_jacobian_products_match_autograd() -> None:
    """The exact trace (identity tangents) and the probe's product against autograd."""
    t = _ode(3, context=2)
    z, c = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    time = torch.tensor(0.3, dtype=F64)
    terms = t.net.context_terms(c)
    eye = torch.eye(3, dtype=F64)[None]
    f, columns = t.net(z, time, terms, eye)  # (4, 3, 3): row k is J e_k
    probe = ef.numerics.rademacher(z)[:, None, :]
    _, product = t.net(z, time, terms, probe)
    for i in range(4):

        def fi(v: torch.Tensor, i: int = i) -> torch.Tensor:
            return t.net(v[None], time, terms[i : i + 1], eye)[0][0]

        jac = torch.autograd.functional.jacobian(fi, z[i])
        torch.testing.assert_close(f[i], fi(z[i]))
        torch.testing.assert_close(columns[i].T, jac, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(product[i, 0], jac @ probe[i, 0], rtol=1e-12, atol=1e-12)
        exact = columns[i].diagonal().sum()
        torch.testing.assert_close(exact, torch.trace(jac), rtol=1e-12, atol=1e-12)


def test_eval_ladj_matches_the_autograd_jacobian_of_the_solve() -> None:
    t = _ode(3).eval()
    x = torch.randn(3, 3, dtype=F64)
    _, ladj = t(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: t(v[None])[0][0], x[i])
        assert abs(float((torch.linalg.slogdet(jac)[1] - ladj[i]).detach())) < 1e-6


def test_hutchinson_ladj_is_unbiased_and_not_exact() -> None:
    t = _ode(3, scale=1.0)
    x = torch.randn(2, 3, dtype=F64)
    with torch.no_grad():
        exact = t.eval()(x)[1]
        draws = t.train()(x.expand(3000, 2, 3))[1]  # (3000, 2): one probe per row
    error = draws.std(0) / math.sqrt(3000)
    assert (draws.std(0) > 1e-3).all()  # an estimate, not the exact value
    assert ((draws.mean(0) - exact).abs() < 4 * error).all()


@pytest.mark.parametrize("context", [0, 2])
def test_adjoint_and_direct_gradients_agree(context: int) -> None:
    grads = []
    for adjoint in (True, False):
        t = _ode(3, context=context, trace="exact", adjoint=adjoint, atol=1e-9, rtol=1e-9)
        torch.manual_seed(1)
        x = torch.randn(5, 3, dtype=F64, requires_grad=True)
        c = torch.randn(5, context, dtype=F64, requires_grad=True) if context else None
        y, ladj = t.train()(x, c)
        (y.square().sum() + ladj.sum()).backward()
        grads.append([p.grad for p in t.parameters()] + [x.grad] + ([c.grad] if context else []))
    for adjoint, direct in zip(*grads, strict=True):
        assert adjoint is not None and direct is not None
        torch.testing.assert_close(adjoint, direct, rtol=1e-5, atol=1e-6)


def test_nfe_counts_each_solve() -> None:
    t = _ode(2).eval()
    assert t.nfe == 0
    y, _ = t(torch.randn(8, 2, dtype=F64))
    forward = t.nfe
    assert isinstance(forward, int) and forward > 0
    t.inverse(y)
    assert 0 < t.nfe < 2 * forward  # reset per solve, not accumulated
    t.atol = t.rtol = 1e-3
    t.train()(torch.randn(8, 2, dtype=F64))
    assert 0 < t.nfe < forward  # looser training tolerances take fewer evaluations


def test_keeps_float64_and_shapes() -> None:
    t = _ode(3, context=2).eval()
    x, c = torch.randn(4, 1, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    y, ladj = t(x, c)  # (4, 1) and (5,) broadcast to (4, 5)
    assert y.shape == (4, 5, 3) and ladj.shape == (4, 5)
    assert y.dtype == ladj.dtype == F64
    x2, back = t.inverse(y, c)
    torch.testing.assert_close(x2, x.expand(4, 5, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(back, -ladj, atol=1e-6, rtol=0)
    empty, none = t(torch.randn(0, 3, dtype=F64), torch.randn(0, 2, dtype=F64))
    assert empty.shape == (0, 3) and none.shape == (0,)


def _linear(a: torch.Tensor, time: float, **kwargs) -> T.ContinuousFlow:
    """``f(z, t) = A z``: no hidden layer, zero bias and time weight."""
    t = T.ContinuousFlow(a.shape[0], hidden=(), time=time, **kwargs).double()
    with torch.no_grad():
        t.net.layers[0].weight.zero_()
        t.net.layers[0].weight[:, : a.shape[0]] = a
        t.net.layers[0].bias.zero_()
    return t


def test_regularizers_match_the_closed_form_of_linear_dynamics() -> None:
    """``z(t) = e^{At} z0``: ``∫‖A z(t)‖² dt`` by quadrature, ``∫‖A‖_F² dt = T‖A‖_F²``."""
    torch.manual_seed(0)
    a = 0.5 * torch.randn(3, 3, dtype=F64)
    time = 0.7
    t = _linear(a, time).eval()
    x = torch.randn(4, 3, dtype=F64)
    grid = torch.linspace(0, time, 2001, dtype=F64)
    path = torch.linalg.matrix_exp(grid[:, None, None] * a) @ x.T  # (2001, 3, 4)
    kinetic = torch.trapezoid((a @ path).square().sum(1), grid, dim=0)  # (4,)
    frobenius = time * a.square().sum()
    with T.regularization(t, 1.0, 0.0) as penalty:
        y, ladj = t(x)
    torch.testing.assert_close(penalty(), kinetic, rtol=1e-6, atol=0)
    torch.testing.assert_close(y, x @ torch.linalg.matrix_exp(time * a).T, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(ladj, (time * torch.trace(a)).expand(4), rtol=1e-7, atol=1e-8)
    with T.regularization(t, 0.0, 2.0) as penalty:
        t.inverse(y)  # the same path backwards: the same (positive) integrals
    torch.testing.assert_close(penalty(), (2 * frobenius).expand(4), rtol=1e-7, atol=0)
    assert t._weights is None  # switched off on leaving the block

    flow = ef.Flow(t, ef.distributions.StandardNormal(3).double()).eval()
    objective = ef.objectives.NLL(kinetic=0.5, jacobian=2.0)
    expected = -flow.log_prob(x) + 0.5 * kinetic + 2.0 * frobenius
    torch.testing.assert_close(objective.loss(flow, x), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(objective.metric(flow, x), -flow.log_prob(x))
    assert (
        repr(objective) == "NLL(kinetic=0.5, jacobian=2.0)" and repr(ef.objectives.NLL()) == "NLL()"
    )


def test_hutchinson_frobenius_is_unbiased() -> None:
    torch.manual_seed(0)
    a = 0.5 * torch.randn(3, 3, dtype=F64)
    t = _linear(a, 0.5).train()
    with torch.no_grad(), T.regularization(t, 0.0, 1.0) as penalty:
        t(torch.randn(1, 3, dtype=F64).expand(4000, 3))
    draws = penalty()
    exact = 0.5 * a.square().sum()
    assert draws.std() > 1e-3
    assert abs(float(draws.mean() - exact)) < 4 * float(draws.std()) / math.sqrt(4000)


def test_nll_regularizers_are_checked() -> None:
    with pytest.raises(ValueError, match=r"NLL: kinetic must be a finite number >= 0, got -1"):
        ef.objectives.NLL(kinetic=-1)
    with pytest.raises(ValueError, match=r"jacobian must be .* got nan"):
        ef.objectives.NLL(jacobian=float("nan"))
    maf = ef.flows.MAF(features=2, transforms=1, hidden=(4,))
    with pytest.raises(ValueError, match="regularize continuous-time flows .* MAF has none"):
        ef.objectives.NLL(kinetic=0.1).check_model(maf)
    ef.objectives.NLL().check_model(maf)


def test_missing_torchdiffeq_is_a_one_line_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # `import torchdiffeq` now fails
    t = _ode(2)
    with pytest.raises(ImportError) as info:
        t(torch.randn(3, 2, dtype=F64))
    message = str(info.value)
    assert "\n" not in message and "pip install 'exactflow[ode]'" in message


def test_exactflow_imports_and_builds_ffjord_without_torchdiffeq() -> None:
    code = (
        "import sys; sys.modules['torchdiffeq'] = None; import exactflow as ef;"
        " ef.flows.FFJORD(features=2, hidden=(4,)); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(features=0), "features and hidden widths must be >= 1"),
        (dict(features=2, hidden=(0,)), "features and hidden widths must be >= 1"),
        (dict(features=2, context=-1), "context >= 0"),
        (dict(features=2, time=0.0), "time must be a finite number > 0, got 0.0"),
        (dict(features=2, solver="rk45"), "solver must be one of .* got 'rk45'"),
        (dict(features=2, solver="rk4"), "needs step_size in \\(0, time\\], got None"),
        (dict(features=2, atol=0.0), "atol must be a number > 0, got 0.0"),
        (dict(features=2, eval_rtol=-1.0), "eval_rtol must be a number > 0"),
        (dict(features=2, trace="exactly"), "trace must be one of .* got 'exactly'"),
        (dict(features=2, activation="relu"), "activation must be one of .* got 'relu'"),
        (dict(features=2, traced_steps=0), "traced_steps must be a positive integer, got 0"),
    ],
)
def test_bad_arguments_are_one_line_value_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        T.ContinuousFlow(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_inputs_are_one_line_value_errors() -> None:
    t = _ode(3, context=2)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 3\), got \(4, 2\)"):
        t(torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"needs a context of shape \(\.\.\., 2\), got None"):
        t.inverse(torch.randn(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="FFJORD: features and transforms must be >= 1"):
        ef.flows.FFJORD(features=2, transforms=0)


def test_fixed_grid_solver_runs() -> None:
    t = _ode(2, solver="rk4", step_size=0.05).eval()
    x = torch.randn(4, 2, dtype=F64)
    y, _ = t(x)
    assert t.nfe == 4 * 20  # four evaluations per step
    torch.testing.assert_close(t.inverse(y)[0], x, atol=1e-6, rtol=0)


def test_a_short_fit_lowers_the_nll() -> None:
    from exactflow.train import TrainConfig, fit

    torch.manual_seed(0)
    x = torch.randn(384, 2) @ torch.tensor([[1.5, 0.0], [1.2, 0.4]]) + 1.0
    flow = ef.flows.FFJORD(features=2, hidden=(16, 16), atol=1e-3, rtol=1e-3)
    val = x[256:]
    with torch.no_grad():
        before = float(-flow.eval().log_prob(val).mean())
    config = TrainConfig(epochs=3, batch_size=128, lr=2e-2)
    objective = ef.objectives.NLL(kinetic=0.01, jacobian=0.01)
    fit(flow, objective, x[:256], config, val=val, progress=False)
    with torch.no_grad():
        after = float(-flow.eval().log_prob(val).mean())
    assert after < before - 0.5, (before, after)


def test_cli_fits_and_evaluates_ffjord(tmp_path) -> None:
    from exactflow.cli.main import main

    out = tmp_path / "run"
    sizes = ["--n-train", "200", "--n-val", "50", "--n-test", "50", "--epochs", "1"]
    small = ["--hidden", "8", "--transforms", "1", "--no-progress", "--no-plots"]
    assert (
        main(["fit", "--data", "moons", "--flow", "ffjord", "--out", str(out), *sizes, *small]) == 0
    )
    assert main(["eval", str(out)]) == 0  # rebuilt from the checkpoint's spec by name
    assert (out / "eval.json").exists()


def test_the_exactness_certificate_differentiates_the_adaptive_solve() -> None:
    # Strong dynamics: a 16-step RK4 (what torch.func transforms would see) is 1.6e-5 off the
    # adaptive solve here, the certificate's tolerance is 1e-6; the plain-autograd Jacobian of the
    # solve log_prob runs agrees with its exact trace to the solver's error.
    pytest.importorskip("torchdiffeq", reason="FFJORD solves its ODE with torchdiffeq")
    torch.manual_seed(0)
    flow = ef.flows.FFJORD(features=2, hidden=(32, 32))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    report = ef.metrics.certificate(flow, torch.randn(8, 2))
    assert report["passed"] and report["ladj_error"] < 1e-6, report
