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


def strong_block(gradient: str) -> T.ResidualBlock:
    """A float64 block whose layers sit at their bound, so the series has many sizable terms."""
    torch.manual_seed(0)
    block = T.ResidualBlock(3, hidden=(8,), coeff=0.9, iterations=20, gradient=gradient).double()
    with torch.no_grad():
        for layer in block.net:
            if hasattr(layer, "weight"):
                layer.weight.mul_(4)
    block(torch.randn(8, 3, dtype=torch.float64))  # settle the power iteration
    return block


def gradients(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value.sum(), params, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).flatten()
            for g, p in zip(grads, params, strict=True)
        ]
    )


def z_scores(draws: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|mean - target| in standard errors, entry by entry (entries with no spread are skipped)."""
    spread = draws.std(0) / len(draws) ** 0.5
    varies = spread > 0
    assert torch.equal(draws.mean(0)[~varies], target[~varies])
    return ((draws.mean(0) - target).abs() / spread)[varies]


@pytest.mark.parametrize("gradient", ["neumann", "backprop"])
def test_the_training_gradient_is_unbiased_for_the_exact_one(gradient: str) -> None:
    block = strong_block(gradient)
    params = list(block.parameters())
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = gradients(block.eval()(x)[1], params)
    block.train()
    draws = torch.stack([gradients(block._estimate(x, None)[1], params) for _ in range(1500)])
    assert z_scores(draws, exact).max() < 5.0
    # the check can fail: a gradient 5% off is far outside the spread
    assert z_scores(draws, 1.05 * exact).max() > 5.0


def test_neumann_and_backprop_estimates_have_the_same_value() -> None:
    x = torch.randn(6, 3, dtype=torch.float64)
    values = []
    for gradient in ("neumann", "backprop"):
        block = strong_block(gradient)
        torch.manual_seed(3)
        values.append(block._estimate(x, None)[1])
    torch.testing.assert_close(values[0], values[1], rtol=1e-12, atol=1e-12)


def test_an_unknown_gradient_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="gradient must be one of"):
        T.ResidualBlock(2, gradient="adjoint")


def test_auto_trains_narrow_blocks_on_the_exact_log_determinant() -> None:
    assert T.ResidualBlock(16).exact_ladj and not T.ResidualBlock(17).exact_ladj
    assert not T.ResidualBlock(2, estimator="roulette").exact_ladj
    assert T.ResidualBlock(40, estimator="exact").exact_ladj
    with pytest.raises(ValueError, match="estimator must be one of"):
        T.ResidualBlock(2, estimator="hutchinson")


def test_exact_training_gives_the_eval_value_and_gradient() -> None:
    block = strong_block("neumann")
    block.estimator, block.exact_ladj = "exact", True
    for layer in block.net:  # a settled power iteration: the training update changes nothing
        if hasattr(layer, "iterations"):
            layer.iterations = 500
            layer.update()
    x = torch.randn(5, 3, dtype=torch.float64)
    params = list(block.parameters())
    y_eval, eval_ladj = block.eval()(x)
    expected = gradients(eval_ladj, params)
    y, ladj = block.train()(x)
    torch.testing.assert_close(ladj, eval_ladj)
    torch.testing.assert_close(y, y_eval)
    torch.testing.assert_close(gradients(ladj, params), expected)
