"""``exactflow fit --device`` and ``--compile``: checked up front, recorded in ``run.json``,
changeable on ``--resume``. The CUDA cases run where a GPU is present.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import exactflow.cli.fit
from test_cli import T, error_line, run

CUDA = torch.cuda.is_available()


def train_record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["train"]


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0"])
def test_unknown_device_is_one_line(tmp_path: Path, capsys, device: str) -> None:
    code, _, err = run(capsys, "fit", "--out", tmp_path / "run", "--device", device, *T)
    line = error_line(code, err, "fit")
    assert f"--device {device}" in line and "'cuda:N'" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_missing_cuda_is_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "fit", "--out", tmp_path / "run", "--device", "cuda", *T)
    line = error_line(code, err, "fit")
    assert "--device cuda" in line and "not available" in line
    assert not (tmp_path / "run").exists()


def test_absent_cuda_index_is_one_line(tmp_path: Path, capsys) -> None:
    index = torch.cuda.device_count() if CUDA else 0
    code, _, err = run(capsys, "fit", "--out", tmp_path / "r", "--device", f"cuda:{index}", *T)
    assert f"--device cuda:{index}" in error_line(code, err, "fit")


def test_device_and_compile_are_recorded_and_reach_the_trainer(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    seen = []
    real_fit = exactflow.cli.fit.fit

    def spy(model, objective, data=None, config=None, **kwargs):
        seen.append((config.device, config.compile))
        # Compiling takes a minute on a CPU; the trainer's own tests cover it.
        return real_fit(
            model, objective, data, dataclasses.replace(config, compile=False), **kwargs
        )

    monkeypatch.setattr(exactflow.cli.fit, "fit", spy)
    out = tmp_path / "run"
    code, _, err = run(capsys, "fit", "--out", out, "--device", "cpu", "--compile", *T)
    assert code == 0, err
    assert seen == [("cpu", True)]
    assert (train_record(out)["device"], train_record(out)["compile"]) == ("cpu", True)
    code, _, err = run(capsys, "fit", "--out", out, "--resume", "--no-compile", "--epochs", "2",
                       "--no-progress", "--no-plots")  # fmt: skip
    assert code == 0, err
    assert seen[-1] == ("cpu", False) and train_record(out)["compile"] is False


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_fit_on_cuda_then_eval_and_sample(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "fit", "--out", out, "--device", "cuda", *T)
    assert code == 0, err
    assert train_record(out)["device"] == "cuda"
    assert "exact (" in stdout
    code, stdout, err = run(capsys, "eval", out)
    assert code == 0, err
    assert run(capsys, "sample", out, "-n", 10, "-o", tmp_path / "s.npy")[0] == 0


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_compile_on_cuda(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "fit", "--out", out, "--device", "cuda", "--compile", *T)
    assert code == 0, err
    assert "s to compile" in stdout or "compiled the step in" in stdout
    assert train_record(out)["compile"] is True
