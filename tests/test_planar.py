"""Planar, radial and Sylvester flows: invertibility constraints, numerical inverses, presets."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import exactflow as ef
from exactflow import transforms as T

F64 = torch.float64


def _perturbed(t: T.Transform, scale: float = 0.5, seed: int = 0) -> T.Transform:
    torch.manual_seed(seed)
    t = t.double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(scale * torch.randn_like(p))
    return t


# ---------------------------------------------------------------- invertibility constraints
@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
@pytest.mark.parametrize("factor", [-10.0, -1e3, -1e6])
def test_planar_stays_invertible_for_adversarial_u(activation: str, factor: float) -> None:
    t = _perturbed(T.Planar(3, activation=activation))
    with torch.no_grad():
        t.u.copy_(factor * t.w)  # raw wᵀu far below -1
    direction = t.w.detach() / t.w.detach().norm()
    a = torch.linspace(-50, 50, 20001, dtype=F64)
    z = a[:, None] * direction + torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    y, ladj = t(z)
    assert torch.all(torch.diff(y @ direction) > 0), "not strictly increasing along w"
    assert torch.isfinite(ladj).all()
    # Still invertible in practice: the inverse lands back on the inputs' images.
    yy = 5 * torch.randn(200, 3, dtype=F64)
    xx, ladj_inv = t.inverse(yy)
    torch.testing.assert_close(t(xx)[0], yy, rtol=0, atol=1e-10)
    assert torch.isfinite(ladj_inv).all()


def test_sylvester_and_radial_stay_invertible_for_adversarial_diagonals() -> None:
    syl = _perturbed(T.Sylvester(4, columns=3))
    rad = _perturbed(T.Radial(4))
    with torch.no_grad():
        syl.diag_raw.fill_(-800.0)  # r1_ii r2_ii -> -1 (softplus underflows to 0)
        syl.r2_log_diag.copy_(torch.tensor([5.0, -5.0, 0.0]))
        rad.beta_raw.fill_(-800.0)  # β -> -α
    for t in (syl, rad):
        x = 3 * torch.randn(500, 4, dtype=F64)
        y, ladj = t(x)
        assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
        xx, ladj_inv = t.inverse(y)
        assert torch.isfinite(xx).all() and torch.isfinite(ladj_inv).all()
    # The Sylvester step is monotone along each column of Q: ⟨q_i, f(z + a q_i) - f(z)⟩ > 0.
    q = syl._basis().detach()
    z = torch.randn(4, dtype=F64)
    a = torch.linspace(-20, 20, 4001, dtype=F64)
    for i in range(3):
        y, _ = syl(z + a[:, None] * q[:, i])
        assert torch.all(torch.diff(y @ q[:, i]) > 0)


# ---------------------------------------------------------------- numerical inverse accuracy
@pytest.mark.parametrize(
    "make",
    [
        lambda: T.Planar(4),
        lambda: T.Planar(4, activation="leaky_relu"),
        lambda: T.Radial(4),
        lambda: T.Sylvester(4, columns=3),
        lambda: T.Sylvester(4, kind="householder"),
        lambda: T.Sylvester(4, kind="triangular", flip=True),
    ],
    ids=["planar", "planar-leaky", "radial", "sylvester", "householder", "triangular"],
)
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_inverse_reaches_stated_tolerance_far_from_origin(make, scale: float) -> None:
    t = _perturbed(make())
    torch.manual_seed(1)
    y = scale * torch.randn(300, 4, dtype=F64)
    x, _ = t.inverse(y)
    # Stated: relative 1e-12 per scalar solve; allow a few ulps of the final evaluation.
    assert torch.all((t(x)[0] - y).abs() <= 1e-12 * (1 + y.abs().amax(-1, keepdim=True)))
    xx = scale * torch.randn(300, 4, dtype=F64)
    assert torch.all((t.inverse(t(xx)[0])[0] - xx).abs() <= 1e-11 * (1 + xx.abs().amax(-1, True)))


def test_planar_scalar_solve_near_the_singular_point() -> None:
    """``x + s·tanh(x) = t`` with ``1 + s ~ 1e-13`` and ``t`` near 0: bisection saves Newton."""
    t = _perturbed(T.Planar(2))
    w, b = t.w.detach(), t.b.detach()
    with torch.no_grad():
        t.u.copy_(-30 / w.dot(w) * w)  # wᵀu = -30: 1 + wᵀû = softplus(-30) ~ 1e-13
    target = torch.linspace(-1e-3, 1e-3, 101, dtype=F64)  # values of wᵀy + b
    y = ((target - b) / w.dot(w))[:, None] * w + torch.tensor([0.5, 2.0], dtype=F64)
    x, ladj = t.inverse(y)
    torch.testing.assert_close(t(x)[0], y, rtol=0, atol=1e-12)
    assert torch.isfinite(ladj).all()


# ---------------------------------------------------------------- gradients and shapes
@pytest.mark.parametrize(
    "make",
    [lambda: T.Planar(3), lambda: T.Sylvester(3, columns=2)],
    ids=["planar", "sylvester"],
)
def test_parameter_gradients_of_numerical_inverse_are_exact(make) -> None:
    """The implicit-function gradient matches finite differences (not the iterations')."""
    t = _perturbed(make(), scale=0.3)
    names = [n for n, _ in t.named_parameters()]
    y = torch.randn(5, 3, dtype=F64)

    def score(*params: torch.Tensor) -> torch.Tensor:
        x, ladj = functional_call(
            T.Inverse(t), {f"transform.{n}": p for n, p in zip(names, params, strict=True)}, (y,)
        )
        return x.sin().sum() + ladj.sum()

    params = tuple(p.detach().clone().requires_grad_() for p in t.parameters())
    assert torch.autograd.gradcheck(score, params, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "make",
    [lambda: T.Planar(3), lambda: T.Radial(3), lambda: T.Sylvester(3, columns=2)],
    ids=["planar", "radial", "sylvester"],
)
@pytest.mark.parametrize("batch", [(), (0,), (2, 4), (2, 1, 3)])
def test_any_leading_batch_shape(make, batch: tuple[int, ...]) -> None:
    t = _perturbed(make())
    x = torch.randn((*batch, 3), dtype=F64)
    y, ladj = t(x)
    xx, ladj_inv = t.inverse(y)
    assert y.shape == x.shape and ladj.shape == batch and ladj_inv.shape == batch
    torch.testing.assert_close(xx, x)
    if batch == (2, 4):  # rows are independent: the batched result equals row by row
        rows = torch.stack([t.inverse(y[i, j : j + 1])[0][0] for i in range(2) for j in range(4)])
        torch.testing.assert_close(xx.reshape(8, 3), rows)


def test_float32_round_trip() -> None:
    for t in (T.Planar(3), T.Radial(3), T.Sylvester(3, kind="householder")):
        x = torch.randn(100, 3)
        y, ladj = t(x)
        xx, ladj_inv = t.inverse(y)
        torch.testing.assert_close(xx, x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- presets
@pytest.mark.parametrize(
    "make",
    [
        lambda: ef.flows.Planar(3, transforms=4),
        lambda: ef.flows.Planar(3, transforms=4, activation="leaky_relu"),
        lambda: ef.flows.Radial(3, transforms=4),
        lambda: ef.flows.Sylvester(3, transforms=3, hidden=2),
        lambda: ef.flows.Sylvester(3, transforms=3, kind="householder"),
        lambda: ef.flows.Sylvester(3, transforms=3, kind="triangular"),
    ],
    ids=["planar", "planar-leaky", "radial", "sylvester", "householder", "triangular"],
)
def test_preset_rsample_log_prob_agrees_with_log_prob(make) -> None:
    flow = make()
    assert isinstance(flow, ef.Flow) and isinstance(flow.base, ef.distributions.StandardNormal)
    flow = _perturbed(flow, scale=0.3)
    x, log_q = flow.rsample_and_log_prob((64,))
    torch.testing.assert_close(flow.log_prob(x.detach()), log_q.detach(), rtol=1e-10, atol=1e-10)
    (x.sum() + log_q.sum()).backward()  # the VI objective's gradient path
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())
    xs, log_qs = flow.sample_and_log_prob((2, 5))
    assert xs.shape == (2, 5, 3)
    torch.testing.assert_close(flow.log_prob(xs), log_qs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("preset", [ef.flows.Planar, ef.flows.Radial, ef.flows.Sylvester])
def test_presets_reject_context(preset) -> None:
    with pytest.raises(ValueError, match="context=2.*IAF"):
        preset(3, context=2)


def test_bad_arguments_are_reported() -> None:
    with pytest.raises(ValueError, match="activation must be 'tanh' or 'leaky_relu', got 'relu6'"):
        T.Planar(2, activation="relu6")
    with pytest.raises(ValueError, match="negative_slope must be in"):
        T.Planar(2, activation="leaky_relu", negative_slope=2.0)
    with pytest.raises(ValueError, match=r"columns must be an int in \[1, features=3\], got 4"):
        T.Sylvester(3, columns=4)
    with pytest.raises(ValueError, match="kind must be one of"):
        T.Sylvester(3, kind="diagonal")
    with pytest.raises(ValueError, match="flip is for kind='triangular'"):
        T.Sylvester(3, flip=True)
    with pytest.raises(ValueError, match="features must be a positive int"):
        T.Radial(0)
    with pytest.raises(TypeError, match="hidden is the number M"):
        ef.flows.Sylvester(3, hidden=(64, 64))
