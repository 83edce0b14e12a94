"""Presets NICE, RealNVP, MAF, IAF, NSF: conditional shapes, context errors, configs, passes."""

from __future__ import annotations

import json

import pytest
import torch

import exactflow as ef

SMALL = dict(transforms=2, hidden=(8, 8))
PRESETS = {
    "NICE": {},
    "RealNVP": {},
    "MAF": {},
    "IAF": {},
    "NSF": dict(bins=4),
    "NSF-coupling": dict(bins=4, coupling=True),
}


def _flow(name: str, features: int = 3, context: int = 0, **extra: object) -> ef.Flow:
    torch.manual_seed(0)
    cls = getattr(ef.flows, name.split("-")[0])
    return cls(features=features, context=context, **SMALL, **PRESETS[name], **extra)


@pytest.mark.parametrize("name", PRESETS)
def test_conditional_sample_and_log_prob_shapes(name: str) -> None:
    flow = _flow(name, context=2)
    assert flow.context == 2
    c = torch.randn(2)
    assert flow.sample((5,), context=c).shape == (5, 3)
    assert flow.log_prob(torch.randn(5, 3), context=c).shape == (5,)
    cs = torch.randn(4, 2)
    x = flow.sample((5,), context=cs)
    assert x.shape == (5, 4, 3)
    assert flow.log_prob(x, context=cs).shape == (5, 4)
    x, log_p = flow.rsample_and_log_prob((6,), context=cs)
    assert x.shape == (6, 4, 3)
    torch.testing.assert_close(log_p, flow.log_prob(x, context=cs), atol=1e-4, rtol=1e-4)
    dist = flow(cs)
    assert dist.batch_shape == (4,)
    assert dist.sample((7,)).shape == (7, 4, 3)


@pytest.mark.parametrize("name", PRESETS)
def test_unconditional_shapes(name: str) -> None:
    flow = _flow(name)
    assert flow.sample((2, 5)).shape == (2, 5, 3)
    assert flow.log_prob(torch.randn(2, 5, 3)).shape == (2, 5)


@pytest.mark.parametrize("name", ["RealNVP", "MAF", "NSF"])
def test_context_errors_are_clear(name: str) -> None:
    flow = _flow(name, context=2)
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"needs context= of shape \(\.\.\., 2\), got None"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 2\), got \(5, 3\)"):
        flow.log_prob(x, context=torch.randn(5, 3))
    with pytest.raises(ValueError, match="needs context"):
        flow.sample((4,))
    with pytest.raises(ValueError, match="unconditional"):
        _flow(name).log_prob(x, context=torch.randn(5, 2))


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("permutation", ["reverse", "random", "lu"])
def test_config_rebuilds_the_flow_from_json(name: str, permutation: str) -> None:
    flow = _flow(name, context=2, permutation=permutation, seed=3)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    config = json.loads(json.dumps(flow.config))
    assert config == flow.config
    rebuilt = getattr(ef.flows, type(flow).__name__)(**config)
    rebuilt.load_state_dict(flow.state_dict())
    x, c = torch.randn(5, 3), torch.randn(5, 2)
    torch.testing.assert_close(rebuilt.log_prob(x, c), flow.log_prob(x, c))


def test_defaults() -> None:
    flow = ef.flows.MAF(features=4)
    assert flow.config == dict(
        features=4,
        context=0,
        transforms=5,
        hidden=[64, 64],
        permutation="reverse",
        residual=False,
        seed=0,
        scale_bound=3.0,
    )
    assert len(flow.transform) == 5
    assert isinstance(flow.base, ef.distributions.StandardNormal)
    assert ef.flows.NSF(features=4).config["bins"] == 8


@pytest.mark.parametrize("name", ["RealNVP", "MAF", "IAF"])
@pytest.mark.parametrize("scale_bound", [0.5, 1.0, None])
def test_scale_bound_reaches_every_layer(name: str, scale_bound: float | None) -> None:
    flow = getattr(ef.flows, name)(features=3, transforms=2, hidden=(8,), scale_bound=scale_bound)
    maps = [
        m.map
        for m in flow.modules()
        if isinstance(getattr(m, "map", None), ef.transforms.AffineMap)
    ]
    assert len(maps) == 2
    assert all(m.bound == scale_bound for m in maps)
    if scale_bound is not None:
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(3 * torch.randn_like(p))  # raw log-scales well beyond the bound
        ladj = flow.transform(torch.randn(64, 3))[1]
        assert torch.isfinite(ladj).all()
        assert ladj.abs().max() <= 2 * 3 * scale_bound + 1e-5  # 2 layers, 3 coordinates


def test_nice_is_volume_preserving_up_to_its_final_scaling() -> None:
    flow = _flow("NICE", features=4)
    *couplings, scaling = flow.transform
    assert isinstance(scaling, ef.transforms.Affine)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(6, 4)
    _, ladj = flow.transform(x)
    torch.testing.assert_close(ladj, scaling.log_scale.sum().expand(6))
    assert all(isinstance(t.map, ef.transforms.Additive) for t in couplings)


def test_coupling_presets_swap_the_transformed_half() -> None:
    flow = _flow("RealNVP", features=5)
    first, second = flow.transform
    assert first.transformed_index.tolist() == [1, 3]
    assert second.transformed_index.tolist() == [0, 2, 4]


def test_autoregressive_presets_reverse_the_order() -> None:
    flow = _flow("MAF", features=4)
    first, second = flow.transform
    assert first.made.degrees.tolist() == [1, 2, 3, 4]
    assert second.made.degrees.tolist() == [4, 3, 2, 1]
    lu = _flow("MAF", features=4, permutation="lu")
    assert [type(t).__name__ for t in lu.transform] == [
        "MaskedAutoregressive",
        "LULinear",
        "MaskedAutoregressive",
    ]


def _map_calls(flow: ef.Flow) -> list[str]:
    """Record every call of the layers' elementwise maps: one per network pass or per step."""
    calls: list[str] = []
    maps = {
        id(m.map): m.map
        for m in flow.modules()
        if isinstance(m, ef.transforms.MaskedAutoregressive)
    }
    for m in maps.values():
        for direction in ("forward", "inverse"):
            method = getattr(m, direction)

            def counted(*args, _method=method, _direction=direction):
                calls.append(_direction)
                return _method(*args)

            setattr(m, direction, counted)
    return calls


def test_maf_density_is_one_pass_per_layer_and_sampling_d() -> None:
    flow = _flow("MAF", features=4, context=2)
    calls = _map_calls(flow)
    c = torch.randn(3, 2)
    flow.log_prob(torch.randn(3, 4), context=c)
    assert calls == ["forward"] * 2
    calls.clear()
    flow.sample((5,), context=c)
    assert calls == ["inverse"] * (2 * 4)


def test_iaf_sampling_is_one_pass_per_layer_and_density_d() -> None:
    flow = _flow("IAF", features=4, context=2)
    calls = _map_calls(flow)
    c = torch.randn(3, 2)
    flow.rsample_and_log_prob((5,), context=c)
    assert calls == ["forward"] * 2
    calls.clear()
    flow.log_prob(torch.randn(3, 4), context=c)
    assert calls == ["inverse"] * (2 * 4)


@pytest.mark.parametrize("name", ["NICE", "RealNVP", "MAF", "IAF", "NSF"])
def test_rejects_bad_arguments(name: str) -> None:
    cls = getattr(ef.flows, name)
    with pytest.raises(ValueError, match="permutation must be one of"):
        cls(features=3, permutation="shuffle")
    with pytest.raises(ValueError, match="transforms must be >= 1"):
        cls(features=3, transforms=0)


@pytest.mark.parametrize("name", ["MAF", "NSF-coupling"])
def test_a_few_steps_of_maximum_likelihood_lower_the_loss(name: str) -> None:
    torch.manual_seed(0)
    flow = _flow(name, features=2)
    data = torch.randn(256, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([1.0, -1.0])
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    before = -flow.log_prob(data).mean().item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        optimizer.step()
    assert loss.item() < before - 0.3
