"""Pictures of image flows: temperature and class grids, round trips, interpolations.

Each function must write a real PNG, draw what it says (checked on the canvases it hands to
the shared figure writer, and on the PNG's pixels), restore the flow's mode, and reject bad
input with a one-line ``ValueError``/``TypeError``. Small hand-built flows over 1×4×4 images
keep the tests fast and independent of the presets.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import pytest
import torch
from torch import Tensor

import exactflow as ef
from exactflow.plot import (
    class_grid,
    image_flows,
    interpolations,
    reconstructions,
    temperature_grid,
)
from exactflow.plot.image_flows import slerp
from exactflow.plot.images import _tile

T = ef.transforms
SHAPE = (1, 4, 4)


class ClassShift(T.Transform):
    """``y = x - m_c`` on images, ``m_c = context @ means`` (one image per class); ladj 0."""

    event_ndim = 3

    def __init__(self, means: Tensor) -> None:
        super().__init__()
        self.context = means.shape[0]
        self.means = torch.nn.Parameter(means.clone())

    def _shift(self, context: Tensor) -> Tensor:
        return (context @ self.means.flatten(1)).unflatten(-1, self.means.shape[1:])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x - self._shift(context), x.new_zeros(x.shape[:-3])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y + self._shift(context), y.new_zeros(y.shape[:-3])


class BrokenInverse(T.Transform):
    """Forward doubles, inverse does not halve: a round trip off by a factor of 2."""

    event_ndim = 3

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return 2 * x, x.new_zeros(x.shape[:-3])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[:-3])


def image_flow(*steps: T.Transform, logit: bool = True) -> ef.Flow:
    """Logit (optional), ``steps``, ActNorm, flatten: a flow over ``SHAPE`` images."""
    first = [T.Logit(0.05, event_ndim=3)] if logit else []
    chain = [*first, *steps, T.ActNorm(1, event_ndim=3), T.Flatten(SHAPE)]
    return ef.Flow(T.Compose(chain), ef.distributions.StandardNormal(math.prod(SHAPE)))


def class_flow(classes: int = 3) -> ef.Flow:
    """Each class is a constant image: class ``c`` sits at logit value ``4c - 4``."""
    means = torch.stack([torch.full(SHAPE, 4.0 * c - 4.0) for c in range(classes)])
    return image_flow(ClassShift(means))


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict:
    """What the functions hand to the figure writer: the labelled canvases and the title."""
    seen: dict = {}
    real = image_flows.stacked

    def spy(path: Path, canvases: dict[str, Tensor], title: str = "") -> Path:
        seen.update(canvases=canvases, title=title)
        return real(path, canvases, title)

    monkeypatch.setattr(image_flows, "stacked", spy)
    return seen


def cells(canvas: Tensor, rows: int, cols: int) -> Tensor:
    """The 4x4 grey images tiled ``cols`` a row on a canvas, without gaps: (rows, cols, 4, 4)."""
    grid = canvas[0, 1:, 1:].unflatten(0, (rows, 5)).unflatten(2, (cols, 5))
    return grid[:, :4, :, :4].permute(0, 2, 1, 3)


def read_png(path: Path) -> Tensor:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pixels = torch.from_numpy(matplotlib.image.imread(path))  # (H, W, 4) in [0, 1]
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50, pixels.shape
    return pixels


def test_temperature_grid_one_block_per_temperature(tmp_path: Path, captured: dict) -> None:
    torch.manual_seed(0)
    flow = image_flow()
    path = temperature_grid(tmp_path / "t.png", flow, temperatures=(1.0, 0.5, 1e-4), n=6)
    assert path == tmp_path / "t.png"
    read_png(path)
    canvases = captured["canvases"]
    assert list(canvases) == ["T = 1", "T = 0.5", "T = 0.0001"]
    # 6 images of 4x4 in one row with 1-pixel gaps
    assert all(tuple(c.shape) == (1, 6, 31) for c in canvases.values())
    # The logit maps z = 0 to 0.5: at T -> 0 every pixel is mid-grey; at T = 1 they spread.
    cold = _tile(torch.full((6, *SHAPE), 0.5), 6)
    assert torch.allclose(canvases["T = 0.0001"], cold, atol=1e-3)
    spread = [(cells(canvases[k], 1, 6) - 0.5).abs().mean() for k in ("T = 1", "T = 0.5")]
    assert spread[0] > 1.5 * spread[1] > 0.05


def test_temperature_grid_scales_the_base_noise(tmp_path: Path) -> None:
    flow = image_flow(logit=False)
    calls = []
    real = flow.sample

    def spy(shape: tuple, context: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        calls.append((tuple(shape), context, temperature))
        return real(shape, context, temperature=temperature)

    flow.sample = spy  # type: ignore[method-assign]
    temperature_grid(tmp_path / "t.png", flow, temperatures=[0.7, 1], n=5)
    assert calls == [((5,), None, 0.7), ((5,), None, 1.0)]


def test_temperature_grid_with_one_context_for_every_image(tmp_path: Path, captured: dict) -> None:
    flow = class_flow()
    onehot = torch.tensor([0.0, 0.0, 1.0])  # class 2: logit 4, pixel sigmoid(4) rescaled
    temperature_grid(tmp_path / "t.png", flow, temperatures=(1e-4,), n=4, context=onehot)
    pixel = (torch.sigmoid(torch.tensor(4.0)) - 0.05) / 0.9
    expected = _tile(torch.full((4, *SHAPE), float(pixel)), 4)
    assert torch.allclose(captured["canvases"]["T = 0.0001"], expected, atol=1e-3)


def test_class_grid_one_row_per_class(tmp_path: Path, captured: dict) -> None:
    torch.manual_seed(0)
    flow = class_flow()
    path = class_grid(
        tmp_path / "c.png", flow, classes=[2, 0], n_per_class=5, temperature=0.05,
        names=["low", "mid", "high"], title="classes",
    )  # fmt: skip
    read_png(path)
    canvases = captured["canvases"]
    assert list(canvases) == ["2: high", "0: low"]
    assert captured["title"] == "classes"
    # class 2 is bright (logit 4), class 0 dark (logit -4): the rows say which is which
    bright, dark = (cells(c, 1, 5) for c in canvases.values())
    assert bright.min() > 0.9 > 0.1 > dark.max()


def test_class_grid_labels_and_count(tmp_path: Path, captured: dict) -> None:
    class_grid(tmp_path / "c.png", class_flow(4), classes=4, n_per_class=3)
    assert list(captured["canvases"]) == ["class 0", "class 1", "class 2", "class 3"]
    assert tuple(captured["canvases"]["class 3"].shape) == (1, 6, 16)


def test_reconstructions_round_trip_and_error_in_title(tmp_path: Path, captured: dict) -> None:
    torch.manual_seed(0)
    flow = image_flow()
    x = torch.rand(20, *SHAPE)
    read_png(reconstructions(tmp_path / "r.png", flow, x, title="digits"))
    data, back = captured["canvases"].values()
    assert tuple(data.shape) == (1, 11, 81)  # 16 a row: two rows
    assert torch.allclose(data, back, atol=1e-5)
    title = captured["title"]
    assert title.startswith("digits\nround trip: max |x - T⁻¹(T(x))| = ")
    assert float(title.rsplit("= ", 1)[1]) < 1e-5


def test_reconstructions_show_a_broken_inverse(tmp_path: Path, captured: dict) -> None:
    flow = image_flow(BrokenInverse(), logit=False)
    x = torch.full((3, *SHAPE), 0.25)
    reconstructions(tmp_path / "r.png", flow, x)
    data, back = captured["canvases"].values()
    assert not torch.allclose(data, back, atol=0.1)
    assert captured["title"] == "round trip: max |x - T⁻¹(T(x))| = 0.25"


def test_reconstructions_do_not_train_the_flow(tmp_path: Path) -> None:
    flow = image_flow()
    flow.train()
    actnorm = flow.transform[1]
    reconstructions(tmp_path / "r.png", flow, torch.rand(8, *SHAPE))
    assert flow.training and actnorm.training
    assert not bool(actnorm.initialized)  # eval mode: no data-dependent initialization
    flow.eval()
    interpolations(tmp_path / "i.png", flow, torch.rand(*SHAPE), torch.rand(*SHAPE))
    assert not flow.training


def test_slerp_ends_and_norms() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 30, dtype=torch.float64), torch.randn(5, 30, dtype=torch.float64)
    b[0] = 3 * a[0]  # parallel: the straight line
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    path = slerp(a, b, t)
    assert path.shape == (5, 7, 30)
    torch.testing.assert_close(path[:, 0], a)
    torch.testing.assert_close(path[:, -1], b)
    torch.testing.assert_close(path[0], a[0] + t[:, None] * (b[0] - a[0]))
    # Equal norms stay on the sphere (the straight line's middle would be shorter).
    unit_a, unit_b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(slerp(unit_a, unit_b, t).norm(dim=-1), torch.ones(5, 7).double())
    assert ((unit_a + unit_b) / 2).norm(dim=-1)[1:].max() < 0.99


def test_interpolations_rows_ends_and_middle(tmp_path: Path, captured: dict) -> None:
    torch.manual_seed(0)
    flow = image_flow().double()
    x_a = torch.rand(2, *SHAPE, dtype=torch.float64)
    x_b = torch.rand(2, *SHAPE, dtype=torch.float64)
    read_png(interpolations(tmp_path / "i.png", flow, x_a, x_b, steps=5))
    ((label, canvas),) = captured["canvases"].items()
    assert "slerp" in label and "5 steps" in label
    assert tuple(canvas.shape) == (1, 11, 36)  # 2 pairs; x_a, 5 steps, x_b
    images = cells(canvas, 2, 7)  # (pair, column, 4, 4)
    x_a32, x_b32 = x_a[:, 0].float(), x_b[:, 0].float()
    for column in (0, 1):  # the data point, then the round trip at t = 0
        torch.testing.assert_close(images[:, column], x_a32)
    for column in (5, 6):
        torch.testing.assert_close(images[:, column], x_b32)
    z_a, z_b = torch.logit(0.05 + 0.9 * x_a), torch.logit(0.05 + 0.9 * x_b)  # flow = logit
    z = slerp(z_a.flatten(1), z_b.flatten(1), torch.tensor([0.5], dtype=torch.float64))
    middle = (torch.sigmoid(z[:, 0]) - 0.05) / 0.9
    torch.testing.assert_close(images[:, 3], middle.reshape(2, 4, 4).float())


def test_conditional_interpolation_uses_the_context(tmp_path: Path, captured: dict) -> None:
    flow = class_flow()
    x = torch.full((1, *SHAPE), 0.5)
    interpolations(tmp_path / "i.png", flow, x, x, steps=3, context=torch.tensor([0.0, 1.0, 0.0]))
    (canvas,) = captured["canvases"].values()
    torch.testing.assert_close(canvas[:, 1:5, 1:5], torch.full((1, 4, 4), 0.5))


def test_vector_flows_are_shown_as_images(tmp_path: Path, captured: dict) -> None:
    flow = ef.flows.MAF(features=12, transforms=1, hidden=(8,))
    temperature_grid(tmp_path / "t.png", flow, n=4, image_shape=(3, 4))
    assert tuple(captured["canvases"]["T = 1"].shape) == (1, 5, 21)
    reconstructions(tmp_path / "r.png", flow, torch.rand(3, 12), image_shape=(3, 4))
    with pytest.raises(ValueError, match="not square images"):
        temperature_grid(tmp_path / "t.png", flow)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: temperature_grid(p, image_flow(), temperatures=()), ValueError, "non-empty"),
        (lambda p: temperature_grid(p, image_flow(), temperatures=(0.0,)), ValueError, "positive"),
        (lambda p: temperature_grid(p, image_flow(), n=0), ValueError, "n must be at least 1"),
        (lambda p: temperature_grid(p, "flow"), TypeError, "must be an exactflow Flow"),
        (lambda p: temperature_grid(p, class_flow()), TypeError, r"context must be a tensor"),
        (
            lambda p: temperature_grid(p, class_flow(), n=2, context=torch.ones(3, 3)),
            ValueError,
            r"shape \(3,\) or \(2, 3\), got \(3, 3\)",
        ),
        (
            lambda p: temperature_grid(p, image_flow(), context=torch.ones(3)),
            ValueError,
            "unconditional",
        ),
        (lambda p: class_grid(p, image_flow(), 2), ValueError, "one-hot label"),
        (lambda p: class_grid(p, class_flow(), [0, 3]), ValueError, "at most 2, got 3"),
        (lambda p: class_grid(p, class_flow(), [1, 1]), ValueError, "distinct"),
        (lambda p: class_grid(p, class_flow(), 4), ValueError, "at most 3, got 4"),
        (lambda p: class_grid(p, class_flow(), 2, names=["a"]), ValueError, "the 3 class names"),
        (
            lambda p: reconstructions(p, image_flow(), torch.rand(2, 16)),
            ValueError,
            r"x must be a non-empty batch \(N, \*\(1, 4, 4\)\), got \(2, 16\)",
        ),
        (
            lambda p: reconstructions(p, image_flow(), torch.rand(0, *SHAPE)),
            ValueError,
            "non-empty",
        ),
        (
            lambda p: reconstructions(p, image_flow(), 2 + torch.rand(2, *SHAPE)),
            ValueError,
            "outside the flow's domain",
        ),
        (
            lambda p: interpolations(p, image_flow(), torch.rand(2, *SHAPE), torch.rand(*SHAPE)),
            ValueError,
            "same shape",
        ),
        (
            lambda p: interpolations(p, image_flow(), torch.rand(*SHAPE), torch.rand(*SHAPE), 1),
            ValueError,
            "steps must be at least 2",
        ),
    ],
    ids=[
        "no-temperatures", "zero-temperature", "n-zero", "not-a-flow", "missing-context",
        "context-shape", "context-unconditional", "class-grid-unconditional", "class-too-big",
        "class-repeated", "classes-too-many", "names-length", "x-shape", "x-empty", "x-domain",
        "pair-shapes", "steps",
    ],
)  # fmt: skip
def test_bad_input_is_one_line_error(call, error: type, match: str, tmp_path: Path) -> None:
    with pytest.raises(error, match=match) as info:
        call(tmp_path / "bad.png")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad.png").exists()


def test_pictures_of_a_class_conditional_glow(tmp_path: Path, captured: dict) -> None:
    torch.manual_seed(0)
    flow = ef.flows.Glow(shape=(1, 4, 4), levels=1, steps=1, hidden=8, context=3)
    x = torch.rand(6, *SHAPE)
    labels = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    read_png(temperature_grid(tmp_path / "t.png", flow, n=4, context=labels[0]))
    read_png(class_grid(tmp_path / "c.png", flow, 3, n_per_class=2, temperature=0.7))
    assert list(captured["canvases"]) == ["class 0", "class 1", "class 2"]
    read_png(reconstructions(tmp_path / "r.png", flow, x, context=labels))
    assert float(captured["title"].rsplit("= ", 1)[1]) < 1e-5
    read_png(interpolations(tmp_path / "i.png", flow, x[:3], x[3:], context=labels[:3]))
    assert tuple(captured["canvases"].popitem()[1].shape) == (1, 16, 51)
