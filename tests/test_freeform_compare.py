"""Smoke runs of ``benchmarks/freeform_compare.py``: its adapters, cache and report.

The exactflow rows run everywhere; the peers' adapters (zuko, normflows) are tested only where
those libraries are installed, e.g. in the benchmark's own environment::

    PYTHONPATH=/path/to/site-packages-with-zuko-and-normflows pytest tests/test_freeform_compare.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import exactflow as ef

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import freeform_compare as bench

needs_peers = pytest.mark.skipif(
    importlib.util.find_spec("zuko") is None or importlib.util.find_spec("normflows") is None,
    reason="the peers (zuko, normflows) are not installed in this environment",
)
QUICK = ["--quick", "--tasks", "8gaussians", "--models", "ResidualFlow", "NSF"]


def test_quality_part_caches_every_result_and_resumes(tmp_path: Path, monkeypatch) -> None:
    bench.main([*QUICK, "--part", "quality", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "freeform_compare_quick.json").read_text())
    entries = data["quality"]
    assert set(entries) == {"8gaussians|ResidualFlow|0", "8gaussians|NSF|0"}
    for entry in entries.values():
        assert "error" not in entry
        assert entry["steps"] == 40 and entry["budget"]["steps"] == 40
        # A trained flow is closer to the target than the untrained one: KL gap below 5 nats.
        assert 0.0 < entry["paired"] < 5.0
    table = (tmp_path / "freeform_compare_quick.md").read_text()
    assert "| ResidualFlow | residual | exactflow |" in table
    assert "| NSF | reference | exactflow |" in table

    def refit(*args: object) -> dict:
        raise AssertionError("a cached result was fitted again")

    monkeypatch.setattr(bench, "fit_one", refit)
    bench.main([*QUICK, "--part", "quality", "--out", str(tmp_path)])  # all cached: no fit
    again = json.loads((tmp_path / "freeform_compare_quick.json").read_text())["quality"]
    assert again == entries
    # A different budget is not the cached one: it is fitted again (and here fails loudly).
    bench.main([*QUICK, "--part", "quality", "--steps", "41", "--out", str(tmp_path)])
    entries = json.loads((tmp_path / "freeform_compare_quick.json").read_text())["quality"]
    assert "cached result was fitted again" in entries["8gaussians|NSF|0"]["error"]


def test_speed_part_times_every_model(tmp_path: Path) -> None:
    bench.main([*QUICK, "--part", "speed", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "freeform_compare_quick.json").read_text())["speed"]
    assert list(rows["8gaussians"]) == ["ResidualFlow", "NSF"]
    for row in rows["8gaussians"].values():
        assert row["step_ms"] > 0 and row["eval_ms"] > 0 and row["nfe"] == 0
    bench.main([*QUICK, "--part", "table", "--out", str(tmp_path)])
    table = (tmp_path / "freeform_compare_quick.md").read_text()
    assert "time per training step and per exact evaluation" in table


def test_a_missing_preset_is_reported_not_run(monkeypatch) -> None:
    assert bench.missing("NSF") is None
    monkeypatch.delattr(ef.flows, "NSF")
    assert bench.missing("NSF") == "not available (no ef.flows.NSF)"


def test_verdicts_compare_with_the_best_peer_within_the_spread() -> None:
    gaps = {"ResidualFlow": [0.30, 0.34], "normflows Residual": [0.20, 0.30]}
    (line,) = bench.quality_verdicts(gaps)
    assert "0.320 vs normflows Residual 0.250" in line and line.endswith("yes.")
    gaps["ResidualFlow"] = [0.50, 0.52]
    (line,) = bench.quality_verdicts(gaps)
    assert line.endswith("**no**.")


def test_peer_objective_rejects_an_exactflow_flow() -> None:
    with pytest.raises(TypeError, match="PeerNLL trains a PeerFlow, got ResidualFlow"):
        bench.PeerNLL().check_model(ef.flows.ResidualFlow(2, transforms=1, hidden=(8,)))


@needs_peers
@pytest.mark.parametrize("features", [2, 3])
def test_normflows_exact_evaluation_is_the_jacobian_log_determinant(features: int) -> None:
    model = bench.build("normflows Residual", features, seed=0)
    x = torch.randn(64, features, generator=torch.Generator().manual_seed(1))
    model.train().log_prob(x).mean().backward()  # initializes ActNorm
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval().double()
    x = x[:8].double()
    exact = model.exact_log_prob(x)

    def to_base(row: torch.Tensor) -> torch.Tensor:
        z = row[None]
        for layer in reversed(model.flow.flows):
            residual = isinstance(layer, nf.flows.Residual)
            z = layer.iresblock.forward(z) if residual else layer.inverse(z)[0]
        return z[0]

    import normflows as nf

    for i, row in enumerate(x):
        jacobian = torch.autograd.functional.jacobian(to_base, row)
        base = model.flow.q0.log_prob(to_base(row)[None])[0]
        assert torch.allclose(exact[i], base + torch.linalg.slogdet(jacobian).logabsdet)
    if features == 2:  # normflows' own exact 2x2 determinant agrees
        assert torch.allclose(exact, model.flow.log_prob(x), atol=1e-10)


@needs_peers
def test_zuko_cnf_estimates_in_training_and_is_exact_and_counted_in_eval() -> None:
    model = bench.build("zuko CNF", 3, seed=0)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        estimates = [model.train().log_prob(x) for _ in range(2)]
        exact = [model.eval().log_prob(x) for _ in range(2)]
    assert not torch.allclose(estimates[0], estimates[1])  # Hutchinson: a fresh probe per call
    assert torch.equal(exact[0], exact[1])
    assert bench.nfe_of(model) >= 6  # at least one Dormand-Prince step
