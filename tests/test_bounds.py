"""Bounded columns: ``bounds=`` on the presets, the bound maps, and ``exactflow fit --bounds``.

The conformance checks of :class:`~exactflow.transforms.Bounds` (Jacobian against autograd in
float64, round trips) run with the registry's (``tests/cases/bounds.py``); these tests cover
what a bounded flow promises: ``-inf`` outside (never NaN, never an error), mass one on the
box, samples strictly inside, and the bounds surviving configs, checkpoints and the CLI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import exactflow as ef
from exactflow.cli.arguments import bounds as parse_bounds
from exactflow.cli.main import main
from exactflow.transforms import Bounds, bounds_config, check_bounds

BOX = [(0.0, 1.0), (-1.0, 2.0)]
MIXED = [(0.0, 1.0), (0.0, None), (None, 5.0), None]


def _pairs(bounds: list) -> list[tuple[float, float]]:
    return check_bounds(bounds, len(bounds))


def _perturbed(flow: ef.Flow, scale: float, seed: int = 0) -> ef.Flow:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow.eval()


def _inside(x: torch.Tensor, pairs: list[tuple[float, float]]) -> torch.Tensor:
    low = torch.tensor([p[0] for p in pairs], dtype=torch.float64).to(x.dtype)
    high = torch.tensor([p[1] for p in pairs], dtype=torch.float64).to(x.dtype)
    return (x > low) & (x < high)


# ---------------------------------------------------------------------------- the bounds value
@pytest.mark.parametrize(
    ("bounds", "match"),
    [
        ([(0, 1), (2, 1)], r"column 1: low must be < high, got \(2.0, 1.0\)"),
        ([(0, 1), (1, 1)], r"column 1: low must be < high"),
        ([(0, math.nan), None], r"column 0: high is NaN"),
        ([(0, 1)] * 3, r"one entry per column \(2\), got 3"),
        ([(0, 1, 2), None], r"column 0 must be a \(low, high\) pair or None"),
        ([("a", 1), None], r"column 0: low must be a number or None"),
        ("0:1", r"a \(low, high\) pair or a list of 2 pairs"),
        ((math.inf, math.inf), r"column 0: low must be < high"),
    ],
    ids=["reversed", "empty", "nan", "length", "triple", "text", "string", "inf-inf"],
)
def test_bad_bounds_are_one_line_errors_naming_the_column(bounds: object, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        ef.flows.MAF(features=2, transforms=1, hidden=(8,), bounds=bounds)
    assert "\n" not in str(caught.value)


def test_one_pair_bounds_every_column_and_inf_is_open() -> None:
    assert check_bounds((0, 1), 3) == [(0.0, 1.0)] * 3
    assert check_bounds([(-math.inf, 2), None], 2) == [(-math.inf, 2.0), (-math.inf, math.inf)]
    assert bounds_config([(0, math.inf), None]) == [[0, None], None]


def test_a_flow_without_bounds_has_no_bound_step() -> None:
    flow = ef.flows.NSF(features=2, transforms=2, hidden=(8,))
    assert flow.bounds is None and "bounds" not in flow.config
    assert not any(isinstance(m, Bounds) for m in flow.modules())
    bounded = ef.flows.NSF(features=2, transforms=2, hidden=(8,), bounds=BOX)
    assert isinstance(bounded.transform.transforms[0], Bounds)
    assert bounded.bounds == BOX


def test_image_flows_refuse_bounds() -> None:
    with pytest.raises(ValueError, match="Glow: bounds= applies to vector flows"):
        ef.flows.Glow(shape=(1, 4, 4), levels=1, steps=1, hidden=4, bounds=(0, 1))
    with pytest.raises(ValueError, match="RealNVP: bounds= applies to vector flows"):
        ef.flows.RealNVP(shape=(1, 4, 4), levels=1, steps=1, hidden=(4,), bounds=(0, 1))
    with pytest.raises(ValueError, match="ResidualFlow: bounds= applies to vector flows"):
        ef.flows.ResidualFlow(shape=(1, 4, 4), levels=1, steps=1, hidden=4, bounds=(0, 1))


# ---------------------------------------------------------------------------- outside the support
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_log_prob_is_minus_inf_outside_and_on_the_ends(dtype: torch.dtype) -> None:
    flow = ef.flows.MAF(features=4, transforms=2, hidden=(8,), bounds=MIXED).to(dtype)
    assert flow.validate
    points = torch.tensor(
        [
            [0.5, 1.0, 0.0, 0.0],  # inside
            [0.0, 1.0, 0.0, 0.0],  # on low
            [1.0, 1.0, 0.0, 0.0],  # on high
            [1.5, 1.0, 0.0, 0.0],  # above
            [0.5, -1e-30, 0.0, 0.0],  # just below a lower bound
            [0.5, 0.0, 0.0, 0.0],  # on a lower bound
            [0.5, 1.0, 5.0, 0.0],  # on an upper bound
            [0.5, 1.0, 7.0, 1e30],  # above an upper bound
        ],
        dtype=dtype,
    )
    log_p = flow.log_prob(points)
    assert torch.isfinite(log_p[0])
    assert (log_p[1:] == -math.inf).all(), log_p
    # The gradient of the loss on good points is unaffected by bad ones in the batch.
    loss = -flow.log_prob(points[:1]).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)


def test_non_finite_inputs_are_still_validation_errors() -> None:
    flow = ef.flows.MAF(features=2, transforms=1, hidden=(8,), bounds=BOX)
    with pytest.raises(ValueError, match="non-finite value"):
        flow.log_prob(torch.tensor([[0.5, math.nan]]))
    with pytest.raises(ValueError, match="non-finite value"):
        flow.log_prob(torch.tensor([[math.inf, 0.0]]))


def test_support_is_the_open_box() -> None:
    d = ef.flows.MAF(features=2, transforms=1, hidden=(8,), bounds=BOX)()
    inside = d.support.check(torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.5, -1.0], [0.1, 1.9]]))
    assert inside.tolist() == [True, False, False, True]


def _wild(n: int, pairs: list[tuple[float, float]], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Seeded wild columns: huge, tiny, zero, on an end, one ulp either side of it, normal
    values over six orders of magnitude; open columns stay within ``±1e15`` (they reach the
    layers after the bound map unchanged, and those layers' range is not this test's)."""
    g = torch.Generator().manual_seed(seed)
    finfo = torch.finfo(dtype)
    columns = []
    for low, high in pairs:
        bounded = math.isfinite(low) or math.isfinite(high)
        big = finfo.max if bounded else 1e15
        special = [big, -big, finfo.tiny, -finfo.tiny, 0.0, 1e-30, -1e-30, 1e12, -1e12]
        candidates = [torch.tensor(special, dtype=dtype)]
        for end in (low, high):
            if math.isfinite(end):
                e = torch.tensor(end, dtype=dtype)
                up, down = torch.tensor(math.inf, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)
                around = [e, e.nextafter(up), e.nextafter(down), e + 1e-6, e - 1e-6]
                candidates.append(torch.stack(around))
        candidates = torch.cat(candidates)
        picked = candidates[torch.randint(len(candidates), (n,), generator=g)]
        scale = 10.0 ** torch.randint(-3, 4, (n,), generator=g).to(dtype)
        normal = scale * torch.randn(n, generator=g, dtype=dtype)
        columns.append(torch.where(torch.rand(n, generator=g) < 0.5, picked, normal))
    return torch.stack(columns, -1)


PRESETS = {
    "nsf": lambda b: ef.flows.NSF(features=len(b), transforms=2, hidden=(16,), bounds=b),
    "nsf-coupling": lambda b: ef.flows.NSF(
        features=len(b), transforms=2, hidden=(16,), bounds=b, coupling=True
    ),
    "maf": lambda b: ef.flows.MAF(features=len(b), transforms=2, hidden=(16,), bounds=b),
    "realnvp": lambda b: ef.flows.RealNVP(features=len(b), transforms=2, hidden=(16,), bounds=b),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bounds", [BOX, MIXED], ids=["box", "mixed"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_no_nan_anywhere_on_wild_inputs(preset: str, bounds: list, dtype: torch.dtype) -> None:
    pairs = _pairs(bounds)
    flow = _perturbed(PRESETS[preset](bounds).to(dtype), 1.0)
    for seed in range(3):
        x = _wild(4000, pairs, dtype, seed)
        log_p = flow.log_prob(x)
        assert not log_p.isnan().any(), x[log_p.isnan()][:3]
        assert not (log_p == math.inf).any()
        inside = _inside(x, pairs).all(-1)
        assert (log_p[~inside] == -math.inf).all()
        assert (inside.sum() > 100) and (~inside).sum() > 100  # both kinds were drawn


# ---------------------------------------------------------------------------- mass and samples
def test_density_integrates_to_one_on_the_box() -> None:
    """Midpoint rule on a 600x600 grid of ``(0, 1) x (-1, 2)`` in float64: within 2e-4.

    (Measured: |mass - 1| = 2.0e-5 at 600, 1.5e-6 at 1000; the density vanishes at the
    edges, where the logit sends the points to the base's tails.)
    """
    flow = _perturbed(ef.flows.NSF(features=2, transforms=2, hidden=(16,), bounds=BOX), 0.15)
    flow = flow.double()
    n = 600
    a = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    grid = torch.stack(torch.meshgrid(a, -1 + 3 * a, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = torch.cat([flow.log_prob(p).exp() for p in grid.split(100_000)])
    mass = float(density.sum()) * (1 / n) * (3 / n)
    assert abs(mass - 1) < 2e-4, mass


@pytest.mark.parametrize("scale", [0.0, 3.0], ids=["initial", "extreme-weights"])
@pytest.mark.parametrize("preset", ["nsf", "maf", "realnvp"])
def test_samples_are_strictly_inside_in_float32(preset: str, scale: float) -> None:
    bounds = [(0.0, 1.0), (0.0, None), (None, 5.0), (-1e-3, 1e-3), (100.0, 100.5)]
    pairs = _pairs(bounds)
    flow = _perturbed(PRESETS[preset](bounds), scale)
    x = flow.sample((100_000,))
    assert x.dtype == torch.float32
    assert not x.isnan().any()
    assert _inside(x, pairs).all(), x[~_inside(x, pairs).all(-1)][:5]
    # Pushed to the ends: base points far in the tails still land strictly inside.
    z = 1e4 * torch.randn(1000, len(bounds))
    edge = flow.transform.inverse(z)[0]
    assert _inside(edge, pairs).all()


def test_sample_and_log_prob_agree_with_log_prob() -> None:
    flow = _perturbed(ef.flows.MAF(features=4, transforms=2, hidden=(16,), bounds=MIXED), 0.3)
    flow = flow.double()
    x, log_q = flow.sample_and_log_prob((500,))
    torch.testing.assert_close(flow.log_prob(x), log_q, rtol=1e-9, atol=1e-9)


def test_training_near_the_bounds_has_finite_gradients() -> None:
    flow = ef.flows.NSF(features=2, transforms=2, hidden=(8,), bounds=BOX)
    eps = torch.finfo(torch.float32).eps
    x = torch.tensor([[eps, -1 + 2 * eps], [1 - eps / 2, 2 - 2 * eps], [0.5, 0.5]])
    loss = -flow.log_prob(x).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters())


# ---------------------------------------------------------------------------- configs, checkpoints
def test_bounds_round_trip_through_config_registry_and_checkpoint(tmp_path: Path) -> None:
    flow = _perturbed(ef.flows.NSF(features=4, transforms=2, hidden=(8,), bounds=MIXED), 0.2)
    assert flow.config["bounds"] == [[0.0, 1.0], [0.0, None], [None, 5.0], None]
    rebuilt = ef.registry.build(ef.registry.spec_of(flow))
    assert rebuilt.bounds == flow.bounds
    ef.checkpoint.save(tmp_path / "flow.safetensors", flow, spec=ef.registry.spec_of(flow))
    loaded = ef.checkpoint.load(tmp_path / "flow.safetensors").model
    assert loaded.bounds == flow.bounds
    x = torch.tensor([[0.5, 2.0, 1.0, 0.0], [1.5, 2.0, 1.0, 0.0]])
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x))
    assert loaded.log_prob(x)[1] == -math.inf


def test_standardization_leaves_bounded_columns_exactly_alone() -> None:
    x = torch.stack([torch.rand(500), 10 + 5 * torch.randn(500)], -1)
    flow = ef.flows.MAF(features=2, transforms=2, hidden=(8,), bounds=[(0.0, 1.0), None])
    standardized = ef.data.Standardize.fit(x).prepend(_perturbed(flow, 2.0))
    affine = standardized.transform.transforms[0]
    assert affine.log_scale[0] == 0 and affine.shift[0] == 0  # the bounded column
    assert affine.log_scale[1] != 0  # the open one is standardized
    edge = torch.tensor([[0.0, 10.0], [1.0, 10.0], [0.5, 10.0]])
    assert standardized.log_prob(edge)[:2].eq(-math.inf).all()
    assert torch.isfinite(standardized.log_prob(edge)[2])
    samples = standardized.sample((20_000,))
    assert ((samples[:, 0] > 0) & (samples[:, 0] < 1)).all()


# ---------------------------------------------------------------------------- the command line
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:1,0:,:5,:", [[0.0, 1.0], [0.0, None], [None, 5.0], None]),
        ("0:1", [0.0, 1.0]),
        ("-inf:2.5", [None, 2.5]),
        (":,:", None),
    ],
)
def test_bounds_option_syntax(text: str, expected: object) -> None:
    assert parse_bounds(text) == expected


@pytest.mark.parametrize(
    ("text", "match"), [("0-1", "low:high"), ("1:0", "low must be < high"), ("a:1", "numbers")]
)
def test_bad_bounds_option(text: str, match: str) -> None:
    with pytest.raises(Exception, match=match):
        parse_bounds(text)


FIT = ["--epochs", "1", "--transforms", "2", "--hidden", "8", "--no-progress", "--no-plots"]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of a fraction in (0, 1) and a positive waiting time."""
    torch.manual_seed(0)
    fraction = torch.distributions.Beta(2.0, 5.0).sample((400,))
    wait = -torch.rand(400).log() * 3
    path = tmp_path_factory.mktemp("bounds") / "table.csv"
    rows = zip(fraction.tolist(), wait.tolist(), strict=True)
    lines = ["fraction,wait", *(f"{a},{b}" for a, b in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_bounds_is_recorded_and_samples_stay_inside(
    tmp_path: Path, table: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    code = main(["fit", "--data", str(table), "--bounds", "0:1,0:", "--out", str(out), *FIT])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["flow"]["kwargs"]["bounds"] == [[0.0, 1.0], [0.0, None]]
    best = ef.checkpoint.load(out / "best.safetensors")
    assert best.spec["kwargs"]["bounds"] == [[0.0, 1.0], [0.0, None]]
    samples_path = tmp_path / "samples.npy"
    code = main(["sample", str(out), "-n", "50000", "-o", str(samples_path)])
    assert code == 0, capsys.readouterr().err
    import numpy as np

    samples = torch.from_numpy(np.load(samples_path))
    assert ((samples[:, 0] > 0) & (samples[:, 0] < 1) & (samples[:, 1] > 0)).all()
    # --resume with other bounds is refused; with the same, accepted.
    code = main(["fit", "--out", str(out), "--resume", "--bounds", "0:1"])
    assert code == 2 and "bounds" in capsys.readouterr().err


def test_fit_refuses_data_outside_the_bounds(
    tmp_path: Path, table: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    code = main(["fit", "--data", str(table), "--bounds", "0:1,0:2", "--out", str(out), *FIT])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--bounds: train row" in err[0] and "column 2 (wait)" in err[0], err[0]
    assert not out.exists()
    code = main(["fit", "--data", str(table), "--bounds", "0:1,0:,0:", "--out", str(out), *FIT])
    err = capsys.readouterr().err
    assert code == 2 and "one entry per column (2), got 3" in err


def test_fit_bounds_is_refused_for_vaes_and_images(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["fit", "--model", "vae", "--bounds", "0:1", "--out", str(tmp_path / "v")])
    assert code == 2 and "--bounds does not apply to --model vae" in capsys.readouterr().err
    code = main(["fit", "--flow", "glow", "--bounds", "0:1", "--out", str(tmp_path / "g")])
    assert code == 2 and "--bounds applies to vector data" in capsys.readouterr().err
