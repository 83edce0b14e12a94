"""Event shapes: shape maps, Compose's checks and mixed ranks, shape-aware flows and bases."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow import transforms as T

IMAGE = (2, 4, 4)


def _image_flow(validate: bool = True) -> ef.Flow:
    torch.manual_seed(0)
    steps = T.Compose(
        [
            T.ActNorm(2, event_ndim=3),
            T.Coupling(T.AffineMap(), "checkerboard", hidden=4, shape=IMAGE),
            T.InvertibleConv1x1(2),
            T.Flatten(IMAGE),
            T.MaskedAutoregressive(T.AffineMap(), features=32, hidden=(16,)),
        ]
    )
    flow = ef.Flow(steps, ef.distributions.StandardNormal(32), validate=validate)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return flow


def test_reshape_and_flatten_shape_maps() -> None:
    r = T.Reshape((4, 3), (2, 6))
    assert (r.event_ndim, r.event_ndim_out) == (2, 2)
    assert r.forward_shape((4, 3)) == (2, 6) and r.inverse_shape((2, 6)) == (4, 3)
    f = T.Flatten(IMAGE)
    assert (f.event_ndim, f.event_ndim_out) == (3, 1)
    assert f.forward_shape(IMAGE) == (32,) and f.inverse_shape((32,)) == IMAGE
    inv = T.Inverse(f)
    assert (inv.event_ndim, inv.event_ndim_out) == (1, 3)
    assert inv.forward_shape((32,)) == IMAGE and inv.event_shape == (32,)
    with pytest.raises(ValueError, match=r"expected event shape \(2, 4, 4\), got \(2, 4, 5\)"):
        f.forward_shape((2, 4, 5))
    with pytest.raises(ValueError, match="entries"):
        T.Reshape((4, 3), (5,))


def test_reshape_keeps_any_batch_shape() -> None:
    x = torch.randn(2, 3, *IMAGE)
    y, ladj = T.Flatten(IMAGE)(x)
    assert y.shape == (2, 3, 32) and ladj.shape == (2, 3) and not ladj.any()
    assert torch.equal(T.Flatten(IMAGE).inverse(y)[0], x)
    y, ladj = T.Reshape(IMAGE, (8, 4))(x[0, 0])
    assert y.shape == (8, 4) and ladj.shape == ()
    with pytest.raises(ValueError, match=r"Reshape: expected events of shape \(2, 4, 4\)"):
        T.Reshape(IMAGE, (32,))(torch.randn(3, 4, 4))


def test_compose_threads_shapes_and_names_the_bad_step() -> None:
    t = _image_flow().transform
    assert (t.event_ndim, t.event_ndim_out) == (3, 1)
    assert t.event_shape == IMAGE
    assert t.forward_shape(IMAGE) == (32,) and t.inverse_shape((32,)) == IMAGE
    with pytest.raises(ValueError, match=r"step 1 \(Reshape\).*\(8, 4\)"):
        T.Compose([T.Reshape(IMAGE, (8, 4)), T.Reshape((4, 8), (32,))])
    with pytest.raises(
        ValueError, match=r"step 1 \(Coupling\) .*built for events of shape \(2, 4, 4\)"
    ):
        t.forward_shape((2, 6, 6))


def test_compose_sums_the_ladj_of_lower_rank_steps() -> None:
    # An elementwise vector map on (3, 4) events returns ladj (*, 3): Compose sums it.
    sigmoid = T.Sigmoid()
    t = T.Compose([sigmoid, T.Reshape((3, 4), (12,))])
    assert t.event_ndim == 2
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    y, ladj = t(x)
    assert y.shape == (5, 12) and ladj.shape == (5,)
    torch.testing.assert_close(ladj, sigmoid(x)[1].sum(-1))
    torch.testing.assert_close(t.inverse(y)[1], -ladj)


def test_flow_event_shape_comes_from_the_transform() -> None:
    flow = _image_flow()
    assert flow.event_shape == IMAGE and flow.features == 32
    x = torch.randn(6, *IMAGE)
    assert flow.log_prob(x).shape == (6,)
    assert flow.sample((3, 2)).shape == (3, 2, *IMAGE)
    xs, log_p = flow.rsample_and_log_prob((4,))
    assert xs.shape == (4, *IMAGE)
    torch.testing.assert_close(log_p, flow.log_prob(xs), atol=1e-4, rtol=1e-4)
    assert flow().sample((2,)).shape == (2, *IMAGE)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2, 4, 4\), got \(6, 32\)"):
        flow.log_prob(torch.randn(6, 32))


def test_flow_rejects_a_base_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"does not fit the base's event shape \(30,\)"):
        ef.Flow(T.Flatten(IMAGE), ef.distributions.StandardNormal(30))
    with pytest.raises(ValueError, match="outputs events of 3 dimension"):
        ef.Flow(T.ActNorm(2, event_ndim=3), ef.distributions.StandardNormal(2))


def test_flow_sums_the_ladj_over_extra_base_dimensions() -> None:
    # A vector transform under a (3, 4) base acts on every row; the density is still exact.
    torch.manual_seed(0)
    flow = ef.Flow(T.Affine(4), ef.distributions.StandardNormal((3, 4)))
    with torch.no_grad():
        flow.transform.log_scale.normal_()
    x = torch.randn(5, 3, 4)
    expected = torch.distributions.Normal(
        -flow.transform.shift * (-flow.transform.log_scale).exp(),
        (-flow.transform.log_scale).exp(),
    )
    torch.testing.assert_close(flow.log_prob(x), expected.log_prob(x).sum((-2, -1)))


@pytest.mark.parametrize("shape", [(), (3,), (2, 3), IMAGE])
def test_standard_normal_any_event_shape(shape: tuple[int, ...]) -> None:
    normal = ef.distributions.StandardNormal(shape)
    z = normal.rsample((5,))
    assert z.shape == (5, *shape)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z)
    expected = expected.sum(tuple(range(1, z.dim()))) if shape else expected
    torch.testing.assert_close(normal.log_prob(z), expected)


def test_exact_ladj_propagates() -> None:
    class Estimated(T.Affine):
        exact_ladj = False

    assert T.Compose([T.Affine(2), T.Affine(2)]).exact_ladj
    assert not T.Compose([T.Affine(2), Estimated(2)]).exact_ladj
    assert not T.Inverse(Estimated(2)).exact_ladj
    assert T.Inverse(T.Affine(2)).exact_ladj


def test_flow_rejects_a_base_of_the_wrong_width() -> None:
    layer = T.Coupling(T.AffineMap(), "half", features=4, hidden=(4,))
    with pytest.raises(ValueError, match=r"built for events of shape \(4,\), got \(5,\)"):
        ef.Flow(T.Compose([T.Affine(5), layer]), ef.distributions.StandardNormal(5))


def test_a_lower_rank_step_built_for_one_shape_fits_any_rows() -> None:
    coupling = T.Coupling(T.AffineMap(), "half", features=4, hidden=(4,))
    t = T.Compose([coupling, T.ActNorm(3, event_ndim=2)])
    assert t.event_ndim == 2 and t.event_shape is None
    flow = ef.Flow(t, ef.distributions.StandardNormal((3, 4)))
    assert flow.event_shape == (3, 4)
    assert flow.log_prob(torch.randn(5, 3, 4)).shape == (5,)
    with pytest.raises(ValueError, match=r"built for events of shape \(4,\), got \(3, 5\)"):
        ef.Flow(t, ef.distributions.StandardNormal((3, 5)))


def test_a_reshape_of_rows_reshapes_every_row() -> None:
    t = T.Compose([T.Reshape((4,), (2, 2)), T.Flatten((3, 2, 2))])
    assert t.event_ndim == 2 and t.forward_shape((3, 4)) == (12,)
    assert t.inverse_shape((12,)) == (3, 4)
    x = torch.randn(5, 3, 4)
    y, ladj = t(x)
    assert torch.equal(y, x.reshape(5, 12)) and ladj.shape == (5,)
