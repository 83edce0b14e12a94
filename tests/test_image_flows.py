"""Image flows: Squeeze and FactorOut semantics, the Glow and multi-scale RealNVP presets,
class-conditional sampling and sampling at a temperature."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow import transforms as T


def test_squeeze_moves_each_2x2_block_into_channels() -> None:
    x = torch.arange(2 * 4 * 6.0).view(1, 2, 4, 6)
    y, ladj = T.Squeeze((2, 4, 6))(x)
    assert y.shape == (1, 8, 2, 3) and torch.equal(ladj, torch.zeros(1))
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[0, c * 4 + i * 2 + j], x[0, c, i::2, j::2])


def test_squeeze_refuses_odd_sides() -> None:
    with pytest.raises(ValueError, match="multiples of factor=2, got 7x8"):
        T.Squeeze((1, 7, 8))


def test_factor_out_starts_with_a_standard_normal_prior_and_orders_its_output() -> None:
    inner = T.Flatten((2, 2, 2))
    t = T.FactorOut((3, 2, 2), inner)
    x = torch.randn(5, 3, 2, 2)
    y, ladj = t(x)
    # factored channel first (unchanged: the prior starts at N(0, I)), then the kept ones
    assert torch.equal(y[:, :4], x[:, 2].flatten(1))
    assert torch.equal(y[:, 4:], x[:, :2].flatten(1))
    assert torch.equal(ladj, torch.zeros(5))


def test_factor_out_refuses_an_inner_that_does_not_end_in_a_vector() -> None:
    with pytest.raises(ValueError, match="inner must map \\(1, 2, 2\\) to a vector of 4"):
        T.FactorOut((2, 2, 2), T.ActNorm(1, event_ndim=3))
    with pytest.raises(ValueError, match="at least 2 channels"):
        T.FactorOut((1, 2, 2), T.Flatten((1, 2, 2)))


def test_glow_shapes_and_errors() -> None:
    flow = ef.flows.Glow(shape=(1, 8, 8), levels=2, steps=1, hidden=8)
    assert flow.event_shape == (1, 8, 8) and flow.base.event_shape == (64,)
    assert flow.log_prob(torch.rand(3, 1, 8, 8)).shape == (3,)
    with pytest.raises(ValueError, match="multiples of 8, got 28x28"):
        ef.flows.Glow(shape=(1, 28, 28), levels=3)
    with pytest.raises(ValueError, match="coupling must be one of"):
        ef.flows.Glow(shape=(1, 8, 8), levels=1, coupling="cubic")
    with pytest.raises(ValueError, match="hidden must be a positive int"):
        ef.flows.Glow(shape=(1, 8, 8), levels=1, hidden=(8, 8))
    with pytest.raises(ValueError, match="outside the flow's domain"):
        flow.log_prob(torch.full((1, 1, 8, 8), 1.5))


def test_realnvp_takes_features_or_shape() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ef.flows.RealNVP()
    with pytest.raises(ValueError, match="exactly one"):
        ef.flows.RealNVP(features=4, shape=(1, 4, 4))
    vector = ef.flows.RealNVP(features=4)
    assert "shape" not in vector.config and vector.config["features"] == 4
    image = ef.flows.RealNVP(shape=(1, 8, 8), levels=2, steps=1, hidden=(8,))
    assert image.event_shape == (1, 8, 8) and "features" not in image.config
    rebuilt = ef.registry.build(ef.registry.spec_of(image))
    assert rebuilt.event_shape == (1, 8, 8)


@pytest.mark.parametrize("make", ["glow", "realnvp"])
def test_sampling_at_a_temperature_scales_the_base_noise(make: str) -> None:
    torch.manual_seed(0)
    if make == "glow":
        flow = ef.flows.Glow(shape=(1, 4, 4), levels=2, steps=1, hidden=4).double()
    else:
        flow = ef.flows.RealNVP(shape=(1, 4, 4), levels=1, steps=1, hidden=(4,)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    flow.eval()
    torch.manual_seed(3)
    noise = torch.randn(8, 16, dtype=torch.float64)
    torch.manual_seed(3)
    x = flow.sample((8,), temperature=0.1)
    z, _ = flow.transform(x)
    torch.testing.assert_close(z, 0.1 * noise, rtol=1e-7, atol=1e-9)


def test_temperature_reaches_learned_priors() -> None:
    torch.manual_seed(0)
    base = ef.distributions.DiagNormal(3)
    with torch.no_grad():
        base.loc.fill_(2.0)
        base.log_scale.fill_(1.0)
    draws = base.sample((20000,), temperature=0.5)
    torch.testing.assert_close(draws.mean(0), torch.full((3,), 2.0), atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.full((3,), 0.5 * 2.71828), atol=0.05, rtol=0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_temperature_must_be_positive_and_finite(bad: float) -> None:
    flow = ef.flows.Glow(shape=(1, 4, 4), levels=1, steps=1, hidden=4)
    with pytest.raises(ValueError, match="temperature must be positive and finite"):
        flow.sample((2,), temperature=bad)
    with pytest.raises(TypeError, match="temperature must be a number"):
        flow.sample((2,), temperature="0.7")


def test_class_conditional_glow_samples_follow_the_label() -> None:
    torch.manual_seed(0)
    flow = ef.flows.Glow(shape=(1, 4, 4), levels=1, steps=1, hidden=4, context=3, preprocess=None)
    with torch.no_grad():  # give each class its own prior mean
        flow.base.net[-1].weight.copy_(torch.randn_like(flow.base.net[-1].weight))
    labels = torch.nn.functional.one_hot(torch.tensor([0, 2]), 3).float()
    x = flow.sample((4,), context=labels)
    assert x.shape == (4, 2, 1, 4, 4)
    lp = flow.log_prob(x, context=labels)
    swapped = flow.log_prob(x, context=labels.flip(0))
    assert (lp > swapped).float().mean() > 0.5  # each sample is likelier under its own class
    with pytest.raises(ValueError, match="conditional"):
        flow.sample((2,))


@pytest.mark.parametrize("coupling", ["affine", "additive", "spline"])
def test_glow_learns_the_digits(coupling: str) -> None:
    torch.manual_seed(0)
    digits = ef.data.load_digits(image=True).train[:256]
    flow = ef.flows.Glow(shape=(1, 8, 8), levels=2, steps=2, hidden=16, coupling=coupling)
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-3)
    first = -flow.log_prob(digits).mean().item()
    for _ in range(30):
        loss = -flow.log_prob(digits).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flow.eval()
    assert -flow.log_prob(digits).mean().item() < first - 20  # nats per image


def test_memory_saving_flag_is_recorded() -> None:
    pytest.importorskip("exactflow.transforms.recompute")
    flow = ef.flows.Glow(shape=(1, 4, 4), levels=2, steps=1, hidden=4, memory_saving=True)
    plain = ef.flows.Glow(shape=(1, 4, 4), levels=2, steps=1, hidden=4)
    plain.load_state_dict(flow.state_dict())
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(flow.log_prob(x), plain.log_prob(x))
    assert flow.config["memory_saving"] is True


def test_an_interrupted_glow_run_resumes_to_the_same_weights(tmp_path) -> None:
    from exactflow.objectives import NLL
    from exactflow.train import TrainConfig, fit

    from tinyflow import Interrupt, interrupt_at

    digits = ef.data.load_digits(image=True, dequantize_pixels=False)
    pixels = (digits.train[:192] * 17).round()
    val = (pixels[:64] + 0.5) / 17

    def dequantize(k: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (k + torch.rand(k.shape, generator=g)) / 17

    source = ef.data.Batches(pixels, 64, seed=1, transform=dequantize)

    def make(seed: int) -> ef.Flow:
        torch.manual_seed(seed)
        return ef.flows.Glow(shape=(1, 8, 8), levels=2, steps=1, hidden=8)

    def settings(out: str) -> TrainConfig:
        return TrainConfig(epochs=3, batch_size=64, lr=1e-3, checkpoint_every=2, patience=None,
                           tensorboard=False, out=out)  # fmt: skip

    reference = fit(make(0), NLL(), source, settings(str(tmp_path / "a")), val=val, progress=False)
    flow = make(0)
    handle = interrupt_at(flow.transform, 5)  # after the step-4 checkpoint
    with pytest.raises(Interrupt):
        fit(flow, NLL(), source, settings(str(tmp_path / "b")), val=val, progress=False)
    handle.remove()
    fresh = make(7)  # other weights, ActNorm not initialized: all of it comes from the file
    assert not any(bool(m.initialized) for m in fresh.modules() if isinstance(m, T.ActNorm))
    resumed = fit(fresh, NLL(), source, settings(str(tmp_path / "b")), val=val, resume=True,
                  progress=False)  # fmt: skip
    for key, value in reference.flow.state_dict().items():
        assert torch.equal(value, resumed.flow.state_dict()[key]), key
    assert [r["val_nll"] for r in resumed.history] == [r["val_nll"] for r in reference.history]
