"""Residual blocks: the inverse raises when the map is not a contraction, settings are checked,
and a training step updates the spectral normalization once."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow import transforms as T


def test_a_non_contractive_block_cannot_be_inverted_silently() -> None:
    # g(x) = -w₂ · LipSwish(w₁ x) with slope -9 at 0: the fixed-point iteration cannot settle
    block = T.ResidualBlock(1, hidden=(1,)).double().eval()
    first, last = block.net[0], block.net[2]
    with torch.no_grad():
        first.weight.fill_(5.0)
        last.weight.fill_(-4.0)
        for layer in (first, last):
            layer.bias.zero_()
            layer.u.zero_()  # no estimate of the norm: the weights go unscaled
    y = torch.zeros(3, 1, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="ResidualBlock"):
        block.inverse(y + 0.01)


def test_a_training_step_updates_the_normalization_and_eval_does_not() -> None:
    torch.manual_seed(0)
    block = T.ResidualBlock(2, hidden=(8,))
    first = block.net[0]
    before = first.u.clone()
    block(torch.randn(5, 2))  # training mode, gradients on
    assert not torch.equal(first.u, before)
    after = first.u.clone()
    with torch.no_grad():
        block(torch.randn(5, 2))
    block.eval()(torch.randn(5, 2))
    assert torch.equal(first.u, after)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"coeff": 1.0}, "coeff must be in"),
        ({"exact_terms": 0}, "exact_terms must be"),
        ({"continue_probability": 1.0}, "continue_probability"),
        ({"hidden": (0,)}, "hidden widths must be"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        T.ResidualBlock(2, **kwargs)


def test_a_flow_of_residual_blocks_trains() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 2) * torch.tensor([2.0, 0.5]) + 1.0
    steps = [T.ResidualBlock(2, hidden=(32,)) for _ in range(3)]
    flow = ef.Flow(T.Compose([T.ActNorm(2), *steps]), ef.distributions.StandardNormal(2))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    flow.eval()
    start = -flow.log_prob(x).mean().item()
    flow.train()
    for _ in range(60):
        loss = -flow.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flow.eval()
    assert -flow.log_prob(x).mean().item() < start - 0.3
