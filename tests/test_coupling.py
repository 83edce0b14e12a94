"""Coupling layers: masks, the identity part, one conditioner pass, leading dimensions."""

from __future__ import annotations

import pytest
import torch

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
    layer = _perturbed(T.Coupling(T.AffineMap(), 5, mask=mask, hidden=(8,), context=context))
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
    layer = _perturbed(T.Coupling(T.AffineMap(), 4, mask="alternating", hidden=(8,)))
    x = torch.randn(6, 4, dtype=torch.float64)
    _, ladj = layer(x)
    params = layer.net(x[:, [0, 2]]).unflatten(-1, (2, 2))
    torch.testing.assert_close(ladj, layer.map.log_scale(params[..., 1]).sum(-1))


@pytest.mark.parametrize("residual", [False, True])
def test_starts_at_the_identity(residual: bool) -> None:
    layer = T.Coupling(T.AffineMap(), 4, hidden=(8, 8), context=2, residual=residual)
    x, c = torch.randn(3, 4), torch.randn(3, 2)
    y, ladj = layer(x, c)
    assert torch.equal(y, x)
    assert torch.equal(ladj, torch.zeros(3))


def test_one_conditioner_pass_each_way() -> None:
    layer = T.Coupling(T.AffineMap(), 6, hidden=(8,))
    calls = []
    layer.net.register_forward_hook(lambda *_: calls.append(1))
    y, _ = layer(torch.randn(4, 6))
    assert len(calls) == 1
    layer.inverse(y)
    assert len(calls) == 2


@pytest.mark.parametrize("context_shape", [(2, 3, 2), (2,), (5, 1, 1, 2)])
def test_leading_dimensions_and_context_broadcast(context_shape: tuple[int, ...]) -> None:
    layer = _perturbed(T.Coupling(T.AffineMap(), 4, hidden=(8,), context=2))
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
        (4, "checkerboard", "'half', 'alternating', 'random'"),
    ],
)
def test_rejects_bad_masks(features: int, mask: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        T.Coupling(T.AffineMap(), features, mask=mask)


def test_rejects_bad_maps_and_residual_widths() -> None:
    with pytest.raises(TypeError, match="ElementwiseMap"):
        T.Coupling(T.Affine(2), 2)
    with pytest.raises(ValueError, match="equal hidden widths"):
        T.Coupling(T.AffineMap(), 4, hidden=(8, 16), residual=True)
