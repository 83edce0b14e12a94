"""Periodic columns: circular splines, the torus base, NSF(periodic=...) and the torus toy."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import exactflow as ef
from exactflow import transforms as T
from exactflow.checkpoint import load, save
from exactflow.cli.arguments import periodic as parse_periodic
from exactflow.cli.main import main
from exactflow.data import VonMisesMixtureDensity
from exactflow.data import load as load_data
from exactflow.data import torus as torus_density
from exactflow.registry import spec_of

PI = math.pi


def perturbed(make, scale: float = 0.3, seed: int = 0) -> ef.Flow:
    """``make()`` in float64, eval mode, every parameter moved off its identity start."""
    torch.manual_seed(seed)
    flow = make().double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def midpoints(lo: float, hi: float, n: int) -> tuple[torch.Tensor, float]:
    edges = torch.linspace(lo, hi, n + 1, dtype=torch.float64)
    return (edges[:-1] + edges[1:]) / 2, (hi - lo) / n


def mass(flow: ef.Flow, first: tuple[float, float], second: tuple[float, float], n: int) -> float:
    """``∫ p`` over a box by the midpoint rule on an ``n × n`` grid (float64)."""
    a, da = midpoints(*first, n)
    b, db = midpoints(*second, n)
    points = torch.stack(torch.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = torch.cat([flow.log_prob(p).exp() for p in points.split(100_000)])
    return float(density.sum()) * da * db


# ------------------------------------------------------------------ the circular map


def test_circular_spline_is_the_identity_at_zero_and_stays_on_the_circle() -> None:
    spline = T.CircularSpline(bins=5)
    x = torch.linspace(-PI, PI, 101, dtype=torch.float64)[:-1, None]
    y, ladj = spline.forward(x, spline.identity().double().expand(1, -1))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj, torch.zeros_like(x))
    params = 3 * torch.randn(100, 1, spline.params, dtype=torch.float64)
    y, _ = spline.forward(x, params)
    assert (y.abs() <= PI).all()  # π only by rounding: the same point as -π
    back, _ = spline.inverse(y, params)
    assert ((back >= -PI) & (back < PI)).all()
    gap = torch.remainder(back - x + PI, 2 * PI) - PI  # equal as points of the circle
    assert gap.abs().max() < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_circular_spline_is_continuous_across_the_seam(seed: int) -> None:
    """Values agree on the circle and slopes agree at ``-π + ε`` and ``π - ε``."""
    torch.manual_seed(seed)
    spline = T.CircularSpline(bins=6)
    params = 2 * torch.randn(1, spline.params, dtype=torch.float64)
    eps = 1e-7
    x = torch.tensor([[-PI + eps], [PI - eps]], dtype=torch.float64)
    y, ladj = spline.forward(x, params)
    jump = torch.remainder(y[0] - y[1] + PI, 2 * PI) - PI
    assert jump.abs() < 1e-5
    assert (ladj[0] - ladj[1]).abs() < 1e-4
    # Autograd agrees with the returned slope on both sides of the seam.
    xs = x.clone().requires_grad_(True)
    slope = torch.autograd.grad(spline.forward(xs, params)[0].sum(), xs)[0]
    torch.testing.assert_close(slope.log(), ladj)


def test_circular_spline_rotation_moves_the_fixed_point() -> None:
    spline = T.CircularSpline(bins=4)
    params = torch.zeros(1, spline.params, dtype=torch.float64)
    params[..., -1] = 0.5
    y, _ = spline.forward(torch.tensor([[-PI]], dtype=torch.float64), params)
    torch.testing.assert_close(y, torch.tensor([[-PI + 0.5]], dtype=torch.float64))


def test_circular_spline_outside_the_circle_is_minus_inf_not_nan() -> None:
    spline = T.CircularSpline(bins=4)
    x = torch.tensor([[-1e30], [-PI - 1e-6], [PI + 1e-6], [4.0], [1e30]], dtype=torch.float64)
    params = torch.randn(5, 1, spline.params, dtype=torch.float64, requires_grad=True)
    y, ladj = spline.forward(x, params)
    assert torch.isfinite(y).all()
    assert (ladj == -math.inf).all()
    grad = torch.autograd.grad(y.sum(), params)[0]
    assert torch.isfinite(grad).all()


def test_angle_features_are_cos_and_sin_in_place() -> None:
    features = T.AngleFeatures([False, True, False])
    x = torch.tensor([[1.0, 0.5, 2.0]])
    expected = torch.tensor([[1.0, math.cos(0.5), math.sin(0.5), 2.0]])
    torch.testing.assert_close(features(x), expected)


def test_torus_autoregressive_is_autoregressive_in_the_columns() -> None:
    """Column ``i``'s output moves only with the columns before it in the order."""
    torch.manual_seed(0)
    layer = T.TorusAutoregressive(T.ColumnSplines([True, False, True]), (16,), order=[3, 1, 2])
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.rand(1, 3, dtype=torch.float32) * 4 - 2
    jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x)[0, :, 0, :]  # (3, 3)
    # Order: column 1 first, then 2, then 0; each output depends only on earlier columns.
    earlier = {0: {1, 2}, 1: set(), 2: {1}}
    for i in range(3):
        for j in range(3):
            if j != i and j not in earlier[i]:
                assert jac[i, j] == 0, (i, j)
    assert jac[0, 1] != 0 and jac[0, 2] != 0 and jac[2, 1] != 0


def test_to_angles_inverse_lands_in_the_interval() -> None:
    step = T.ToAngles(2, [(1, 0.0, 360.0)])
    z = torch.tensor([[0.0, -PI], [0.0, PI - 1e-12], [0.0, 0.0]], dtype=torch.float64)
    x, _ = step.inverse(z)
    assert ((x[:, 1] >= 0) & (x[:, 1] < 360)).all()
    expected = torch.tensor([0.0, 360.0, 180.0], dtype=torch.float64)
    torch.testing.assert_close(x[:, 1], expected, atol=1e-8, rtol=0)
    y, _ = step(x)
    torch.testing.assert_close(y[[0, 2]], z[[0, 2]])  # rounding may land -π as π - ε


# ------------------------------------------------------------------ the base


def test_torus_normal_base() -> None:
    base = ef.distributions.TorusNormal([True, False])
    z = base.sample((20_000,))
    assert ((z[:, 0] >= -PI) & (z[:, 0] < PI)).all()
    assert z[:, 1].abs().max() > PI  # the ordinary column is normal, not on the circle
    inside = torch.tensor([[1.0, 0.5]])
    expected = -math.log(2 * PI) - 0.5 * (0.25 + math.log(2 * PI))
    torch.testing.assert_close(base.log_prob(inside), torch.tensor([expected]))
    outside = torch.tensor([[3.2, 0.0], [-3.2, 0.0], [-PI, 0.0], [PI, 0.0]])
    assert base.log_prob(outside).tolist()[:2] == [-math.inf, -math.inf]
    assert torch.isfinite(base.log_prob(outside)[2:]).all()  # ±π: one point of the circle


# ------------------------------------------------------------------ NSF(periodic=...)


@pytest.mark.parametrize("coupling", [False, True], ids=["autoregressive", "coupling"])
def test_mass_one_on_the_torus(coupling: bool) -> None:
    """∫ p = 1 on [-π, π)² (a random flow, float64, 400² midpoint rule, tolerance 2e-4).

    The perturbed flow's density varies by a factor of about 50 over the torus; the rule's
    error is below 5e-5 at 400² (and shrinks like 1/n² as the grid refines).
    """
    flow = perturbed(
        lambda: ef.flows.NSF(
            2, transforms=3, hidden=(16,), bins=5, coupling=coupling, periodic=[0, 1]
        )
    )
    total = mass(flow, (-PI, PI), (-PI, PI), 400)
    assert abs(total - 1) < 2e-4, total


def test_mass_one_on_the_cylinder() -> None:
    """One angle in degrees and one ordinary column: ∫ p = 1 on [0, 360) × [-8, 8].

    600² midpoint grid; the rule and the cut tails together are off by about 3e-5 here.
    """
    flow = perturbed(
        lambda: ef.flows.NSF(2, transforms=2, hidden=(16,), bins=5, periodic=[(0, 0.0, 360.0)])
    )
    total = mass(flow, (0.0, 360.0), (-8.0, 8.0), 600)
    assert abs(total - 1) < 2e-4, total


@pytest.mark.parametrize("coupling", [False, True], ids=["autoregressive", "coupling"])
def test_density_is_continuous_across_the_seam(coupling: bool) -> None:
    flow = perturbed(
        lambda: ef.flows.NSF(3, transforms=3, hidden=(16,), coupling=coupling, periodic=[0, 2])
    )
    torch.manual_seed(1)
    inner = torch.randn(50, 3, dtype=torch.float64).clamp(-3, 3)
    eps = 1e-9
    for column in (0, 2):
        low, high = inner.clone(), inner.clone()
        low[:, column], high[:, column] = -PI + eps, PI - eps
        with torch.no_grad():
            log_low, log_high = flow.log_prob(low), flow.log_prob(high)
        assert torch.isfinite(log_low).all() and torch.isfinite(log_high).all()
        assert (log_low - log_high).abs().max() < 1e-6, column


def test_samples_lie_in_their_period_interval() -> None:
    periodic = {0: (0.0, 360.0), 2: 1.0}
    flow = ef.flows.NSF(3, transforms=2, hidden=(16,), periodic=periodic)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = flow.sample((20_000,))
    assert ((x[:, 0] >= 0) & (x[:, 0] < 360)).all()
    assert ((x[:, 2] >= -0.5) & (x[:, 2] < 0.5)).all()
    assert torch.isfinite(flow.log_prob(x)).all()


def test_log_prob_is_minus_inf_outside_the_interval() -> None:
    flow = ef.flows.NSF(2, transforms=2, hidden=(8,), periodic=[(0, 0.0, 360.0)])
    x = torch.tensor([[360.0, 0.0], [-1.0, 0.0], [1e30, 0.0], [0.0, 0.0]])
    with torch.no_grad():
        log_p = flow.log_prob(x)
    assert log_p[:3].tolist() == [-math.inf] * 3
    assert math.isfinite(log_p[3])


def test_periodic_config_is_json_and_rebuilds(tmp_path: Path) -> None:
    flow = perturbed(lambda: ef.flows.NSF(3, transforms=2, hidden=(8,), periodic={2: 360.0}))
    assert flow.config["periodic"] == [[2, -180.0, 180.0]]
    flow = flow.float()
    path = save(tmp_path / "torus.safetensors", flow, spec=spec_of(flow))
    loaded = load(path).flow
    x = flow.sample((64,))
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x), rtol=0, atol=0)
    assert "periodic" not in ef.flows.NSF(3, transforms=1, hidden=(8,)).config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"periodic": [0], "permutation": "lu"}, "permutation='lu'"),
        ({"periodic": [0], "bounds": [(0, 1), None, None]}, "both periodic and bounded"),
        ({"periodic": [3]}, "in 0..2"),
        ({"periodic": [0, 0]}, "distinct"),
        ({"periodic": {0: -1.0}}, "low < high"),
        ({"periodic": [(0, 1, 2, 3)]}, "a periodic entry"),
    ],
)
def test_bad_periodic_settings_are_one_line_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        ef.flows.NSF(3, transforms=1, hidden=(8,), **kwargs)
    assert "\n" not in str(error.value)


def test_periodic_columns_must_be_ints() -> None:
    with pytest.raises(TypeError, match="ints"):
        ef.flows.NSF(3, transforms=1, hidden=(8,), periodic=[True])


# ------------------------------------------------------------------ the torus toy


def test_von_mises_mixture_integrates_to_one_and_matches_its_samples() -> None:
    density = torus_density()
    points, cell = midpoints(-PI, PI, 400)
    grid = torch.stack(torch.meshgrid(points, points, indexing="ij"), -1).reshape(-1, 2)
    assert abs(float(density.log_prob(grid).exp().sum()) * cell**2 - 1) < 1e-10
    entropy = density.entropy()
    assert entropy.method == "quadrature" and entropy.error < 1e-9
    x = density.sample(200_000, seed=3)
    assert ((x >= -PI) & (x < PI)).all()
    log_p = density.log_prob(x)
    stderr = float(log_p.std()) / math.sqrt(len(log_p))
    assert abs(-float(log_p.mean()) - entropy.value) < 4 * stderr


def test_von_mises_sampler_matches_the_first_moment() -> None:
    """``E[cos(θ - μ)] = I₁(κ) / I₀(κ)``, for a small and a large concentration."""
    kappa = torch.tensor([[0.3], [20.0]], dtype=torch.float64)
    for k in kappa:
        p = VonMisesMixtureDensity(torch.ones(1), torch.full((1, 1), 3.0), k[None])
        x = p.sample(100_000, seed=0)
        expected = torch.special.i1e(k) / torch.special.i0e(k)
        assert abs(float((x - 3.0).cos().mean() - expected)) < 0.01


def test_torus_toy_is_in_the_catalog_with_its_entropy() -> None:
    ds = load_data("torus", n_train=100, n_val=10, n_test=20, seed=1, concentration=2.0)
    assert ds.kind == "toy2d" and ds.train.shape == (100, 2)
    assert ds.entropy.method == "quadrature"
    assert ((ds.test >= -PI) & (ds.test < PI)).all()
    flow = ef.flows.NSF(2, transforms=1, hidden=(8,), periodic=[0, 1])
    gap, _ = ef.metrics.kl_gap(flow, ds)
    # The untrained flow is uniform on the torus: its gap is log(4π²) - H exactly.
    assert abs(gap - (2 * math.log(2 * PI) - ds.entropy.value)) < 1e-4


# ---------------------------------------------------------------- the command line (--periodic)

FIT = ["--epochs", "1", "--transforms", "2", "--hidden", "8", "--no-progress", "--no-plots"]


@pytest.fixture(scope="module")
def angles_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of a compass bearing in [0, 360), a speed, and a time of day in [0, 24)."""
    generator = torch.Generator().manual_seed(0)
    bearing = torch.rand(400, generator=generator) * 360
    speed = torch.randn(400, generator=generator) * 3 + 10
    hour = (torch.randn(400, generator=generator) * 3 + 22) % 24
    path = tmp_path_factory.mktemp("angles") / "wind.csv"
    rows = zip(bearing.tolist(), speed.tolist(), hour.tolist(), strict=True)
    path.write_text("\n".join(["bearing,speed,hour", *(f"{a},{b},{c}" for a, b, c in rows)]))
    return path


def test_parse_periodic_option() -> None:
    tau = 2 * math.pi
    assert parse_periodic("1=0:360,0") == [[0, -tau / 2, tau / 2], [1, 0.0, 360.0]]
    assert parse_periodic("2=24") == [[2, -12.0, 12.0]]
    for bad, message in (("x", "expected i, i=period"), ("0=-1", "period must be positive"),
                         ("0,0", "given twice"), ("0=2:1", "low < high")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse_periodic(bad)


def test_fit_periodic_records_the_intervals_and_samples_stay_in_them(
    tmp_path: Path, angles_table: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    args = ["fit", "--data", str(angles_table), "--flow", "nsf", "--periodic", "0=0:360,2=0:24"]
    code = main([*args, "--out", str(out), *FIT])
    assert code == 0, capsys.readouterr().err
    recorded = [[0, 0.0, 360.0], [2, 0.0, 24.0]]
    assert json.loads((out / "run.json").read_text())["flow"]["kwargs"]["periodic"] == recorded
    best = ef.checkpoint.load(out / "best.safetensors")
    assert best.spec["kwargs"]["periodic"] == recorded
    # The standardization in front leaves the angles in data units: only the speed is scaled.
    affine = best.flow.transform[0]
    assert torch.equal(affine.log_scale[[0, 2]], torch.zeros(2, dtype=affine.log_scale.dtype))
    assert affine.log_scale[1] != 0
    samples_path = tmp_path / "samples.npy"
    assert main(["sample", str(out), "-n", "20000", "-o", str(samples_path)]) == 0
    samples = torch.from_numpy(np.load(samples_path))
    assert ((samples[:, 0] >= 0) & (samples[:, 0] < 360)).all()
    assert ((samples[:, 2] >= 0) & (samples[:, 2] < 24)).all()
    assert main(["eval", str(out)]) == 0
    assert "test NLL" in capsys.readouterr().out
    code = main(["fit", "--out", str(out), "--resume", "--periodic", "0"])
    assert code == 2 and "periodic" in capsys.readouterr().err


def test_fit_periodic_refusals_are_one_line(
    tmp_path: Path, angles_table: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    cases = [
        (["--flow", "maf", "--periodic", "0"], "--periodic needs --flow nsf"),
        (["--flow", "nsf", "--periodic", "0=0:180"], "--periodic: train row"),
        (["--flow", "nsf", "--periodic", "7"], "periodic columns must be distinct and in 0..2"),
    ]
    for extra, message in cases:
        code = main(["fit", "--data", str(angles_table), *extra, "--out", str(out), *FIT])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
        assert not out.exists()
