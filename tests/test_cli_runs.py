"""The run folder as ``exactflow`` guards it: seeds, the record's schema, the lock, --overwrite,
--resume, and the files a run owns. Every command runs through ``exactflow.cli.main.main`` or
``python -m exactflow`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import exactflow.cli.fit
from exactflow.cli.main import main
from test_cli import T, csv_rows, error_line, fails, listing, run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    assert main(["fit", "--out", str(out), "--seed", "1", *T]) == 0
    return out


@pytest.fixture
def copy(base_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def siblings(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}"))


# ---------------------------------------------------------------------------- seeds
def test_same_seed_gives_the_same_test_nll(base_run: Path, tmp_path: Path, capsys) -> None:
    again = tmp_path / "again"
    assert run(capsys, "fit", "--out", again, "--seed", "1", *T)[0] == 0
    first = json.loads((base_run / "eval.json").read_text())
    second = json.loads((again / "eval.json").read_text())
    assert first["nll"] == second["nll"]
    other = tmp_path / "other"
    assert run(capsys, "fit", "--out", other, "--seed", "2", *T)[0] == 0
    assert json.loads((other / "eval.json").read_text())["nll"] != first["nll"]


# ---------------------------------------------------------------------------- L1: existing runs
def test_fit_refuses_an_existing_run(copy: Path, capsys) -> None:
    before = listing(copy)
    line = fails(capsys, "fit", "--out", copy, *T)
    assert "--resume" in line and "--overwrite" in line and str(copy) in line
    assert listing(copy) == before


def test_overwrite_replaces_the_run(copy: Path, capsys) -> None:
    code, _, err = run(capsys, "fit", "--out", copy, "--overwrite", "--flow", "maf", *T)
    assert code == 0, err
    assert record(copy)["flow"]["name"] == "MAF"
    assert (copy / "best.safetensors").is_file() and (copy / "eval.json").is_file()
    assert not (copy / ".lock").exists()
    assert siblings(copy) == []


def test_failed_overwrite_keeps_the_old_run(copy: Path, capsys, monkeypatch) -> None:
    before = listing(copy)

    def broken_fit(model, objective, data=None, config=None, **kwargs):
        Path(config.out, "last.safetensors").write_bytes(b"half a run")
        raise FloatingPointError("training diverged")

    monkeypatch.setattr(exactflow.cli.fit, "fit", broken_fit)
    line = fails(capsys, "fit", "--out", copy, "--overwrite", "--flow", "maf", *T)
    assert "training diverged" in line and "keeps the old run" in line
    assert listing(copy) == before
    assert siblings(copy) == []


def test_failed_new_fit_leaves_no_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    def broken_fit(*args, **kwargs):
        raise FloatingPointError("training diverged")

    monkeypatch.setattr(exactflow.cli.fit, "fit", broken_fit)
    out = tmp_path / "new"
    assert "training diverged" in fails(capsys, "fit", "--out", out, *T)
    assert not out.exists()
    # A folder that is not a run may be fitted into; a failed fit takes back only its own files.
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    fails(capsys, "fit", "--out", out, *T)
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_empty_out_is_refused(capsys) -> None:
    line = fails(capsys, "fit", "--out", "", *T)
    assert "--out" in line and "empty" in line


# ---------------------------------------------------------------------------- L2: the lock
@pytest.fixture
def live_pid() -> int:
    sleeper = subprocess.Popen(["sleep", "60"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.mark.parametrize("command", ["fit", "plot"])
def test_a_locked_run_is_refused(copy: Path, capsys, live_pid: int, command: str) -> None:
    (copy / ".lock").write_text(f"{live_pid}\n")
    before = listing(copy)
    extra = ["--resume", "--epochs", "2", "--no-progress"] if command == "fit" else []
    target = ["--out", copy] if command == "fit" else [copy]
    line = fails(capsys, command, *target, *extra)
    assert f"process {live_pid}" in line and "in use" in line
    assert listing(copy) == before


def test_eval_of_a_locked_run_prints_then_says_it_did_not_save(
    copy: Path, capsys, live_pid: int
) -> None:
    (copy / ".lock").write_text(f"{live_pid}\n")
    code, out, err = run(capsys, "eval", copy)
    line = error_line(code, err, "eval")
    assert "test NLL" in out
    assert "not saved" in line and "eval.json" in line and str(live_pid) in line


def test_a_stale_lock_is_taken_over(copy: Path, capsys) -> None:
    (copy / ".lock").write_text(f"{dead_pid()}\n")
    (copy / ".metrics.csv.0123456789ab.tmp").write_text("left by a killed writer")
    code, _, err = run(capsys, "fit", "--out", copy, "--resume", "--epochs", "2", "--no-progress",
                       "--no-plots")  # fmt: skip
    assert code == 0, err
    assert [int(r["epoch"]) for r in csv_rows(copy / "metrics.csv")] == [1, 2]
    assert not [p.name for p in copy.glob(".*")], "lock or temporary files left behind"


def test_two_processes_on_one_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [sys.executable, "-m", "exactflow", "fit", "--out", str(out), *T, "--epochs", "1000",
            "--patience", "0"]  # fmt: skip
    first = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out / "last.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / ".lock").read_text().strip() == str(first.pid)
        second = subprocess.run(
            [sys.executable, "-m", "exactflow", "fit", "--out", str(out), "--resume",
             "--no-progress"], env=ENV, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        line = error_line(second.returncode, second.stderr, "fit")
        assert f"process {first.pid}" in line
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130 and "Traceback" not in err.decode()
    assert not (out / ".lock").exists()


# ---------------------------------------------------------------------------- files a run owns
@pytest.mark.parametrize("name", ["metrics.csv", "figures/training.png"])
def test_sample_never_overwrites_a_file_of_a_run(copy: Path, capsys, name: str) -> None:
    (copy / "figures").mkdir(exist_ok=True)
    (copy / "figures" / "training.png").write_bytes(b"a picture")
    before = listing(copy)
    line = fails(capsys, "sample", copy, "-o", copy / name)
    assert "a file of a run folder" in line and name in line
    assert listing(copy) == before


def test_sample_into_the_run_figures(copy: Path, capsys) -> None:
    target = copy / "figures" / "sample-grid.npy"
    assert run(capsys, "sample", copy, "-o", target, "-n", 5)[0] == 0
    assert target.is_file()


# ---------------------------------------------------------------------------- S1: the record
EDITS = {
    "options-list": (lambda r: r["data"].update(options=[1]), "data.options"),
    "name-number": (lambda r: r["data"].update(name=5), "data.name"),
    "image-shape": (lambda r: r.update(image_shape=[3, 7]), "image_shape"),
    "nested-kwargs": (lambda r: r["flow"]["kwargs"].update(hidden=[[8]]), "flow.kwargs.hidden"),
    "seed-text": (lambda r: r["data"].update(seed="0"), "data.seed"),
    "lr-text": (lambda r: r["train"].update(lr="fast"), "train.lr"),
    "unknown-key": (lambda r: r.update(extra=1), "unknown"),
    "allow-pickle": (lambda r: r["data"]["options"].update(allow_pickle=True), "--allow-pickle"),
    "huge-rows": (lambda r: r["data"]["options"].update(n_test=10**12), "n_test"),
    "data-list": (lambda r: r.update(data=[]), "data must be an object"),
}


@pytest.mark.parametrize("command", ["eval", "plot", "fit"])
@pytest.mark.parametrize("edit", EDITS)
def test_edited_record_is_one_line(copy: Path, capsys, edit: str, command: str) -> None:
    change, fragment = EDITS[edit]
    value = record(copy)
    change(value)
    (copy / "run.json").write_text(json.dumps(value))
    before = listing(copy)
    target = ["--out", copy, "--resume", "--no-progress"] if command == "fit" else [copy]
    line = fails(capsys, command, *target)
    assert "run.json" in line and fragment in line
    assert listing(copy) == before


def test_deeply_nested_record(copy: Path, capsys) -> None:
    (copy / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "run.json" in fails(capsys, "eval", copy)


def test_data_file_path_is_recorded_absolute(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("table.csv").write_text(
        "a,b\n" + "\n".join(f"{i % 7 * 0.3:.3f},{i % 5 * 0.7 - i % 3:.3f}" for i in range(300))
    )
    assert run(capsys, "fit", "--data", "table.csv", "--out", "run", *T[6:])[0] == 0
    assert record(tmp_path / "run")["data"]["name"] == str(tmp_path / "table.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run(capsys, "eval", tmp_path / "run")
    assert code == 0, err
    assert "test NLL" in out


# ---------------------------------------------------------------------------- W4: resume
def test_resume_takes_new_limits_and_step_sizes(copy: Path, capsys) -> None:
    code, _, err = run(
        capsys, "fit", "--out", copy, "--resume", "--epochs", "2", "--lr", "0.02",
        "--clip-grad", "1", "--patience", "3", "--no-progress", "--no-plots",
    )  # fmt: skip
    assert code == 0, err
    train = record(copy)["train"]
    assert (train["epochs"], train["lr"], train["clip_grad"], train["patience"]) == (2, 0.02, 1, 3)
    rows = csv_rows(copy / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[0]["lr"]) <= 1e-3  # the first run's rate, annealed
    assert 1e-3 < float(rows[1]["lr"]) <= 0.02, "the new --lr did not take effect"


FIXED = {
    "flow": ["--flow", "maf"],
    "hidden": ["--hidden", "16"],
    "transforms": ["--transforms", "3"],
    "data": ["--data", "circles"],
    "batch-size": ["--batch-size", "32"],
    "dtype": ["--dtype", "float64"],
    "seed": ["--seed", "2"],
    "n-train": ["--n-train", "400"],
}


@pytest.mark.parametrize("option", FIXED)
def test_resume_refuses_a_change_of_what_is_trained(copy: Path, capsys, option: str) -> None:
    before = listing(copy)
    line = fails(capsys, "fit", "--out", copy, "--resume", *FIXED[option], "--no-progress")
    assert f"--{option}" in line and "--resume" in line
    assert listing(copy) == before


def test_resume_accepts_the_same_values(copy: Path, capsys) -> None:
    code, _, err = run(capsys, "fit", "--out", copy, "--resume", "--flow", "nsf", "--hidden", "8",
                       "--seed", "1", "--epochs", "2", "--no-progress", "--no-plots")  # fmt: skip
    assert code == 0, err


def test_a_record_of_exactflow_0_1_still_works(copy: Path, capsys) -> None:
    # v0.1 wrote {"preset": ...}, relative paths and no device/compile fields.
    value = record(copy)
    value["flow"] = {"preset": value["flow"]["name"], "kwargs": value["flow"]["kwargs"]}
    for key in ("device", "compile", "epoch_steps"):
        value["train"].pop(key, None)
    (copy / "run.json").write_text(json.dumps(value))
    code, stdout, err = run(capsys, "eval", copy)
    assert code == 0, err
    assert "test NLL" in stdout
    code, _, err = run(capsys, "fit", "--out", copy, "--resume", "--epochs", "2", "--no-progress",
                       "--no-plots")  # fmt: skip
    assert code == 0, err
    assert record(copy)["flow"]["name"] == "NSF" and record(copy)["train"]["device"] == "cpu"


def test_out_that_is_a_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "file"
    target.write_text("not a folder")
    assert "not a folder" in fails(capsys, "fit", "--out", target, *T)
    assert target.read_text() == "not a folder"


def test_failed_resume_keeps_the_record(copy: Path, capsys, monkeypatch) -> None:
    before = listing(copy)

    def broken_fit(*args, **kwargs):
        raise ValueError("the checkpoint does not fit")

    monkeypatch.setattr(exactflow.cli.fit, "fit", broken_fit)
    assert "does not fit" in fails(capsys, "fit", "--out", copy, "--resume", "--lr", "0.5")
    assert listing(copy) == before
