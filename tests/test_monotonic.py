"""Tests of the monotonic neural maps (NAF's deep sigmoidal map, UMNN) beyond conformance."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import exactflow as ef
from exactflow import transforms as T
from exactflow.transforms.umnn import clenshaw_curtis, quadrature_tolerance

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


# ------------------------------------------------------------------------------------- UMNN


def umnn(seed: int = 0, scale: float = 0.5, **kwargs: object) -> T.UMNN:
    """A float64 UMNN map in eval mode, its weights moved well away from the identity start."""
    torch.manual_seed(seed)
    u = T.UMNN(**{"hidden": (16,), "embedding": 4, **kwargs}).double().eval()
    with torch.no_grad():
        for p in u.parameters():
            p.add_(scale * torch.randn_like(p))
    return u


def umnn_params(u: T.UMNN, n: int = 20, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, u.params, dtype=torch.float64, generator=generator)


def reference_integral(u: T.UMNN, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``∫_0^x g`` by composite Simpson on 20001 points per entry (an independent rule)."""
    base, _ = u._unpack(params)
    s = torch.linspace(0, 1, 20001, dtype=torch.float64)
    weights = torch.ones_like(s)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    with torch.no_grad():
        g = 1 + u._excess(x.unsqueeze(-1) * s, base)
    return x * (g @ weights) / (3 * (s.numel() - 1))


def test_clenshaw_curtis_converges_to_a_known_integral() -> None:
    # ∫_0^1 dt / (1 + (4t)^2) = atan(4) / 4: analytic on [0, 1], so the error falls geometrically.
    exact = math.atan(4) / 4
    errors = []
    for level in range(1, 8):
        s, w = clenshaw_curtis(level, torch.zeros((), dtype=torch.float64))
        assert s.shape == w.shape == (2**level + 1,)
        errors.append(abs(float((w / (1 + (4 * s) ** 2)).sum()) - exact))
    assert all(b < a for a, b in itertools.pairwise(errors[:5]))
    assert errors[0] > 1e-2 and errors[-1] < 1e-14
    # Nested: each level holds the previous level's nodes first.
    small, _ = clenshaw_curtis(3, torch.zeros(()))
    large, _ = clenshaw_curtis(4, torch.zeros(()))
    assert torch.allclose(large[: small.numel()], small)


def test_umnn_value_converges_to_the_true_integral_as_nodes_grow() -> None:
    u = umnn()
    params = umnn_params(u)
    x = 4 * torch.randn(20, D, dtype=torch.float64)
    _, b = u._unpack(params)
    exact = b + x + reference_integral(u, x, params) - x  # F(x) = b + ∫_0^x g
    errors = []
    u.train()  # fixed node counts in training
    for nodes in (3, 5, 9, 17, 33):
        u.nodes = nodes
        with torch.no_grad():
            errors.append(float((u.forward(x, params)[0] - exact).abs().max()))
    assert errors[0] > 1e-3 and errors[-1] < errors[0] * 1e-4
    # Eval mode refines until it meets the float64 tolerance (1e-10 relative).
    u.eval()
    with torch.no_grad():
        y, _ = u.forward(x, params)
    assert float(((y - exact).abs() / (1 + exact.abs())).max()) < 1e-9


def test_umnn_slope_is_the_integrand_and_matches_autograd() -> None:
    u = umnn(seed=1)
    params = umnn_params(u, seed=1)
    x = (3 * torch.randn(20, D, dtype=torch.float64)).requires_grad_()
    y, ladj = u.forward(x, params)
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ladj, slope.log(), rtol=0, atol=1e-12)
    # The value is the integral of exp(ladj): its central difference is the slope.
    step = 1e-4
    with torch.no_grad():
        ahead, _ = u.forward(x + step, params)
        behind, _ = u.forward(x - step, params)
    torch.testing.assert_close((ahead - behind) / (2 * step), slope, rtol=1e-6, atol=1e-7)
    # Also on a coarse training rule, whose own sum's slope is far from g: dy/dx is still g(x).
    u.train()
    u.nodes = 3
    y, ladj = u.forward(x, params)
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ladj, slope.log(), rtol=0, atol=1e-12)


def test_umnn_inverse_round_trip_and_implicit_gradients() -> None:
    u = umnn(seed=2)
    params = umnn_params(u, seed=2).requires_grad_()
    y = 4 * torch.randn(20, D, dtype=torch.float64)
    x, inv_ladj = u.inverse(y, params)
    again, ladj = u.forward(x, params)
    torch.testing.assert_close(again, y, rtol=0, atol=1e-8)
    torch.testing.assert_close(inv_ladj, -ladj, rtol=0, atol=1e-10)
    (grad,) = torch.autograd.grad(x.sum(), params)
    step = 1e-5
    bump = torch.zeros_like(params)
    bump[3, 1, 0] = step
    with torch.no_grad():
        plus, _ = u.inverse(y, params + bump)
        minus, _ = u.inverse(y, params - bump)
    numeric = (plus.sum() - minus.sum()) / (2 * step)
    torch.testing.assert_close(grad[3, 1, 0], numeric, rtol=1e-4, atol=1e-7)


def test_umnn_inverse_raises_when_it_does_not_converge() -> None:
    u = umnn(seed=3, max_iter=1)
    params = umnn_params(u, seed=3)
    y = 5 * torch.randn(20, D, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"UMNN\(embedding=4\): inverse.*residual"):
        u.inverse(y, params)


def test_umnn_quadrature_raises_at_its_node_cap() -> None:
    u = umnn(seed=4, scale=2.0, nodes=3, max_nodes=5)
    params = umnn_params(u, seed=4)
    x = 4 * torch.randn(20, D, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"UMNN\(embedding=4\).*max_nodes = 5"):
        u.forward(x, params)
    u.train()  # a fixed node count in training: no refinement, no error
    assert u.forward(x, params)[0].isfinite().all()


def test_umnn_under_a_tracer_takes_two_doublings_and_agrees_with_eager() -> None:
    u = umnn(seed=5)
    params = umnn_params(u, seed=5)
    x = 3 * torch.randn(20, D, dtype=torch.float64)
    seen: list[int] = []
    excess = u._excess

    def counting(t: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape[-1])
        return excess(t, base)

    u._excess = counting
    with torch.no_grad():
        eager, _ = u.forward(x, params)
    assert max(seen) < u.max_nodes  # eager refinement stops early
    seen.clear()
    with torch.no_grad():
        traced, _ = torch.func.vmap(u.forward)(x, params)
    assert sum(seen) == 4 * (u.nodes - 1) + 2  # one rule of 129 nodes, plus g(x) itself
    tol = quadrature_tolerance(torch.float64)
    assert float(((traced - eager).abs() / (1 + eager.abs())).max()) < tol


def test_umnn_starts_as_the_identity() -> None:
    u = T.UMNN().double()
    params = u.identity().double().expand(D, -1)
    x = 10 * torch.randn(50, D, dtype=torch.float64)
    for mode in (True, False):
        u.train(mode)
        y, ladj = u.forward(x, params)
        assert torch.equal(y, x) and torch.equal(ladj, torch.zeros_like(x))


def test_umnn_float32_round_trip() -> None:
    u = umnn(seed=6).float()
    params = umnn_params(u, seed=6).float()
    x = 3 * torch.randn(20, D)
    y, ladj = u.forward(x, params)
    back, inv = u.inverse(y, params)
    assert y.dtype == back.dtype == torch.float32
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(inv, -ladj, rtol=1e-4, atol=1e-4)


def test_layers_register_the_umnn_map_as_a_submodule() -> None:
    layer = T.MaskedAutoregressive(T.UMNN(hidden=(8,), embedding=3), features=D, hidden=(8,))
    assert any(k.startswith("map.") for k in layer.state_dict())
    layer.double().eval()
    assert layer.map.time.dtype == torch.float64 and not layer.map.training
    # The preset gives every layer its own integrand network.
    flow = ef.flows.UMNN(features=2, transforms=3, hidden=(8,), integrand=(8,))
    maps = [m for m in flow.modules() if isinstance(m, T.UMNN)]
    assert len(maps) == 3 and len({id(m.time) for m in maps}) == 3


def test_umnn_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"nodes must be 2\^k \+ 1 .*got 4"):
        T.UMNN(nodes=4)
    with pytest.raises(ValueError, match="max_nodes must be > nodes = 33, got 33"):
        T.UMNN(max_nodes=33)
    with pytest.raises(ValueError, match="hidden must be one or more widths"):
        T.UMNN(hidden=())
    with pytest.raises(ValueError, match="bound must be a positive number, got 0"):
        T.UMNN(bound=0)
    u = T.UMNN(embedding=3)
    with pytest.raises(ValueError, match=r"params must have shape \(\*, D, 4\), got \(3, 5\)"):
        u.forward(torch.zeros(2, 3), torch.zeros(3, 5))


def test_umnn_config_rebuilds_the_map() -> None:
    u = T.UMNN(hidden=(8, 4), embedding=3, bound=2.0, nodes=9, max_nodes=65, max_iter=40)
    again = T.UMNN(**u.config())
    assert again.config() == u.config()
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in u.state_dict().items()
    }
