"""The shared solvers: stated tolerance, errors on non-convergence, NaN under tracing, gradients."""

from __future__ import annotations

import pytest
import torch

from exactflow.numerics import fixed_point, solve_increasing, tolerance

F64 = torch.float64


def _tanh_map(s: torch.Tensor):
    """``f(x) = x + s·tanh(x)`` and ``f'``: increasing for ``s > -1``."""
    return (
        lambda x: x + s * torch.tanh(x),
        lambda x: 1 + s * (1 - torch.tanh(x).square()),
    )


def _solve(s: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
    f, df = _tanh_map(s)
    return solve_increasing(f, df, t, t - s.abs(), t + s.abs(), name="test map", **kwargs)


# ---------------------------------------------------------------- solve_increasing
def test_tolerance_is_stated_per_dtype() -> None:
    assert tolerance(F64) == 1e-12
    assert tolerance(torch.float32) == 64 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("slope", [0.5, 5.0, 185.0, 1e6])
def test_solve_reaches_the_stated_residual(dtype: torch.dtype, slope: float) -> None:
    """Includes the 2-cycle of the old planar solver: Newton from tanh's flat part jumps
    across the whole bracket ``[t - |s|, t + |s|]`` to exactly its other end and back."""
    torch.manual_seed(0)
    x = torch.cat([torch.linspace(-5, 5, 1001, dtype=F64), 100 * torch.randn(1000, dtype=F64)])
    s = torch.tensor(slope, dtype=F64)
    t = (x + s * torch.tanh(x)).to(dtype)
    root = _solve(s.to(dtype), t)
    f, _ = _tanh_map(s.to(dtype))
    assert torch.all((f(root) - t).abs() <= tolerance(dtype) * (1 + t.abs()))
    if dtype == F64:  # forward error: residual over the slope (>= 1 here)
        torch.testing.assert_close(root, x, rtol=0, atol=1e-12 * (1 + x.abs().max().item()))


def test_solve_raises_on_non_convergence_naming_residual_and_tolerance() -> None:
    s = torch.tensor(185.0, dtype=F64)
    t = torch.linspace(-300, 300, 101, dtype=F64)
    with pytest.raises(FloatingPointError) as error:
        _solve(s, t, max_iter=2)
    message = str(error.value)
    assert message.startswith("test map: the scalar solve (2 iterations) did not converge")
    assert "largest residual" in message and "> tolerance 1e-12" in message


def test_solve_under_tracing_returns_nan_where_it_did_not_converge() -> None:
    s = torch.tensor(185.0, dtype=F64)
    t = torch.linspace(-300, 300, 101, dtype=F64)
    traced = torch.func.vmap(lambda t: _solve(s, t, max_iter=2))(t)
    assert traced.isnan().any()
    exact = _solve(s, t)
    ok = ~traced.isnan()
    f, _ = _tanh_map(s)
    assert torch.all((f(traced[ok]) - t[ok]).abs() <= 1e-12 * (1 + t[ok].abs()))
    torch.testing.assert_close(torch.func.vmap(lambda t: _solve(s, t))(t), exact)


def test_solve_passes_non_finite_targets_through() -> None:
    s = torch.tensor(2.0, dtype=F64)
    t = torch.tensor([torch.inf, -torch.inf, torch.nan, 1.0], dtype=F64)
    root = _solve(s, t)
    assert root[0] == torch.inf and root[1] == -torch.inf and root[2].isnan()
    assert root[3].isfinite()


def test_solve_gradients_are_the_implicit_ones() -> None:
    """``∂x/∂t = 1/f'`` and ``∂x/∂s = -tanh(x)/f'``: exact, checked by finite differences."""

    def root(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return _solve(s, t)

    t = torch.tensor([-3.0, 0.2, 7.0], dtype=F64, requires_grad=True)
    s = torch.tensor(2.5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(root, (t, s))
    x = root(t, s)
    (gt,) = torch.autograd.grad(x.sum(), t)
    torch.testing.assert_close(gt, 1 / (1 + s.detach() * (1 - torch.tanh(x.detach()) ** 2)))
    # The same under torch.func.grad and vmap (no host reads, full budget).
    gs = torch.func.grad(lambda s: root(t.detach(), s).sum())(s.detach())
    (expected,) = torch.autograd.grad(root(t, s).sum(), s)
    torch.testing.assert_close(gs, expected)


# ---------------------------------------------------------------- fixed_point
def _phi(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Inverse of ``y = x + a·sin(x)`` (``|a| < 1``: ``x <- y - a·sin(x)`` contracts)."""
    return y - a * torch.sin(x)


@pytest.mark.parametrize(("lip", "budget"), [(0.5, 200), (0.9, 400)])
def test_fixed_point_reaches_the_stated_tolerance(lip: float, budget: int) -> None:
    y = torch.linspace(-10, 10, 201, dtype=F64)
    a = torch.tensor(lip, dtype=F64)
    x = fixed_point(_phi, y, y, a, name="test residual", max_iter=budget)
    assert torch.all((_phi(x, y, a) - x).abs() <= 1e-12 * (1 + x.abs()))
    torch.testing.assert_close(x + a * torch.sin(x), y, rtol=0, atol=1e-10)


def test_fixed_point_raises_when_the_map_does_not_contract() -> None:
    y = torch.linspace(0.1, 1, 5, dtype=F64)
    a = torch.tensor(3.0, dtype=F64)  # Lip = 3: the iteration wanders
    with pytest.raises(FloatingPointError, match=r"test residual: the fixed-point iteration"):
        fixed_point(_phi, y, y, a, name="test residual", max_iter=50)


def test_fixed_point_under_tracing_returns_nan_where_it_did_not_converge() -> None:
    y = torch.linspace(0.1, 1, 5, dtype=F64)
    a = torch.tensor([0.5, 0.5, 3.0, 0.5, 0.5], dtype=F64)
    x = torch.func.vmap(lambda y, a: fixed_point(_phi, y, y, a, name="t", max_iter=50))(y, a)
    assert x[2].isnan() and not x[[0, 1, 3, 4]].isnan().any()


def test_fixed_point_gradients_are_the_implicit_ones() -> None:
    y = torch.randn(5, dtype=F64, requires_grad=True)
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def solve(y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return fixed_point(_phi, y, y, a, name="t")

    assert torch.autograd.gradcheck(solve, (y, a))
    x = solve(y, a)
    (gy,) = torch.autograd.grad(x.sum(), y)
    torch.testing.assert_close(gy, 1 / (1 + a.detach() * torch.cos(x.detach())))
    both = torch.func.grad(lambda y, a: solve(y, a).sum(), argnums=(0, 1))(y.detach(), a.detach())
    expected = torch.autograd.grad(solve(y, a).sum(), (y, a))
    for g, h in zip(both, expected, strict=True):
        torch.testing.assert_close(g, h)
    per_row = torch.func.vmap(torch.func.grad(lambda y: solve(y, a.detach()).sum()))(y.detach())
    torch.testing.assert_close(per_row, gy)


def test_fixed_point_refuses_a_map_that_hides_a_parameter() -> None:
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    y = torch.randn(3, dtype=F64)
    with pytest.raises(ValueError, match="not one of args"):
        fixed_point(lambda x, y: y - a * torch.sin(x), y, y, name="t")


def test_a_fixed_point_iteration_that_diverges_to_infinity_raises() -> None:
    y = torch.tensor([0.5, 1.0], dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="diverging"):
        fixed_point(lambda x, y: y + 3 * x, y, y, name="diverging", max_iter=2000)
    # an entry that starts non-finite passes through (NaN in, NaN out)
    start = torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    out = fixed_point(lambda x, y: y - 0.5 * torch.sin(x), start, start, name="nan")
    assert out[0].isnan() and out[1].isfinite()
