"""``exactflow fit --model vae`` and its eval/sample/plot/resume, and ``exactflow compare``.

Tiny VAEs (a 2-D latent, one epoch, a handful of importance draws): these check the commands,
the run folder and the report, not the quality of the bound (the VAE's own tests do that).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_cli import PNG_MAGIC, csv_rows, fails, listing, quiet_main, run

VAE = ["--model", "vae", "--latent", "2", "--hidden", "16", "--context", "8", "--transforms",
        "1", "--epochs", "1", "--eval-k", "8", "--no-progress"]  # fmt: skip
FLOW = ["--epochs", "1", "--hidden", "8", "--transforms", "2", "--no-progress", "--no-plots"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("vae") / "iaf"
    code, stdout = quiet_main(
        "fit", "--data", "binary-digits", "--posterior", "iaf", "--out", out, *VAE
    )
    assert code == 0, stdout
    return out, stdout


@pytest.fixture
def vae_copy(vae_run: tuple[Path, str], tmp_path: Path) -> Path:
    return Path(shutil.copytree(vae_run[0], tmp_path / "copy"))


def record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def report(folder: Path) -> dict:
    return json.loads((folder / "eval.json").read_text())


def test_vae_fit_writes_the_run(vae_run: tuple[Path, str]) -> None:
    out, stdout = vae_run
    for name in ("run.json", "best.safetensors", "last.safetensors", "metrics.csv", "eval.json"):
        assert (out / name).is_file(), name
    for name in ("vae.png", "training.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC), name
    value = record(out)
    assert value["model"]["name"] == "DenseVAE" and "flow" not in value
    assert value["model"]["kwargs"] == {
        "features": 64,
        "latent": 2,
        "posterior": "iaf",
        "context": 8,
        "transforms": 1,
        "hidden": [16],
    }
    assert value["objective"] == {"name": "elbo", "k": 1}
    assert value["data"]["binarization"] == "dynamic" and value["image_shape"] == [1, 8, 8]
    assert value["train"]["standardize"] is False
    assert "train_neg_elbo" in csv_rows(out / "metrics.csv")[0]
    figures = report(out)
    assert figures["k"] == 8 and figures["points"] == 270
    assert figures["nll"] == -figures["iwae"]
    assert figures["bits_per_dim"] == pytest.approx(figures["nll"] / (64 * np.log(2)))
    for key in ("elbo_stderr", "iwae_stderr", "iwae_mc_stderr"):
        assert figures[key] > 0, key
    # IWAE-k is at least the ELBO in expectation; over 270 points the means keep that order.
    assert figures["iwae"] > figures["elbo"] - 3 * figures["elbo_stderr"]
    assert "ELBO" in stdout and "IWAE estimate, k=8" in stdout and "bits/dim" in stdout


def test_eval_takes_k(vae_copy: Path, capsys) -> None:
    code, stdout, err = run(capsys, "eval", vae_copy, "--k", "16")
    assert code == 0, err
    assert "k=16" in stdout and report(vae_copy)["k"] == 16
    assert "--samples" in fails(capsys, "eval", vae_copy, "--samples", "10")


def test_sample_draws_binary_images(vae_copy: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "sample", vae_copy, "-n", "9", "-o", tmp_path / "x.npy")
    assert code == 0, err
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (9, 64) and set(np.unique(x)) <= {0.0, 1.0}
    code, _, err = run(capsys, "sample", vae_copy, "-n", "9", "--mean", "-o", tmp_path / "m.npy")
    assert code == 0, err
    means = np.load(tmp_path / "m.npy")
    assert ((means > 0) & (means < 1)).all()
    code, _, err = run(capsys, "sample", vae_copy, "-n", "16", "-o", tmp_path / "x.png")
    assert code == 0, err
    assert (tmp_path / "x.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_draws_the_vae_grid(vae_copy: Path, capsys) -> None:
    (vae_copy / "figures" / "vae.png").unlink()
    code, _, err = run(capsys, "plot", vae_copy)
    assert code == 0, err
    assert (vae_copy / "figures" / "vae.png").read_bytes().startswith(PNG_MAGIC)


def test_resume_continues_and_refuses_changes(vae_copy: Path, capsys) -> None:
    before = listing(vae_copy)
    for option in (
        ["--posterior", "planar"],
        ["--latent", "3"],
        ["--objective", "iwae"],
        ["--model", "flow"],
        ["--flow", "maf"],
    ):
        line = fails(capsys, "fit", "--out", vae_copy, "--resume", *option, "--no-progress")
        assert option[0] in line, line
        assert listing(vae_copy) == before
    code, _, err = run(
        capsys,
        "fit",
        "--out",
        vae_copy,
        "--resume",
        "--epochs",
        "2",
        "--eval-k",
        "4",
        "--no-progress",
        "--no-plots",
    )
    assert code == 0, err
    assert [int(r["epoch"]) for r in csv_rows(vae_copy / "metrics.csv")] == [1, 2]
    assert report(vae_copy)["k"] == 4


def test_iwae_objective_and_its_record(tmp_path: Path, capsys) -> None:
    out = tmp_path / "iwae"
    code, _, err = run(
        capsys,
        "fit",
        "--data",
        "binary-digits",
        "--objective",
        "iwae",
        "--k",
        "3",
        "--out",
        out,
        *VAE,
        "--no-plots",
    )
    assert code == 0, err
    assert record(out)["objective"] == {"name": "iwae", "k": 3}
    assert "train_neg_iwae" in csv_rows(out / "metrics.csv")[0]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--model", "vae", "--flow", "maf"], "--posterior"),
        (["--model", "vae", "--bins", "4"], "--bins"),
        (["--posterior", "iaf"], "--model flow"),
        (["--k", "5"], "--model flow"),
        (["--model", "vae", "--posterior", "glow"], "--posterior"),
        (["--model", "vae", "--kind", "diagonal"], "--kind"),
        (["--model", "vae", "--data", "digits", "--likelihood", "bernoulli"], "binary (0 or 1)"),
    ],
    ids=[
        "flow-for-vae",
        "bins-for-vae",
        "posterior-for-flow",
        "k-for-flow",
        "bad-posterior",
        "bad-kind",
        "bernoulli-on-grey",
    ],
)
def test_options_of_the_other_model_are_one_line(
    tmp_path: Path, capsys, argv: list[str], fragment: str
) -> None:
    out = tmp_path / "run"
    line = fails(capsys, "fit", "--data", "binary-digits", "--out", out, *argv, "--epochs", "1")
    assert fragment in line and not out.exists()


def test_edited_vae_record_is_one_line(vae_copy: Path, capsys) -> None:
    value = record(vae_copy)
    value["objective"]["k"] = -1
    (vae_copy / "run.json").write_text(json.dumps(value))
    assert "objective.k" in fails(capsys, "eval", vae_copy)
    value["objective"] = {"name": "elbo", "k": 1}
    value["flow"] = value["model"]
    (vae_copy / "run.json").write_text(json.dumps(value))
    assert "both 'flow' and 'model'" in fails(capsys, "eval", vae_copy)


# ---------------------------------------------------------------------------- compare
@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Gaussian-decoder VAE and a MAF on the same dequantized digits."""
    root = tmp_path_factory.mktemp("digits")
    code, stdout = quiet_main(
        "fit",
        "--data",
        "digits",
        "--out",
        root / "vae",
        *VAE,
        "--no-plots",
    )
    assert code == 0, stdout
    code, stdout = quiet_main(
        "fit", "--data", "digits", "--flow", "maf", "--out", root / "maf", *FLOW
    )
    assert code == 0, stdout
    return root / "vae", root / "maf"


def test_compare_a_flow_and_a_vae(digits_runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    vae, maf = digits_runs
    assert record(vae)["model"]["kwargs"]["likelihood"] == "gaussian"  # the default off binary data
    chart = tmp_path / "bounds.png"
    code, stdout, err = run(capsys, "compare", vae, maf, "-o", chart)
    assert code == 0, err
    assert chart.read_bytes().startswith(PNG_MAGIC)
    lines = stdout.splitlines()
    assert lines[0].startswith("digits:") and "higher is better" in lines[0]
    vae_line = next(line for line in lines if line.startswith("vae (VAE, gaussian q)"))
    maf_line = next(line for line in lines if line.startswith("maf (MAF, exact)"))
    vae_report, maf_report = report(vae), report(maf)
    assert f"{vae_report['elbo']:.4f}" in vae_line and f"{vae_report['iwae']:.4f}" in vae_line
    assert f"{-maf_report['nll']:.4f}" in maf_line


def test_compare_refuses_other_data(
    digits_runs: tuple[Path, Path], vae_run: tuple[Path, str], tmp_path: Path, capsys
) -> None:
    line = fails(capsys, "compare", digits_runs[1], vae_run[0], "-o", tmp_path / "c.png")
    assert "binary-digits" in line and "same data" in line
    assert not (tmp_path / "c.png").exists()
    line = fails(capsys, "compare", digits_runs[1], "-o", tmp_path / "c.pdf")
    assert ".png" in line
    (digits_runs[1] / "eval.json").rename(tmp_path / "kept.json")
    try:
        assert "exactflow eval" in fails(
            capsys, "compare", digits_runs[1], "-o", tmp_path / "c.png"
        )
    finally:
        (tmp_path / "kept.json").rename(digits_runs[1] / "eval.json")
