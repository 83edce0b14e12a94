"""exactflow.data: synthetic densities, catalog, digits, standardization, dequantization, loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from exactflow import data
from exactflow.data import CurveMixtureDensity, Dataset

TOYS_2D = ["moons", "circles", "8gaussians", "checkerboard", "spirals", "pinwheel", "gmm2d"]
SMALL = {"n_train": 300, "n_val": 50, "n_test": 200}


def _midpoint_grid(lower, upper, step):
    axes = [
        lo + step * (torch.arange(math.ceil((hi - lo) / step)) + 0.5)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    xx, yy = torch.meshgrid(*[a.double() for a in axes], indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), step**2


# --- toys: shapes, seeds, densities, entropies -------------------------------------------


@pytest.mark.parametrize("name", [*TOYS_2D, "gmm"])
def test_toy_shapes_and_seeds(name):
    ds = data.load(name, seed=3, **SMALL)
    dim = 16 if name == "gmm" else 2
    assert (
        ds.train.shape == (300, dim) and ds.val.shape == (50, dim) and ds.test.shape == (200, dim)
    )
    assert ds.train.dtype == torch.float32
    assert ds.kind == ("tabular" if name == "gmm" else "toy2d")
    assert ds.log_density is not None and ds.features == dim
    again = data.load(name, seed=3, **SMALL)
    other = data.load(name, seed=4, **SMALL)
    assert torch.equal(ds.train, again.train) and torch.equal(ds.test, again.test)
    assert not torch.equal(ds.train, other.train)
    # Each split has its own stream: the test set does not depend on n_train.
    bigger = data.load(name, seed=3, n_train=400, n_val=50, n_test=200)
    assert torch.equal(bigger.test, ds.test)
    assert torch.isfinite(ds.log_density(ds.test)).all()


def test_toy_sampler_seeded():
    p = data.moons()
    assert torch.equal(p.sample(50, seed=1), p.sample(50, seed=1))
    assert not torch.equal(p.sample(50, seed=1), p.sample(50, seed=2))
    g = torch.Generator().manual_seed(0)
    assert p.sample(7, g).shape == (7, 2) and p.sample(7, g).dtype == torch.float64


def test_log_density_shapes_and_dtype():
    p = data.eight_gaussians()
    x = torch.randn(3, 4, 2)
    assert p.log_prob(x).shape == (3, 4) and p.log_prob(x).dtype == torch.float32
    with pytest.raises(ValueError, match=r"expects shape \(\.\.\., 2\)"):
        p.log_prob(torch.zeros(5, 3))


@pytest.mark.parametrize("name", TOYS_2D)
def test_log_density_integrates_to_one(name):
    density = data.load(name, n_train=2, n_val=1, n_test=1).density
    # Boxes hold all but ~1e-10 of the mass; steps are fine enough for the midpoint rule.
    half, step = {
        "moons": (2.2, 0.02),
        "circles": (1.6, 0.02),
        "8gaussians": (3.5, 0.02),
        "checkerboard": (2.2, 0.02),
        "spirals": (4.3, 0.05),
        "pinwheel": (6.8, 0.1),
        "gmm2d": (9.0, 0.05),
    }[name]
    points, cell = _midpoint_grid((-half, -half), (half, half), step)
    mass = float(density.log_prob(points).exp().sum()) * cell
    assert mass == pytest.approx(1.0, abs=2e-4)


@pytest.mark.parametrize("name", TOYS_2D)
def test_entropy_matches_monte_carlo(name):
    density = data.load(name, n_train=2, n_val=1, n_test=1).density
    entropy = density.entropy()
    assert entropy.method in ("exact", "quadrature")
    assert entropy.error < 1e-6
    log_p = density.log_prob(density.sample(4000, seed=99))
    estimate, se = -float(log_p.mean()), float(log_p.std()) / math.sqrt(len(log_p))
    assert abs(estimate - entropy.value) < 5 * se + 1e-9


def test_gmm_monte_carlo_entropy_has_standard_error():
    density = data.gaussian_mixture(dim=6, components=4, entropy_samples=40_000)
    entropy = density.entropy()
    assert entropy.method == "monte carlo" and entropy.samples == 40_000 and entropy.error > 0
    assert density.entropy() is entropy  # cached
    log_p = density.log_prob(density.sample(40_000, seed=7))
    independent = -float(log_p.mean())
    assert abs(independent - entropy.value) < 5 * math.sqrt(2) * entropy.error


def test_gaussian_mixture_is_seeded_and_single_gaussian_is_exact():
    a, b = data.gaussian_mixture(dim=16, components=5), data.gaussian_mixture(dim=16, components=5)
    assert torch.equal(a.means, b.means) and torch.equal(a.scales, b.scales)
    assert not torch.equal(a.means, data.gaussian_mixture(dim=16, components=5, seed=1).means)
    one = data.gaussian_mixture(dim=3, components=1)
    expected = float(one.scales.log().sum()) + 1.5 * (1 + math.log(2 * math.pi))
    assert one.entropy().method == "exact"
    assert one.entropy().value == pytest.approx(expected, abs=1e-12)
    x = torch.randn(10, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(one.means[0], one.scales[0]).log_prob(x).sum(-1)
    assert torch.allclose(one.log_prob(x), ref, atol=1e-12)


def test_checkerboard_is_exactly_uniform_on_dark_squares():
    p = data.checkerboard()
    inside = torch.tensor([[-1.5, -1.5], [0.5, 0.5], [-0.5, -0.5]], dtype=torch.float64)
    outside = torch.tensor([[-0.5, -1.5], [0.5, -0.5], [3.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(p.log_prob(inside), torch.full((3,), -math.log(8), dtype=torch.float64))
    assert torch.isinf(p.log_prob(outside)).all()
    assert p.entropy() == data.Entropy(math.log(8), 0.0, "exact")
    assert torch.isfinite(p.log_prob(p.sample(1000, seed=0))).all()


def test_circles_radial_quadrature_agrees_with_grid():
    p = data.circles()
    grid = data.grid_entropy(p.log_prob, (-1.8, -1.8), (1.8, 1.8), 0.02)
    assert p.entropy().value == pytest.approx(grid.value, abs=1e-6)


@pytest.mark.parametrize("factory", [data.moons, data.pinwheel], ids=["moons", "pinwheel"])
def test_curve_quadrature_is_converged(factory):
    p = factory()
    finer = CurveMixtureDensity(p.curves, p.noise, "finer", panel=0.25)
    x = p.sample(300, seed=5).double()
    assert (p.log_prob(x) - finer.log_prob(x)).abs().max() < 1e-9


def test_toy_options_pass_through_and_bad_options_fail():
    ds = data.load("moons", noise=0.05, **SMALL)
    assert ds.density.noise == 0.05
    with pytest.raises(ValueError, match="moons: unknown option 'wiggle'; the known options"):
        data.load("moons", wiggle=1)
    with pytest.raises(ValueError, match="n_train"):
        data.load("moons", n_train=-1)


# --- catalog ----------------------------------------------------------------------------------


def test_list_datasets_names_everything():
    names = [n for n, _ in data.list_datasets()]
    for expected in [*TOYS_2D, "gmm", "digits", "power", "gas", "hepmass", "miniboone",
                     "bsds300", "mnist", "fashion-mnist"]:  # fmt: skip
        assert expected in names
    assert all(isinstance(d, str) and d and "\n" not in d for _, d in data.list_datasets())


def test_load_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown data set 'nope'.*moons"):
        data.load("nope")


def test_load_is_case_and_separator_insensitive():
    assert data.load("8Gaussians", **SMALL).name == "8gaussians"


def test_dataset_record_validates():
    t = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="kind"):
        Dataset("x", "weird", t, t, t)
    with pytest.raises(ValueError, match="trailing shape"):
        Dataset("x", "tabular", t, torch.zeros(4, 3), t)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Dataset("x", "image", t, t, t)
    ds = Dataset("x", "tabular", t, t, t)
    assert ds.log_density is None and ds.entropy is None and "tabular" in repr(ds)
    assert ds.to(torch.float64).train.dtype == torch.float64


# --- digits -----------------------------------------------------------------------------------


def test_digits_load_split_and_dequantization():
    ds = data.load("digits", seed=0)
    assert (ds.train.shape, ds.val.shape, ds.test.shape) == ((1257, 64), (270, 64), (270, 64))
    assert ds.kind == "tabular" and ds.levels == 17 and ds.density is None
    everything = torch.cat([ds.train, ds.val, ds.test])
    assert everything.min() >= 0 and everything.max() < 1
    raw = data.load_digits(seed=0, dequantize_pixels=False)
    ints = torch.cat([raw.train, raw.val, raw.test]) * 17
    assert torch.allclose(ints, ints.round(), atol=1e-4)
    # Dequantized values fall in the bin of their integer (up to float32 rounding at the edges).
    k = torch.cat([raw.train, raw.val, raw.test]).double().mul(17).round()
    assert ((everything.double() * 17 - k - 0.5).abs() <= 0.5 + 1e-5).all()
    # The three splits are a partition of the 1797 images of the bundled file.
    import gzip
    import importlib.resources

    with importlib.resources.files("exactflow.data").joinpath("digits.csv.gz").open("rb") as f:
        table = np.loadtxt(gzip.open(f, "rt"), delimiter=",")[:, :64]
    assert sorted(map(tuple, ints.round().numpy().astype(int))) == sorted(
        map(tuple, table.astype(int))
    )
    assert torch.equal(data.load("digits", seed=0).train, ds.train)
    assert not torch.equal(data.load("digits", seed=1).train, ds.train)


def test_digits_as_images():
    ds = data.load_digits(image=True)
    assert ds.kind == "image" and ds.train.shape == (1257, 1, 8, 8) and ds.features == 64


# --- dequantization and bits/dim --------------------------------------------------------------


def test_bits_per_dim_formula():
    assert data.bits_per_dim(0.0, dims=784) == pytest.approx(8.0)
    d = 10
    assert data.bits_per_dim(d * math.log(2), dims=d) == pytest.approx(9.0)
    assert data.bits_per_dim(0.0, dims=64, levels=17) == pytest.approx(math.log2(17))
    nll = torch.tensor([1.0, 2.0])
    assert torch.allclose(data.bits_per_dim(nll, 4), (nll + 4 * math.log(256)) / (4 * math.log(2)))


def test_dequantize_stays_below_one_and_in_its_bin():
    k = torch.randint(0, 256, (2000,))
    x = data.dequantize(k, 256, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and (x >= 0).all() and (x < 1).all()
    assert ((x.double() * 256 - k - 0.5).abs() <= 0.5 + 1e-5).all()
    top = data.dequantize(
        torch.full((5000,), 255), 256, torch.Generator().manual_seed(1), torch.bfloat16
    )
    assert (top < 1).all()
    with pytest.raises(ValueError, match="integers in 0..255"):
        data.dequantize(torch.tensor([256]), 256)


# --- standardization --------------------------------------------------------------------------


def test_standardize_fits_train_only_and_folds_its_jacobian():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([1.0, -3.0, 10.0]), torch.tensor([0.5, 2.0, 30.0])
    train = (mean + std * torch.randn(5000, 3, generator=g)).double()
    s = data.Standardize.fit(train)
    assert torch.allclose(s.mean, train.mean(0)) and torch.allclose(
        s.std, train.std(0, correction=0)
    )
    z = s(train)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(s.inverse(z), train)
    assert s.log_det == pytest.approx(-float(s.std.log().sum()))
    assert s.ladj(torch.zeros(7, 3)).shape == (7,)
    # log p_x(x) = log p_z(z) + ladj, with p_z the standardized Gaussian.
    x = train[:10]
    normal = torch.distributions.Normal(s.mean, s.std)
    log_px = normal.log_prob(x).sum(-1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(s(x)).sum(-1)
    assert torch.allclose(log_px, log_pz + s.ladj(x))


def test_standardize_errors_name_the_feature():
    x = torch.randn(10, 3)
    x[:, 1] = 4.0
    with pytest.raises(ValueError, match=r"feature 2 \(counted from 1\) is constant"):
        data.Standardize.fit(x)
    y = torch.randn(10, 3)
    y[4, 2] = float("nan")
    with pytest.raises(ValueError, match="row 5, feature 3"):
        data.Standardize.fit(y)
    with pytest.raises(TypeError):
        data.Standardize.fit(torch.zeros(10, 3, dtype=torch.long))


def test_standardize_images_and_datasets():
    ds = data.load_digits(image=True)
    s = data.Standardize.fit(ds)
    assert s.mean.shape == (1, 8, 8) and s.event_ndim == 3
    assert s.ladj(ds.test).shape == (270,)


# --- minibatch loader -------------------------------------------------------------------------


def test_loader_covers_every_row_once_per_epoch_and_is_seeded():
    x = torch.arange(23.0)[:, None]
    batches = data.loader(x, batch_size=5, seed=1)
    assert len(batches) == 5
    epoch1 = torch.cat(list(batches))
    epoch2 = torch.cat(list(batches))
    assert torch.equal(epoch1.sort(0).values, x) and torch.equal(epoch2.sort(0).values, x)
    assert not torch.equal(epoch1, epoch2)
    assert torch.equal(torch.cat(list(data.loader(x, 5, seed=1))), epoch1)


def test_loader_unshuffled_tuples_and_drop_last():
    x, c = torch.arange(10.0)[:, None], torch.arange(10.0)[:, None] * 2
    out = list(data.loader((x, c), batch_size=4, shuffle=False, drop_last=True))
    assert len(out) == 2 and all(isinstance(b, tuple) and len(b) == 2 for b in out)
    assert torch.equal(out[1][0], x[4:8]) and torch.equal(out[1][1], c[4:8])
    shuffled = list(data.loader((x, c), batch_size=3, seed=0))
    assert all(torch.equal(bc, 2 * bx) for bx, bc in shuffled)
    with pytest.raises(ValueError, match="first dimension"):
        data.loader((x, c[:5]), 2)
    with pytest.raises(ValueError, match="batch_size"):
        data.loader(x, 0)


def test_split_rows():
    rows = torch.arange(100.0)[:, None]
    train, val, test = data.split_rows(rows, (0.7, 0.2, 0.1), seed=0)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert torch.equal(torch.cat([train, val, test]).sort(0).values, rows)
    first, *_ = data.split_rows(rows, (0.7, 0.2, 0.1), shuffle=False)
    assert torch.equal(first, rows[:70])
    with pytest.raises(ValueError, match="summing to 1"):
        data.split_rows(rows, (0.5, 0.2, 0.2))
