"""The built-in variational-inference targets (``exactflow.targets``)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch.distributions import Normal

import exactflow as ef
from exactflow import targets

F64 = torch.float64
HAVE_SKLEARN = True
try:
    import sklearn  # noqa: F401
except ImportError:
    HAVE_SKLEARN = False

needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed")
ALL = [pytest.param(n, marks=needs_sklearn) if n == "logistic" else n for n in targets.names()]
ENERGIES = ["u1", "u2", "u3", "u4"]


def _grid(box, points):
    x0, x1, y0, y1 = box
    xs = torch.linspace(x0, x1, points[0], dtype=F64)
    ys = torch.linspace(y0, y1, points[1], dtype=F64)
    return xs, ys, torch.stack(torch.meshgrid(xs, ys, indexing="ij"), -1)  # (n1, n2, 2)


def _trapezoid_log_mass(log_density, box, points) -> float:
    """log ∫ exp(f) by the 2-D trapezoidal rule (independent of ``log_integral_2d``)."""
    xs, ys, grid = _grid(box, points)
    with torch.no_grad():
        values = log_density(grid)
    peak = values.max()
    inner = torch.trapezoid(torch.exp(values - peak), ys, dim=1)
    return float(torch.log(torch.trapezoid(inner, xs)) + peak)


def test_names_are_sorted_and_complete():
    expected = ["banana", "funnel", "logistic", "mixture", "u1", "u2", "u3", "u4"]
    assert targets.names() == expected
    assert "targets" in ef.__all__ and ef.targets is targets


@pytest.mark.parametrize("name", ALL)
def test_shapes_batching_and_dtype(name):
    target = targets.get(name)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, target.dim, generator=gen, dtype=F64)
    out = target(z)
    assert out.shape == (3, 4) and out.dtype == F64
    torch.testing.assert_close(out.reshape(-1), target(z.reshape(-1, target.dim)))
    assert target(z[0, 0]).shape == ()
    assert target(z.float()).dtype == torch.float32
    torch.testing.assert_close(target(z.float()).double(), out, rtol=1e-4, atol=1e-3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_gradients_are_finite(name):
    target = targets.get(name)
    z = torch.randn(64, target.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    z[0] = 0.0  # U1's norm is not differentiable at the origin: its subgradient must be finite
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(target(z).sum(), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_options_rebuild_the_same_target(name):
    target = targets.get(name)
    again = targets.get(name, **target.options)
    z = torch.randn(5, target.dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.testing.assert_close(again(z), target(z))
    assert (
        again.name == name and target.description and repr(target).startswith(type(target).__name__)
    )
    assert (target.bounds is not None) == (target.dim == 2)


@pytest.mark.parametrize("name", ALL)
def test_vmap_runs_without_host_checks(name):
    target = targets.get(name)
    z = torch.randn(6, target.dim, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(torch.func.vmap(target)(z), target(z))


def test_wrong_event_size_names_expected_and_actual():
    with pytest.raises(ValueError, match=r"target 'u1': z must have shape \(\*, 2\), got \(4, 3\)"):
        targets.get("u1")(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\(\*, 10\), got \(\)"):
        targets.get("funnel")(torch.tensor(0.0))
    with pytest.raises(TypeError, match="floating tensor, got torch.int64"):
        targets.get("banana")(torch.zeros(4, 2, dtype=torch.long))


def test_unknown_name_and_option():
    with pytest.raises(ValueError, match="unknown target 'nope': expected one of banana, funnel"):
        targets.get("nope")
    with pytest.raises(ValueError, match="'funnel' takes dim, scale; got unknown option.* width"):
        targets.get("funnel", width=3)
    with pytest.raises(ValueError, match="'u2' takes no options; got unknown option.* a"):
        targets.get("u2", a=1)


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    [
        ("funnel", {"dim": 1}, ValueError, "dim must be >= 2, got 1"),
        ("funnel", {"dim": 2.0}, TypeError, "dim must be an int, got 2.0"),
        ("mixture", {"scale": 0.0}, ValueError, "scale must be finite and > 0, got 0.0"),
        ("banana", {"b": float("nan")}, ValueError, "b must be finite and > 0, got nan"),
        ("mixture", {"components": True}, TypeError, "components must be an int, got True"),
    ],
    ids=["dim-small", "dim-float", "scale-zero", "b-nan", "components-bool"],
)
def test_bad_option_values(name, options, error, message):
    with pytest.raises(error, match=message):
        targets.get(name, **options)


# --- the normalized targets --------------------------------------------------------------------


def _funnel_2d_in_v_t(funnel):
    # x = e^{v/2} t: the funnel's scales differ by e^{±7} over its mass, no fixed grid resolves
    # them in x; in (v, t) the integrand is smooth and the Jacobian is e^{v/2}.
    def log_density(vt):
        v, t = vt.unbind(-1)
        return funnel(torch.stack([v, torch.exp(0.5 * v) * t], -1)) + 0.5 * v

    return log_density


@pytest.mark.parametrize(
    ("name", "options", "box", "points"),
    [
        ("banana", {}, (-16.0, 16.0, -8.0, 140.0), (641, 1481)),
        ("banana", {"a": 1.0, "b": 2.0}, (-8.0, 8.0, -12.0, 140.0), (801, 2001)),
        ("mixture", {}, (-8.0, 8.0, -8.0, 8.0), (401, 401)),
        ("mixture", {"components": 3, "radius": 5.0, "scale": 0.7}, (-9, 9, -9, 9), (451, 451)),
        ("funnel", {"dim": 2}, (-24.0, 24.0, -9.0, 9.0), (801, 401)),
    ],
    ids=["banana", "banana-twisted", "mixture", "mixture-3", "funnel-2d"],
)
def test_normalized_2d_targets_integrate_to_one(name, options, box, points):
    target = targets.get(name, **options)
    assert target.log_normalizer == 0.0
    log_density = _funnel_2d_in_v_t(target) if name == "funnel" else target
    assert abs(_trapezoid_log_mass(log_density, box, points)) < 1e-6


@pytest.mark.parametrize("name", ["banana", "mixture", "funnel"])
def test_most_mass_lies_in_the_plot_box(name):
    target = targets.get(name, **({"dim": 2} if name == "funnel" else {}))
    x0, x1, y0, y1 = target.bounds
    z = target.sample((20_000,), generator=torch.Generator().manual_seed(4), dtype=F64)
    inside = (z[:, 0] > x0) & (z[:, 0] < x1) & (z[:, 1] > y0) & (z[:, 1] < y1)
    assert inside.double().mean() > 0.95


def test_funnel_matches_torch_distributions():
    funnel = targets.get("funnel", dim=10, scale=3.0)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(200, 10, generator=gen, dtype=F64) * torch.tensor([6.0] + [3.0] * 9, dtype=F64)
    v, x = z[:, 0], z[:, 1:]
    expected = Normal(0.0, 3.0).log_prob(v) + Normal(0.0, torch.exp(v / 2)[:, None]).log_prob(
        x
    ).sum(-1)
    torch.testing.assert_close(funnel(z), expected)


def _within_standard_errors(draws: torch.Tensor, expected: torch.Tensor, k: float = 4.0) -> None:
    mean = draws.mean(0)
    stderr = draws.std(0) / math.sqrt(len(draws))
    assert ((mean - expected).abs() < k * stderr + 1e-12).all(), (mean, expected, stderr)


@pytest.mark.parametrize("name", ["banana", "funnel", "mixture"])
def test_samplers_draw_from_the_density(name):
    # E_p[f] by the sampler, and the same expectation by quadrature of exp(log p) (2-D), or by
    # the generative form's known moments (funnel): within 4 standard errors.
    target = targets.get(name)
    z = target.sample((40_000,), generator=torch.Generator().manual_seed(6), dtype=F64)
    assert z.shape == (40_000, target.dim) and z.dtype == F64
    if name == "funnel":
        v, x = z[:, 0], z[:, 1:]
        draws = torch.stack([v, v**2, (x**2 * torch.exp(-v)[:, None]).mean(-1)], -1)
        _within_standard_errors(draws, torch.tensor([0.0, 9.0, 1.0], dtype=F64))
        return
    wide = name == "banana"
    box = (-16.0, 16.0, -8.0, 140.0) if wide else (-8.0, 8.0, -8.0, 8.0)
    xs, ys, grid = _grid(box, (641, 1481) if wide else (401, 401))
    with torch.no_grad():
        p = target(grid).exp()
    features = [grid[..., 0], grid[..., 1], grid[..., 0] ** 2, grid[..., 1] ** 2]
    expected = torch.stack(
        [torch.trapezoid(torch.trapezoid(f * p, ys, dim=1), xs) for f in features]
    )
    draws = torch.stack([z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 1] ** 2], -1)
    _within_standard_errors(draws, expected)


# --- Rezende & Mohamed's energies ----------------------------------------------------------------


def _energy_numpy(name: str, z: np.ndarray) -> np.ndarray:
    """-U(z) as printed in Rezende & Mohamed (2015), Table 1, plus exactflow's z1 envelope."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    if name == "u1":
        r = np.sqrt(z1**2 + z2**2)
        arcs = np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
        return -(0.5 * ((r - 2) / 0.4) ** 2 - np.log(arcs))
    envelope = -0.5 * (z1 / 4) ** 4
    if name == "u2":
        return -0.5 * ((z2 - w1) / 0.4) ** 2 + envelope
    if name == "u3":
        a, b = np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2), np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
    else:
        a, b = np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2), np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    return np.log(a + b) + envelope


@pytest.mark.parametrize("name", ENERGIES)
def test_energy_matches_the_paper(name):
    z = np.random.default_rng(7).uniform(-4, 4, size=(500, 2))
    got = targets.get(name)(torch.from_numpy(z))
    np.testing.assert_allclose(got.numpy(), _energy_numpy(name, z), rtol=1e-10, atol=1e-10)


# An independent coarser quadrature: trapezoid on other boxes and grids than the library's
# 1000 x 1000 midpoint rule (U1), or than the closed form (U2-U4).
QUADRATURE = {
    "u1": ((-6.5, 7.0, -7.0, 6.5), (701, 651)),
    "u2": ((-13.0, 14.0, -7.0, 9.0), (901, 601)),
    "u3": ((-13.0, 14.0, -7.0, 9.0), (901, 601)),
    "u4": ((-13.0, 14.0, -7.0, 9.0), (901, 601)),
}


@pytest.mark.parametrize("name", ENERGIES)
def test_energy_log_normalizer_by_independent_quadrature(name):
    target = targets.get(name)
    box, points = QUADRATURE[name]
    assert abs(_trapezoid_log_mass(target, box, points) - target.log_normalizer) < 1e-6


# Wide Gaussian proposals covering each energy's mass: (mean, std) per coordinate.
PROPOSALS = {
    "u1": ((0.0, 0.0), (2.0, 2.0)),
    "u2": ((0.0, 0.0), (4.5, 1.2)),
    "u3": ((0.0, -1.0), (4.5, 2.0)),
    "u4": ((0.0, -1.0), (4.5, 2.0)),
}


@pytest.mark.parametrize("name", ENERGIES)
def test_energy_log_normalizer_by_importance_sampling(name):
    # log Z = log E_q[p~/q]: an unbiased estimate of Z with a delta-method standard error.
    target = targets.get(name)
    loc, scale = (torch.tensor(v, dtype=F64) for v in PROPOSALS[name])
    gen = torch.Generator().manual_seed(8)
    z = loc + scale * torch.randn(400_000, 2, generator=gen, dtype=F64)
    log_w = target(z) - Normal(loc, scale).log_prob(z).sum(-1)
    log_z = torch.logsumexp(log_w, 0) - math.log(len(z))
    w = torch.exp(log_w - log_w.max())
    stderr = float(w.std() / (math.sqrt(len(z)) * w.mean()))
    assert stderr < 0.01, "the proposal is too poor for the check to bite"
    assert abs(float(log_z) - target.log_normalizer) < 4 * stderr


def test_energy_log_normalizer_values():
    expected = {"u1": 1.877502, "u2": 2.157104, "u3": 2.716720, "u4": 2.785713}
    for name, value in expected.items():
        assert targets.get(name).log_normalizer == pytest.approx(value, abs=1e-6)


def test_log_integral_2d_reports_mass_at_the_edge():
    normal = lambda z: -0.5 * (z**2).sum(-1)  # noqa: E731
    log_z, edge = targets.log_integral_2d(normal, (-10.0, 10.0, -10.0, 10.0), 400)
    assert log_z == pytest.approx(math.log(2 * math.pi), abs=1e-12) and edge < 1e-15
    _, edge = targets.log_integral_2d(normal, (-1.0, 1.5, -2.0, 2.0), (50, 80))
    assert edge > 0.1


# --- the logistic-regression posterior ------------------------------------------------------------


def _logistic_numpy(w: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Log prior + log likelihood, and its analytic gradient, straight from the table."""
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    x = (table.data - table.data.mean(0)) / table.data.std(0)
    x = np.hstack([np.ones((len(x), 1)), x])
    y = table.target.astype(float)
    logits = w @ x.T  # (P, N)
    # y log s(t) + (1 - y) log s(-t), with log s(t) = -log(1 + e^-t)
    log_lik = -(y * np.logaddexp(0, -logits) + (1 - y) * np.logaddexp(0, logits)).sum(-1)
    log_prior = -0.5 * (w**2).sum(-1) / sigma**2 - 0.5 * 31 * np.log(2 * np.pi * sigma**2)
    grad = -w / sigma**2 + (y - 1 / (1 + np.exp(-logits))) @ x
    return log_prior + log_lik, grad


@needs_sklearn
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_logistic_matches_a_direct_computation(sigma):
    target = targets.get("logistic", prior_scale=sigma)
    assert target.dim == 31 and target.log_normalizer is None and target.bounds is None
    w = np.random.default_rng(9).normal(scale=0.5, size=(5, 31))
    w[0] = 0.0
    expected, expected_grad = _logistic_numpy(w, sigma)
    z = torch.from_numpy(w).requires_grad_(True)
    value = target(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-10, atol=1e-9)
    # at w = 0 every label has probability 1/2
    at_zero = -569 * math.log(2) - 15.5 * math.log(2 * math.pi * sigma**2)
    assert float(value[0].detach()) == pytest.approx(at_zero, abs=1e-9)


def test_logistic_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="needs scikit-learn: pip install scikit-learn"):
        targets.get("logistic")


@pytest.mark.parametrize("name", ["u1", pytest.param("logistic", marks=needs_sklearn)])
def test_targets_without_an_exact_sampler_say_so(name):
    with pytest.raises(NotImplementedError, match=f"target '{name}' has no exact sampler"):
        targets.get(name).sample((3,))
