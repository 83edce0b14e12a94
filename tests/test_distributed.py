"""Training under torchrun: 2 CPU processes (gloo) reproduce 1 process with the same global batch.

Run as a script under ``torchrun`` this file is the worker of :func:`library_run`: each rank fits
the scenarios below and saves what it ends with under ``results/``; the tests fit the same
scenarios in one process and compare. Everything is float64. The weights are not bitwise equal
because the gradient of the global mean is summed in another order (each rank sums its share of
the rows, then the all-reduce adds the shares): ~1e-16 apart per gradient. Adam divides each
gradient by its running magnitude, which turns a relative rounding difference of a gradient that
is nearly zero (an ActNorm's shift right after its initialization on that very batch) into an
absolute one of the step: after 15 steps the weights agree to ~2e-11, hence ``TOLERANCE``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import exactflow as ef
from exactflow.cli.main import main
from exactflow.train import TrainConfig, fit
from exactflow.train.distributed import Launch, launch, rank_seed
from exactflow.train.fitting import _check_shares
from exactflow.train.inputs import prepare

TOLERANCE = 1e-9  # float64; only the order of the gradient's sum differs (see the docstring)
TIMEOUT = 240


# ---------------------------------------------------------------------------- the scenarios
def _data(rows: int = 203) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 3 + 2 * torch.randn(rows, 2, generator=generator, dtype=torch.float64)


def _realnvp() -> nn.Module:
    torch.manual_seed(1)
    return ef.flows.RealNVP(features=2, transforms=2, hidden=(8,))


def _actnorm_flow() -> nn.Module:
    """A hand-built flow whose ActNorms initialize on the first batch."""
    torch.manual_seed(2)
    t = ef.transforms
    steps = [t.ActNorm(2), t.Coupling(t.AffineMap(), hidden=(8,), features=2), t.ActNorm(2)]
    return ef.Flow(t.Compose(steps), ef.distributions.StandardNormal(2))


def _unused_flow() -> nn.Module:
    """A (hand-built) flow carrying a trainable parameter that no loss reaches."""
    flow = _actnorm_flow()
    flow.unused = nn.Parameter(torch.ones(3))
    return flow


def _config(out: Path | None, **settings: Any) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 33, "lr": 1e-2, "dtype": "float64", "tensorboard": False}
    return TrainConfig(**{**base, **settings}, out=None if out is None else str(out))


def _fit(name: str, folder: Path) -> dict[str, Any]:
    """One scenario: ``{"weights": ..., "history": ...}`` (the same code in 1 or 2 processes)."""
    x = _data()
    train, val = x[:150], x[150:]  # 150 rows in batches of 33: shares 17/16, last batch 9/9
    nll = ef.objectives.NLL()
    if name == "realnvp":
        result = fit(_realnvp(), nll, train, _config(folder / name), val=val, progress=False)
    elif name == "actnorm":
        result = fit(_actnorm_flow(), nll, train, _config(None), val=val, progress=False)
    elif name == "unused":
        result = fit(_unused_flow(), nll, train, _config(None), val=val, progress=False)
    elif name == "resumed":  # 2 epochs, then resumed for 2 more
        out = folder / name
        fit(
            _realnvp(), nll, train, _config(out, epochs=2, schedule="none"), val=val, progress=False
        )
        config = _config(out, epochs=4, schedule="none")
        result = fit(_realnvp(), nll, train, config, val=val, resume=True, progress=False)
    elif name == "uninterrupted":
        config = _config(None, epochs=4, schedule="none")
        result = fit(_realnvp(), nll, train, config, val=val, progress=False)
    elif name == "reverse_kl":
        torch.manual_seed(3)
        flow = ef.flows.IAF(features=2, transforms=2, hidden=(8,))
        objective = ef.objectives.ReverseKL(
            lambda z: -0.5 * ((z - 1) ** 2).sum(-1), samples=51, val_samples=101
        )
        config = _config(None, epochs=2, epoch_steps=3)
        result = fit(flow, objective, config=config, progress=False)
    else:
        raise ValueError(f"unknown scenario {name!r}")
    weights = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    return {"weights": weights, "history": result.history}


SCENARIOS = ("realnvp", "actnorm", "unused", "resumed", "reverse_kl")


def _worker(folder: Path) -> None:
    """Under torchrun: fit every scenario, save each rank's results, then the expected errors."""
    rank = launch().rank
    results = folder / "results"
    results.mkdir(exist_ok=True)
    for name in SCENARIOS:
        torch.save(_fit(name, folder), results / f"{name}.rank{rank}.pt")
    errors = {}
    try:  # batches of 1 row
        config = _config(None, batch_size=1)
        fit(_realnvp(), ef.objectives.NLL(), _data()[:150], config, val=_data()[150:])
    except ValueError as e:
        errors["batch"] = str(e)
    try:  # the ranks disagree on the batch size
        config = _config(None, batch_size=30 + rank)
        fit(_realnvp(), ef.objectives.NLL(), _data()[:150], config, val=_data()[150:])
    except ValueError as e:
        errors["unlike"] = str(e)
    (results / f"errors.rank{rank}.json").write_text(json.dumps(errors))


# ---------------------------------------------------------------------------- launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    if done.returncode != 0:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def library_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch of 2 processes running every library scenario (process start-up dominates)."""
    folder = tmp_path_factory.mktemp("ddp")
    _torchrun(str(Path(__file__).absolute()), str(folder), cwd=folder)
    return folder


def _load(folder: Path, name: str, rank: int) -> dict[str, Any]:
    return torch.load(folder / "results" / f"{name}.rank{rank}.pt", weights_only=True)


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ---------------------------------------------------------------------------- library tests
@pytest.mark.parametrize("name", ["realnvp", "actnorm", "unused"])
def test_two_processes_reproduce_one(library_run: Path, name: str, tmp_path: Path) -> None:
    one = _fit(name, tmp_path)
    two = _load(library_run, name, 0)
    assert _largest_difference(one["weights"], two["weights"]) < TOLERANCE
    assert _largest_difference(two["weights"], _load(library_run, name, 1)["weights"]) == 0
    assert len(one["history"]) == len(two["history"]) == 3
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["step"] == b["step"]
        for key in ("train_nll", "val_nll", "lr"):
            assert b[key] == pytest.approx(a[key], rel=TOLERANCE, abs=TOLERANCE)
    if name == "unused":  # no gradient ever reached it: Adam left it as it was
        assert torch.equal(two["weights"]["unused"], torch.ones(3, dtype=torch.float64))


def test_rank0_alone_writes_the_run(library_run: Path, tmp_path: Path) -> None:
    _fit("realnvp", tmp_path)
    written = sorted(p.name for p in (library_run / "realnvp").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "realnvp").iterdir())
    assert written == ["best.safetensors", "last.safetensors", "metrics.csv"]
    one = (tmp_path / "realnvp" / "metrics.csv").read_text().splitlines()
    two = (library_run / "realnvp" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in one] == [row.split(",")[:2] for row in two]
    state = ef.checkpoint.load(library_run / "realnvp" / "last.safetensors").state
    assert len(state["rng_ranks"]) == 2  # every rank's generators, for an exact resume
    assert not torch.equal(state["rng_ranks"][0]["cpu"], state["rng_ranks"][1]["cpu"])


def test_resume_under_torchrun_continues_exactly(library_run: Path, tmp_path: Path) -> None:
    one = _fit("uninterrupted", tmp_path)
    two = _load(library_run, "resumed", 0)
    assert _largest_difference(one["weights"], two["weights"]) < TOLERANCE
    assert [row["epoch"] for row in two["history"]] == [1, 2, 3, 4]
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["val_nll"] == pytest.approx(a["val_nll"], rel=1e-12)


def test_reverse_kl_ranks_draw_their_share_and_agree(library_run: Path) -> None:
    ranks = [_load(library_run, "reverse_kl", rank) for rank in (0, 1)]
    assert _largest_difference(ranks[0]["weights"], ranks[1]["weights"]) == 0
    for a, b in zip(*(rank["history"] for rank in ranks), strict=True):  # reduced metrics
        assert {**a, "time": 0} == {**b, "time": 0}
    assert len(ranks[0]["history"]) == 2
    assert all(torch.isfinite(torch.tensor(row["val_neg_elbo"])) for row in ranks[0]["history"])
    shares = [ef.objectives.ReverseKL(lambda z: z.sum(-1), 51).shard(r, 2).samples for r in (0, 1)]
    assert shares == [26, 25]


def test_batches_to_share_and_ranks_that_disagree_are_refused(library_run: Path) -> None:
    errors = json.loads((library_run / "results" / "errors.rank0.json").read_text())
    assert errors == json.loads((library_run / "results" / "errors.rank1.json").read_text())
    assert "batch_size 1 is below the number of processes (2)" in errors["batch"]
    assert "\n" not in errors["batch"]
    assert "rank 1 has batch_size=31, rank 0 batch_size=30" in errors["unlike"]


def test_a_last_batch_too_small_to_share_is_refused_before_training() -> None:
    # 10 rows in batches of 4 leave a last batch of 2 rows: 3 processes cannot share it.
    inputs = prepare(_data(10), _data(4), True, 4, 0, torch.float64, torch.device("cpu"))
    with pytest.raises(ValueError, match="the last batch of each epoch has 2 rows"):
        _check_shares(inputs, 4, 3)
    _check_shares(inputs, 4, 2)


# ---------------------------------------------------------------------------- the command line
FIT = ["fit", "--data", "moons", "--flow", "realnvp", "--transforms", "2", "--hidden", "8",
       "--n-train", "600", "--n-val", "200", "--n-test", "200", "--batch-size", "64",
       "--dtype", "float64", "--schedule", "none", "--no-plots", "--no-progress"]  # fmt: skip


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return ef.checkpoint.load(folder / "last.safetensors").model.state_dict()


def test_cli_under_torchrun_writes_one_run_and_resumes(tmp_path: Path) -> None:
    new = _torchrun("-m", "exactflow", *FIT, "--epochs", "2", "--out", "two", cwd=tmp_path)
    assert new.stdout.count("fitting RealNVP to moons") == 1  # rank 0 alone speaks
    assert new.stdout.count("test NLL") == 1
    run = tmp_path / "two"
    assert sorted(p.name for p in run.iterdir()) == [
        "best.safetensors", "eval.json", "last.safetensors", "metrics.csv", "run.json",
        "tensorboard"]  # fmt: skip
    assert not list(tmp_path.glob(".two*"))  # no lock, no staging folder left behind
    resumed = _torchrun("-m", "exactflow", "fit", "--resume", "--epochs", "3", "--out", "two",
                        "--no-plots", "--no-progress", cwd=tmp_path)  # fmt: skip
    assert resumed.stdout.count("test NLL") == 1
    assert main([*FIT, "--epochs", "3", "--out", str(tmp_path / "one")]) == 0
    assert _largest_difference(_weights(tmp_path / "one"), _weights(run)) < TOLERANCE
    one = (tmp_path / "one" / "metrics.csv").read_text().splitlines()
    two = (run / "metrics.csv").read_text().splitlines()
    assert len(one) == len(two) == 4
    for a, b in zip(one[1:], two[1:], strict=True):  # epoch, step, train and val NLL
        assert [float(v) for v in b.split(",")[:4]] == pytest.approx(
            [float(v) for v in a.split(",")[:4]], rel=1e-12
        )


def test_bad_launch_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    assert main([*FIT, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("exactflow fit: error: torchrun launch: WORLD_SIZE is set but RANK")
    assert "\n" not in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- the launch itself
def test_launch_reads_torchrun_environment() -> None:
    assert launch({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == Launch(1, 2, 1)
    assert launch({}) == Launch() and not Launch().distributed
    with pytest.raises(ValueError, match="RANK must be below WORLD_SIZE=2, got 2"):
        launch({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer >= 1, got 'two'"):
        launch({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"})
    assert rank_seed(5, 0) == 5 and rank_seed(5, 1) != rank_seed(5, 2)


def test_one_process_with_world_size_one_is_a_plain_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    plain = _fit("realnvp", tmp_path)
    assert not torch.distributed.is_initialized()
    state = ef.checkpoint.load(tmp_path / "realnvp" / "last.safetensors").state
    assert "rng_ranks" not in state
    monkeypatch.delenv("WORLD_SIZE")
    again = _fit("realnvp", tmp_path / "again")
    assert _largest_difference(plain["weights"], again["weights"]) == 0


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
