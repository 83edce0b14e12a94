"""The spline's one-node forward pass against its composed form: values, gradients, orders.

Outside tracers :meth:`RationalQuadraticSpline.forward` runs as one autograd node with a
hand-written backward; under tracers it is composed of torch operations. Both must give the
same values to the bit and the same gradients up to rounding, also at the knots, on the bounds,
far outside them and with extreme parameters; the hand-written backward must pass
``gradcheck``, and higher-order gradients must be right too.
"""

from __future__ import annotations

import pytest
import torch

from exactflow.transforms import RationalQuadraticSpline
from exactflow.transforms.spline_kernel import _SplineForward


def _inputs(spline: RationalQuadraticSpline, n: int, dtype: torch.dtype, seed: int) -> tuple:
    """``x (n, 3)`` mixing inner points, the knots, the bounds and far values; ``params``."""
    generator = torch.Generator().manual_seed(seed)
    params = torch.randn(n, 3, spline.params, generator=generator, dtype=dtype) * 3
    x = torch.randn(n, 3, generator=generator, dtype=dtype) * spline.bound
    knots = spline.knots(params)[0]  # (n, 3, K + 1)
    x[: n // 4] = knots[: n // 4, :, 1 % (spline.bins + 1)]  # exactly on a knot
    x[n // 4, 0], x[n // 4, 1], x[n // 4, 2] = spline.bound, -spline.bound, 1e30
    x[n // 4 + 1] = torch.tensor([-1e30, 7.5, -6.0], dtype=dtype)
    return x, params


@pytest.mark.parametrize("bins", [1, 2, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_values_and_gradients_as_the_composed_form(bins: int, dtype: torch.dtype) -> None:
    spline = RationalQuadraticSpline(bins=bins, bound=3.0)
    x, params = _inputs(spline, 64, dtype, seed=bins)
    results = []
    for forward in (spline.forward, spline.composed_forward):
        xg, pg = x.clone().requires_grad_(), params.clone().requires_grad_()
        y, ladj = forward(xg, pg)
        weights = torch.linspace(-1, 2, y.numel(), dtype=dtype).view_as(y)
        (y * weights + ladj * weights.flip(0)).sum().backward()
        results.append((y.detach(), ladj.detach(), xg.grad, pg.grad))
    fused, composed = results
    assert torch.equal(fused[0], composed[0]) and torch.equal(fused[1], composed[1])
    # Rounding differs between the two orders of operations: compare on the gradients' scale
    # (on the bounds the parameter gradients are sums of large terms that cancel to zero).
    tolerance = {torch.float32: 1e-4, torch.float64: 1e-12}[dtype]
    for a, b in zip(fused[2:], composed[2:], strict=True):
        assert torch.isfinite(a).all()
        scale = max(float(b.abs().max()), 1.0)
        torch.testing.assert_close(a, b, rtol=0.0, atol=tolerance * scale)


@pytest.mark.parametrize("bins", [1, 3, 6])
def test_backward_passes_gradcheck_and_gradgradcheck(bins: int) -> None:
    spline = RationalQuadraticSpline(bins=bins, bound=2.0)
    generator = torch.Generator().manual_seed(bins)
    x = torch.randn(24, generator=generator, dtype=torch.float64) * 1.5
    x[0], x[1] = 4.0, -3.0  # outside: identity, no parameter gradient
    params = torch.randn(24, spline.params, generator=generator, dtype=torch.float64)
    x.requires_grad_()
    params.requires_grad_()

    def node(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _SplineForward.apply(a, b, spline)

    assert torch.autograd.gradcheck(node, (x, params))
    assert torch.autograd.gradgradcheck(node, (x, params))


def test_one_output_or_one_input_needing_a_gradient() -> None:
    spline = RationalQuadraticSpline(bins=4, bound=3.0)
    x, params = _inputs(spline, 16, torch.float64, seed=0)
    for wants in ((True, False), (False, True)):
        for output in (0, 1):
            grads = []
            for forward in (spline.forward, spline.composed_forward):
                xg = x.clone().requires_grad_(wants[0])
                pg = params.clone().requires_grad_(wants[1])
                forward(xg, pg)[output].sum().backward()
                grads.append(xg.grad if wants[0] else pg.grad)
            torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


def test_parameters_shared_over_a_batch_get_summed_gradients() -> None:
    spline = RationalQuadraticSpline(bins=5, bound=3.0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64) * 2
    shared = torch.randn(4, spline.params, generator=generator, dtype=torch.float64)
    grads = []
    for forward in (spline.forward, spline.composed_forward):
        pg = shared.clone().requires_grad_()
        y, ladj = forward(x, pg)
        (y.square().sum() + ladj.sum()).backward()
        grads.append(pg.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


def test_second_derivatives_match_the_composed_form() -> None:
    spline = RationalQuadraticSpline(bins=6, bound=3.0)
    x, params = _inputs(spline, 12, torch.float64, seed=3)
    hessians = []
    for forward in (spline.forward, spline.composed_forward):
        xg = x.clone().requires_grad_()
        pg = params.clone().requires_grad_()
        y, ladj = forward(xg, pg)
        (gx,) = torch.autograd.grad((y.square() + ladj).sum(), xg, create_graph=True)
        hessians.append(torch.autograd.grad(gx.sum(), (xg, pg)))
    for a, b in zip(*hessians, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
