"""Coupling layers: masks, the identity part, one conditioner pass, leading dimensions."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow import transforms as T
from exactflow.transforms.coupling import coupling_mask

MASKS = {
    "half": ("half", [2, 3, 4]),
    "alternating": ("alternating", [1, 3]),
    "random": ("random", None),
    "tensor": (torch.tensor([True, False, True, False, False]), [0, 2]),
}


def _perturbed(layer: T.Transform, seed: int = 0) -> T.Transform:
    torch.manual_seed(seed)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("context", [0, 2])
def test_identity_part_passes_through_unchanged(kind: str, context: int) -> None:
    mask, expected = MASKS[kind]
    layer = _perturbed(
        T.Coupling(T.AffineMap(), features=5, mask=mask, hidden=(8,), context=context)
    )
    transformed = layer.transformed_index.tolist()
    if expected is not None:
        assert transformed == expected
    identity = layer.identity_index.tolist()
    assert sorted(identity + transformed) == list(range(5))
    x = torch.randn(7, 5, dtype=torch.float64)
    c = torch.randn(7, context, dtype=torch.float64) if context else None
    for direction in (layer.forward, layer.inverse):
        y, _ = direction(x, c)
        assert torch.equal(y[:, identity], x[:, identity])
        assert not torch.allclose(y[:, transformed], x[:, transformed])


def test_random_mask_is_half_and_seeded() -> None:
    a, b, c = (coupling_mask(9, "random", seed) for seed in (0, 0, 1))
    assert int(a.sum()) == 4
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ladj_is_the_sum_of_the_map_log_slopes() -> None:
    layer = _perturbed(T.Coupling(T.AffineMap(), features=4, mask="alternating", hidden=(8,)))
    x = torch.randn(6, 4, dtype=torch.float64)
    _, ladj = layer(x)
    params = layer.net(x[:, [0, 2]]).unflatten(-1, (2, 2))
    torch.testing.assert_close(ladj, layer.map.log_scale(params[..., 1]).sum(-1))


@pytest.mark.parametrize("residual", [False, True])
def test_starts_at_the_identity(residual: bool) -> None:
    layer = T.Coupling(T.AffineMap(), features=4, hidden=(8, 8), context=2, residual=residual)
    x, c = torch.randn(3, 4), torch.randn(3, 2)
    y, ladj = layer(x, c)
    assert torch.equal(y, x)
    assert torch.equal(ladj, torch.zeros(3))


def test_one_conditioner_pass_each_way() -> None:
    layer = T.Coupling(T.AffineMap(), features=6, hidden=(8,))
    calls = []
    layer.net.register_forward_hook(lambda *_: calls.append(1))
    y, _ = layer(torch.randn(4, 6))
    assert len(calls) == 1
    layer.inverse(y)
    assert len(calls) == 2


@pytest.mark.parametrize("context_shape", [(2, 3, 2), (2,), (5, 1, 1, 2)])
def test_leading_dimensions_and_context_broadcast(context_shape: tuple[int, ...]) -> None:
    layer = _perturbed(T.Coupling(T.AffineMap(), features=4, hidden=(8,), context=2))
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    c = torch.randn(context_shape, dtype=torch.float64)
    batch = torch.broadcast_shapes((2, 3), context_shape[:-1])
    y, ladj = layer(x, c)
    assert y.shape == (*batch, 4)
    assert ladj.shape == batch
    x_back, ladj_back = layer.inverse(y, c)
    torch.testing.assert_close(x_back, x.expand_as(x_back))
    torch.testing.assert_close(ladj_back, -ladj)


@pytest.mark.parametrize(
    ("features", "mask", "match"),
    [
        (4, torch.ones(4, dtype=torch.bool), "some but not all"),
        (4, torch.zeros(4, dtype=torch.bool), "some but not all"),
        (4, torch.ones(3, dtype=torch.bool), r"shape \(4,\)"),
        (1, "half", "some but not all"),
        (4, "checkerboard", r"needs image events \(C, H, W\)"),
        (4, "diagonal", "'half', 'alternating', 'random', 'channel', 'checkerboard'"),
    ],
)
def test_rejects_bad_masks(features: int, mask: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        T.Coupling(T.AffineMap(), mask, features=features)


def test_rejects_bad_maps_and_residual_widths() -> None:
    with pytest.raises(TypeError, match="ElementwiseMap"):
        T.Coupling(T.Affine(2), features=2)
    with pytest.raises(ValueError, match="equal hidden widths"):
        T.Coupling(T.AffineMap(), features=4, hidden=(8, 16), residual=True)


# ------------------------------------------------------------------ images and conditioners
IMAGE = (2, 4, 4)


def test_image_masks() -> None:
    channel = coupling_mask(IMAGE, "channel")
    assert channel.shape == IMAGE
    assert not channel[0].any() and channel[1].all()
    board = coupling_mask(IMAGE, "checkerboard")
    assert board.shape == IMAGE and int(board.sum()) == 16
    assert torch.equal(board[0], board[1])
    assert board[0, 0, 1] and not board[0, 0, 0] and not board[0, 1, 1]
    with pytest.raises(ValueError, match=r"needs vector events \(D,\)"):
        coupling_mask(IMAGE, "half")


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
@pytest.mark.parametrize("context", [0, 3])
def test_image_coupling_keeps_its_part_and_starts_at_identity(mask: str, context: int) -> None:
    layer = T.Coupling(T.AffineMap(), mask, hidden=(8,), context=context, shape=IMAGE)
    assert isinstance(layer.net, ef.nn.ConvNet)
    x = torch.randn(5, *IMAGE, dtype=torch.float64)
    c = torch.randn(5, context, dtype=torch.float64) if context else None
    y, ladj = layer.double()(x, c)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(5, dtype=torch.float64))
    layer = _perturbed(layer)
    y, ladj = layer(x, c)
    kept = ~coupling_mask(IMAGE, mask)
    assert torch.equal(y[:, kept], x[:, kept])
    assert not torch.allclose(y[:, ~kept], x[:, ~kept])
    torch.testing.assert_close(layer.inverse(y, c)[0], x)


def test_checkerboard_conditioner_sees_only_the_kept_entries() -> None:
    layer = _perturbed(T.Coupling(T.AffineMap(), "checkerboard", hidden=(8,), shape=IMAGE))
    transformed = coupling_mask(IMAGE, "checkerboard")
    x = torch.randn(3, *IMAGE, dtype=torch.float64)
    x2 = x.clone()
    x2[:, transformed] = 0.0  # only the transformed entries change
    y, _ = layer(x)
    y2, _ = layer(x2)
    # The parameters depend on the kept part only, so y - x is a function of x_B alone: with the
    # AffineMap, y_B = x_B e^s + t, and at x_B = 0 the output is t.
    scale = (y[:, transformed] - y2[:, transformed]) / x[:, transformed]
    assert (scale > 0).all()
    x3 = x2.clone()
    x3[:, ~transformed] += 1.0
    assert not torch.allclose(layer(x3)[0][:, transformed], y2[:, transformed])


class _Shift(torch.nn.Module):
    """A user's conditioner: a learned constant plus a linear read of the kept part."""

    def __init__(self, kept: int, out: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(kept, out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        assert context is None
        return self.linear(x)


def test_any_conditioner_module_plugs_in() -> None:
    net = _Shift(2, 2 * 2)
    layer = T.Coupling(T.AffineMap(), "half", net, features=4)
    assert layer.net is net
    x = torch.randn(6, 4)
    y, ladj = layer(x)
    theta = net(x[:, :2], None).unflatten(-1, (2, 2))
    torch.testing.assert_close(ladj, layer.map.log_scale(theta[..., 1]).sum(-1))
    torch.testing.assert_close(layer.inverse(y)[0], x, atol=1e-5, rtol=1e-5)


def test_conditioner_output_shape_is_checked() -> None:
    layer = T.Coupling(T.AffineMap(), "half", _Shift(2, 3), features=4)
    with pytest.raises(ValueError, match=r"conditioner must return \(\*, 4\), got \(6, 3\)"):
        layer(torch.randn(6, 4))


def test_event_shape_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="features=4"):
        T.Coupling(T.AffineMap(), 4)
    with pytest.raises(ValueError, match="event shape is unknown"):
        T.Coupling(T.AffineMap(), "half")
    with pytest.raises(ValueError, match="not both"):
        T.Coupling(T.AffineMap(), "half", features=4, shape=(4,))
    with pytest.raises(ValueError, match="no default conditioner"):
        T.Coupling(T.AffineMap(), torch.tensor([[True, False], [False, True]]))
    with pytest.raises(TypeError, match="nn.Module"):
        T.Coupling(T.AffineMap(), "half", lambda x, c: x, features=4)


def test_compose_names_the_step_that_does_not_fit() -> None:
    steps = [T.Flatten(IMAGE), T.Coupling(T.AffineMap(), "half", features=30)]
    with pytest.raises(ValueError, match=r"step 1 \(Coupling\).*\(32,\).*\(30,\)"):
        T.Compose(steps)
