"""Tests of block neural autoregressive transforms (BlockNAF) beyond the conformance suite."""

from __future__ import annotations

import pytest
import torch

from exactflow import transforms as T


def bnaf(
    features: int = 4, hidden: tuple[int, ...] = (12, 8), context: int = 0, **kw
) -> T.BlockNAF:
    """A float64 BlockNAF whose weights are moved well away from their start."""
    torch.manual_seed(0)
    t = T.BlockNAF(features, hidden, context, **kw).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return t


def jacobians(t: T.BlockNAF, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """The autograd Jacobian ``∂y/∂x`` of every row, ``(N, D, D)``."""

    def single(xi: torch.Tensor, ci: torch.Tensor | None) -> torch.Tensor:
        return t(xi[None], None if ci is None else ci[None])[0][0]

    rows = [torch.func.jacrev(single)(x[i], None if c is None else c[i]) for i in range(len(x))]
    return torch.stack(rows)


@pytest.mark.parametrize(
    ("features", "hidden", "context"),
    [(1, (4,), 0), (3, (6, 6), 0), (4, (8, 12, 4), 2), (5, (7,), 3)],
    ids=["1d", "3d-two-layers", "4d-three-layers-context", "5d-rounded-widths-context"],
)
def test_log_det_is_the_brute_force_slogdet_and_the_jacobian_is_lower_triangular(
    features: int, hidden: tuple[int, ...], context: int
) -> None:
    t = bnaf(features, hidden, context)
    x = 2 * torch.randn(8, features, dtype=torch.float64)
    c = torch.randn(8, context, dtype=torch.float64) if context else None
    jac = jacobians(t, x, c)
    assert torch.equal(jac.triu(1), torch.zeros_like(jac))
    assert bool((jac.diagonal(dim1=-2, dim2=-1) > 0).all())
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert bool((sign > 0).all())
    torch.testing.assert_close(t(x, c)[1], logabsdet, rtol=0, atol=1e-10)


def test_units_per_coordinate_round_the_widths_up() -> None:
    t = T.BlockNAF(3, hidden=(7, 3))
    assert [(m.fan_in, m.fan_out) for m in t.layers] == [(1, 3), (3, 1), (1, 1)]


def test_inverse_round_trip_and_gradients() -> None:
    t = bnaf(4, (8, 8), context=2)
    y = 3 * torch.randn(16, 4, dtype=torch.float64)
    c = torch.randn(16, 2, dtype=torch.float64)
    x, inv_ladj = t.inverse(y, c)
    again, ladj = t(x, c)
    torch.testing.assert_close(again, y, rtol=0, atol=1e-10)
    torch.testing.assert_close(inv_ladj, -ladj, rtol=0, atol=1e-10)
    # Implicit gradients: d x / d gate against finite differences.
    (grad,) = torch.autograd.grad(x.sum(), t.gate)
    step = 1e-6
    with torch.no_grad():
        t.gate[1] += step
        plus = t.inverse(y, c)[0].sum()
        t.gate[1] -= 2 * step
        minus = t.inverse(y, c)[0].sum()
        t.gate[1] += step
    torch.testing.assert_close(grad[1], (plus - minus) / (2 * step), rtol=1e-5, atol=1e-7)


def test_onto_the_reals_far_out() -> None:
    # The gated residual makes every coordinate's map onto R: far targets still invert.
    t = bnaf(3, (6,))
    y = torch.tensor([[-1e3, 50.0, 1e3], [1e3, -1e3, -50.0]], dtype=torch.float64)
    x, _ = t.inverse(y)
    torch.testing.assert_close(t(x)[0], y, rtol=1e-12, atol=1e-9)
    out, ladj = t(torch.tensor([[-1e4, 0.0, 1e4]], dtype=torch.float64))
    assert bool(out.isfinite().all()) and bool(ladj.isfinite().all())


def test_log_det_stays_finite_for_saturated_units() -> None:
    t = bnaf(2, (8,))
    with torch.no_grad():
        for layer in t.layers:
            layer.log_scale.add_(4.0)  # pre-activations far into tanh's flat tails
    x = (30 * torch.randn(32, 2, dtype=torch.float64)).requires_grad_()
    y, ladj = t(x)
    assert bool(ladj.isfinite().all())
    (ladj.sum() + y.sum()).backward()
    assert bool(x.grad.isfinite().all())
    assert all(bool(p.grad.isfinite().all()) for p in t.parameters())


def test_inverse_raises_when_it_does_not_converge() -> None:
    t = bnaf(3, (6,), max_iter=1)
    y = 3 * torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(
        FloatingPointError, match=r"BlockNAF\(features=3\): inverse of coordinate 0.*residual"
    ):
        t.inverse(y)


def test_context_is_required_and_checked() -> None:
    t = T.BlockNAF(3, (6,), context=2)
    with pytest.raises(ValueError, match=r"BlockNAF is conditional"):
        t(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"context of shape \(\.\.\., 2\), got \(4, 5\)"):
        t.inverse(torch.randn(4, 3), torch.randn(4, 5))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="features must be an int >= 1, got 0"):
        T.BlockNAF(0)
    with pytest.raises(ValueError, match=r"hidden must be one or more widths >= 1, got \(\)"):
        T.BlockNAF(2, hidden=())
    with pytest.raises(ValueError, match="context must be an int >= 0, got -1"):
        T.BlockNAF(2, context=-1)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1, got 0"):
        T.BlockNAF(2, max_iter=0)
