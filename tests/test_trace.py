"""Every preset under the tracers: ``vmap``, ``vmap(grad)``, ``torch.export``, ``torch.compile``.

Input validation is on (the presets' default); it must step aside under a tracer
(:func:`exactflow.numerics.tracing`). Also: conditional sampling under ``vmap``, empty sample
shapes, and ``expand`` of an unconditional flow's distribution view.
"""

from __future__ import annotations

import pytest
import torch

import exactflow as ef

FEATURES = 3
IMAGE = (1, 4, 4)
# Small conditioners keep the suite fast; every other argument is the preset's default.
SMALL: dict[str, dict] = {
    name: dict(hidden=(8,))
    for name in ("NICE", "RealNVP", "MAF", "IAF", "NSF", "FFJORD", "NAF", "UMNN", "BNAF")
}
# Image presets: (class name, keywords) of small multi-scale flows on 1x4x4 images.
IMAGES: dict[str, tuple[str, dict]] = {
    "Glow": ("Glow", dict(shape=IMAGE, levels=1, steps=1, hidden=4)),
    "RealNVP-image": ("RealNVP", dict(shape=IMAGE, levels=1, steps=1, hidden=(4,))),
}
NAMES = [*(n for n in ef.flows.__all__ if n != "Glow"), *IMAGES]


def _flow(name: str, context: int = 0) -> ef.Flow:
    torch.manual_seed(0)
    if name in IMAGES:
        preset, kwargs = IMAGES[name]
        flow = getattr(ef.flows, preset)(context=context, **kwargs)
    else:
        kwargs = dict(features=FEATURES, context=context, transforms=1, **SMALL.get(name, {}))
        flow = getattr(ef.flows, name)(**kwargs)
    with torch.no_grad():  # move away from the identity start
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow.eval()


def _event(name: str) -> tuple[int, ...]:
    return IMAGE if name in IMAGES else (FEATURES,)


def _x(name: str, n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name in IMAGES:  # pixels inside (0, 1), the logit's domain
        return 0.05 + 0.9 * torch.rand(n, *IMAGE, generator=g)
    return torch.randn(n, FEATURES, generator=g)


class _LogProb(torch.nn.Module):
    """``flow.log_prob`` as a module's forward, for ``torch.export``."""

    def __init__(self, flow: ef.Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_log_prob_and_grad(name: str) -> None:
    flow, x = _flow(name), _x(name)
    assert flow.validate
    eager = flow.log_prob(x)
    torch.testing.assert_close(torch.func.vmap(flow.log_prob)(x), eager)
    score = torch.func.vmap(torch.func.grad(flow.log_prob))(x)
    xg = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(flow.log_prob(xg).sum(), xg)
    torch.testing.assert_close(score, expected)


@pytest.mark.parametrize("name", NAMES)
def test_export_log_prob(name: str) -> None:
    flow, x = _flow(name), _x(name)
    exported = torch.export.export(_LogProb(flow), (x,))
    torch.testing.assert_close(exported.module()(x), flow.log_prob(x))


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph_log_prob(name: str) -> None:
    # aot_eager traces the whole graph (dynamo + autograd) without generating kernels, which
    # tests/test_compile.py covers once with inductor.
    if name == "FFJORD":  # traced, its ODE solve is a fixed RK4 grid, unrolled by the compiler
        pytest.skip("FFJORD: compiling the unrolled RK4 solve takes minutes; export covers it")
    flow, x = _flow(name), _x(name)
    # One Flow.log_prob code object serves every flow: each new flow is a recompile of it, and
    # a long session would hit dynamo's recompile limit. Start from a clean cache.
    torch.compiler.reset()
    compiled = torch.compile(flow.log_prob, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), flow.log_prob(x))


@pytest.mark.parametrize("name", NAMES)
def test_vmap_conditional_sampling(name: str) -> None:
    flow = _flow(name, context=2)
    contexts = torch.randn(5, 2)
    draw = torch.func.vmap(lambda c: flow.sample((3,), c), randomness="different")
    samples = draw(contexts)
    assert samples.shape == (5, 3, *_event(name))
    assert torch.isfinite(samples).all()
    # Same randomness for every context: each row is what a direct call draws.
    same = torch.func.vmap(lambda c: flow.sample((3,), c), randomness="same")
    torch.manual_seed(2)
    drawn = same(contexts)
    torch.manual_seed(2)
    torch.testing.assert_close(drawn[1], flow.sample((3,), contexts[1]))


@pytest.mark.parametrize("name", NAMES)
def test_empty_sample_shape(name: str) -> None:
    assert _flow(name).sample((0,)).shape == (0, *_event(name))
    conditional = _flow(name, context=2)
    assert conditional.sample((0,), torch.randn(2)).shape == (0, *_event(name))
    assert conditional.sample((2,), torch.randn(0, 2)).shape == (2, 0, *_event(name))


@pytest.mark.parametrize("name", NAMES)
def test_unconditional_distribution_expands(name: str) -> None:
    flow = _flow(name)
    dist = flow().expand((4,))
    assert dist.batch_shape == (4,) and dist.event_shape == _event(name)
    samples = dist.sample((2,))
    assert samples.shape == (2, 4, *_event(name))
    assert dist.log_prob(samples).shape == (2, 4)
    assert dist.log_prob(_x(name, 1)[0]).shape == (4,)
