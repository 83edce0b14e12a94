"""The maximum-likelihood trainer: convergence, early stopping, resumption, robustness."""

from __future__ import annotations

import csv
import math
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

import exactflow as ef
from exactflow.checkpoint import load
from exactflow.objectives import NLL
from exactflow.train import FitResult, NonFiniteLossError, TrainConfig, fit

from tinyflow import Interrupt, interrupt_at, registered, tiny

T = ef.transforms


@pytest.fixture
def preset() -> Iterator[dict]:
    with registered():
        yield {"name": "Tiny", "kwargs": {"features": 2}}


def make_flow(seed: int = 0) -> ef.Flow:
    """A small 2-D flow: a library preset when one exists, else elementwise affines."""
    torch.manual_seed(seed)
    if "MAF" in getattr(ef.flows, "__all__", []):
        return ef.flows.MAF(features=2, context=0, transforms=2, hidden=(16, 16))
    return tiny(2)


def gaussian(n: int, seed: int = 0, loc: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([[2.0, 0.0], [1.2, 0.5]])
    return loc + torch.randn(n, 2, generator=g) @ scale.T


def config(**changes: object) -> TrainConfig:
    settings = {"epochs": 8, "batch_size": 64, "lr": 2e-2, "patience": None, "tensorboard": False}
    return TrainConfig(**{**settings, **changes})


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def nll(flow: ef.Flow, x: Tensor) -> float:
    with torch.no_grad():
        return -flow.log_prob(x.to(next(flow.parameters()).dtype)).double().mean().item()


# ---------------------------------------------------------------------------- training


def test_loss_decreases_on_a_gaussian() -> None:
    x = gaussian(600)
    flow = make_flow()
    before = nll(flow, x[500:])
    result = fit(flow, NLL(), x[:500], config(epochs=15), val=x[500:], progress=False)
    val = [row["val_nll"] for row in result.history]
    assert val[-1] < val[0] < before
    # The data's entropy is log(2πe) ≈ 2.84 nats (covariance of determinant 1); the best
    # elementwise (diagonal) model reaches 2.84 + log(2 · 1.3) ≈ 3.79.
    assert result.best_val_nll < (3.0 if "MAF" in ef.flows.__all__ else 3.9)
    assert result.best_val_nll == pytest.approx(nll(result.flow, x[500:]), abs=1e-5)
    assert not result.flow.training


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    # Validation data sit where the flow starts; training pulls it away, so val only worsens.
    train, val = gaussian(256, loc=6.0), torch.randn(128, 2)
    with pytest.warns(ef.train.TrainingWorsenedWarning, match="never improved"):
        result = fit(
            make_flow(),
            NLL(),
            train,
            config(epochs=50, patience=3, lr=5e-2, schedule="none", out=str(tmp_path)),
            val=val,
            progress=False,
        )
    vals = [row["val_nll"] for row in result.history]
    assert result.stopped_early and len(vals) == 4 and result.best_epoch == 1
    assert vals[0] == min(vals) == result.best_val_nll
    assert nll(result.flow, val) == pytest.approx(result.best_val_nll, abs=1e-5)
    best = load(tmp_path / "best.safetensors", flow=make_flow())
    assert best.state["epoch"] == 1
    assert torch.equal(best.flow.log_prob(val), result.flow.log_prob(val))


@pytest.mark.parametrize("schedule", ["cosine", "plateau", "none"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_same_seed_same_history(schedule: str, optimizer: str) -> None:
    x = gaussian(300)

    def run(seed: int) -> list[dict]:
        c = config(epochs=3, seed=seed, schedule=schedule, optimizer=optimizer, weight_decay=1e-3)
        return without_time(
            fit(make_flow(), NLL(), x[:256], c, val=x[256:], progress=False).history
        )

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_float64() -> None:
    x = gaussian(300)
    result = fit(
        make_flow(), NLL(), x[:256], config(epochs=3, dtype="float64"), val=x[256:], progress=False
    )
    assert all(p.dtype == torch.float64 for p in result.flow.parameters())
    assert result.flow.log_prob(x.double()).dtype == torch.float64
    assert all(math.isfinite(row["val_nll"]) for row in result.history)


def test_steps_limit_validates_the_partial_epoch() -> None:
    x = gaussian(300)
    result = fit(
        make_flow(), NLL(), x[:256], config(epochs=None, steps=10), val=x[256:], progress=False
    )
    assert result.steps == 10
    assert [row["step"] for row in result.history] == [4, 8, 10]


def test_standardize_keeps_data_units(tmp_path: Path, preset: dict) -> None:
    x = 100 + 50 * torch.randn(600, 2, generator=torch.Generator().manual_seed(0))
    result = fit(
        tiny(2),
        NLL(),
        x[:500],
        config(epochs=5, standardize=True, out=str(tmp_path)),
        val=x[500:],
        spec=preset,
        progress=False,
    )
    expected = 2 * (0.5 * math.log(2 * math.pi * math.e) + math.log(50.0))
    assert result.best_val_nll == pytest.approx(expected, abs=0.15)
    loaded = load(tmp_path / "best.safetensors")
    assert loaded.spec["standardize"] is True
    assert torch.equal(loaded.flow.log_prob(x[500:]), result.flow.log_prob(x[500:]))


def test_conditional_flow_trains_with_context() -> None:
    g = torch.Generator().manual_seed(0)
    c = torch.randn(300, 1, generator=g)
    x = c + 0.1 * torch.randn(300, 2, generator=g)
    flow = ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.ConditionalDiagNormal(2, 1, (8,)))
    result = fit(
        flow, NLL(), (x[:256], c[:256]), config(epochs=5), val=(x[256:], c[256:]), progress=False
    )
    assert result.history[-1]["val_nll"] < result.history[0]["val_nll"]


# ---------------------------------------------------------------------------- files


def test_metrics_csv_and_checkpoints(tmp_path: Path, preset: dict) -> None:
    x = gaussian(300)
    result = fit(
        tiny(2), NLL(), x[:256], config(epochs=3, out=str(tmp_path)), val=x[256:], spec=preset
    )
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "step", "train_nll", "val_nll", "lr", "time", "skipped"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_nll"]) for r in rows] == [r["val_nll"] for r in result.history]
    last = load(tmp_path / "last.safetensors")
    assert last.state["step"] == result.steps and last.state["finished"] is True
    # CPU generator always; CUDA generators only once CUDA was initialized
    assert set(last.state["rng"]) == ({"cpu", "cuda"} if torch.cuda.is_initialized() else {"cpu"})
    assert last.spec == preset


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    x = gaussian(200)
    fit(
        make_flow(),
        NLL(),
        x[:150],
        config(epochs=1, tensorboard=True, out=str(tmp_path)),
        val=x[150:],
    )
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert not (tmp_path / "tensorboard").exists()
    else:
        assert any((tmp_path / "tensorboard").iterdir())


def test_bad_data_is_rejected_before_training(tmp_path: Path) -> None:
    x = gaussian(100)
    bad = x.clone()
    bad[17, 1] = math.nan
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="row 17, column 1"):
        fit(make_flow(), NLL(), bad, config(out=str(out)), val=x, progress=False)
    with pytest.raises(ValueError, match=r"shape \(N, 2\), got \(100, 3\)"):
        fit(make_flow(), NLL(), torch.randn(100, 3), config(out=str(out)), val=x, progress=False)
    assert not out.exists()


def test_spec_that_does_not_build_the_flow(preset: dict) -> None:
    x = gaussian(100)
    with pytest.raises(ValueError, match="weights differ"):
        fit(tiny(2, transforms=3), NLL(), x, config(), val=x, spec=preset, progress=False)


def test_config_json_round_trip_and_validation() -> None:
    c = TrainConfig(optimizer="adamw", steps=100, epochs=None, clip_grad=None, out="runs/a")
    assert TrainConfig.from_json(c.to_json()) == c
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="epochs or steps"):
        TrainConfig(epochs=None, steps=None)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_a_dataset_brings_its_own_validation_split() -> None:
    ds = ef.data.load("moons", n_train=300, n_val=100, n_test=100)
    result = fit(make_flow(), NLL(), ds, config(epochs=2), progress=False)
    assert result.best_val_nll == pytest.approx(nll(result.flow, ds.val), abs=1e-5)


def test_a_batch_source_draws_fresh_noise_every_epoch_and_resumes_exactly(tmp_path: Path) -> None:
    pixels = torch.randint(0, 8, (300, 2), generator=torch.Generator().manual_seed(0)).float()
    drawn: list[Tensor] = []

    def dequantize(k: Tensor, g: torch.Generator) -> Tensor:
        x = (k + torch.rand(k.shape, generator=g)) / 8
        drawn.append(x)
        return x

    source = ef.data.Batches(pixels, 64, seed=3, transform=dequantize)
    val = (pixels[:100] + 0.5) / 8
    c = config(epochs=3, out=str(tmp_path / "a"))
    reference = fit(make_flow(), NLL(), source, c, val=val, progress=False)
    # 5 batches an epoch (300 = 4 * 64 + 44), one more drawn to check the data up front
    assert len(drawn) == 1 + 3 * 5
    epoch0 = torch.cat(drawn[1:6])
    assert not torch.equal(epoch0, torch.cat(drawn[6:11]))  # fresh noise every epoch
    assert torch.equal(drawn[0], drawn[1])  # an epoch is a pure function of (seed, epoch)

    c.out = str(tmp_path / "b")
    c.checkpoint_every = 2
    flow = make_flow()
    handle = interrupt_at(flow.transform, 8)
    with pytest.raises(Interrupt):
        fit(flow, NLL(), source, c, val=val, progress=False)
    handle.remove()
    resumed = fit(make_flow(seed=4), NLL(), source, c, val=val, resume=True, progress=False)
    assert without_time(resumed.history) == without_time(reference.history)


def test_a_last_batch_of_one_row_is_merged_so_batchnorm_trains() -> None:
    torch.manual_seed(0)
    flow = ef.Flow(T.Compose([T.BatchNorm(2), T.Affine(2)]), ef.distributions.StandardNormal(2))
    x = gaussian(129)  # 2 batches of 64 and one row
    result = fit(flow, NLL(), x, config(epochs=2, batch_size=64), val=x, progress=False)
    assert [row["step"] for row in result.history] == [2, 4]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"lr": math.inf}, "lr must be a finite number"),
        ({"lr": math.nan}, "lr must be a finite number"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"weight_decay": math.inf}, "weight_decay must be a finite number"),
        ({"clip_grad": math.nan}, "clip_grad must be a finite number"),
        ({"clip_grad": -1.0}, "clip_grad must be positive"),
        ({"device": "gpu"}, "device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"compile": "yes"}, "compile must be True or False"),
    ],
    ids=["lr-inf", "lr-nan", "lr-0", "wd-inf", "clip-nan", "clip-neg", "device", "seed", "compile"],
)
def test_config_rejects_non_finite_and_malformed_settings(changes: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TrainConfig(**changes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_an_unavailable_device_is_a_clear_error() -> None:
    x = gaussian(100)
    with pytest.raises(ValueError, match="'cuda' is not available"):
        fit(make_flow(), NLL(), x, config(device="cuda"), val=x, progress=False)


def test_a_nan_validation_metric_stops_with_advice_naming_lr(tmp_path: Path) -> None:
    x = gaussian(256)
    flow = ef.Flow(T.Compose([EvalPoison(), T.Affine(2)]), ef.distributions.StandardNormal(2))
    c = config(epochs=3, out=str(tmp_path))
    with pytest.raises(
        NonFiniteLossError,
        match=r"validation nll is nan.*lr=0\.02\. No checkpoint.*Rerun with a lower lr",
    ) as error:
        fit(flow, NLL(), x, c, val=x, progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "best.safetensors").exists()


def test_resume_with_a_lower_lr_uses_it_and_records_it(tmp_path: Path) -> None:
    x = gaussian(200)
    c = config(epochs=2, out=str(tmp_path), schedule="none", lr=1e-2)
    fit(make_flow(), NLL(), x[:150], c, val=x[150:], progress=False)
    c.epochs, c.lr, c.weight_decay = 4, 1e-3, 1e-4
    result = fit(make_flow(), NLL(), x[:150], c, val=x[150:], resume=True, progress=False)
    assert [row["lr"] for row in result.history] == [1e-2, 1e-2, 1e-3, 1e-3]
    state = load(tmp_path / "last.safetensors", make_flow()).state
    assert state["config"]["lr"] == 1e-3
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 1e-4


def test_resume_refuses_settings_that_may_not_change(tmp_path: Path) -> None:
    x = gaussian(200)
    c = config(epochs=2, out=str(tmp_path))
    fit(make_flow(), NLL(), x[:150], c, val=x[150:], progress=False)
    c.dtype = "float64"
    with pytest.raises(ValueError, match="dtype: 'float32' -> 'float64' changed"):
        fit(make_flow(), NLL(), x[:150], c, val=x[150:], resume=True, progress=False)


def test_metrics_csv_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    for name in (".metrics.csv.tmp", ".metrics.csv.0.tmp"):
        (out / name).symlink_to(victim)
    x = gaussian(200)
    fit(make_flow(), NLL(), x[:150], config(epochs=2, out=str(out)), val=x[150:], progress=False)
    assert victim.read_text() == "precious"
    assert (out / "metrics.csv").read_text().startswith("epoch,step,train_nll,val_nll")


class GaussianKL(ef.objectives.Objective):
    """Reverse KL to N(mu, I) from the flow's own samples: an objective without data."""

    name = "kl"
    needs_data = False

    def __init__(self, mu: float, samples: int = 128) -> None:
        self.target = torch.distributions.Normal(mu, 1.0)
        self.samples = samples

    def loss(
        self, model: torch.nn.Module, x: Tensor | None, context: Tensor | None = None
    ) -> Tensor:
        z, log_q = model.rsample_and_log_prob((self.samples,))
        return log_q - self.target.log_prob(z).sum(-1)


def test_an_objective_without_data_trains_by_steps(tmp_path: Path) -> None:
    c = config(epochs=None, steps=300, epoch_steps=100, lr=5e-2, out=str(tmp_path))
    result = fit(make_flow(), GaussianKL(mu=2.0), config=c, progress=False)
    assert [row["step"] for row in result.history] == [100, 200, 300]
    assert list(result.history[0])[2:4] == ["train_kl", "val_kl"]
    assert result.best_val < 0.1  # KL(q || p) >= 0, near 0 once fitted
    with pytest.raises(ValueError, match="draws its own samples"):
        fit(make_flow(), GaussianKL(mu=2.0), gaussian(10), c, progress=False)
    with pytest.raises(TypeError, match="objective must be"):
        fit(make_flow(), gaussian(10), gaussian(10), c, progress=False)


# ---------------------------------------------------------------------------- non-finite losses


class Poison(T.Transform):
    """Identity whose log-determinant is NaN on the chosen training calls (1-based)."""

    def __init__(self, bad: set[int] | None = None, from_call: int | None = None) -> None:
        super().__init__()
        self.bad, self.from_call, self.calls = bad or set(), from_call, 0

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = x.new_zeros(x.shape[:-1])
        if self.training:
            self.calls += 1
            if self.calls in self.bad or (self.from_call and self.calls >= self.from_call):
                ladj = ladj + math.nan
        return x, ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[:-1])


class EvalPoison(T.Transform):
    """Identity whose log-determinant is NaN in eval mode only (a diverged validation)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = x.new_zeros(x.shape[:-1])
        return x, ladj if self.training else ladj + math.nan

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[:-1])


def poisoned(poison: Poison) -> ef.Flow:
    torch.manual_seed(0)
    return ef.Flow(T.Compose([poison, T.Affine(2)]), ef.distributions.StandardNormal(2))


def test_nonfinite_steps_are_skipped() -> None:
    x = gaussian(256)
    flow = poisoned(Poison({2, 3, 6}))
    result = fit(
        flow, NLL(), x, config(epochs=2, max_nonfinite=3, schedule="none"), val=x, progress=False
    )
    assert [row["skipped"] for row in result.history] == [2, 1]
    assert [row["step"] for row in result.history] == [4, 8]
    assert all(math.isfinite(row["train_nll"]) for row in result.history)


def test_skipped_steps_do_not_update() -> None:
    x = gaussian(64)
    flow = poisoned(Poison(from_call=1))
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(NonFiniteLossError):
        fit(flow, NLL(), x, config(epochs=1, batch_size=16, max_nonfinite=4), val=x, progress=False)
    assert all(torch.equal(v, flow.state_dict()[k]) for k, v in before.items())


def test_too_many_nonfinite_losses_stop_and_keep_the_checkpoint(tmp_path: Path) -> None:
    x = gaussian(256)
    flow = poisoned(Poison(from_call=10))
    c = config(epochs=5, batch_size=32, checkpoint_every=2, max_nonfinite=3, out=str(tmp_path))
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is kept") as error:
        fit(flow, NLL(), x, c, val=x, progress=False)
    # steps 10-12 were skipped; step 10's checkpoint holds the weights of step 9, the last update
    assert "step 12" in str(error.value) and "(step 10)" in str(error.value)
    last = load(tmp_path / "last.safetensors", flow=poisoned(Poison()))
    assert last.state["step"] == 10
    for k, v in last.flow.state_dict().items():
        assert torch.equal(v, flow.state_dict()[k])
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


# ---------------------------------------------------------------------------- resumption


@pytest.mark.parametrize("at", [5, 8, 13])
def test_resume_continues_the_same_history(tmp_path: Path, at: int) -> None:
    x = gaussian(300)
    train, val = x[:256], x[256:]
    c = config(epochs=5, checkpoint_every=3, out=str(tmp_path / "a"), schedule="cosine")
    reference = fit(make_flow(), NLL(), train, c, val=val, progress=False)

    c.out = str(tmp_path / "b")
    flow = make_flow()
    handle = interrupt_at(flow.transform, at)
    with pytest.raises(Interrupt):
        fit(flow, NLL(), train, c, val=val, progress=False)
    handle.remove()
    saved = load(tmp_path / "b" / "last.safetensors", flow=make_flow()).state["step"]
    assert at - 1 - saved < 3  # at most one checkpoint interval lost
    resumed = fit(make_flow(seed=5), NLL(), train, c, val=val, resume=True, progress=False)
    assert without_time(resumed.history) == without_time(reference.history)
    assert resumed.steps == reference.steps
    for k, v in reference.flow.state_dict().items():
        assert torch.equal(v, resumed.flow.state_dict()[k])
    with open(tmp_path / "b" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == len(reference.history)


def test_resume_refuses_mismatched_data_or_config(tmp_path: Path) -> None:
    x = gaussian(200)
    c = config(epochs=2, out=str(tmp_path))
    fit(make_flow(), NLL(), x[:150], c, val=x[150:], progress=False)
    with pytest.raises(ValueError, match=r"models points of shape \(2,\).*shape \(3,\)"):
        fit(
            tiny(3),
            NLL(),
            torch.randn(50, 3),
            c,
            val=torch.randn(20, 3),
            resume=True,
            progress=False,
        )
    c.batch_size = 32
    with pytest.raises(ValueError, match="batch_size"):
        fit(make_flow(), NLL(), x[:150], c, val=x[150:], resume=True, progress=False)


def test_resume_extends_a_finished_run_and_keeps_its_spec(tmp_path: Path, preset: dict) -> None:
    x = gaussian(200)
    c = config(epochs=2, out=str(tmp_path), schedule="none")
    fit(tiny(2), NLL(), x[:150], c, val=x[150:], spec=preset, progress=False)
    c.epochs = 4
    result = fit(tiny(2), NLL(), x[:150], c, val=x[150:], resume=True, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    last = load(tmp_path / "last.safetensors")  # rebuilt by name: the spec was kept
    assert last.spec == preset and last.state["epoch"] == 4


@pytest.mark.parametrize(
    "tamper",
    [
        lambda state: {"epoch": 1},
        lambda state: {**state, "rng": {"cpu": torch.zeros(3, dtype=torch.uint8)}},
        lambda state: {**state, "rng": [1]},
        lambda state: {**state, "config": [1]},
        lambda state: {**state, "optimizer": {"state": {}, "param_groups": "x"}},
        lambda state: {**state, "history": 5},
    ],
    ids=["incomplete", "short-rng", "rng-list", "config-list", "optimizer", "history"],
)
def test_resume_from_a_malformed_state_is_a_clear_error(tmp_path: Path, tamper) -> None:
    x = gaussian(200)
    c = config(epochs=1, out=str(tmp_path))
    fit(make_flow(), NLL(), x[:150], c, val=x[150:], progress=False)
    path = tmp_path / "last.safetensors"
    last = load(path, make_flow())
    ef.checkpoint.save(path, last.model, state=tamper(last.state))
    flow = make_flow()
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    c.epochs = 2
    with pytest.raises(ValueError, match=f"cannot resume from {path}") as error:
        fit(flow, NLL(), x[:150], c, val=x[150:], resume=True, progress=False)
    assert "\n" not in str(error.value)
    assert all(torch.equal(v, flow.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------------------- SIGKILL


ZYGOTE = """
import os, sys
import torch
torch.set_num_threads(1)
import exactflow as ef
from exactflow.objectives import NLL
from exactflow.train import TrainConfig, fit

out, reference = sys.argv[1], sys.argv[2]
T = ef.transforms
g = torch.Generator().manual_seed(1)
x = 1 + 2 * torch.randn(240, 2, generator=g)


def say(line):
    # One write per line: a kill can then never leave half a line in the pipe.
    os.write(1, (line + "\\n").encode())


def make():
    torch.manual_seed(0)
    return ef.Flow(T.Compose([T.Affine(2), T.Affine(2)]), ef.distributions.StandardNormal(2))


def config(directory, every):
    return TrainConfig(epochs=12, batch_size=32, lr=1e-2, checkpoint_every=every, patience=None,
                       tensorboard=False, out=directory)


def train(directory, resume):
    flow = make()
    count = 0

    def hook(module, args, output):
        nonlocal count
        if module.training:
            count += 1
            say(f"forward {count}")

    flow.transform.register_forward_hook(hook)
    # The reference run needs no intermediate checkpoints (they do not change the history).
    every = 1 if resume else None
    fit(flow, NLL(), x[:200], config(directory, every), val=x[200:], resume=resume, progress=False)


# Pay torch's one-time costs here, once; each run is then a cheap fork of this process.
fit(make(), NLL(), x[:200], TrainConfig(epochs=1, tensorboard=False), val=x[200:], progress=False)
say("ready")
while line := sys.stdin.readline():
    pid = os.fork()
    if pid == 0:
        say(f"pid {os.getpid()}")  # before any "forward" line of this child
        code = 0
        try:
            train(out if line.strip() == "run" else reference, line.strip() == "run")
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    say(f"exit {pid} {status}")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_during_training_never_breaks_the_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "zygote.py"
    script.write_text(textwrap.dedent(ZYGOTE))
    out, reference = tmp_path / "run", tmp_path / "reference"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), str(out), str(reference)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(s) for s in process.stdout], daemon=True).start()

    def next_line() -> str:
        for _ in range(600):
            try:
                return lines.get(timeout=0.1).strip()
            except queue.Empty:
                if process.poll() is not None:
                    break
        process.kill()
        raise AssertionError((tmp_path / "stderr.txt").read_text())

    def command(name: str) -> int:
        process.stdin.write(name + "\n")
        process.stdin.flush()
        line = next_line()
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def wait_exit(pid: int) -> tuple[int, int]:
        """Read until the child's exit; return (last forward count, wait status)."""
        forwards = 0
        while not (line := next_line()).startswith(f"exit {pid} "):
            if line.startswith("forward "):
                forwards = int(line.split()[1])
        return forwards, int(line.split()[2])

    try:
        assert next_line() == "ready"
        _, status = wait_exit(command("reference"))
        assert status == 0, (tmp_path / "stderr.txt").read_text()

        rng = random.Random(20240611)
        every = 1
        for _ in range(4):
            path = out / "last.safetensors"
            base = load(path, flow=_zygote_flow()).state["step"] if path.exists() else 0
            pid = command("run")
            target = rng.randint(2, 12)
            while (line := next_line()) != f"forward {target}":
                assert not line.startswith("exit "), "the run ended before it could be killed"
            threading.Event().wait(rng.uniform(0.0, 0.01))  # land in a step or in a write
            os.kill(pid, signal.SIGKILL)
            forwards, status = wait_exit(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
            forwards = max(forwards, target)
            # The checkpoint on disk loads (its checksum verifies), whatever the kill hit.
            saved = load(path, flow=_zygote_flow()).state if path.exists() else {"step": 0}
            if (out / "best.safetensors").exists():
                load(out / "best.safetensors", flow=_zygote_flow())
            completed = base + forwards - 1
            assert base <= saved["step"] and completed - saved["step"] <= every

        _, status = wait_exit(command("run"))
        assert status == 0, (tmp_path / "stderr.txt").read_text()
    finally:
        process.stdin.close()
        process.wait(timeout=60)

    resumed = load(out / "last.safetensors", flow=_zygote_flow())
    expected = load(reference / "last.safetensors", flow=_zygote_flow())
    assert without_time(resumed.state["history"]) == without_time(expected.state["history"])
    for k, v in expected.flow.state_dict().items():
        assert torch.equal(v, resumed.flow.state_dict()[k])


def _zygote_flow() -> ef.Flow:
    return ef.Flow(T.Compose([T.Affine(2), T.Affine(2)]), ef.distributions.StandardNormal(2))


# ---------------------------------------------------------------------------- compile


def test_compile_trains_like_eager_and_reports_its_compile_time(caplog) -> None:
    x = gaussian(300)

    def run(compiled: bool) -> FitResult:
        c = config(epochs=2, compile=compiled, schedule="none")
        return fit(tiny(2), NLL(), x[:256], c, val=x[256:], progress=False)

    with caplog.at_level("INFO", logger="exactflow.train"):
        compiled = run(True)
    eager = run(False)
    assert eager.compile_seconds is None and compiled.compile_seconds > 0
    assert "first compiled step took" in caplog.text
    for a, b in zip(compiled.history, eager.history, strict=True):
        assert a["val_nll"] == pytest.approx(b["val_nll"], rel=1e-5)


# ---------------------------------------------------------------------------- host syncs


def test_a_training_step_reads_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """exactflow's code converts a tensor to a Python value once per step, plus per epoch."""
    reads: list[str] = []
    for name in ("__bool__", "__float__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self: Tensor, *args: object, _original=original, _name=name) -> object:
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}exactflow{os.sep}" in caller:
                reads.append(f"{_name} in {Path(caller).name}")
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    torch.manual_seed(0)
    steps = [T.ActNorm(2), T.MaskedAutoregressive(T.AffineMap(), features=2, hidden=(8,))]
    flow = ef.Flow(T.Compose(steps), ef.distributions.StandardNormal(2))
    x = gaussian(300)
    reads_before = len(reads)
    result = fit(flow, NLL(), x[:256], config(epochs=3), val=x[256:], progress=False)
    training = reads[reads_before:]
    per_step = [r for r in training if r == "__bool__ in loop.py"]
    assert len(per_step) == result.steps == 12
    # Besides: the data checks up front (2 per tensor), ActNorm's initialization (its flag and
    # its finiteness check, once), the validation metric before the first step, and per epoch
    # the validation metric and the training loss.
    others = [r for r in training if r != "__bool__ in loop.py"]
    assert len(others) <= 2 * 2 + 2 + 1 + 2 * 3, others


def test_a_run_that_never_beats_its_start_warns_naming_lr() -> None:
    x = gaussian(600)
    flow = make_flow()
    with pytest.warns(ef.train.TrainingWorsenedWarning, match=r"lr=3 is likely too high"):
        fit(flow, NLL(), x[:500], config(epochs=3, lr=3.0), val=x[500:], progress=False)


def test_a_run_that_improves_does_not_warn() -> None:
    import warnings

    x = gaussian(600)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ef.train.TrainingWorsenedWarning)
        fit(make_flow(), NLL(), x[:500], config(epochs=2), val=x[500:], progress=False)
