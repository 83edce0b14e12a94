"""Conditioner networks: MLP and ResidualMLP with context, MADE's autoregressive property."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow.nn import MADE, MLP, MaskedLinear, ResidualMLP

MADE_CONFIGS = {
    "default": dict(features=5, out_per_feature=2, hidden=(16, 16)),
    "random-order": dict(features=6, out_per_feature=3, hidden=(20, 20), order=[4, 1, 6, 2, 5, 3]),
    "random-degrees": dict(
        features=5,
        out_per_feature=2,
        hidden=(16, 12, 10),
        order=[2, 5, 1, 4, 3],
        hidden_degrees="random",
        seed=7,
    ),
    "context": dict(features=4, out_per_feature=2, hidden=(16, 16), context=3, order=[3, 1, 4, 2]),
    "residual-context": dict(
        features=5,
        out_per_feature=2,
        hidden=(16, 16),
        context=2,
        order=[5, 3, 1, 2, 4],
        residual=True,
    ),
    "one-feature": dict(features=1, out_per_feature=2, hidden=(4,), context=2),
}


def _made(config: dict) -> MADE:
    torch.manual_seed(0)
    return MADE(**config).double()


def _context(made: MADE, *batch: int) -> torch.Tensor | None:
    if not made.context:
        return None
    return torch.randn(*batch, made.context, dtype=torch.float64)


def _jacobian(made: MADE, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """``∂ out[i, p] / ∂ x[j]``, shape ``(D, P, D)``."""
    return torch.func.jacrev(lambda xi: made(xi, c))(x)


@pytest.mark.parametrize("name", MADE_CONFIGS)
def test_made_output_depends_only_on_lower_degrees(name: str) -> None:
    made = _made(MADE_CONFIGS[name])
    degrees = made.degrees
    forbidden = degrees[None, :] >= degrees[:, None]  # (i, j): deg(j) >= deg(i)
    seen = torch.zeros(made.features, made.features, dtype=torch.bool)
    for seed in range(5):
        torch.manual_seed(seed)
        x, c = torch.randn(made.features, dtype=torch.float64), _context(made)
        jac = _jacobian(made, x, c).abs().sum(1)  # (D, D)
        assert torch.all(jac[forbidden] == 0), f"output depends on a forbidden input ({name})"
        seen |= jac > 0
    if MADE_CONFIGS[name].get("hidden_degrees", "sequential") == "sequential":
        # Wide enough sequential degrees connect every allowed pair.
        assert torch.equal(seen, ~forbidden)


def test_made_mask_connectivity_is_exactly_autoregressive() -> None:
    made = _made(MADE_CONFIGS["random-order"])
    layers = [m for m in made.modules() if isinstance(m, MaskedLinear)]
    reach = layers[0].mask
    for layer in layers[1:]:
        reach = layer.mask @ reach
    reach = reach.unflatten(0, (made.features, made.out_per_feature)).sum(1) > 0  # (D, D)
    allowed = made.degrees[None, :] < made.degrees[:, None]
    assert torch.equal(reach, allowed)


@pytest.mark.parametrize("name", ["context", "residual-context", "one-feature"])
def test_made_every_output_depends_on_the_context(name: str) -> None:
    made = _made(MADE_CONFIGS[name])
    x, c = torch.randn(made.features, dtype=torch.float64), _context(made)
    jac = torch.func.jacrev(lambda ci: made(x, ci))(c)  # (D, P, C)
    assert torch.all(jac.abs().sum((1, 2)) > 0)


def test_made_shapes_and_context_broadcast() -> None:
    made = _made(MADE_CONFIGS["context"])
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    assert made(x, torch.randn(2, 3, 3, dtype=torch.float64)).shape == (2, 3, 4, 2)
    assert made(x, torch.randn(3, dtype=torch.float64)).shape == (2, 3, 4, 2)


def test_made_initialize_makes_a_constant_output() -> None:
    made = _made(MADE_CONFIGS["context"])
    made.initialize(torch.tensor([0.5, -1.0]))
    out = made(torch.randn(7, 4, dtype=torch.float64), _context(made, 7))
    torch.testing.assert_close(out, torch.tensor([0.5, -1.0], dtype=torch.float64).expand(7, 4, 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(order=[1, 2, 2, 4]), "permutation of 1..4"),
        (dict(order=[0, 1, 2, 3]), "permutation of 1..4"),
        (dict(order=[1, 2, 3]), "permutation of 1..4"),
        (dict(hidden=()), "at least one hidden layer"),
        (dict(hidden=(8, 16), residual=True), "equal hidden widths"),
        (dict(hidden_degrees="fancy"), "hidden_degrees"),
    ],
)
def test_made_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MADE(4, 2, **kwargs)


@pytest.mark.parametrize("net", ["mlp", "residual", "made"])
def test_conditioners_check_the_context(net: str) -> None:
    if net == "mlp":
        model = MLP(3, 4, (8,), context=2)
    elif net == "residual":
        model = ResidualMLP(3, 4, 8, blocks=1, context=2)
    else:
        model = MADE(3, 1, (8,), context=2)
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"context of shape \(\.\.\., 2\), got None"):
        model(x)
    with pytest.raises(ValueError, match=r"context of shape \(\.\.\., 2\), got \(5, 3\)"):
        model(x, torch.randn(5, 3))


@pytest.mark.parametrize("residual", [False, True])
def test_mlp_context_broadcasts_leading_dimensions(residual: bool) -> None:
    net = ResidualMLP(3, 4, 8, blocks=2, context=2) if residual else MLP(3, 4, (8,), context=2)
    x = torch.randn(4, 1, 3)
    assert net(x, torch.randn(5, 2)).shape == (4, 5, 4)
    assert net(x, torch.randn(2)).shape == (4, 1, 4)
    # The same as concatenating by hand.
    c = torch.randn(4, 1, 2)
    torch.testing.assert_close(net(x, c), net(x, c.expand(4, 1, 2)))


def test_mlp_without_context_is_a_plain_sequential() -> None:
    net = MLP(3, 4, hidden=(8, 8))
    assert isinstance(net[-1], torch.nn.Linear)
    assert net[0].in_features == 3
    assert net(torch.randn(2, 3)).shape == (2, 4)
    assert ef.nn.MLP is MLP


def test_residual_mlp_rejects_zero_blocks() -> None:
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        ResidualMLP(3, 4, 8, blocks=0)


@pytest.mark.parametrize("name", MADE_CONFIGS)
def test_made_autoregress_under_vmap_matches_eager(name: str) -> None:
    """Under ``vmap`` autoregress takes the trunk path (no in-place writes), same result."""
    made = _made(MADE_CONFIGS[name])

    def build(y: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        def solve(i: int, theta: torch.Tensor) -> torch.Tensor:  # x_i = θ_i0 + y_i
            return theta[..., :1] + y[..., i : i + 1]

        return made.autoregress(solve, y.shape[:-1], c)

    y = torch.randn(4, made.features, dtype=torch.float64)
    c = _context(made, 4)
    with torch.no_grad():
        eager = build(y, c)
        mapped = torch.func.vmap(build, in_dims=(0, None if c is None else 0))(y, c)
    torch.testing.assert_close(mapped, eager)


# ------------------------------------------------------------------ ConvNet
def test_convnet_shapes_and_context_broadcast() -> None:
    net = ef.nn.ConvNet(2, 6, hidden=8, blocks=2, context=3)
    assert net(torch.randn(5, 2, 4, 4), torch.randn(5, 3)).shape == (5, 6, 4, 4)
    assert net(torch.randn(2, 4, 4), torch.randn(7, 1, 3)).shape == (7, 1, 6, 4, 4)
    assert net(torch.randn(0, 2, 4, 4), torch.randn(3)).shape == (0, 6, 4, 4)
    with pytest.raises(ValueError, match=r"context of shape \(\.\.\., 3\), got None"):
        net(torch.randn(5, 2, 4, 4))
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 2, H, W\)"):
        net(torch.randn(5, 3, 4, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="blocks >= 0"):
        ef.nn.ConvNet(2, 6, blocks=-1)


def test_convnet_context_changes_every_pixel_and_zero_output_is_constant() -> None:
    torch.manual_seed(0)
    net = ef.nn.ConvNet(1, 2, hidden=8, blocks=1, context=2)
    x = torch.randn(1, 1, 5, 5)
    a, b = net(x, torch.zeros(1, 2)), net(x, torch.ones(1, 2))
    assert ((a - b).abs() > 0).all()
    ef.nn.zero_output(net.output, torch.tensor([0.5, -1.0]))
    out = net(torch.randn(3, 1, 5, 5), torch.randn(3, 2))
    assert torch.equal(out[:, 0], torch.full((3, 5, 5), 0.5))
    assert torch.equal(out[:, 1], torch.full((3, 5, 5), -1.0))
