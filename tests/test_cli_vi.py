"""``exactflow vi``: reverse-KL fits to built-in targets and to a user's ``module:function``.

Tiny budgets (tens of steps, a few thousand draws): these check the command, its run folder and
its refusals, not the quality of the fit (the objective's own tests do that).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import exactflow.cli.vi
from test_cli import PNG_MAGIC, csv_rows, error_line, fails, listing, quiet_main, run

# 50 steps validated every 25: two rows of metrics.csv.
SMALL = ["--steps", "50", "--validate-every", "25", "--samples", "64", "--val-samples", "256",
          "--eval-samples", "2000", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def u1_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("vi") / "u1"
    code, stdout = quiet_main("vi", "--target", "u1", "--flow", "planar", "--out", out, *SMALL)
    assert code == 0, stdout
    return out, stdout


@pytest.fixture
def u1_copy(u1_run: tuple[Path, str], tmp_path: Path) -> Path:
    return Path(shutil.copytree(u1_run[0], tmp_path / "copy"))


def record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def report(folder: Path) -> dict:
    return json.loads((folder / "eval.json").read_text())


# ---------------------------------------------------------------------------- a built-in target
def test_vi_writes_the_run(u1_run: tuple[Path, str]) -> None:
    out, stdout = u1_run
    for name in ("run.json", "best.safetensors", "last.safetensors", "metrics.csv", "eval.json"):
        assert (out / name).is_file(), name
    for name in ("target_vs_flow.png", "training.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC), name
    assert not [p.name for p in out.rglob(".*")], "temporary files left behind"
    value = record(out)
    assert value["target"] == {"name": "u1", "options": {}, "dim": 2}
    assert value["flow"]["name"] == "Planar" and value["flow"]["kwargs"]["features"] == 2
    assert value["objective"] == {"name": "reverse_kl", "samples": 64, "val_samples": 256}
    assert "data" not in value
    assert [int(r["step"]) for r in csv_rows(out / "metrics.csv")] == [25, 50]
    figures = report(out)
    assert figures["samples"] == 2000 and 0 < figures["ess"] <= 2000
    assert figures["true_log_z"] == pytest.approx(1.8775, abs=1e-3)
    assert figures["true_kl"] == pytest.approx(figures["true_log_z"] - figures["elbo"])
    assert figures["kl"] == pytest.approx(figures["log_z"] - figures["elbo"])
    assert figures["log_z_stderr"] > 0 and figures["elbo_stderr"] > 0
    assert "log Z ≈" in stdout and "true KL" in stdout and "ESS" in stdout


def test_eval_sample_plot_of_a_vi_run(u1_copy: Path, tmp_path: Path, capsys) -> None:
    code, stdout, err = run(capsys, "eval", u1_copy, "--samples", "500")
    assert code == 0, err
    assert "log Z ≈" in stdout and report(u1_copy)["samples"] == 500
    code, _, err = run(capsys, "sample", u1_copy, "-n", "7", "-o", tmp_path / "q.npy")
    assert code == 0, err
    assert np.load(tmp_path / "q.npy").shape == (7, 2)
    (u1_copy / "figures" / "target_vs_flow.png").unlink()
    code, _, err = run(capsys, "plot", u1_copy)
    assert code == 0, err
    assert (u1_copy / "figures" / "target_vs_flow.png").read_bytes().startswith(PNG_MAGIC)
    assert "no data" in fails(capsys, "eval", u1_copy, "--data", "moons")


def test_resume_continues_and_refuses_changes(u1_copy: Path, capsys) -> None:
    before = listing(u1_copy)
    for option in (
        ["--flow", "radial"],
        ["--samples", "32"],
        ["--seed", "3"],
        ["--target", "u2"],
        ["--validate-every", "10"],
    ):
        line = fails(capsys, "vi", "--out", u1_copy, "--resume", "--target", "u1", *option)
        assert "--resume" in line or "trained against" in line, line
        assert listing(u1_copy) == before
    code, _, err = run(
        capsys,
        "vi",
        "--target",
        "u1",
        "--out",
        u1_copy,
        "--resume",
        "--steps",
        "75",
        "--lr",
        "0.002",
        "--no-progress",
        "--no-plots",
    )
    assert code == 0, err
    assert [int(r["step"]) for r in csv_rows(u1_copy / "metrics.csv")] == [25, 50, 75]
    assert record(u1_copy)["train"]["steps"] == 75 and record(u1_copy)["train"]["lr"] == 0.002


def test_existing_run_is_refused_then_overwritten(u1_copy: Path, capsys) -> None:
    before = listing(u1_copy)
    line = fails(capsys, "vi", "--target", "u1", "--out", u1_copy, *SMALL)
    assert "--resume" in line and "--overwrite" in line
    assert listing(u1_copy) == before
    code, _, err = run(
        capsys,
        "vi",
        "--target",
        "banana",
        "--flow",
        "radial",
        "--out",
        u1_copy,
        "--overwrite",
        *SMALL,
        "--no-plots",
    )
    assert code == 0, err
    assert record(u1_copy)["target"]["name"] == "banana"
    assert record(u1_copy)["flow"]["name"] == "Radial"
    assert not [p for p in u1_copy.parent.iterdir() if p.name.startswith(".copy")]


def test_fit_and_vi_do_not_resume_each_others_runs(u1_copy: Path, capsys) -> None:
    line = fails(capsys, "fit", "--out", u1_copy, "--resume", "--no-progress")
    assert "exactflow vi" in line


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--target", "nope"], "unknown target"),
        (["--target", "u1", "--dim", "3"], "--dim"),
        (["--target", "u1", "--flow", "glowing"], "--flow glowing"),
        (["--target", "no such:thing"], "module:function"),
        (["--target", "exactflow_no_such_module:f"], "cannot import"),
        (["--target", "math:pi", "--dim", "2"], "expected a function"),
        (["--target", "math:sqrt"], "--dim"),
        (["--target", "math:sqrt", "--dim", "2"], "failed"),
        (["--target", "u1", "--steps", "0"], "--steps"),
    ],
    ids=[
        "unknown",
        "dim-of-u1",
        "flow",
        "bad-name",
        "no-module",
        "not-callable",
        "no-dim",
        "fails-on-a-batch",
        "zero-steps",
    ],
)
def test_bad_target_is_one_line(tmp_path: Path, capsys, argv: list[str], fragment: str) -> None:
    out = tmp_path / "run"
    line = fails(capsys, "vi", "--out", out, *argv, *SMALL)
    assert fragment in line
    assert not out.exists()


# ---------------------------------------------------------------------------- a user's function
MODULE = '''
import math
from pathlib import Path

Path(__file__).with_name("imported.txt").write_text("imported")


def log_density(z):
    """A standard normal in 3-D times e: log Z = 1 + 1.5 log(2 pi)."""
    return 1.0 - 0.5 * (z**2).sum(-1)


def wrong_shape(z):
    return z
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module in the current directory (so only an explicit --target imports it)."""
    name = f"user_target_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_user_function_is_imported_only_when_named(
    user_module: str, tmp_path: Path, capsys
) -> None:
    out, marker, target = tmp_path / "run", tmp_path / "imported.txt", f"{user_module}:log_density"
    code, stdout, err = run(
        capsys, "vi", "--target", target, "--dim", "3", "--flow", "iaf", "--out", out, *SMALL
    )
    assert code == 0, err
    assert record(out)["target"] == {"name": target, "options": {}, "dim": 3}
    assert "true log Z" not in stdout and "true_kl" not in report(out)
    assert not (out / "figures" / "target_vs_flow.png").exists()  # 3-D: no density picture
    assert (out / "figures" / "training.png").is_file()
    # Later commands never import it on the record's word: they ask for --target again.
    marker.unlink()
    sys.modules.pop(user_module, None)
    before = listing(out)
    for command in (["eval", out], ["plot", out], ["vi", "--out", out, "--resume"]):
        line = fails(capsys, *command)
        assert f"--target {target}" in line and "never imported" in line, line
    assert not marker.exists()
    assert listing(out) == before
    # Sampling q needs no target.
    code, _, err = run(capsys, "sample", out, "-n", "5", "-o", tmp_path / "q.csv")
    assert code == 0, err
    assert not marker.exists()
    code, stdout, err = run(capsys, "eval", out, "--target", target, "--samples", "300")
    assert code == 0, err
    assert marker.exists() and "log Z ≈" in stdout
    line = fails(capsys, "eval", out, "--target", "u1")
    assert "trained against" in line


def test_user_function_of_the_wrong_shape(user_module: str, tmp_path: Path, capsys) -> None:
    line = fails(
        capsys,
        "vi",
        "--target",
        f"{user_module}:wrong_shape",
        "--dim",
        "2",
        "--out",
        tmp_path / "run",
        *SMALL,
    )
    assert "(N,)" in line and not (tmp_path / "run").exists()


def test_user_function_from_pythonpath_in_a_subprocess(tmp_path: Path) -> None:
    import os
    import subprocess

    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "subprocess_target.py").write_text(MODULE)
    env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "exactflow",
        "vi",
        "--target",
        "subprocess_target:log_density",
        "--dim",
        "3",
        "--out",
        str(tmp_path / "run"),
        *SMALL,
        "--no-plots",
    ]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    value = report(tmp_path / "run")
    # 3 standard-normal dimensions scaled by e: log Z = 1 + 1.5 log(2π); q is barely trained.
    assert math.isfinite(value["log_z"]) and value["samples"] == 2000


def test_edited_target_record_is_one_line(u1_copy: Path, capsys) -> None:
    value = record(u1_copy)
    value["target"]["dim"] = "two"
    (u1_copy / "run.json").write_text(json.dumps(value))
    code, _, err = run(capsys, "eval", u1_copy)
    assert "target.dim" in error_line(code, err, "eval")
    value["target"] = {"name": "u1", "options": {}, "dim": 2}
    value["data"] = {"name": "moons", "options": {}, "seed": 0}
    (u1_copy / "run.json").write_text(json.dumps(value))
    assert "no 'data'" in fails(capsys, "eval", u1_copy)


def test_list_names_the_targets(capsys) -> None:
    code, stdout, _ = run(capsys, "list")
    assert code == 0
    assert "targets (vi --target" in stdout
    for name in ("u1", "u4", "banana", "funnel", "mixture"):
        assert f"  {name} " in stdout


def test_failed_vi_leaves_no_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    def broken_fit(*args, **kwargs):
        raise FloatingPointError("training diverged")

    monkeypatch.setattr(exactflow.cli.vi, "fit", broken_fit)
    out = tmp_path / "new"
    assert "training diverged" in fails(capsys, "vi", "--target", "u1", "--out", out, *SMALL)
    assert not out.exists()


def test_an_image_flow_is_refused_for_a_vector_target(tmp_path: Path, capsys) -> None:
    line = fails(capsys, "vi", "--target", "u1", "--flow", "glow", "--out", tmp_path / "r")
    assert "--flow glow is an image flow" in line and "vector of 2 values" in line
    assert not (tmp_path / "r").exists()
