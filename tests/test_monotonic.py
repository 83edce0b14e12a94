"""Tests of the monotonic neural maps (NAF's deep sigmoidal map) beyond the conformance suite."""

from __future__ import annotations

import pytest
import torch

from exactflow import transforms as T

D = 3


def draw_params(dsf: T.DeepSigmoid, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Random raw parameters ``(D, P)`` in float64."""
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(D, dsf.params, dtype=torch.float64, generator=generator)


@pytest.mark.parametrize("hidden", [1, 4, 8])
def test_strictly_increasing_on_a_grid(hidden: int) -> None:
    dsf = T.DeepSigmoid(hidden)
    params = draw_params(dsf, scale=2.0)
    x = torch.linspace(-30, 30, 20001, dtype=torch.float64)[:, None].expand(-1, D)
    y, ladj = dsf.forward(x, params)
    assert bool((y.diff(dim=0) > 0).all())
    assert bool(ladj.isfinite().all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_finite_far_out(dtype: torch.dtype) -> None:
    dsf = T.DeepSigmoid(8)
    params = draw_params(dsf, scale=2.0).to(dtype).requires_grad_()
    x = torch.tensor([-1e3, -300.0, -1.0, 0.0, 1.0, 300.0, 1e3], dtype=dtype)
    x = x[:, None].expand(-1, D).clone().requires_grad_()
    y, ladj = dsf.forward(x, params)
    assert bool(y.isfinite().all()) and bool(ladj.isfinite().all())
    assert bool((y.diff(dim=0) > 0).all())
    (y.sum() + ladj.sum()).backward()
    assert bool(x.grad.isfinite().all()) and bool(params.grad.isfinite().all())
    back, _ = dsf.inverse(y.detach(), params.detach())
    # The solver's residual is within 64·eps·(1 + |y|) in float32, 1e-12·(1 + |y|) in float64.
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(back, x.detach(), rtol=tol, atol=tol)


def test_log_slope_matches_autograd() -> None:
    dsf = T.DeepSigmoid(5)
    params = draw_params(dsf, scale=2.0)
    x = (20 * torch.randn(50, D, dtype=torch.float64)).requires_grad_()
    y, ladj = dsf.forward(x, params)
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(ladj, slope.log(), rtol=0, atol=1e-10)


def test_inverse_round_trip_and_gradients() -> None:
    dsf = T.DeepSigmoid(6)
    params = draw_params(dsf, scale=2.0).requires_grad_()
    y = 10 * torch.randn(40, D, dtype=torch.float64)
    x, inv_ladj = dsf.inverse(y, params)
    again, ladj = dsf.forward(x, params)
    assert torch.allclose(again, y, rtol=0, atol=1e-10)
    assert torch.allclose(inv_ladj, -ladj, rtol=0, atol=1e-12)
    # Implicit gradient of the root with respect to the parameters, against finite differences.
    (grad,) = torch.autograd.grad(x.sum(), params)
    step = 1e-6
    bump = torch.zeros_like(params)
    bump[1, 2] = step
    with torch.no_grad():
        plus, _ = dsf.inverse(y, params + bump)
        minus, _ = dsf.inverse(y, params - bump)
    numeric = (plus.sum() - minus.sum()) / (2 * step)
    assert torch.allclose(grad[1, 2], numeric, rtol=1e-5, atol=1e-8)


def test_inverse_raises_when_it_does_not_converge() -> None:
    dsf = T.DeepSigmoid(4, max_iter=1)
    params = draw_params(dsf, scale=2.0)
    y = 5 * torch.randn(10, D, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"DeepSigmoid\(hidden=4\).*residual"):
        dsf.inverse(y, params)


def test_start_is_monotone_and_near_the_identity() -> None:
    dsf = T.DeepSigmoid(8)
    params = dsf.identity().double().expand(D, -1)
    x = torch.linspace(-50, 50, 10001, dtype=torch.float64)[:, None].expand(-1, D)
    y, ladj = dsf.forward(x, params)
    assert bool((y.diff(dim=0) > 0).all())
    assert float((y - x).abs().max()) <= 0.21
    slope = ladj.exp()
    assert float(slope.min()) >= 0.90 and float(slope.max()) <= 1 + 1e-12
    # The offsets are spread, so the sigmoids start distinct (no symmetric dead start).
    assert dsf.identity()[8:16].unique().numel() == 8


def test_layers_start_finite_and_train() -> None:
    layer = T.MaskedAutoregressive(T.DeepSigmoid(4), features=D, hidden=(8,)).double()
    x = torch.randn(32, D, dtype=torch.float64)
    y, ladj = layer(x)
    loss = (0.5 * y.square().sum(-1) - ladj).mean()
    loss.backward()
    grads = [p.grad for p in layer.parameters()]
    assert all(g is not None and bool(g.isfinite().all()) for g in grads)
    assert any(bool((g != 0).any()) for g in grads)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="hidden must be an int >= 1, got 0"):
        T.DeepSigmoid(0)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1, got 0"):
        T.DeepSigmoid(max_iter=0)
    dsf = T.DeepSigmoid(4)
    with pytest.raises(ValueError, match=r"params must have shape \(\*, D, 12\), got \(3, 5\)"):
        dsf.forward(torch.zeros(2, 3), torch.zeros(3, 5))


def test_config_rebuilds_the_map() -> None:
    dsf = T.DeepSigmoid(5, max_iter=40)
    again = T.DeepSigmoid(**dsf.config())
    assert (again.hidden, again.max_iter, again.params) == (5, 40, 15)


@pytest.mark.parametrize("seed", [1, 4, 9, 24])
def test_inverse_converges_on_staircases(seed: int) -> None:
    # Steep, well separated sigmoids make a staircase on which plain bracketed Newton from the
    # whole bracket crawled past its budget for these seeds; the narrowed bracket converges.
    torch.manual_seed(seed)
    dsf = T.DeepSigmoid(8)
    params = 5 * torch.randn(50, dsf.params, dtype=torch.float64)
    grid = 10 ** torch.linspace(-3, 3, 200, dtype=torch.float64)[:, None].expand(-1, 50)
    y = torch.cat([grid, -grid, 5 * torch.randn(400, 50, dtype=torch.float64)])
    x, _ = dsf.inverse(y, params)
    residual = (dsf.forward(x, params)[0] - y).abs() / (1 + y.abs())
    assert float(residual.max()) <= 1e-12
