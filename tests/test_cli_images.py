"""``exactflow fit --flow glow`` and ``--flow realnvp --image``: images kept as images.

Fit, eval, sample, plot and resume of image runs on the bundled 8×8 digits (tiny presets, one
or two epochs), an MNIST-format folder written here, and (where installed) Fashion-MNIST.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import exactflow.cli.fit
from exactflow import checkpoint, data
from exactflow.cli.main import main
from exactflow.data import images
from test_cli import PNG_MAGIC, error_line, fails, quiet_main, run
from test_data_files import _write_idx

from tinyflow import Interrupt, interrupt_at

GLOW = ["--flow", "glow", "--levels", "2", "--transforms", "2", "--hidden", "8", "--no-progress"]
DIGITS = ["--data", "digits", *GLOW, "--epochs", "1"]


@pytest.fixture(scope="module")
def glow_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("images") / "glow"
    code, printed = quiet_main("fit", "--out", out, *DIGITS)
    assert code == 0, printed
    return out, printed


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images") / "conditional"
    code, printed = quiet_main("fit", "--out", out, *DIGITS, "--conditional", "--no-plots")
    assert code == 0, printed
    return out


def record(run_folder: Path) -> dict:
    return json.loads((run_folder / "run.json").read_text())


# ---------------------------------------------------------------------------- fit, eval, plot
def test_glow_keeps_the_digits_as_images(glow_run: tuple[Path, str]) -> None:
    out, printed = glow_run
    saved = record(out)
    assert saved["flow"] == {
        "name": "Glow",
        "kwargs": {"shape": [1, 8, 8], "levels": 2, "steps": 2, "hidden": 8},
    }
    assert saved["image_shape"] == [1, 8, 8]
    assert saved["train"]["standardize"] is False
    assert "1x8x8 images" in printed
    report = json.loads((out / "eval.json").read_text())
    assert report["bits_per_dim"] == pytest.approx(data.bits_per_dim(report["nll"], 64, 17))
    assert f"{report['bits_per_dim']:.4f} bits/dim" in printed
    assert 1.0 < report["bits_per_dim"] < np.log2(17)  # better than uniform after one epoch
    assert report["certificate"]["passed"] is True


def test_glow_run_draws_its_figures(glow_run: tuple[Path, str]) -> None:
    out, printed = glow_run
    for name in ("samples", "reconstructions", "interpolations", "data", "training"):
        path = out / "figures" / f"{name}.png"
        assert path.read_bytes().startswith(PNG_MAGIC), name
        assert f"wrote {path}" in printed
    assert not (out / "figures" / "classes.png").exists()  # not a conditional run


def test_eval_reports_the_same_bits_per_dim(glow_run: tuple[Path, str], capsys) -> None:
    out, _ = glow_run
    fitted = json.loads((out / "eval.json").read_text())
    code, printed, err = run(capsys, "eval", out)
    assert code == 0, err
    assert f"{fitted['bits_per_dim']:.4f} bits/dim" in printed
    assert json.loads((out / "eval.json").read_text())["nll"] == fitted["nll"]


def test_training_batches_are_dequantized_afresh(tmp_path: Path, monkeypatch) -> None:
    seen = {}
    real_fit = exactflow.cli.fit.fit

    def spy(model, objective, data, val, **options):
        seen.update(data=data, val=val)
        return real_fit(model, objective, data=data, val=val, **options)

    monkeypatch.setattr(exactflow.cli.fit, "fit", spy)
    assert quiet_main("fit", "--out", tmp_path / "r", *DIGITS, "--seed", "2", "--no-plots")[0] == 0
    source = seen["data"]
    assert isinstance(source, data.UniformDequantization)
    raw = data.load_digits(2, image=True, dequantize_pixels=False)
    assert torch.equal(source.pixels, data.integer_pixels(raw.train, 17))
    assert torch.equal(seen["val"], data.load_digits(2, image=True).val)  # dequantized once


def test_realnvp_image_form(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    code, printed, err = run(capsys, "fit", "--out", out, "--data", "digits", "--flow", "realnvp",
                             "--image", "--levels", "1", "--transforms", "1", "--hidden", "8",
                             "--epochs", "1", "--no-progress", "--no-plots")  # fmt: skip
    assert code == 0, err
    assert record(out)["flow"]["kwargs"] == {"shape": [1, 8, 8], "levels": 1, "steps": 1,
                                             "hidden": [8]}  # fmt: skip
    assert "bits/dim" in printed


def test_residual_image_form(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    code, printed, err = run(capsys, "fit", "--out", out, "--data", "digits", "--flow", "residual",
                             "--image", "--levels", "2", "--transforms", "1", "--hidden", "4",
                             "--epochs", "1", "--no-progress", "--no-plots")  # fmt: skip
    assert code == 0, err
    assert record(out)["flow"] == {"name": "ResidualFlow", "kwargs": {"shape": [1, 8, 8],
                                   "levels": 2, "steps": 1, "hidden": 4}}  # fmt: skip
    assert "bits/dim" in printed and "exact (round trip" in printed
    wide = fails(capsys, "fit", "--out", tmp_path / "w", "--data", "digits", "--flow", "residual",
                 "--image", "--hidden", "4,4")  # fmt: skip
    assert "one channel count" in wide


# ---------------------------------------------------------------------------- class-conditional
def test_conditional_fit_and_sample_by_class(conditional_run: Path, tmp_path: Path, capsys) -> None:
    assert record(conditional_run)["flow"]["kwargs"]["context"] == 10
    drawn = {}
    for label in ("3", "4"):
        path = tmp_path / f"{label}.npy"
        code, _, err = run(capsys, "sample", conditional_run, "-n", "6", "--class", label,
                           "--temperature", "0.7", "-o", path)  # fmt: skip
        assert code == 0, err
        drawn[label] = np.load(path)
        assert drawn[label].shape == (6, 64)
    assert not np.array_equal(drawn["3"], drawn["4"])  # same seed, other class: other images
    code, _, err = run(capsys, "sample", conditional_run, "-n", "4", "-o", tmp_path / "s.png")
    assert code == 0, err
    line = fails(capsys, "sample", conditional_run, "-n", "4", "--class", "10", "-o",
                 tmp_path / "x.npy")  # fmt: skip
    assert "--class 10: the run's classes are 0..9" in line


def test_conditional_eval_and_figures(conditional_run: Path, tmp_path: Path, capsys) -> None:
    copy = Path(shutil.copytree(conditional_run, tmp_path / "c"))
    code, printed, err = run(capsys, "eval", copy)
    assert code == 0, err
    assert "bits/dim" in printed and "exact" in printed
    code, printed, err = run(capsys, "plot", copy)
    assert code == 0, err
    assert (copy / "figures" / "classes.png").read_bytes().startswith(PNG_MAGIC)


def test_temperature_scales_the_samples(glow_run: tuple[Path, str], tmp_path: Path, capsys):
    out, _ = glow_run
    spread = {}
    for t in ("1", "0.3"):
        path = tmp_path / f"{t}.npy"
        assert run(capsys, "sample", out, "-n", "200", "--temperature", t, "-o", path)[0] == 0
        spread[t] = np.load(path).std()
    assert spread["0.3"] < spread["1"]
    line = fails(capsys, "sample", out, "--class", "1", "-o", tmp_path / "c.npy")
    assert "--class applies to class-conditional runs only" in line


# ---------------------------------------------------------------------------- resume
def same(a: object, b: object, where: str = "") -> None:
    """Nested dicts/lists of tensors and numbers are equal, the tensors exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            if key not in ("time", "elapsed", "out"):  # wall-clock times, the run's folder
                same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_resumed_glow_run_reproduces_the_uninterrupted_one(tmp_path: Path, monkeypatch) -> None:
    options = ["--data", "digits", *GLOW, "--epochs", "2", "--no-plots", "--seed", "4"]
    assert quiet_main("fit", "--out", tmp_path / "whole", *options)[0] == 0

    real_fit = exactflow.cli.fit.fit

    def interrupted(model, *args, **kwargs):
        # 5 batches an epoch: the 7th training step is in epoch 2, after epoch 1's checkpoint
        interrupt_at(model.transform, 7)
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(exactflow.cli.fit, "fit", interrupted)
    with pytest.raises(Interrupt):
        with monkeypatch.context() as m:
            m.setenv("EXACTFLOW_TRACEBACK", "1")
            main(["fit", "--out", str(tmp_path / "cut"), *map(str, options)])
    monkeypatch.setattr(exactflow.cli.fit, "fit", real_fit)
    assert quiet_main("fit", "--out", tmp_path / "cut", "--resume", "--no-progress",
                      "--no-plots")[0] == 0  # fmt: skip

    for name in ("last.safetensors", "best.safetensors"):
        whole, cut = (checkpoint.load(tmp_path / run / name) for run in ("whole", "cut"))
        weights = cut.model.state_dict()
        flags = [k for k in weights if k.endswith("initialized")]  # ActNorm's data-dependent init
        assert flags and all(bool(weights[k].all()) for k in flags)
        same(whole.model.state_dict(), weights)
        same(whole.state, cut.state)  # optimizer moments, schedule, RNG states, progress

    def rows(folder: Path) -> list[dict]:
        with open(folder / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]

    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")


@pytest.mark.parametrize(
    "option",
    [["--levels", "3"], ["--transforms", "3"], ["--hidden", "16"], ["--coupling", "additive"],
     ["--conditional"], ["--flow", "realnvp", "--image"]],
    ids=["levels", "steps", "hidden", "coupling", "conditional", "flow"],
)  # fmt: skip
def test_resume_refuses_a_change_of_the_image_flow(
    glow_run: tuple[Path, str], tmp_path: Path, capsys, option: list[str]
) -> None:
    copy = Path(shutil.copytree(glow_run[0], tmp_path / "c"))
    line = fails(capsys, "fit", "--out", copy, "--resume", *option, "--no-progress")
    assert option[0] in line and "cannot change on --resume" in line


def test_resume_accepts_the_same_image_options(glow_run: tuple[Path, str], tmp_path, capsys):
    copy = Path(shutil.copytree(glow_run[0], tmp_path / "c"))
    code, _, err = run(capsys, "fit", "--out", copy, "--resume", *GLOW, "--epochs", "2",
                       "--no-plots")  # fmt: skip
    assert code == 0, err
    assert record(copy)["train"]["epochs"] == 2


# ---------------------------------------------------------------------------- MNIST-format data
def _mnist_folder(root: Path, labels: bool = True) -> Path:
    g = np.random.default_rng(0)
    root.mkdir()
    _write_idx(root / "train-images-idx3-ubyte", g.integers(0, 256, (40, 8, 8), dtype=np.uint8))
    _write_idx(root / "t10k-images-idx3-ubyte", g.integers(0, 256, (10, 8, 8), dtype=np.uint8))
    if labels:
        _write_idx(root / "train-labels-idx1-ubyte", g.integers(0, 3, 40, dtype=np.uint8))
        _write_idx(root / "t10k-labels-idx1-ubyte", g.integers(0, 3, 10, dtype=np.uint8))
    return root


def test_an_mnist_format_folder_with_root(tmp_path: Path, capsys) -> None:
    root = _mnist_folder(tmp_path / "m")
    out = tmp_path / "r"
    code, printed, err = run(capsys, "fit", "--out", out, "--data", "mnist", "--root", root,
                             *GLOW, "--epochs", "1", "--n-val", "8", "--n-train", "24",
                             "--conditional", "--batch-size", "8", "--no-plots")  # fmt: skip
    assert code == 0, err
    assert "(24 train points, 1x8x8 images)" in printed
    saved = record(out)
    assert saved["data"]["options"] == {"n_train": 24, "n_val": 8, "root": str(root)}
    assert saved["flow"]["kwargs"]["context"] == 10  # MNIST's ten classes
    report = json.loads((out / "eval.json").read_text())
    assert report["points"] == 10
    assert report["bits_per_dim"] == pytest.approx(data.bits_per_dim(report["nll"], 64, 256))


def test_conditional_needs_labels(tmp_path: Path, capsys) -> None:
    root = _mnist_folder(tmp_path / "m", labels=False)
    line = fails(capsys, "fit", "--out", tmp_path / "r", "--data", "mnist", "--root", root,
                 *GLOW, "--n-val", "8", "--conditional")  # fmt: skip
    assert "--conditional needs class labels, and mnist has none" in line
    assert not (tmp_path / "r").exists()


def test_missing_fashion_folder_says_how_to_install_it(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "absent")
    line = fails(capsys, "fit", "--out", tmp_path / "r", "--data", "fashion-mnist", *GLOW)
    assert f"no directory {tmp_path / 'absent'}" in line
    assert "apt-get install dataset-fashion-mnist" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(
    not images.FASHION_MNIST_DIR.is_dir(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_subset(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    code, printed, err = run(capsys, "fit", "--out", out, "--data", "fashion-mnist", *GLOW,
                             "--epochs", "1", "--n-train", "64", "--n-val", "16", "--n-test",
                             "16", "--batch-size", "32", "--no-plots")  # fmt: skip
    assert code == 0, err
    assert "fashion-mnist" in printed and "1x28x28 images" in printed
    report = json.loads((out / "eval.json").read_text())
    assert report["points"] == 16 and 0 < report["bits_per_dim"] < 8


# ---------------------------------------------------------------------------- option errors
@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--data", "moons", "--flow", "glow"], "an image flow needs quantized images"),
        (["--data", "binary-digits", "--flow", "glow"], "an image flow needs quantized images"),
        (["--data", "digits", "--flow", "maf", "--levels", "2"], "--levels applies to image"),
        (["--data", "digits", "--flow", "maf", "--conditional"], "--conditional applies to"),
        (["--data", "digits", "--flow", "maf", "--image"], "--flow maf has no image form"),
        (["--data", "digits", "--flow", "nsf", "--coupling", "spline"], "--coupling is a flag"),
        (["--data", "digits", "--flow", "glow", "--hidden", "8,8"], "one channel count"),
        (["--data", "digits", "--flow", "glow", "--coupling"], "--coupling takes affine"),
        (["--data", "digits", "--flow", "glow", "--coupling", "x"], "expected one of affine"),
        (["--data", "digits", "--flow", "glow", "--bins", "4"], "--coupling spline only"),
        (["--data", "digits", "--flow", "glow", "--permutation", "lu"], "--permutation does not"),
        (["--data", "digits", "--flow", "glow", "--levels", "4"], "--flow glow:"),
        (["--model", "vae", "--data", "digits", "--conditional"], "does not apply to --model vae"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else None,
)
def test_image_option_errors(tmp_path: Path, capsys, argv: list[str], words: str) -> None:
    code, _, err = run(capsys, "fit", "--out", tmp_path / "r", *argv, "--epochs", "1")
    line = error_line(code, err, "fit")
    assert words in line, line
    assert not (tmp_path / "r").exists()


def test_coupling_alone_still_means_coupling_layers_for_nsf(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    code, _, err = run(capsys, "fit", "--out", out, "--data", "moons", "--n-train", "200",
                       "--n-val", "50", "--n-test", "50", "--flow", "nsf", "--coupling",
                       "--transforms", "2", "--hidden", "8", "--epochs", "1", "--no-progress",
                       "--no-plots")  # fmt: skip
    assert code == 0, err
    assert record(out)["flow"]["kwargs"]["coupling"] is True


def test_a_record_whose_image_shape_disagrees_is_refused(
    glow_run: tuple[Path, str], tmp_path, capsys
):
    copy = Path(shutil.copytree(glow_run[0], tmp_path / "c"))
    saved = record(copy)
    saved["image_shape"] = [1, 4, 16]
    (copy / "run.json").write_text(json.dumps(saved))
    line = fails(capsys, "eval", copy)
    assert "flow.kwargs.shape [1, 8, 8] differs from image_shape [1, 4, 16]" in line


def test_vi_refuses_a_coupling_map(tmp_path: Path, capsys) -> None:
    line = fails(capsys, "vi", "--out", tmp_path / "r", "--target", "u1", "--flow", "nsf",
                 "--coupling", "affine", "--steps", "1")  # fmt: skip
    assert "--coupling affine chooses the coupling map of an image flow" in line
    assert not (tmp_path / "r").exists()
