"""Bad values and bad moments for ``exactflow``: each is one line on stderr with exit code 2
(130 for Ctrl-C), names the option or file at fault, and never writes a number that is not one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import exactflow.cli.report
import exactflow.metrics
from exactflow import data
from exactflow.cli.main import main
from test_cli import T, error_line, fails, listing, run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    assert main(["fit", "--out", str(out), *T]) == 0
    return out


@pytest.mark.parametrize("value", ["-1", "1e23", "99999999999999999999999", "x", "1.5"])
def test_bad_seed_names_the_option(tmp_path: Path, capsys, value: str) -> None:
    out = tmp_path / "run"
    line = fails(capsys, "fit", "--out", out, "--seed", value, *T)
    assert "--seed" in line and value in line
    assert not out.exists()


def test_seed_written_as_a_power_of_ten(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "fit", "--out", tmp_path / "run", "--seed", "1e3", *T)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"]["seed"] == 1000


@pytest.mark.parametrize("option", ["--lr", "--clip-grad", "--weight-decay"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_training_numbers(tmp_path: Path, capsys, option: str, value: str) -> None:
    line = fails(capsys, "fit", "--out", tmp_path / "run", option, value, *T)
    assert option.lstrip("-").replace("-", "_") in line and value in line
    assert not (tmp_path / "run").exists()


def test_sample_count_over_the_limit(base_run: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "s.npy"
    line = fails(capsys, "sample", base_run, "-n", "1e9", "-o", target)
    assert "1000000000" in line and "--max-samples" in line and "1000000" in line
    assert not target.exists()
    code, _, err = run(capsys, "sample", base_run, "-n", "20", "--max-samples", "10", "-o", target)
    assert "--max-samples" in error_line(code, err, "sample")


def test_no_test_points_never_writes_nan(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    line = fails(capsys, "fit", "--out", out, *T, "--n-test", "0")
    assert "test split" in line and "empty" in line
    assert not out.exists()
    # One test point has no standard error: null in eval.json, "n/a" on screen.
    code, stdout, err = run(capsys, "fit", "--out", out, *T, "--n-test", "1")
    assert code == 0, err
    report = strict_json(out / "eval.json")
    assert report["nll_stderr"] is None and math.isfinite(report["nll"])
    assert "n/a" in stdout


def test_eval_on_a_read_only_run_prints_then_fails(base_run: Path, capsys, monkeypatch) -> None:
    def read_only(path, value) -> None:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(exactflow.cli.report, "write_json", read_only)
    before = listing(base_run)
    code, out, err = run(capsys, "eval", base_run)
    line = error_line(code, err, "eval")
    assert "test NLL" in out
    assert "eval.json" in line and "Read-only file system" in line and "not saved" in line
    assert listing(base_run) == before


def test_stale_sample_temporaries_are_removed(base_run: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "s.npy"
    stale = tmp_path / ".s.npy.0123456789ab.tmp"
    stale.write_bytes(b"\0" * 1000)  # what a SIGKILLed sample leaves
    assert run(capsys, "sample", base_run, "-n", 10, "-o", target)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["s.npy"]


def test_killed_sample_leaves_nothing_behind_for_long(base_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "s.csv"
    args = [sys.executable, "-m", "exactflow", "sample", str(base_run), "-n", "200000", "-o",
            str(target)]  # fmt: skip
    victim = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = subprocess.run([*args[:6], "10", *args[7:]], env=ENV, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["s.csv"]


@pytest.mark.parametrize(
    "error",
    [
        ImportError("reading Parquet needs pyarrow: pip install pyarrow"),
        EOFError("Compressed file ended before the end-of-stream marker was reached"),
        RecursionError("maximum recursion depth exceeded"),
        MemoryError(),
        RuntimeError("something deep inside\n  on two lines"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_failure_is_one_line(tmp_path: Path, capsys, monkeypatch, error) -> None:
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(data, "load", broken)
    line = fails(capsys, "fit", "--out", tmp_path / "run", *T)
    assert len(line) > len("exactflow fit: error: ")
    assert not (tmp_path / "run").exists()


# The earliest delay leaves the interpreter its own start-up (site imports), which no program
# can make quiet; from there on torch is still loading for over a second.
@pytest.mark.parametrize("delay", [0.4, 0.8, 1.2, 2.5, 4.0])
def test_ctrl_c_at_any_moment_is_one_line(tmp_path: Path, delay: float) -> None:
    args = [sys.executable, "-m", "exactflow", "fit", "--out", str(tmp_path / "run"), *T,
            "--epochs", "1000"]  # fmt: skip
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    text = err.decode()
    assert "Traceback" not in text, text
    assert process.returncode == 130, text
    assert len(text.strip().splitlines()) == 1, text


def test_a_failed_certificate_is_loud(base_run: Path, capsys, monkeypatch) -> None:
    real = exactflow.metrics.evaluate

    def broken_flow(flow, dataset, split="test", **options):
        report = real(flow, dataset, split, **options)
        report["certificate"].update(passed=False, ladj_error=0.25)
        return report

    monkeypatch.setattr(exactflow.metrics, "evaluate", broken_flow)
    code, out, err = run(capsys, "eval", base_run)
    line = error_line(code, err, "eval")
    assert "EXACTNESS CERTIFICATE FAILED" in out and "2.5e-01" in out
    assert "certificate" in line and "not the exact likelihood" in line
    assert json.loads((base_run / "eval.json").read_text())["certificate"]["passed"] is False


def test_a_learning_rate_that_ruins_the_fit_is_said(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    args = [a for a in T if a not in ("--epochs", "1")]
    code, _, err = run(capsys, "fit", "--data", "moons", *args, "--epochs", "5", "--lr", "10",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 0
    assert "warning: training never improved on the starting model" in err
    assert "lr=10 is likely too high" in err
    code, _, err = run(capsys, "fit", "--data", "moons", *T, "--out", tmp_path / "fine")
    assert code == 0 and "warning" not in err
