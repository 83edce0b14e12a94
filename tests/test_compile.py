"""torch.compile (CPU inductor) on a flow's log_prob, its gradients and its sampling."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef


@pytest.fixture(scope="module")
def inductor() -> None:
    """Skip when inductor cannot build CPU kernels here (no C++ compiler, ...)."""
    try:
        torch.compile(lambda x: x.exp() + 1)(torch.ones(2))
    except Exception as error:  # any build failure means "cannot test here", not a bug
        pytest.skip(f"torch.compile cannot build CPU kernels here: {error}")


def _flow() -> ef.Flow:
    """An affine and a spline autoregressive layer: both elementwise maps, D-step sampling."""
    torch.manual_seed(0)
    T = ef.transforms
    layers = [
        T.MaskedAutoregressive(T.AffineMap(), 3, hidden=(8, 8)),
        T.MaskedAutoregressive(T.RationalQuadraticSpline(bins=3), 3, hidden=(8,), order=[3, 1, 2]),
    ]
    flow = ef.Flow(T.Compose(layers), ef.distributions.StandardNormal(3))
    with torch.no_grad():  # move away from the identity start
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def test_compiled_log_prob_and_sample_match_eager(inductor: None) -> None:
    flow = _flow()
    x = torch.randn(6, 3)
    torch.compiler.reset()  # other tests compiled Flow.log_prob for other flows
    log_prob = torch.compile(flow.log_prob, fullgraph=True)
    compiled = log_prob(x)
    eager = flow.log_prob(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    params = list(flow.parameters())
    compiled_grads = torch.autograd.grad(compiled.sum(), params)
    for g, h in zip(compiled_grads, torch.autograd.grad(eager.sum(), params), strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5)
    # Inductor draws its own random numbers unless told to use eager's.
    with torch._inductor.config.patch(fallback_random=True):
        sample = torch.compile(flow.sample)
        torch.manual_seed(1)
        drawn = sample((5,))
    torch.manual_seed(1)
    torch.testing.assert_close(drawn, flow.sample((5,)), rtol=1e-5, atol=1e-5)
