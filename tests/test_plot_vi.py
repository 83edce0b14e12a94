"""Pictures of variational inference and VAEs: target vs flow, VAE grids, bound charts, curves.

Each function must write a real PNG (signature, size, pixel dimensions), cope with missing
values, and reject bad input with a one-line ``ValueError``. Stand-ins for a target and a VAE
keep these tests independent of :mod:`exactflow.targets` and :mod:`exactflow.models`.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import exactflow as ef
from exactflow.plot import bounds_chart, target_vs_flow, training_curves, vae_grid, vi_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, after checking it is one of a non-trivial size."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width > 200 and height > 150, (width, height)
    return width, height


class Gaussian2:
    """A 2-D Gaussian target N(mean, diag(scale²)) known up to Z; stand-in for a Target."""

    def __init__(self, dim: int = 2, known: bool = True, bounds: tuple | None = (-4, 4, -3, 3)):
        self.name, self.dim, self.bounds, self.description = "gauss", dim, bounds, "a Gaussian"
        self.mean, self.scale = torch.tensor([0.5, -0.5]), torch.tensor([1.0, 0.6])
        normalizer = dim / 2 * math.log(2 * math.pi) + float(self.scale.log().sum())
        self.log_normalizer = normalizer if known else None
        self.calls: list[tuple[int, torch.dtype]] = []

    def __call__(self, z: Tensor) -> Tensor:
        self.calls.append((z.shape[0], z.dtype))
        mean, scale = self.mean.to(z), self.scale.to(z)
        return -0.5 * (((z - mean) / scale) ** 2).sum(-1)


class StandInVAE(nn.Module):
    """Enough of a VAE for ``vae_grid``: event_shape, reconstruct, sample."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self._event_shape = torch.Size(event_shape)
        self.brightness = nn.Parameter(torch.tensor(0.5))
        self.modes: list[bool] = []

    @property
    def event_shape(self) -> torch.Size:
        return self._event_shape

    def reconstruct(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return (x + 0.2 * torch.rand_like(x)).clamp(0, 1)

    def sample(self, n: int) -> Tensor:
        return self.brightness * torch.rand(n, *self.event_shape) * 2


# ------------------------------------------------------------------------------- target_vs_flow
@pytest.mark.parametrize("preset", ["Planar", "Sylvester", "IAF"])
def test_target_vs_flow_writes_a_png_and_restores_the_mode(preset: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    flow = getattr(ef.flows, preset)(features=2, transforms=2)
    flow.train()
    path = target_vs_flow(Gaussian2(), flow, tmp_path / "vi.png", samples=300, grid=30)
    assert path == tmp_path / "vi.png"
    width, height = png_size(path)
    assert width > 2.5 * height  # three panels side by side
    assert flow.training


def test_target_vs_flow_evaluates_the_grid_in_chunks_in_the_flows_dtype(tmp_path: Path) -> None:
    target = Gaussian2(known=False)
    flow = ef.flows.Planar(features=2, transforms=2).double()
    target_vs_flow(target, flow, tmp_path / "vi.png", samples=100, grid=25, chunk=200)
    assert [n for n, _ in target.calls] == [200, 200, 200, 25]  # 625 grid points
    assert {dtype for _, dtype in target.calls} == {torch.float64}


def test_target_vs_flow_uses_the_samples_box_without_bounds(tmp_path: Path) -> None:
    target = Gaussian2(bounds=None)
    png_size(target_vs_flow(target, ef.flows.Radial(features=2), tmp_path / "a.png", grid=20))
    box = (-2, 2, -2, 2)
    png_size(target_vs_flow(target, ef.flows.Radial(features=2), tmp_path / "b.png", 20, 20, box))


def test_target_vs_flow_with_a_built_in_target(tmp_path: Path) -> None:
    targets = pytest.importorskip("exactflow.targets")
    flow = ef.flows.Planar(features=2, transforms=2)
    png_size(target_vs_flow(targets.get("u1"), flow, tmp_path / "u1.png", samples=200, grid=30))


class NaNTarget(Gaussian2):
    def __call__(self, z: Tensor) -> Tensor:
        return torch.where(z[..., 0] > 1, torch.nan, super().__call__(z))


@pytest.mark.parametrize(
    ("target", "flow", "options", "message"),
    [
        (Gaussian2(dim=3), ef.flows.Planar(features=2), {}, "2-D target, got 'gauss' with dim=3"),
        (Gaussian2(), ef.flows.Planar(features=3), {}, r"over \(2,\), got event_shape \(3,\)"),
        (Gaussian2(), ef.flows.Planar(features=2, context=4), {}, "with context=4"),
        (Gaussian2(), ef.flows.Planar(features=2), {"bounds": (1, -1, 0, 1)}, "xmin < xmax"),
        (Gaussian2(), ef.flows.Planar(features=2), {"bounds": (0, 1, 0)}, "4 finite numbers"),
        (Gaussian2(), ef.flows.Planar(features=2), {"bounds": (0, math.inf, 0, 1)}, "4 finite"),
        (Gaussian2(), ef.flows.Planar(features=2), {"grid": 1}, "grid must be an integer >= 2"),
        (Gaussian2(), ef.flows.Planar(features=2), {"samples": 0}, "samples must be"),
        (Gaussian2(), ef.flows.Planar(features=2), {"chunk": 2.5}, "chunk must be"),
        (NaNTarget(), ef.flows.Planar(features=2), {}, "the target is NaN"),
    ],
    ids=["3-D target", "3-D flow", "conditional", "box order", "box length", "box inf", "grid",
         "samples", "chunk", "NaN target"],
)  # fmt: skip
def test_target_vs_flow_rejects(
    target: Gaussian2, flow: ef.Flow, options: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        target_vs_flow(target, flow, tmp_path / "vi.png", **{"grid": 10, **options})
    assert not (tmp_path / "vi.png").exists()


# ------------------------------------------------------------------------------------- vae_grid
@pytest.mark.parametrize(
    ("event_shape", "image_shape"),
    [((64,), None), ((1, 12, 12), None), ((10, 10), None), ((3, 6, 6), None), ((12,), (3, 4))],
    ids=["8x8 vector", "CHW", "HW", "RGB", "given shape"],
)
def test_vae_grid_writes_originals_reconstructions_samples(
    event_shape: tuple[int, ...], image_shape: tuple[int, ...] | None, tmp_path: Path
) -> None:
    vae = StandInVAE(event_shape).train()
    x = torch.rand(40, *event_shape)
    path = vae_grid(vae, x, tmp_path / "vae.png", n=20, image_shape=image_shape, title="t")
    png_size(path)
    assert vae.modes == [False] and vae.training  # drawn in eval mode, mode restored


def test_vae_grid_shows_fewer_originals_than_n(tmp_path: Path) -> None:
    png_size(vae_grid(StandInVAE((64,)), torch.rand(3, 64), tmp_path / "vae.png", n=32))


@pytest.mark.parametrize(
    ("event_shape", "x_shape", "options", "message"),
    [
        ((60,), (4, 60), {}, r"not square images; pass image_shape"),
        ((64,), (4, 64), {"image_shape": (1, 8, 9)}, r"with C 1 or 3 and 64 values"),
        ((2, 4, 8), (4, 2, 4, 8), {}, r"with C 1 or 3"),
        ((64,), (4, 63), {}, r"x must be a non-empty batch \(B, \*\(64,\)\), got \(4, 63\)"),
        ((64,), (0, 64), {}, r"non-empty batch"),
        ((64,), (4, 64), {"n": 0}, r"n must be a positive integer, got 0"),
    ],
    ids=["not square", "wrong image_shape", "2 channels", "wrong x", "empty x", "n"],
)
def test_vae_grid_rejects(
    event_shape: tuple[int, ...], x_shape: tuple[int, ...], options: dict, message: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    with pytest.raises(ValueError, match=message):
        vae_grid(StandInVAE(event_shape), torch.rand(*x_shape), tmp_path / "vae.png", **options)


# ---------------------------------------------------------------------------------- bounds_chart
ROWS = [
    {"model": "VAE, Gaussian q", "elbo": -31.2, "iwae": -29.8, "iwae_stderr": 0.05, "exact": None},
    {"model": "VAE, IAF q", "elbo": -30.1, "iwae": -29.4, "iwae_stderr": None},
    {"model": "MAF", "elbo": None, "iwae": None, "iwae_stderr": None, "exact": -27.4},
    {"model": "NSF", "exact": np.float32(-26.9), "k": 5000},
]


@pytest.mark.parametrize(
    "rows",
    [ROWS, ROWS[:1], ROWS[2:3], [{"model": "only an ELBO", "elbo": 12.5}],
     [{"model": "equal", "elbo": -3.0, "iwae": -3.0, "exact": -3.0}]],
    ids=["all", "one VAE", "one flow", "one ELBO", "all equal"],
)  # fmt: skip
def test_bounds_chart_draws_what_is_there(rows: list[dict], tmp_path: Path) -> None:
    width, height = png_size(bounds_chart(rows, tmp_path / "bounds.png", title="digits"))
    assert width > height


def test_bounds_chart_grows_with_the_rows(tmp_path: Path) -> None:
    _, one = png_size(bounds_chart(ROWS[:1], tmp_path / "one.png"))
    _, four = png_size(bounds_chart(ROWS, tmp_path / "four.png"))
    assert four > 1.5 * one


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "rows must be a non-empty list of dicts, got \\[\\]"),
        ("MAF", "rows must be a non-empty list"),
        ([{"elbo": -3.0}], r"rows\[0\] must be a dict with a str 'model'"),
        ([{"model": "a", "elbo": -3.0}, ["b"]], r"rows\[1\] must be a dict"),
        ([{"model": "a", "elbo": math.nan}], r"rows\[0\]\['elbo'\] must be finite, got nan"),
        ([{"model": "a", "iwae": "-3"}], r"rows\[0\]\['iwae'\] must be a number or None"),
        ([{"model": "a", "iwae": -3.0, "iwae_stderr": -0.1}], r"'iwae_stderr'\] must be >= 0"),
        ([{"model": "a", "iwae_stderr": 0.1}], "no row has an elbo, iwae or exact value"),
    ],
    ids=["empty", "string", "no model", "not a dict", "NaN", "string value", "negative stderr",
         "nothing to draw"],
)  # fmt: skip
def test_bounds_chart_rejects(rows: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        bounds_chart(rows, tmp_path / "bounds.png")  # type: ignore[arg-type]
    assert not (tmp_path / "bounds.png").exists()


# ------------------------------------------------------------------------------ vi_curves, csv
HEADER = "epoch,step,train_neg_elbo,val_neg_elbo,lr,time,skipped\n"


def metrics(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "metrics.csv"
    path.write_text(header + body)
    return path


@pytest.mark.parametrize("log_z", [None, 1.84])
def test_vi_curves_writes_a_png(log_z: float | None, tmp_path: Path) -> None:
    rows = "".join(
        f"{e},{100 * e},{-1.8 + 3 / e**2},{-1.8 + 2.5 / e**2},0.01,{e},0\n" for e in range(1, 30)
    )
    png_size(vi_curves(metrics(tmp_path, rows), tmp_path / "vi.png", log_z=log_z, title="u1"))


def test_vi_curves_copes_with_missing_values(tmp_path: Path) -> None:
    csv = metrics(tmp_path, "1,,3.0,,0.01,1,0\n2,,2.5,,0.01,2,0\n")  # no step, no validation
    png_size(vi_curves(csv, tmp_path / "vi.png", log_z=-2.0))


@pytest.mark.parametrize(
    ("header", "body", "options", "message"),
    [
        (HEADER, "", {}, "no metrics rows to plot"),
        ("epoch,train_nll\n", "1,3.0\n", {}, "expected a train_neg_elbo column"),
        (HEADER, "1,10,,,0.01,1,0\n", {}, "no finite -ELBO value"),
        (HEADER, "1,10,oops,3,0.01,1,0\n", {}, "line 2, column 'train_neg_elbo': expected a"),
        (HEADER, "1,10,3.0,3.1,0.01,1,0\n", {"log_z": math.inf}, "log_z must be a finite number"),
    ],
    ids=["empty", "NLL run", "no values", "not a number", "infinite log Z"],
)  # fmt: skip
def test_vi_curves_rejects(
    header: str, body: str, options: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        vi_curves(metrics(tmp_path, body, header), tmp_path / "vi.png", **options)


@pytest.mark.parametrize(
    ("header", "label"), [("epoch,step,train_nll,val_nll\n", "nll"), (HEADER, "neg_elbo")]
)
def test_training_curves_reads_the_objectives_metric(
    header: str, label: str, tmp_path: Path
) -> None:
    body = "1,10,3.0,3.1\n2,20,2.0,2.2\n" if label == "nll" else "1,10,3,3.1,0.01,1,0\n"
    png_size(training_curves(tmp_path / "t.png", metrics(tmp_path, body, header)))
    with pytest.raises(ValueError, match=r"expected a train_<metric> column, got columns \['a'\]"):
        training_curves(tmp_path / "t.png", metrics(tmp_path, "1\n", "a\n"))
