"""The free-form flows through the ``exactflow`` command: fit (with figures), eval, sample, resume.

Every family of issue 13 is a ``--flow`` name: ``residual`` (ResidualFlow), ``ffjord``, ``naf``,
``umnn`` and ``bnaf``. Their training losses may be estimates; ``eval`` is exact (eval mode).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_cli import run

FREEFORM = {
    "residual": "ResidualFlow",
    "ffjord": "FFJORD",
    "naf": "NAF",
    "umnn": "UMNN",
    "bnaf": "BNAF",
}
QUICK = ["--n-train", "256", "--n-val", "64", "--n-test", "64", "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize("flow", sorted(FREEFORM))
def test_fit_eval_sample_and_resume(flow: str, tmp_path: Path, capsys) -> None:
    if flow == "ffjord":
        pytest.importorskip("torchdiffeq", reason="FFJORD solves its ODE with torchdiffeq")
    out = tmp_path / flow
    code, stdout, err = run(
        capsys, "fit", "--data", "moons", "--flow", flow, "--out", out, "--transforms", "1",
        "--hidden", "8", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    assert record["flow"]["name"] == FREEFORM[flow]
    assert (out / "figures" / "density.png").stat().st_size > 0

    code, stdout, err = run(capsys, "eval", out)
    assert code == 0, err
    assert "KL gap" in stdout and ", exact (round trip" in stdout, stdout
    report = json.loads((out / "eval.json").read_text())
    assert np.isfinite(report["kl_gap"]) and report["certificate"]["passed"], report
    if flow == "ffjord":  # the cost of a continuous-time flow is reported
        assert report["nfe"] > 0 and "evaluations of the ODE's dynamics" in stdout
    else:
        assert "nfe" not in report

    samples = tmp_path / "samples.csv"
    code, _, err = run(capsys, "sample", out, "-n", "20", "--out", samples)
    assert code == 0, err
    rows = np.loadtxt(samples, delimiter=",", ndmin=2)
    assert rows.shape == (20, 2) and np.isfinite(rows).all()

    code, _, err = run(
        capsys, "fit", "--out", out, "--resume", "--flow", flow, "--epochs", "2", "--no-progress"
    )
    assert code == 0, err
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header and two epochs


def test_ffjord_regularizers_are_recorded_and_fixed_on_resume(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torchdiffeq", reason="FFJORD solves its ODE with torchdiffeq")
    out = tmp_path / "f"
    code, _, err = run(
        capsys, "fit", "--data", "moons", "--flow", "ffjord", "--out", out, "--hidden", "8",
        "--kinetic", "0.05", "--jacobian-norm", "0.01", "--no-plots", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    assert record["objective"] == {"name": "nll", "kinetic": 0.05, "jacobian": 0.01}
    code, _, err = run(capsys, "fit", "--out", out, "--resume", "--kinetic", "0.1")
    assert code == 2 and "--kinetic" in err and "0.05" in err, err
    code, _, err = run(capsys, "fit", "--out", out, "--resume", "--epochs", "2", "--no-progress")
    assert code == 0, err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--flow", "nsf", "--kinetic", "0.1"], "regularize continuous-time flows"),
        (["--flow", "ffjord", "--kinetic", "-1"], "expected a finite number >= 0"),
        (["--flow", "ffjord", "--jacobian-norm", "nan"], "expected a finite number >= 0"),
    ],
)
def test_regularizer_options_are_checked(tmp_path: Path, capsys, argv: list, words: str) -> None:
    code, _, err = run(capsys, "fit", "--data", "moons", "--out", tmp_path / "x", *argv)
    assert code == 2 and words in err, err
    assert not (tmp_path / "x").exists()
