"""Masked autoregressive layers: pass counts, structure, leading dimensions, inverse use."""

from __future__ import annotations

import pytest
import torch

from exactflow import transforms as T


def _perturbed(layer: T.Transform, seed: int = 0) -> T.Transform:
    torch.manual_seed(seed)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def _count(module: torch.nn.Module) -> list:
    calls: list = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_forward_is_one_network_pass_and_inverse_is_d_passes() -> None:
    layer = _perturbed(T.MaskedAutoregressive(T.AffineMap(), 5, hidden=(8, 8), context=2))
    made_calls, trunk_calls = _count(layer.made), _count(layer.made.trunk)
    x, c = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    y, _ = layer(x, c)
    assert (len(made_calls), len(trunk_calls)) == (1, 1)
    layer.inverse(y, c)
    # The inverse reuses the MADE's layers directly: D trunk passes, no full MADE call.
    assert (len(made_calls), len(trunk_calls)) == (1, 1 + 5)


@pytest.mark.parametrize("order", [None, [3, 1, 4, 2], [4, 3, 2, 1]])
def test_jacobian_is_triangular_in_the_order_of_the_degrees(order: list | None) -> None:
    layer = _perturbed(T.MaskedAutoregressive(T.AffineMap(), 4, hidden=(12, 12), order=order))
    degrees = layer.made.degrees
    later = degrees[None, :] > degrees[:, None]  # (i, j): x_j comes after x_i
    x = torch.randn(4, dtype=torch.float64)
    for fn in (lambda v: layer(v)[0], lambda v: layer.inverse(v)[0]):
        jac = torch.func.jacrev(fn)(x)
        assert torch.all(jac[later] == 0)
        assert torch.all(jac.diagonal() != 0)


@pytest.mark.parametrize("context_shape", [None, (2, 3, 2), (2,), (5, 1, 1, 2)])
def test_leading_dimensions_and_context_broadcast(context_shape: tuple | None) -> None:
    context = 0 if context_shape is None else 2
    layer = _perturbed(
        T.MaskedAutoregressive(T.AffineMap(), 3, hidden=(8,), context=context, order=[2, 3, 1])
    )
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    c = None if context_shape is None else torch.randn(context_shape, dtype=torch.float64)
    batch = (2, 3) if c is None else torch.broadcast_shapes((2, 3), context_shape[:-1])
    y, ladj = layer(x, c)
    assert y.shape == (*batch, 3)
    assert ladj.shape == batch
    x_back, ladj_back = layer.inverse(y, c)
    torch.testing.assert_close(x_back, x.expand_as(x_back))
    torch.testing.assert_close(ladj_back, -ladj)


def test_starts_at_the_identity() -> None:
    layer = T.MaskedAutoregressive(T.AffineMap(), 4, hidden=(8, 8), context=3)
    x, c = torch.randn(5, 4), torch.randn(5, 3)
    for direction in (layer.forward, layer.inverse):
        y, ladj = direction(x, c)
        assert torch.equal(y, x)
        assert torch.equal(ladj, torch.zeros(5))


def test_inverse_arrangement_samples_in_one_pass() -> None:
    inner = T.MaskedAutoregressive(T.AffineMap(), 4, hidden=(8,))
    iaf = _perturbed(T.Inverse(inner))
    trunk_calls = _count(inner.made.trunk)
    z = torch.randn(6, 4, dtype=torch.float64)
    x, ladj = iaf.inverse(z)  # sampling direction: one MADE pass
    assert len(trunk_calls) == 1
    z_back, ladj_back = iaf(x)  # density direction: D passes
    assert len(trunk_calls) == 1 + 4
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)


def test_sampling_gradients_reach_every_parameter() -> None:
    layer = _perturbed(T.MaskedAutoregressive(T.AffineMap(), 3, hidden=(8,), context=2))
    x, ladj = layer.inverse(
        torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    )
    (x.square().sum() + ladj.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_rejects_a_non_elementwise_map() -> None:
    with pytest.raises(TypeError, match="ElementwiseMap"):
        T.MaskedAutoregressive(T.Affine(3), 3)


def test_every_coordinate_depends_on_the_context() -> None:
    layer = _perturbed(T.MaskedAutoregressive(T.AffineMap(), 3, hidden=(8,), context=2))
    x, c = torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    jac = torch.func.jacrev(lambda ci: layer(x, ci)[0])(c)  # (D, C)
    assert torch.all(jac.abs().sum(-1) > 0)


@pytest.mark.parametrize("features", [1, 3, 5])
@pytest.mark.parametrize("hidden_degrees", ["sequential", "random"])
def test_sampling_path_without_autograd_matches_the_autograd_path(
    features: int, hidden_degrees: str
) -> None:
    torch.manual_seed(0)
    layer = T.MaskedAutoregressive(
        T.AffineMap(),
        features,
        hidden=(16, 16),
        context=2,
        hidden_degrees=hidden_degrees,
        seed=1,
    ).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    y, c = torch.randn(7, features, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    x_grad, ladj_grad = layer.inverse(y, c)
    with torch.no_grad():
        x_fast, ladj_fast = layer.inverse(y, c)
    torch.testing.assert_close(x_fast, x_grad.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_fast, ladj_grad.detach(), rtol=1e-12, atol=1e-12)
