"""Binary images: grey intensities, static binarization and dynamic binarization per batch."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow.data import DynamicBinarization, intensities, load


def test_digit_intensities_are_k_over_16_with_the_digits_split() -> None:
    grey = intensities("digits", seed=3)
    digits = load("digits", seed=3, dequantize_pixels=False)
    for split, t in grey.splits().items():
        k = digits.splits()[split] * 17  # the same rows, as k/17
        torch.testing.assert_close(t, (k.round() / 16).float(), atol=1e-6, rtol=0)
    assert [len(t) for t in grey.splits().values()] == [1257, 270, 270]
    assert float(grey.train.min()) == 0.0 and float(grey.train.max()) == 1.0
    assert intensities("digits", image=True).train.shape == (1257, 1, 8, 8)


def test_binary_digits_are_zeros_and_ones_split_1257_270_270() -> None:
    ds = load("binary-digits")
    assert [len(t) for t in ds.splits().values()] == [1257, 270, 270]
    assert ds.levels == 2 and ds.kind == "tabular" and ds.train.shape[1:] == (64,)
    for t in ds.splits().values():
        assert bool(((t == 0) | (t == 1)).all())
    assert load("binary-digits", image=True).train.shape == (1257, 1, 8, 8)
    assert load("binary-digits", dtype=torch.float64).train.dtype == torch.float64


def test_static_binarization_is_seeded_and_follows_the_intensities() -> None:
    a, b, c = load("binary-digits", seed=1), load("binary-digits", seed=1), load("binary-digits")
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits()[split], b.splits()[split])
    assert not torch.equal(a.train, c.train)
    grey = intensities("digits", seed=1)
    assert bool((a.train[grey.train == 0] == 0).all())  # a black pixel stays black
    assert bool((a.train[grey.train == 1] == 1).all())
    # one draw per pixel: the mean over the 1257·64 training pixels follows the intensities
    assert float(a.train.mean()) == pytest.approx(float(grey.train.mean()), abs=0.01)


def test_an_unknown_option_or_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown option 'root'"):
        load("binary-digits", root="/tmp")
    with pytest.raises(ValueError, match="must be one of"):
        intensities("mnist")


def test_binary_fashion_mnist_when_the_debian_package_is_installed() -> None:
    if not ef.data.FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed at {ef.data.FASHION_MNIST_DIR}")
    ds = load("binary-fashion-mnist", n_val=10_000)
    assert [len(t) for t in ds.splits().values()] == [50_000, 10_000, 10_000]
    assert ds.train.shape[1:] == (784,) and ds.levels == 2
    assert bool(((ds.val == 0) | (ds.val == 1)).all())
    grey = intensities("fashion-mnist")
    assert float(grey.test.max()) == 1.0
    assert float(ds.test.mean()) == pytest.approx(float(grey.test.mean()), abs=0.005)


def test_fashion_mnist_elsewhere_is_the_loaders_own_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="fashion-mnist: no directory"):
        intensities("fashion-mnist", root=str(tmp_path / "missing"))


def probabilities(n: int = 50, d: int = 8) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(0))


def test_dynamic_binarization_differs_between_epochs_and_replays_each() -> None:
    p = probabilities()
    source = DynamicBinarization(p, batch_size=16, seed=4)
    assert len(source) == 4  # 16 + 16 + 16 + 2
    first = list(source.epoch(0))
    assert [len(b) for b in first] == [16, 16, 16, 2]
    again = list(DynamicBinarization(p, batch_size=16, seed=4).epoch(0))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    second = list(source.epoch(1))
    assert not torch.equal(torch.cat(first), torch.cat(second))
    other = list(DynamicBinarization(p, batch_size=16, seed=5).epoch(0))
    assert not torch.equal(torch.cat(first), torch.cat(other))
    assert all(bool(((b == 0) | (b == 1)).all()) for b in first + second)


def test_dynamic_binarization_shuffles_rows_like_batches() -> None:
    # each row of a 0/1 probability table is its own fixed binarization: only the order moves
    rows = torch.eye(6)
    source = DynamicBinarization(rows, batch_size=6, seed=0)
    batch = next(iter(source.epoch(0)))
    order = ef.data.Batches(rows, 6, seed=0)
    assert torch.equal(batch, next(iter(order.epoch(0))))
    assert not torch.equal(batch, rows)  # shuffled
    unshuffled = DynamicBinarization(rows, batch_size=6, seed=0, shuffle=False)
    assert torch.equal(next(iter(unshuffled.epoch(0))), rows)


def test_the_mean_of_many_dynamic_draws_is_the_probability() -> None:
    p = probabilities(20, 5)
    source = DynamicBinarization(p, batch_size=20, seed=0, shuffle=False)
    draws = torch.stack([next(iter(source.epoch(e))) for e in range(2000)])
    standard_error = (p * (1 - p) / 2000).sqrt()
    assert bool(((draws.mean(0) - p).abs() < 5 * standard_error + 1e-3).all())


def test_dynamic_binarization_refuses_values_outside_the_unit_interval() -> None:
    p = probabilities()
    p[3, 2] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\], got 1\.5 at index \(3, 2\)"):
        DynamicBinarization(p, batch_size=8)
    with pytest.raises(TypeError, match="float tensor"):
        DynamicBinarization(torch.ones(4, 2, dtype=torch.long), batch_size=8)


def test_a_dynamic_source_trains_a_vae() -> None:
    grey = intensities("digits")
    source = DynamicBinarization(grey.train, batch_size=128, seed=0)
    val = load("binary-digits").val
    vae = ef.models.DenseVAE(features=64, latent=2, hidden=[32], context=16)
    config = ef.train.TrainConfig(epochs=2, batch_size=128, lr=3e-3, tensorboard=False)
    result = ef.train.fit(vae, ef.objectives.ELBO(), source, config, val=val, progress=False)
    assert len(result.history) == 2
    assert result.history[1]["val_neg_elbo"] < result.history[0]["val_neg_elbo"]
