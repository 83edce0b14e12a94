"""Property tests of the rational-quadratic spline: finiteness, round trips, knots, identity.

Raw parameters range up to ±50 and inputs up to ±1e30, including the knots and the bounds
themselves, where a spline evaluated out of range and masked afterwards would leak NaN
gradients.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exactflow.transforms import RationalQuadraticSpline, Spline

SETTINGS = settings(max_examples=50, deadline=None)
FAR = (1e30, 1e6, 1e4)
SIGNED_FAR = tuple(v * sign for v in FAR for sign in (1, -1))


@st.composite
def splines(
    draw: st.DrawFn, scale: float = 50.0, dtypes: tuple[torch.dtype, ...] = (torch.float64,)
) -> tuple[RationalQuadraticSpline, torch.Tensor]:
    """A spline and raw parameters ``(D, P)`` with entries in ``[-scale, scale]``."""
    spline = RationalQuadraticSpline(
        bins=draw(st.integers(1, 9)),
        bound=draw(st.sampled_from([0.5, 2.0, 5.0])),
        tails=draw(st.sampled_from(["linear", "identity"])),
    )
    features = draw(st.integers(1, 3))
    entry = st.one_of(
        st.floats(-scale, scale, allow_nan=False), st.sampled_from([-scale, 0.0, scale])
    )
    raw = draw(
        st.lists(entry, min_size=features * spline.params, max_size=features * spline.params)
    )
    dtype = draw(st.sampled_from(dtypes))
    return spline, torch.tensor(raw, dtype=dtype).reshape(features, spline.params)


def inputs(draw: st.DrawFn, knots: torch.Tensor, bound: float, far: bool = True) -> torch.Tensor:
    """Rows ``(N, D)``: the knots, ``±bound``, drawn points inside and (if far) far outside."""
    features = knots.shape[0]
    inside = st.floats(-bound, bound, allow_nan=False)
    values = inside | st.floats(-1e6, 1e6) | st.sampled_from(SIGNED_FAR) if far else inside
    drawn = draw(st.lists(values, min_size=features, max_size=4 * features))
    drawn = drawn[: len(drawn) // features * features]
    special = [bound, -bound, 0.0, *(SIGNED_FAR if far else ())]
    rows = [
        knots.T,  # (K + 1, D): every coordinate at each of its knots
        knots.new_tensor(special)[:, None].expand(-1, features),
        knots.new_tensor(drawn).reshape(-1, features),
    ]
    return torch.cat(rows)


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@SETTINGS
@given(st.data(), splines(dtypes=(torch.float32, torch.float64)))
def test_values_and_gradients_are_finite_everywhere(data, setup) -> None:
    spline, raw = setup
    xk, yk, _ = spline.knots(raw)
    for method, knots in ((spline.forward, xk), (spline.inverse, yk)):
        x = inputs(data.draw, knots.detach(), spline.bound).requires_grad_()
        params = raw.clone().requires_grad_()
        y, ladj = method(x, params)
        assert _finite(y, ladj), method.__name__
        dx, dparams = torch.autograd.grad(y.sum() + ladj.sum(), (x, params))
        assert _finite(dx, dparams), method.__name__


@SETTINGS
@given(st.data(), splines())
def test_identity_outside_the_bounds(data, setup) -> None:
    spline, raw = setup
    b = spline.bound
    magnitude = data.draw(st.floats(b, 1e30, exclude_min=True) | st.sampled_from(FAR))
    x = torch.tensor([magnitude, -magnitude], dtype=raw.dtype)[:, None].expand(-1, raw.shape[0])
    params = raw.clone().requires_grad_()
    for method in (spline.forward, spline.inverse):
        y, ladj = method(x, params)
        assert torch.equal(y, x) and torch.equal(ladj, torch.zeros_like(x))
        (grad,) = torch.autograd.grad(y.sum() + ladj.sum(), params)
        assert torch.equal(grad, torch.zeros_like(grad))


@SETTINGS
@given(splines())
def test_knots_map_to_knots_with_their_slopes(setup) -> None:
    spline, raw = setup
    xk, yk, dk = spline.knots(raw)
    assert torch.equal(xk[..., [0, -1]], yk[..., [0, -1]])
    assert torch.all(xk.diff() > 0) and torch.all(yk.diff() > 0) and torch.all(dk > 0)
    assert torch.equal(dk[..., [0, -1]], torch.ones_like(dk[..., :2]))  # C1 tails
    y, ladj = spline.forward(xk.T, raw)
    torch.testing.assert_close(y, yk.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj.exp(), dk.T, rtol=1e-10, atol=0)
    x, ladj_inv = spline.inverse(yk.T, raw)
    torch.testing.assert_close(x, xk.T, rtol=0, atol=1e-10)
    torch.testing.assert_close((-ladj_inv).exp(), dk.T, rtol=1e-10, atol=0)


@SETTINGS
@given(st.data(), splines(scale=5.0))
def test_round_trips_inside_the_bounds(data, setup) -> None:
    spline, raw = setup
    xk, yk, _ = spline.knots(raw)
    x = inputs(data.draw, xk, spline.bound, far=False)
    y, ladj = spline.forward(x, raw)
    x_back, ladj_inv = spline.inverse(y, raw)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-9)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=0, atol=1e-8)
    y = inputs(data.draw, yk, spline.bound, far=False)
    torch.testing.assert_close(
        spline.forward(spline.inverse(y, raw)[0], raw)[0], y, rtol=0, atol=1e-11
    )


@SETTINGS
@given(st.data(), splines())
def test_round_trips_with_extreme_parameters(data, setup) -> None:
    """With raw parameters up to ±50 bins get as flat as slope ~1e-3, where the inverse is
    ill-conditioned; the error in ``x`` times the slope (an error in ``y``) stays at rounding
    level."""
    spline, raw = setup
    xk, yk, _ = spline.knots(raw)
    x = inputs(data.draw, xk, spline.bound, far=False)
    y, ladj = spline.forward(x, raw)
    x_back, _ = spline.inverse(y, raw)
    assert torch.all((x_back - x).abs() * ladj.exp().clamp(max=1) <= 1e-13 * spline.bound)
    y = inputs(data.draw, yk, spline.bound, far=False)
    torch.testing.assert_close(
        spline.forward(spline.inverse(y, raw)[0], raw)[0], y, rtol=0, atol=1e-11
    )


@SETTINGS
@given(st.data(), splines(scale=10.0))
def test_ladj_is_the_log_derivative(data, setup) -> None:
    spline, raw = setup
    xk, yk, _ = spline.knots(raw)
    for method, knots in ((spline.forward, xk), (spline.inverse, yk)):
        x = inputs(data.draw, knots, spline.bound).requires_grad_()
        y, ladj = method(x, raw)
        (slope,) = torch.autograd.grad(y.sum(), x)
        torch.testing.assert_close(slope.log(), ladj, rtol=0, atol=1e-8)


@SETTINGS
@given(splines())
def test_monotonic(setup) -> None:
    spline, raw = setup
    xk, yk, _ = spline.knots(raw)
    b = spline.bound
    for method, knots in ((spline.forward, xk), (spline.inverse, yk)):
        grid = torch.linspace(-1.5 * b, 1.5 * b, 1001, dtype=raw.dtype)[:, None]
        x = torch.cat([grid.expand(-1, raw.shape[0]), knots.T]).sort(dim=0).values
        y, _ = method(x, raw)
        assert torch.all(y.diff(dim=0) >= 0)


@SETTINGS
@given(
    st.sampled_from([1, 2, 8, 16]),
    st.sampled_from([0.5, 5.0]),
    st.sampled_from([1e-3, 0.05]),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_identity_parameters_give_the_identity(bins, bound, minimum, dtype) -> None:
    spline = RationalQuadraticSpline(
        bins, bound, min_width=minimum / bins, min_height=minimum, min_derivative=minimum
    )
    params = spline.identity().to(dtype).expand(3, -1)
    assert params.shape == (3, spline.params)
    x = torch.cat([torch.linspace(-2 * bound, 2 * bound, 401), torch.tensor([1e30, -1e30])])
    x = x.to(dtype)[:, None].expand(-1, 3)
    atol = 8 * torch.finfo(dtype).eps * bound
    for method in (spline.forward, spline.inverse):
        y, ladj = method(x, params)
        torch.testing.assert_close(y, x, rtol=0, atol=atol)
        torch.testing.assert_close(ladj, torch.zeros_like(x), rtol=0, atol=8 * atol / bound)


def test_parameter_layout_and_config() -> None:
    spline = RationalQuadraticSpline(bins=4, bound=3.0, min_derivative=0.01)
    assert spline.params == 11
    identity = spline.identity()
    assert torch.equal(identity, torch.zeros(11))
    for dtype in (torch.float32, torch.float64):
        xk, yk, dk = spline.knots(identity.to(dtype))
        assert torch.equal(dk, torch.ones(5, dtype=dtype))
        assert torch.equal(xk, yk)
    # Slopes run from min_derivative (raw -> -inf) upwards.
    raw = torch.tensor([0.0] * 8 + [-1e3, -30.0, 30.0], dtype=torch.float64)
    slopes = spline.knots(raw)[2][1:-1]
    torch.testing.assert_close(slopes[:2], torch.full((2,), 0.01, dtype=torch.float64))
    assert 30 < slopes[2] < 50
    config = json.loads(json.dumps(spline.config()))
    assert RationalQuadraticSpline(**config).config() == spline.config()
    # Raising one width logit widens that bin only.
    raw = identity.clone()
    raw[1] = 2.0
    widths = spline.knots(raw)[0].diff()
    assert widths.argmax() == 1 and torch.allclose(widths.sum(), torch.tensor(6.0))


def test_shared_parameters_broadcast_over_a_batch() -> None:
    torch.manual_seed(0)
    spline = RationalQuadraticSpline(bins=5, bound=2.0)
    raw = torch.randn(3, spline.params, dtype=torch.float64)
    x = 3 * torch.randn(4, 7, 3, dtype=torch.float64)
    for method in (spline.forward, spline.inverse):
        shared = method(x, raw)
        expanded = method(x, raw.expand(4, 7, -1, -1))
        assert shared[0].shape == shared[1].shape == x.shape
        torch.testing.assert_close(shared, expanded, rtol=0, atol=1e-14)


def test_jacrev_and_vmap() -> None:
    torch.manual_seed(0)
    spline = RationalQuadraticSpline(bins=6, bound=2.0)
    raw = torch.randn(5, 3, spline.params, dtype=torch.float64)
    x = 3 * torch.randn(5, 3, dtype=torch.float64)
    for method in (spline.forward, spline.inverse):
        values = method(x, raw)
        mapped = torch.func.vmap(method)(x, raw)
        torch.testing.assert_close(mapped, values, rtol=0, atol=0)
        jac = torch.func.vmap(torch.func.jacrev(lambda xi, p, f=method: f(xi, p)[0]))(x, raw)
        torch.testing.assert_close(
            jac.diagonal(dim1=-2, dim2=-1).log(), values[1], rtol=0, atol=1e-10
        )
        jac_params = torch.func.jacrev(lambda p, f=method: f(x, p)[1])(raw)
        assert jac_params.shape == (5, 3, 5, 3, spline.params)
        assert torch.isfinite(jac_params).all()


def test_spline_transform() -> None:
    t = Spline(3, bins=4, bound=2.0)
    assert t.raw.shape == (3, 11)
    x = torch.randn(2, 5, 3)
    y, ladj = t(x)
    torch.testing.assert_close(y, x)
    assert ladj.shape == (2, 5)
    with pytest.raises(ValueError, match=r"expected shape \(\*, 3\), got \(5, 2\)"):
        t(torch.randn(5, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 0}, "bins must be an int >= 1, got 0"),
        ({"bins": 2.0}, "bins must be an int >= 1, got 2.0"),
        ({"bound": -1.0}, "bound must be positive, got -1.0"),
        ({"tails": "circular"}, "tails must be one of .*, got 'circular'"),
        ({"bins": 10, "min_width": 0.1}, r"min_width must be in \(0, 1 / bins\)"),
        ({"min_height": 0.0}, r"min_height must be in \(0, 1 / bins\)"),
        ({"min_derivative": 0.0}, r"min_derivative must be in \(0, 1\), got 0.0"),
    ],
    ids=["bins", "bins-float", "bound", "tails", "min-width", "min-height", "min-derivative"],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RationalQuadraticSpline(**kwargs)


def test_wrong_number_of_parameters() -> None:
    spline = RationalQuadraticSpline(bins=4)
    with pytest.raises(ValueError, match=r"params must have shape \(\*, D, 11\), got \(2, 3, 12\)"):
        spline.forward(torch.zeros(2, 3), torch.zeros(2, 3, 12))
