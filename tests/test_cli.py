"""The ``exactflow`` command, run in-process through ``exactflow.cli.main.main`` on tiny settings.

Good paths: fit (toy, table file, digits), eval, sample, plot, list, --resume. Bad inputs: each
gives exit code 2, one line on stderr naming what is wrong, no traceback, and leaves the files it
would have written (run folder, checkpoint, sample file) exactly as they were.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exactflow import data, flows
from exactflow.cli.main import main

SMALL = ["--n-train", "300", "--n-val", "100", "--n-test", "100"]
TINY = ["--epochs", "2", "--transforms", "2", "--hidden", "16,16", "--no-progress"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The smallest run worth the name (one epoch); shared by the test_cli_*.py modules.
T = ["--n-train", "500", "--n-val", "100", "--n-test", "100", "--epochs", "1", "--hidden", "8",
     "--transforms", "2", "--no-progress", "--no-plots"]  # fmt: skip


# ---------------------------------------------------------------------------- helpers
def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    """``main(argv)`` with its exit code, stdout and stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fails(capsys: pytest.CaptureFixture, command: str, *argv: object) -> str:
    """Run a command that must fail; its one error line."""
    code, _, err = run(capsys, command, *argv)
    return error_line(code, err, command)


def quiet_main(*argv: object) -> tuple[int, str]:
    """``main(argv)`` for module fixtures (no capsys there): exit code and stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([str(a) for a in argv])
    return code, buffer.getvalue()


def error_line(code: int, err: str, command: str) -> str:
    """Check a failure is exit code 2 with one ``exactflow <command>: error:`` line; return it."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"exactflow {command}: error: "), lines[0]
    return lines[0]


def listing(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (dot files included) with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- shared runs
@pytest.fixture(scope="module")
def moons_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("moons") / "runs" / "moons"
    code, stdout = quiet_main(
        "fit", "--data", "moons", "--flow", "nsf", "--out", out, *SMALL, *TINY
    )
    assert code == 0, stdout
    return out, stdout


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("digits") / "digits"
    code, stdout = quiet_main("fit", "--data", "digits", "--out", out, *TINY)
    assert code == 0, stdout
    return out, stdout


@pytest.fixture
def moons_copy(moons_run: tuple[Path, str], tmp_path: Path) -> Path:
    """A copy of the moons run that a test may modify (in another folder than the original)."""
    return Path(shutil.copytree(moons_run[0], tmp_path / "copy"))


# ---------------------------------------------------------------------------- fit
def test_fit_moons_writes_the_run(moons_run: tuple[Path, str]) -> None:
    out, stdout = moons_run
    for name in ("run.json", "best.safetensors", "last.safetensors", "metrics.csv", "eval.json"):
        assert (out / name).is_file(), name
    for name in ("density.png", "training.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC), name
    assert not [p.name for p in out.rglob(".*")], "temporary files left behind"
    assert "test NLL" in stdout and "nats" in stdout and "KL gap" in stdout
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["name"] == "moons" and record["flow"]["name"] == "NSF"
    assert record["flow"]["kwargs"]["transforms"] == 2
    assert record["flow"]["kwargs"]["hidden"] == [16, 16]
    assert len(csv_rows(out / "metrics.csv")) == 2
    report = json.loads((out / "eval.json").read_text())
    assert report["points"] == 100 and np.isfinite(report["nll"])
    assert report["kl_gap"] == pytest.approx(report["nll"] - report["entropy"])
    assert "bits_per_dim" not in report


def test_run_files_follow_the_umask(moons_run: tuple[Path, str]) -> None:
    # Written through temporary files, yet readable like any file the user writes.
    umask = os.umask(0o022)
    os.umask(umask)
    out = moons_run[0]
    for path in (out / "run.json", out / "eval.json", out / "figures" / "density.png"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_fit_table_file_with_columns_and_header(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4))
    table = tmp_path / "table.csv"
    lines = ["a,b,name,c,d"]
    lines += [f"{r[0]:.6f},{r[1]:.6f},row{i},{r[2]:.6f},{r[3]:.6f}" for i, r in enumerate(values)]
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    code, stdout, err = run(
        capsys, "fit", "--data", table, "--flow", "realnvp", "--out", out,
        "--columns", "a", "c", "4", "--header", *TINY,
    )  # fmt: skip
    assert code == 0, err
    assert "3-D" in stdout and "test NLL" in stdout
    assert "KL gap" not in stdout and "bits/dim" not in stdout  # no true density, no pixels
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["options"] == {"columns": ["a", "c", 4], "header": True}
    assert (out / "figures" / "pairwise.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "figures" / "training.png").is_file()
    assert not (out / "figures" / "density.png").exists()


def test_fit_digits_draws_image_grids(digits_run: tuple[Path, str]) -> None:
    out, stdout = digits_run
    assert "64-D" in stdout and "bits/dim" in stdout
    assert json.loads((out / "run.json").read_text())["image_shape"] == [1, 8, 8]
    for name in ("samples.png", "data.png", "training.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC), name


def test_fit_with_integer_buffers_and_raw_features(tmp_path: Path, capsys) -> None:
    # A random permutation stores integer indices; evaluation must still use the float dtype.
    out = tmp_path / "run"
    code, stdout, err = run(
        capsys, "fit", "--flow", "maf", "--permutation", "random", "--no-standardize",
        "--out", out, "--no-plots", *SMALL, *TINY,
    )  # fmt: skip
    assert code == 0, err
    assert "test NLL" in stdout
    assert not (out / "figures").exists()


def test_resume_extends_a_moved_run(moons_run: tuple[Path, str], moons_copy: Path, capsys) -> None:
    original = moons_run[0]
    before = listing(original)
    code, _, err = run(
        capsys, "fit", "--out", moons_copy, "--resume", "--epochs", "4", "--no-progress",
        "--no-plots",
    )  # fmt: skip
    assert code == 0, err
    rows = csv_rows(moons_copy / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert json.loads((moons_copy / "eval.json").read_text())["best_epoch"] >= 1
    assert listing(original) == before, "resuming a copied run wrote into the original folder"


# ---------------------------------------------------------------------------- eval
def test_eval_moons_reports_the_kl_gap(moons_run: tuple[Path, str], capsys) -> None:
    code, stdout, err = run(capsys, "eval", moons_run[0])
    assert code == 0, err
    assert "test NLL" in stdout and "nats" in stdout and "KL gap" in stdout
    assert "bits/dim" not in stdout


def test_eval_digits_reports_bits_per_dim(digits_run: tuple[Path, str], capsys) -> None:
    code, stdout, err = run(capsys, "eval", digits_run[0])
    assert code == 0, err
    assert "bits/dim" in stdout and "KL gap" not in stdout
    report = json.loads((digits_run[0] / "eval.json").read_text())
    assert report["bits_per_dim"] > 0


def test_eval_of_another_split_keeps_the_test_report(moons_copy: Path, capsys) -> None:
    before = (moons_copy / "eval.json").read_bytes()
    code, _, err = run(capsys, "eval", moons_copy, "--split", "val")
    assert code == 0, err
    assert (moons_copy / "eval.json").read_bytes() == before


# ---------------------------------------------------------------------------- sample
def test_sample_npy(moons_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.npy"
    code, _, err = run(capsys, "sample", moons_run[0], "-n", 37, "-o", path)
    assert code == 0, err
    samples = np.load(path)
    assert samples.shape == (37, 2) and np.isfinite(samples).all()


def test_sample_csv(moons_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.csv"
    code, _, err = run(capsys, "sample", moons_run[0], "-n", 23, "-o", path)
    assert code == 0, err
    assert len(path.read_text().splitlines()) == 23
    assert np.loadtxt(path, delimiter=",", ndmin=2).shape == (23, 2)


def test_sample_png_grid_of_digits(digits_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    path = tmp_path / "grid.png"
    code, _, err = run(capsys, "sample", digits_run[0], "-n", 16, "-o", path)
    assert code == 0, err
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_sample_png_needs_an_image_run(moons_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    path = tmp_path / "grid.png"
    line = error_line(*run(capsys, "sample", moons_run[0], "-o", path)[::2], "sample")
    assert "PNG" in line and "image" in line and str(path) in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_failed_sample_keeps_the_old_file(
    moons_run: tuple[Path, str], tmp_path: Path, capsys, monkeypatch, suffix: str
) -> None:
    path = tmp_path / f"out{suffix}"
    path.write_bytes(b"old samples")

    def half_write(f, *args, **kwargs) -> None:
        f.write(b"partial" if "b" in getattr(f, "mode", "b") else "partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save" if suffix == ".npy" else "savetxt", half_write)
    line = error_line(*run(capsys, "sample", moons_run[0], "-o", path)[::2], "sample")
    assert str(path) in line and "No space left on device" in line
    assert path.read_bytes() == b"old samples"
    assert os.listdir(tmp_path) == [path.name], "a temporary file was left behind"


def test_failed_sample_from_a_corrupted_checkpoint_keeps_the_old_file(
    moons_copy: Path, tmp_path: Path, capsys
) -> None:
    best = moons_copy / "best.safetensors"
    best.write_bytes(best.read_bytes()[:-50])
    path = tmp_path / "out.npy"
    path.write_bytes(b"old samples")
    line = error_line(*run(capsys, "sample", moons_copy, "-o", path)[::2], "sample")
    assert "best.safetensors" in line
    assert path.read_bytes() == b"old samples"


# ---------------------------------------------------------------------------- plot, list
def test_plot_regenerates_the_figures(moons_copy: Path, capsys) -> None:
    shutil.rmtree(moons_copy / "figures")
    code, stdout, err = run(capsys, "plot", moons_copy)
    assert code == 0, err
    for name in ("density.png", "training.png"):
        assert (moons_copy / "figures" / name).read_bytes().startswith(PNG_MAGIC)
        assert name in stdout


def test_list_names_every_preset_and_dataset(capsys) -> None:
    code, stdout, err = run(capsys, "list")
    assert code == 0, err
    listed = {line.split()[0] for line in stdout.splitlines() if line.startswith("  ")}
    assert {name.lower() for name in flows.__all__} <= listed
    assert {name for name, _ in data.list_datasets()} <= listed
    described = [line for line in stdout.splitlines() if line.startswith("  ")]
    assert all(len(line.split()) > 1 for line in described), "a name without a description"


def test_python_dash_m_list() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "exactflow", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "nsf" in done.stdout and "moons" in done.stdout


# ---------------------------------------------------------------------------- bad data
BAD_TABLES = {
    "nan": ("a,b\n1,2\n3,nan\n5,6\n", ["line 3", "column 2", "non-finite"]),
    "ragged": ("a,b\n1,2\n3,4\n5,6,7\n", ["line 4", "3 fields", "expected 2"]),
    "non-numeric": ("a,b\n1,2\n3,x\n5,6\n", ["line 3", "column 2", "'x'"]),
    "empty": ("", ["empty"]),
    "header-only": ("a,b\n", ["line 1", "no data rows"]),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new-out", "existing-out"])
@pytest.mark.parametrize("kind", [*BAD_TABLES, "missing", "npy-inf"])
def test_fit_rejects_bad_data_and_writes_nothing(
    tmp_path: Path, capsys, kind: str, existing: bool
) -> None:
    if kind == "missing":
        table, fragments = tmp_path / "nowhere.csv", ["no such file"]
    elif kind == "npy-inf":
        table, fragments = tmp_path / "bad.npy", ["row 2", "column 1", "non-finite"]
        np.save(table, np.array([[1.0, 2.0], [np.inf, 3.0], [4.0, 5.0]]))
    else:
        text, fragments = BAD_TABLES[kind]
        table = tmp_path / "bad.csv"
        table.write_text(text)
    out = tmp_path / "run"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    before = listing(out) if existing else None
    line = error_line(*run(capsys, "fit", "--data", table, "--out", out, *TINY)[::2], "fit")
    assert str(table) in line
    for fragment in fragments:
        assert fragment in line
    if existing:
        assert listing(out) == before
    else:
        assert not out.exists(), "a failed fit created the run folder"


# ---------------------------------------------------------------------------- bad options
BAD_OPTIONS = {
    "unknown-flow": (["--flow", "nosuch"], ["--flow", "nosuch"]),
    "bins-for-maf": (["--flow", "maf", "--bins", "4"], ["maf", "bins"]),
    "negative-epochs": (["--epochs", "-3"], ["epochs", "-3"]),
    "zero-transforms": (["--transforms", "0"], ["transforms"]),
    "bad-hidden": (["--hidden", "16,x"], ["--hidden", "16,x"]),
    "table-option-for-toy": (["--columns", "a"], ["--columns", "moons"]),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_fit_rejects_bad_options(tmp_path: Path, capsys, case: str) -> None:
    extra, fragments = BAD_OPTIONS[case]
    out = tmp_path / "run"
    line = error_line(*run(capsys, "fit", "--out", out, *SMALL, *extra)[::2], "fit")
    for fragment in fragments:
        assert fragment in line
    assert not out.exists()


def test_unknown_command_is_one_line(capsys) -> None:
    code, _, err = run(capsys, "fly")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("exactflow: error: ") and "fly" in err


# ---------------------------------------------------------------------------- bad runs
@pytest.mark.parametrize("command", ["eval", "sample", "plot"])
def test_missing_run_folder(tmp_path: Path, capsys, command: str) -> None:
    folder = tmp_path / "no-run"
    extra = ["-o", tmp_path / "s.npy"] if command == "sample" else []
    line = error_line(*run(capsys, command, folder, *extra)[::2], command)
    assert str(folder) in line and "no such run folder" in line
    assert os.listdir(tmp_path) == []


def test_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "run.json").write_text("[1, 2]")
    line = error_line(*run(capsys, "eval", tmp_path)[::2], "eval")
    assert "run.json" in line and "not a run record" in line


def test_eval_on_data_of_another_width(moons_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    table = tmp_path / "wide.csv"
    rows = np.random.default_rng(1).normal(size=(50, 3))
    table.write_text("\n".join(",".join(f"{v:.5f}" for v in r) for r in rows) + "\n")
    best = moons_run[0] / "best.safetensors"
    before = listing(moons_run[0])
    line = error_line(*run(capsys, "eval", moons_run[0], "--data", table)[::2], "eval")
    assert "best.safetensors" in line and "2-D" in line and "3 columns" in line
    assert listing(moons_run[0]) == before and best.is_file()


def _flip_tail(raw: bytes) -> bytes:
    b = bytearray(raw)
    b[-20] ^= 0xFF  # inside the weights: only the checksum notices
    return bytes(b)


def _flip_header(raw: bytes) -> bytes:
    b = bytearray(raw)
    b[20] ^= 0xFF  # inside the JSON header
    return bytes(b)


CORRUPTIONS = {
    "flipped-weights": _flip_tail,
    "flipped-header": _flip_header,
    "truncated": lambda raw: raw[: len(raw) // 2],
    "empty": lambda raw: b"",
}


@pytest.mark.parametrize("command", ["eval", "sample", "plot"])
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_checkpoint(
    moons_copy: Path, tmp_path: Path, capsys, corruption: str, command: str
) -> None:
    best = moons_copy / "best.safetensors"
    best.write_bytes(CORRUPTIONS[corruption](best.read_bytes()))
    before = listing(moons_copy)
    target = tmp_path / "s.npy"
    extra = ["-o", target] if command == "sample" else []
    line = error_line(*run(capsys, command, moons_copy, *extra)[::2], command)
    assert str(best) in line and "checkpoint" in line
    assert listing(moons_copy) == before, "the failed command modified the run folder"
    assert not target.exists()


def test_version_and_a_closed_pipe() -> None:
    import exactflow

    done = subprocess.run(
        [sys.executable, "-m", "exactflow", "--version"], capture_output=True, text=True
    )
    assert done.stdout.strip() == f"exactflow {exactflow.__version__}"
    # `exactflow list | head -1`: the reader is gone before the listing is written (its read
    # end is closed at once): no error message, SIGPIPE's exit code.
    read, write = os.pipe()
    os.close(read)
    listing = subprocess.run(
        [sys.executable, "-m", "exactflow", "list"], stdout=write, stderr=subprocess.PIPE
    )
    os.close(write)
    assert listing.returncode == 141 and b"error" not in listing.stderr, listing.stderr
