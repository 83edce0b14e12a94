"""The neural autoregressive presets NAF, UMNN and BNAF: densities, training, specs, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

import exactflow as ef
from exactflow.cli.main import main
from exactflow.train import TrainConfig, fit

SMALL: dict[str, dict] = {
    "NAF": dict(hidden=(16,), sigmoids=4),
    "UMNN": dict(hidden=(16,), integrand=(8,), embedding=4, nodes=9),
    "BNAF": dict(hidden=(16,)),
}
NAMES = list(SMALL)


def preset(name: str, features: int = 2, context: int = 0, transforms: int = 2) -> ef.Flow:
    torch.manual_seed(0)
    cls = getattr(ef.flows, name)
    return cls(features=features, context=context, transforms=transforms, **SMALL[name])


def perturbed(flow: ef.Flow, scale: float = 0.2) -> ef.Flow:
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def banana(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, n, generator=generator)
    return torch.stack([a, 0.5 * a**2 + 0.5 * b - 0.5], -1)


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name: str) -> None:
    # A midpoint rule on a 600 x 600 grid over [-20, 20]^2 (perturbed flows spread wide: a
    # BNAF puts 4e-3 of its mass outside [-10, 10]^2); UMNN's quadrature refines per chunk.
    flow = perturbed(preset(name)).double().eval()
    n, lo, hi = 600, -20.0, 20.0
    h = (hi - lo) / n
    axis = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    points = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = torch.cat([flow.log_prob(p).exp() for p in points.split(20_000)])
    assert abs(float(density.sum()) * h * h - 1) < 2e-3


@pytest.mark.parametrize("name", NAMES)
def test_a_short_fit_lowers_the_nll(name: str) -> None:
    flow = preset(name)
    x = banana(640)
    with torch.no_grad():
        before = -flow.eval().log_prob(x[512:]).mean().item()
    config = TrainConfig(epochs=4, batch_size=64, lr=3e-2, patience=None, tensorboard=False)
    result = fit(flow, ef.objectives.NLL(), x[:512], config, val=x[512:], progress=False)
    assert result.best_val_nll < before - 0.3
    assert not result.flow.training


@pytest.mark.parametrize("name", NAMES)
def test_conditional_shapes_and_sampling(name: str) -> None:
    flow = perturbed(preset(name, features=3, context=2)).eval()
    c = torch.randn(4, 2)
    assert flow.log_prob(torch.randn(5, 4, 3), c).shape == (5, 4)
    samples = flow.sample((5,), c)
    assert samples.shape == (5, 4, 3) and bool(samples.isfinite().all())
    with pytest.raises(ValueError, match="needs context"):
        flow.sample((2,))


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_the_flow_from_json_and_the_registry(name: str) -> None:
    flow = perturbed(preset(name, features=3, context=2))
    config = json.loads(json.dumps(flow.config))
    assert config == flow.config
    spec = ef.registry.spec_of(flow)
    assert spec == {"name": name, "kwargs": flow.config}
    rebuilt = ef.registry.build(spec)
    rebuilt.load_state_dict(flow.state_dict())
    x, c = torch.randn(5, 3), torch.randn(5, 2)
    torch.testing.assert_close(rebuilt.eval().log_prob(x, c), flow.eval().log_prob(x, c))


@pytest.mark.parametrize("name", NAMES)
def test_rejects_bad_arguments(name: str) -> None:
    cls = getattr(ef.flows, name)
    with pytest.raises(ValueError, match="transforms must be >= 1"):
        cls(features=3, transforms=0)
    if name != "BNAF":
        with pytest.raises(ValueError, match="permutation must be one of"):
            cls(features=3, permutation="shuffle")


def test_defaults() -> None:
    assert ef.flows.NAF(features=2).config == dict(
        features=2,
        context=0,
        transforms=3,
        hidden=[64, 64],
        sigmoids=8,
        permutation="reverse",
        residual=False,
        seed=0,
    )
    assert ef.flows.UMNN(features=2).config["integrand"] == [32, 32]
    bnaf = ef.flows.BNAF(features=2)
    assert bnaf.config == dict(features=2, context=0, transforms=3, hidden=[64, 64])
    # Three BlockNAF steps with the coordinates reversed between them.
    assert [type(t).__name__ for t in bnaf.transform] == [
        "BlockNAF",
        "Reverse",
        "BlockNAF",
        "Reverse",
        "BlockNAF",
    ]


@pytest.mark.parametrize("flow", ["naf", "umnn", "bnaf"])
def test_cli_fits_each_preset(flow: str, tmp_path: Path) -> None:
    out = tmp_path / flow
    argv = ["fit", "--data", "moons", "--flow", flow, "--out", out, "--n-train", "300",
            "--n-val", "100", "--n-test", "100", "--epochs", "1", "--hidden", "8",
            "--transforms", "2", "--no-progress", "--no-plots"]  # fmt: skip
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([str(a) for a in argv])
    assert code == 0, buffer.getvalue()
    assert "test NLL" in buffer.getvalue()
    record = json.loads((out / "run.json").read_text())
    assert record["flow"]["name"] == flow.upper()
