"""Lipschitz-constrained layers: the spectral bound holds and survives a checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef


def test_spectral_linear_caps_the_lipschitz_constant_at_its_coefficient() -> None:
    torch.manual_seed(0)
    layer = ef.nn.SpectralLinear(6, 5, coeff=0.9, iterations=1)
    with torch.no_grad():
        layer.weight.mul_(20)
    for _ in range(30):  # power iteration converges over training steps
        layer(torch.randn(4, 6))
    assert float(layer.lipschitz()) == pytest.approx(0.9, rel=1e-4)
    # a small weight is left alone (the bound is an upper limit, not a target)
    small = ef.nn.SpectralLinear(3, 3, coeff=0.9, iterations=20)
    with torch.no_grad():
        small.weight.mul_(1e-3)
    small(torch.randn(2, 3))
    torch.testing.assert_close(small.scaled_weight(), small.weight)


def test_gradients_flow_through_the_normalization() -> None:
    torch.manual_seed(0)
    layer = ef.nn.SpectralLinear(4, 4, coeff=0.5, iterations=5)
    with torch.no_grad():
        layer.weight.mul_(10)
    layer(torch.randn(3, 4)).sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_eval_mode_is_a_fixed_map_and_the_state_is_saved() -> None:
    torch.manual_seed(0)
    layer = ef.nn.SpectralLinear(4, 3, coeff=0.8, iterations=3)
    with torch.no_grad():
        layer.weight.mul_(5)
    layer(torch.randn(2, 4))
    layer.eval()
    u = layer.u.clone()
    x = torch.randn(5, 4)
    first = layer(x)
    torch.testing.assert_close(layer(x), first)
    assert torch.equal(layer.u, u)  # eval does not iterate
    copy = ef.nn.SpectralLinear(4, 3, coeff=0.8, iterations=3).eval()
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy(x), first)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"coeff": 0.0}, "coeff must be in"),
        ({"coeff": 1.5}, "coeff must be in"),
        ({"iterations": 0}, "iterations must be an int"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ef.nn.SpectralLinear(2, 2, **kwargs)


def test_lipswish_is_one_lipschitz_for_any_beta() -> None:
    act = ef.nn.LipSwish()
    x = torch.linspace(-200, 200, 400001, dtype=torch.float64, requires_grad=True)
    act = act.double()
    for raw in (-3.0, 0.0, 3.0):
        with torch.no_grad():
            act.raw_beta.fill_(raw)
        (slope,) = torch.autograd.grad(act(x).sum(), x)
        assert float(slope.abs().max()) <= 1.0
        assert float(slope.abs().max()) > 0.99  # and the bound is tight
