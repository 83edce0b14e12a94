"""torch.compile (CPU inductor): a flow's log_prob, gradients and sampling; the compiled trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import exactflow as ef
from exactflow.cli.main import main
from exactflow.objectives import NLL
from exactflow.train import FitResult, TrainConfig, fit
from exactflow.train.compiled import CALIBRATION, payoff
from exactflow.train.loop import Run
from exactflow.train.state import Progress


@pytest.fixture(scope="module")
def inductor() -> None:
    """Skip when inductor cannot build CPU kernels here (no C++ compiler, ...)."""
    try:
        torch.compile(lambda x: x.exp() + 1)(torch.ones(2))
    except Exception as error:  # any build failure means "cannot test here", not a bug
        pytest.skip(f"torch.compile cannot build CPU kernels here: {error}")


def _flow() -> ef.Flow:
    """An affine and a spline autoregressive layer: both elementwise maps, D-step sampling."""
    torch.manual_seed(0)
    T = ef.transforms
    layers = [
        T.MaskedAutoregressive(T.AffineMap(), 3, hidden=(8, 8)),
        T.MaskedAutoregressive(T.RationalQuadraticSpline(bins=3), 3, hidden=(8,), order=[3, 1, 2]),
    ]
    flow = ef.Flow(T.Compose(layers), ef.distributions.StandardNormal(3))
    with torch.no_grad():  # move away from the identity start
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def test_compiled_log_prob_and_sample_match_eager(inductor: None) -> None:
    flow = _flow()
    x = torch.randn(6, 3)
    torch.compiler.reset()  # other tests compiled Flow.log_prob for other flows
    log_prob = torch.compile(flow.log_prob, fullgraph=True)
    compiled = log_prob(x)
    eager = flow.log_prob(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    params = list(flow.parameters())
    compiled_grads = torch.autograd.grad(compiled.sum(), params)
    for g, h in zip(compiled_grads, torch.autograd.grad(eager.sum(), params), strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5)
    # Inductor draws its own random numbers unless told to use eager's.
    with torch._inductor.config.patch(fallback_random=True):
        sample = torch.compile(flow.sample)
        torch.manual_seed(1)
        drawn = sample((5,))
    torch.manual_seed(1)
    torch.testing.assert_close(drawn, flow.sample((5,)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- the trainer


def _maf() -> ef.Flow:
    torch.manual_seed(0)
    return ef.flows.MAF(features=2, transforms=2, hidden=(8,))


def _config(out: Path | None, compiled: bool = True, **changes: object) -> TrainConfig:
    settings = {"epochs": 4, "batch_size": 64, "lr": 1e-2, "patience": None, "dtype": "float64"}
    settings |= {
        "tensorboard": False,
        "compile": compiled,
        "out": None if out is None else str(out),
    }
    return TrainConfig(**{**settings, **changes})


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = 1 + torch.randn(252, 2, generator=g, dtype=torch.float64)
    return x[:192], x[192:]  # 3 batches an epoch


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


@pytest.fixture(scope="module")
def compiled_run(
    inductor: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, FitResult]:
    """A compiled run (cosine schedule, so the learning rate changes every step), kept on disk."""
    out = tmp_path_factory.mktemp("compiled") / "run"
    train, val = _data()
    torch.compiler.reset()
    return out, fit(_maf(), NLL(), train, _config(out), val=val, progress=False)


def test_a_compiled_fit_matches_an_eager_fit(compiled_run: tuple[Path, FitResult]) -> None:
    _, compiled = compiled_run
    train, val = _data()
    eager = fit(_maf(), NLL(), train, _config(None, compiled=False), val=val, progress=False)
    assert eager.compile_payoff is None and eager.compile_seconds is None
    assert len(compiled.history) == len(eager.history) == 4
    # Eager calibration steps first, then compiled ones; the compiled Adam computes its bias
    # corrections from a float32 step counter (exactflow.train.compiled), hence not 1e-12.
    for a, b in zip(compiled.history, eager.history, strict=True):
        assert a["train_nll"] == pytest.approx(b["train_nll"], rel=1e-6)
        assert a["val_nll"] == pytest.approx(b["val_nll"], rel=1e-6)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
    # The model learned: compiling the update did not freeze it.
    assert compiled.history[-1]["val_nll"] < compiled.history[0]["val_nll"]


def test_the_payoff_report_is_present_and_consistent(
    compiled_run: tuple[Path, FitResult],
) -> None:
    _, result = compiled_run
    paid = result.compile_payoff
    assert paid is not None and result.compile_seconds is not None
    assert paid.steps == result.steps - CALIBRATION == 12 - CALIBRATION
    assert 0 <= paid.compile_seconds <= result.compile_seconds
    assert paid.eager_ms > 0 and paid.compiled_ms > 0
    gain = paid.eager_ms - paid.compiled_ms
    if paid.break_even is None:
        assert gain <= 0 and not paid.paid and "never pays" in paid.summary()
    else:
        assert paid.break_even == math.ceil(1000 * paid.compile_seconds / gain)
        assert paid.paid == (paid.steps >= paid.break_even) == (paid.saved_seconds >= 0)
        assert f"pays for itself after {paid.break_even:,} steps" in paid.summary()
    assert paid.summary().startswith(f"compiled: {paid.compile_seconds:.1f} s to compile")
    assert paid.to_dict()["paid"] == paid.paid


def test_resuming_a_compiled_run_is_exact(
    compiled_run: tuple[Path, FitResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, reference = compiled_run
    train, val = _data()
    config = _config(tmp_path / "run", checkpoint_every=2)
    calls, step = 0, Run.step

    def crash_at_step_10(run: Run, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 10:
            raise KeyboardInterrupt
        step(run, *args)

    monkeypatch.setattr(Run, "step", crash_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        fit(_maf(), NLL(), train, config, val=val, progress=False)
    monkeypatch.setattr(Run, "step", step)
    torch.manual_seed(7)  # resumption restores the generators
    resumed = fit(_maf(), NLL(), train, config, val=val, resume=True, progress=False)
    assert _without_time(resumed.history) == _without_time(reference.history)
    a, b = resumed.model.state_dict(), reference.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Both processes compiled; the timings of the first carried over.
    assert resumed.compile_payoff is not None and resumed.compile_payoff.steps == 12 - CALIBRATION


def test_payoff_arithmetic() -> None:
    p = Progress(eager_steps=4, eager_seconds=0.04, compiles=2, compile_seconds=10.01)
    p.compiled_steps, p.compiled_seconds = 998, 4.99  # 5 ms against 10 ms eager
    paid = payoff(p)
    assert paid is not None
    assert paid.compile_seconds == pytest.approx(10.0)
    assert (paid.eager_ms, paid.compiled_ms) == pytest.approx((10.0, 5.0))
    assert paid.steps == 1000 and paid.break_even == 2000 and not paid.paid
    assert "pays for itself after 2,000 steps; this run took 1,000 (not paid" in paid.summary()
    p.compiled_seconds = 998 * 0.012  # slower than eager
    assert payoff(p).break_even is None and "never pays" in payoff(p).summary()
    assert payoff(Progress(compile_seconds=1.0, eager_steps=1, eager_seconds=0.1)) is None


def test_exactflow_fit_compile_prints_the_payoff(
    compiled_run: tuple[Path, FitResult], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The fixture's flow, dtype and batch size: inductor's cache then serves most kernels.
    argv = ["fit", "--out", str(tmp_path / "run"), "--flow", "maf", "--compile", "--epochs", "4"]
    argv += ["--batch-size", "64", "--n-train", "192", "--n-val", "60", "--n-test", "60"]
    argv += ["--hidden", "8", "--transforms", "2", "--dtype", "float64", "--no-standardize"]
    argv += ["--no-progress", "--no-plots"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    line = next(line for line in stdout.splitlines() if line.startswith("compiled: "))
    assert " s to compile, " in line and " ms/step vs " in line
    assert "pays for itself after" in line or "never pays for itself" in line
    assert f"this run took {12 - CALIBRATION} " in line
