"""The width-scaling benchmark's pieces at tiny sizes: adapters, sampling ways, memory, tables."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import scaling

MODELS = ("MAF", "RealNVP", "NSF")


def needs(library: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        library != "exactflow" and importlib.util.find_spec(library) is None,
        reason=f"{library} is not installed in this environment (the benchmark's peer)",
    )


@pytest.mark.parametrize(
    "library", [pytest.param(lib, marks=needs(lib)) for lib in scaling.LIBRARIES]
)
@pytest.mark.parametrize("model", MODELS)
def test_every_library_gives_a_finite_density_at_d4(library: str, model: str) -> None:
    m = scaling.build(library, model, 4, seed=0)
    x = scaling.batch(4, rows=8)
    log_prob = m.log_prob(x)
    assert log_prob.shape == (8,)
    assert torch.isfinite(log_prob).all()
    with torch.no_grad():
        assert m.sample(3).shape == (3, 4)


@pytest.mark.parametrize("model", scaling.AUTOREGRESSIVE)
def test_sampling_ways_draw_the_same_points(model: str) -> None:
    draws = []
    for way in scaling.WAYS:
        m = scaling.sampling_way(model, 5, way)
        torch.manual_seed(3)
        with torch.no_grad():
            draws.append(m.sample(16))
    for way, draw in zip(scaling.WAYS[1:], draws[1:], strict=True):
        torch.testing.assert_close(draw, draws[0], atol=1e-4, rtol=1e-4, msg=way)


def test_sampling_ways_replace_the_shipped_autoregress() -> None:
    shipped = scaling.sampling_way("MAF", 3, scaling.WAYS[0]).module
    passes = scaling.sampling_way("MAF", 3, scaling.WAYS[2]).module
    made = next(m for m in passes.modules() if isinstance(m, scaling.MADE))
    assert "autoregress" in vars(made)
    assert not any("autoregress" in vars(m) for m in shipped.modules())


def test_child_measures_a_step() -> None:
    result = scaling.child("exactflow", "MAF", 4, threads=1)
    # MAF at D = 4 holds at least its parameters (5 MADEs of 128-128) for backward.
    assert result["saved_mib"] > 0.3
    assert math.isfinite(result["peak_mib"])


def test_report_gives_ratios_and_verdicts() -> None:
    def speed(ef: float, zuko: float, nflows: float, draw: float) -> dict:
        row = {"log_prob_rate": 1000.0, "sample_rate": draw}
        return {
            "sample_rows": 64,
            "exactflow": {"step_ms": ef, **row},
            "zuko": {"step_ms": zuko, **row, "sample_rate": 100.0},
            "nflows": {"step_ms": nflows, **row, "sample_rate": 50.0},
            "bare": {"step_ms": 0.5, "log_prob_rate": 1e4, "sample_rate": math.nan},
        }

    cells = {
        ("speed", "MAF", 2): speed(1.0, 2.0, 4.0, draw=300.0),
        ("speed", "MAF", 16): speed(3.0, 2.0, 4.0, draw=150.0),
        ("sampling", "MAF", 2): {"sample_rows": 64, **dict.fromkeys(scaling.WAYS, 10.0)},
    }
    text = scaling.report(cells, ("MAF",), (2, 16), threads=2)
    assert "| 2 | 1.00 | 2.00 | 4.00 | 0.50 | 0.50x | 2.00x |" in text
    assert "| 16 | 3.00 | 2.00 | 4.00 | 0.50 | 1.50x | 6.00x |" in text
    assert "step ≤ the fastest peer's: met at D = 2; **missed** at D = 16" in text
    assert "sampling ≥ 2x the fastest peer's: met at D = 2; **missed** at D = 16" in text
    assert "| 2 | 64 | 300 | 100 | 50 | 3.00x | 10 | 10 | 10 | 1.00x |" in text
    # No memory cell was measured: its rows show dashes, not made-up figures.
    assert "| 2 | — | — | — | — | — | — | — | — |" in text
