"""Quantized images as data: class labels, integer pixels, and fresh dequantization every batch."""

from __future__ import annotations

import gzip
import importlib.resources
from pathlib import Path

import numpy as np
import pytest
import torch

from exactflow import data
from test_data_files import _write_idx


# ---------------------------------------------------------------------------- labels
def _bundled_digits() -> dict[bytes, int]:
    """Each bundled digit's 64 pixels (as bytes) -> its label, from the file itself."""
    resource = importlib.resources.files("exactflow.data").joinpath("digits.csv.gz")
    with resource.open("rb") as raw, gzip.open(raw, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    labels: dict[bytes, set[int]] = {}
    for row in table:
        labels.setdefault(row[:64].astype(np.uint8).tobytes(), set()).add(int(row[64]))
    # A few images occur twice with different labels: only the unambiguous ones are checked.
    return {k: v.pop() for k, v in labels.items() if len(v) == 1}


@pytest.mark.parametrize("seed", [0, 5])
def test_digits_labels_belong_to_their_images(seed: int) -> None:
    ds = data.load_digits(seed, image=True, dequantize_pixels=False)
    truth = _bundled_digits()
    assert ds.classes == 10 and [len(y) for y in ds.labels] == [1257, 270, 270]
    checked = 0
    for x, y in zip(ds.splits().values(), ds.labels, strict=True):
        assert y.dtype == torch.int64
        for image, label in zip(data.integer_pixels(x, 17).flatten(1), y, strict=True):
            key = image.numpy().tobytes()
            if key in truth:
                assert truth[key] == int(label)
                checked += 1
    assert checked > 1700
    assert sorted(torch.cat(ds.labels).unique().tolist()) == list(range(10))


def _labelled_mnist(root: Path, n_train: int = 30, n_test: int = 8, test_labels: bool = True):
    g = np.random.default_rng(2)
    train = g.integers(0, 256, size=(n_train, 4, 4), dtype=np.uint8)
    test = g.integers(0, 256, size=(n_test, 4, 4), dtype=np.uint8)
    train_labels = g.integers(0, 10, n_train, dtype=np.uint8)
    test_labels_ = g.integers(0, 10, n_test, dtype=np.uint8)
    root.mkdir(exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte.gz", train)
    _write_idx(root / "t10k-images-idx3-ubyte", test)
    _write_idx(root / "train-labels-idx1-ubyte.gz", train_labels)
    if test_labels:
        _write_idx(root / "t10k-labels.idx1-ubyte", test_labels_)
    return train, test, train_labels, test_labels_


def test_mnist_labels_follow_the_split_and_the_subsets(tmp_path: Path) -> None:
    train, test, train_labels, test_labels = _labelled_mnist(tmp_path / "m")
    ds = data.load("mnist", root=tmp_path / "m", n_val=6)
    assert ds.classes == 10
    assert [y.tolist() for y in ds.labels] == [
        train_labels[:24].tolist(),
        train_labels[24:].tolist(),
        test_labels.tolist(),
    ]
    small = data.load("mnist", root=tmp_path / "m", n_val=6, n_train=10, n_test=3)
    assert [len(x) for x in small.splits().values()] == [10, 6, 3]
    assert small.labels[0].tolist() == train_labels[:10].tolist()
    assert small.labels[2].tolist() == test_labels[:3].tolist()
    assert torch.equal(small.val, ds.val)  # the validation split does not move
    raw = data.load("mnist", root=tmp_path / "m", n_val=6, dequantize_pixels=False)
    assert np.array_equal(data.integer_pixels(raw.train, 256)[:, 0].numpy(), train[:24])
    assert np.array_equal(data.integer_pixels(raw.test, 256)[:, 0].numpy(), test)


def test_mnist_without_test_labels_has_none(tmp_path: Path) -> None:
    _labelled_mnist(tmp_path / "m", test_labels=False)
    ds = data.load_mnist(tmp_path / "m", n_val=6)
    assert ds.labels is None and ds.classes is None


def test_mnist_label_file_of_the_wrong_length(tmp_path: Path) -> None:
    _labelled_mnist(tmp_path / "m")
    _write_idx(tmp_path / "m" / "t10k-labels.idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(
        ValueError, match=r"expected 8 unsigned-byte labels \(8,\), got uint8 \(3,\)"
    ):
        data.load_mnist(tmp_path / "m", n_val=6)


def test_binarized_sets_keep_the_labels() -> None:
    grey, binary = data.intensities("digits", 3), data.load("binary-digits", seed=3)
    digits = data.load_digits(3)
    for a, b, c in zip(grey.labels, binary.labels, digits.labels, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_dataset_checks_its_labels() -> None:
    x = torch.rand(6, 2)
    y = (torch.tensor([0, 1, 2, 0]), torch.tensor([1]), torch.tensor([2]))
    ds = data.Dataset("t", "tabular", x[:4], x[4:5], x[5:], labels=y, classes=3)
    assert ds.contexts("train").tolist()[1] == [0.0, 1.0, 0.0]
    moved = ds.to(torch.float64)
    assert moved.labels is not None and moved.contexts("val").dtype == torch.float64
    with pytest.raises(
        ValueError, match=r"train labels must be int64 \(4,\), got torch.int64 \(3,\)"
    ):
        data.Dataset("t", "tabular", x[:4], x[4:5], x[5:], labels=(y[0][:3], *y[1:]), classes=3)
    with pytest.raises(ValueError, match=r"train labels must lie in 0..1, got 0..2"):
        data.Dataset("t", "tabular", x[:4], x[4:5], x[5:], labels=y, classes=2)
    with pytest.raises(ValueError, match="classes=3 needs labels"):
        data.Dataset("t", "tabular", x[:4], x[4:5], x[5:], classes=3)
    assert data.Dataset("t", "tabular", x[:4], x[4:5], x[5:]).contexts("test") is None


def test_one_hot() -> None:
    assert data.one_hot(torch.tensor([1, 0]), 2, torch.float64).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(TypeError, match="labels must be an integer tensor, got torch.float32"):
        data.one_hot(torch.tensor([1.0]), 2)


# ---------------------------------------------------------------------------- integer pixels
@pytest.mark.parametrize("seed", [0, 7])
def test_dequantized_is_what_the_loader_gives(seed: int, tmp_path: Path) -> None:
    raw = data.load_digits(seed, image=True, dequantize_pixels=False)
    again = data.dequantized(raw, seed)
    loaded = data.load_digits(seed, image=True)
    for a, b in zip(again.splits().values(), loaded.splits().values(), strict=True):
        assert torch.equal(a, b)
    _labelled_mnist(tmp_path / "m")
    raw = data.load_mnist(tmp_path / "m", n_val=6, seed=seed, dequantize_pixels=False)
    loaded = data.load_mnist(tmp_path / "m", n_val=6, seed=seed)
    assert torch.equal(data.dequantized(raw, seed).test, loaded.test)
    assert not torch.equal(data.dequantized(raw, seed + 1).test, loaded.test)


def test_integer_pixels_refuse_dequantized_values() -> None:
    with pytest.raises(ValueError, match=r"values must be k/17 .* got 0.0\d+ at index \(0, 0\)"):
        data.integer_pixels(data.load_digits().train, 17)
    assert data.integer_pixels(torch.tensor([255 / 256]), 256).dtype == torch.uint8
    assert data.integer_pixels(torch.tensor([0.5]), 1000).tolist() == [500]
    with pytest.raises(ValueError, match=r"got nan at index \(1,\)"):
        data.integer_pixels(torch.tensor([0.0, float("nan")]), 17)


# ---------------------------------------------------------------------------- fresh noise
def _source(**options: object) -> tuple[torch.Tensor, data.UniformDequantization]:
    pixels = torch.randint(0, 17, (50, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(50.0)[:, None]  # the context says which row each batch row is
    return pixels, data.UniformDequantization(pixels, 17, 16, context=rows, **options)


def test_uniform_dequantization_draws_fresh_noise_and_replays_it() -> None:
    pixels, source = _source(seed=3)
    epochs = [list(source.epoch(k)) for k in (0, 1)]
    assert len(source) == 4 and [len(x) for x, _ in epochs[0]] == [16, 16, 16, 2]
    for batches in epochs:
        for x, rows in batches:
            k = pixels[rows[:, 0].long()]
            assert x.dtype == torch.float32 and bool((x >= 0).all() and (x < 1).all())
            assert torch.equal((x.double() * 17).floor(), k.double())  # x lies in k's bin
    # the same image gets other noise in another epoch, and other images other noise
    first = {int(r): x for b, rows in epochs[0] for x, r in zip(b, rows[:, 0], strict=True)}
    second = {int(r): x for b, rows in epochs[1] for x, r in zip(b, rows[:, 0], strict=True)}
    assert all(not torch.equal(first[r], second[r]) for r in range(50))
    noise = torch.cat([(x * 17 - (x * 17).floor()).flatten() for x, _ in epochs[0]])
    assert noise.unique().numel() > 0.99 * noise.numel()
    # an epoch is a pure function of (seed, epoch): a fresh source replays it exactly
    replay = list(_source(seed=3)[1].epoch(1))
    assert all(
        torch.equal(a, b) and torch.equal(c, d)
        for (a, c), (b, d) in zip(epochs[1], replay, strict=True)
    )
    other = list(_source(seed=4)[1].epoch(1))
    assert not torch.equal(other[0][0], epochs[1][0][0])


def test_uniform_dequantization_without_context_and_in_float64() -> None:
    pixels = torch.full((5, 3), 255, dtype=torch.uint8)
    source = data.UniformDequantization(pixels, 256, 2, shuffle=False, dtype=torch.float64)
    batches = list(source.epoch(0))
    assert [tuple(x.shape) for x in batches] == [(2, 3), (3, 3)]  # a last row joins its batch
    assert all(x.dtype == torch.float64 and bool((x < 1).all()) for x in batches)


@pytest.mark.parametrize(
    ("pixels", "levels", "error", "message"),
    [
        (torch.rand(4, 2), 256, ValueError, r"integers in 0..255 \(k, not k/256\), got 0\.\d+"),
        (torch.full((4, 2), 17), 17, ValueError, r"integers in 0..16 .* got 17 at index \(0, 0\)"),
        (torch.tensor([-1, 0]), 2, ValueError, "got -1 at index"),
        (torch.zeros(4, dtype=torch.int64), 2, ValueError, r"rows \(N, \*event\), got shape"),
        (torch.zeros(4, 2, dtype=torch.bool), 2, TypeError, "real tensor of integers"),
    ],
    ids=["fractions", "too-high", "negative", "one-row", "bool"],
)
def test_uniform_dequantization_refuses_what_is_not_pixels(
    pixels: torch.Tensor, levels: int, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        data.UniformDequantization(pixels, levels, 2)
