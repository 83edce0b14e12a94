"""Planar, radial and Sylvester flows: invertibility, numerical inverses, context, presets."""

from __future__ import annotations

import copy

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
    q = syl._params(None)[0].detach()
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


# ---------------------------------------------------------------- convergence: right or raise
def _issue_planar() -> ef.Flow:
    """The planar case of the issue: ``w = (3, 0)``, ``u = (62, 0)``, so ``s = wᵀû = 185``."""
    torch.manual_seed(0)
    f = ef.flows.Planar(features=2, transforms=1).double()
    t = f.transform.transforms[0].transform
    with torch.no_grad():
        t.w.copy_(torch.tensor([3.0, 0.0]))
        t.u.copy_(torch.tensor([62.0, 0.0]))
    return f


def test_planar_issue_case_is_right_to_the_stated_tolerance() -> None:
    """Was off by 1533 nats: Newton ping-ponged between the bracket's ends, unchecked."""
    f = _issue_planar()
    x, log_q = f.sample_and_log_prob((1000,))
    assert (f.log_prob(x) - log_q).abs().max() < 1e-9
    z, _ = f.transform(x)
    (step,) = [s.transform for s in f.transform.transforms]
    pre = z @ step.w.detach() + step.b.detach()
    t = x @ step.w.detach() + step.b.detach()
    residual = pre + 185 * torch.tanh(pre) - t  # the scalar equation the inverse solves
    assert torch.all(residual.abs() <= 1e-12 * (1 + t.abs()))


def test_planar_issue_case_raises_naming_the_step_when_the_solve_stops_short() -> None:
    f = _issue_planar()
    x, _ = f.sample_and_log_prob((1000,))
    f.transform.transforms[0].transform.max_iter = 1  # a budget too small to converge
    with pytest.raises(FloatingPointError, match=r"Planar\.inverse.*residual .* > tolerance"):
        f.log_prob(x)
    # Under a tracer nothing is read back: the unconverged entries are NaN, never wrong.
    traced = torch.func.vmap(f.log_prob)(x)
    assert traced.isnan().any()
    exact = _issue_planar().log_prob(x)
    ok = ~traced.isnan()
    torch.testing.assert_close(traced[ok], exact[ok], rtol=0, atol=1e-9)


def test_sylvester_raises_naming_the_coordinate_when_the_solve_stops_short() -> None:
    t = _perturbed(T.Sylvester(3), scale=3.0)
    t.max_iter = 0
    with pytest.raises(FloatingPointError, match=r"Sylvester\.inverse \(coordinate \d of 3\)"):
        t.inverse(10 * torch.randn(50, 3, dtype=F64))


@pytest.mark.parametrize("kind", ["orthogonal", "householder", "triangular"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_sylvester_with_parameters_times_ten_round_trips(kind: str, dtype: torch.dtype) -> None:
    """Was 7-10 off: r1_ii r2_ii = softplus(10a) - 1 >> 1 sent Newton into the same 2-cycle."""
    torch.manual_seed(0)
    flow = ef.flows.Sylvester(features=4, transforms=4, kind=kind).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(10)
    x, log_q = flow.sample_and_log_prob((1000,))
    z, _ = flow.transform(x)
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    assert (flow.log_prob(x) - log_q).abs().max() < tol
    assert (flow.transform.inverse(z)[0] - x).abs().max() < tol * (1 + x.abs().max())


def test_tanh_solve_needs_at_most_eleven_iterations() -> None:
    """The budget claim of ``Tanh.solve``: extreme slopes, targets and the near-singular case."""
    from exactflow.transforms.planar_activations import Tanh

    torch.manual_seed(0)
    s = torch.cat(
        [
            torch.logspace(-3, 8, 4000, dtype=F64),
            -torch.rand(4000, dtype=F64),
            torch.full((4000,), -1 + 1e-13, dtype=F64),
        ]
    )
    for scale in (1e-20, 1e-6, 1.0, 1e3):
        t = torch.randn(s.shape, dtype=F64) * scale * (1 + s.abs())
        x = Tanh().solve(t, 1 + s, "test", max_iter=11)
        assert torch.all((x + s * torch.tanh(x) - t).abs() <= 1e-12 * (1 + t.abs()))


# ---------------------------------------------------------------- extreme inputs (issue 10 W5)
def test_radial_log_prob_of_huge_inputs_is_minus_inf_not_nan_in_float32() -> None:
    torch.manual_seed(0)
    flow = ef.flows.Radial(features=4, transforms=2)
    assert torch.equal(flow.log_prob(torch.full((2, 4), 1e20)), torch.full((2,), -torch.inf))


@pytest.mark.parametrize("radius", [1e20, 1e30, 1e36])
def test_radial_ladj_stays_exact_at_huge_radii_in_float32(radius: float) -> None:
    """``r²`` overflows float32 at these radii: the log-det must not go through it."""
    t64 = _perturbed(T.Radial(4))
    t32 = copy.deepcopy(t64).float()
    x = torch.full((3, 4), radius / 2, dtype=F64)
    for run32, run64 in ((t32, t64), (t32.inverse, t64.inverse)):
        y, ladj = run32(x.float())
        assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
        torch.testing.assert_close(ladj.double(), run64(x)[1], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- amortized (context)
CONDITIONAL = {
    "planar": lambda: T.Planar(3, context=2, hidden=(8,)),
    "planar-leaky": lambda: T.Planar(3, activation="leaky_relu", context=2, hidden=(8,)),
    "radial": lambda: T.Radial(3, context=2, hidden=(8,)),
    "sylvester": lambda: T.Sylvester(3, columns=2, context=2, hidden=(8,)),
    "householder": lambda: T.Sylvester(3, kind="householder", context=2, hidden=(8,)),
    "triangular": lambda: T.Sylvester(3, kind="triangular", context=2, hidden=(8,)),
}


@pytest.mark.parametrize("make", CONDITIONAL.values(), ids=CONDITIONAL.keys())
def test_context_sets_the_parameters_per_batch_element(make) -> None:
    t = _perturbed(make())
    c = torch.randn(4, 2, dtype=F64)
    x = torch.randn(5, 4, 3, dtype=F64)  # (sample, batch, D) broadcast against (batch, C)
    y, ladj = t(x, c)
    assert y.shape == x.shape and ladj.shape == (5, 4)
    for i in range(4):  # each batch element is the step with that context's parameters
        yi, li = t(x[:, i], c[i])
        torch.testing.assert_close(y[:, i], yi)
        torch.testing.assert_close(ladj[:, i], li)
    assert not torch.allclose(y[:, 0], t(x[:, 0], c[1])[0]), "the context changes nothing"
    xx, ladj_inv = t.inverse(y, c)
    torch.testing.assert_close(xx, x)
    torch.testing.assert_close(ladj_inv, -ladj)
    with pytest.raises(ValueError, match=r"needs a context of shape \(\.\.\., 2\)"):
        t(x, torch.randn(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="is conditional"):
        t(x)


@pytest.mark.parametrize("make", CONDITIONAL.values(), ids=CONDITIONAL.keys())
def test_context_network_starts_at_the_free_parameters(make) -> None:
    """Zero-initialized output: every context gives the unconditional step at first."""
    t = make().double()
    x, c = torch.randn(6, 3, dtype=F64), torch.randn(6, 2, dtype=F64)
    y, ladj = t(x, c)
    torch.testing.assert_close(y[0], t(x[:1], c[3:4])[0][0], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(ladj[0], t(x[:1], c[3:4])[1][0], rtol=1e-14, atol=1e-14)
    assert t.net[-1].weight.abs().sum() == 0


@pytest.mark.parametrize(
    ("name", "factor"),
    [
        ("planar", 1e3),
        ("planar", -1e3),
        ("radial", 1e3),
        ("radial", -1e3),
        # Sylvester's r2_ii = exp(c_i) leaves the float range for |c_i| > 709.
        ("sylvester", 30.0),
        ("sylvester", -30.0),
        ("householder", 30.0),
    ],
)
def test_constraints_hold_for_any_context_network_output(name: str, factor: float) -> None:
    """Adversarial network outputs: ``wᵀû > -1``, ``β > -α``, ``r1_ii r2_ii > -1`` still hold."""
    t = _perturbed(CONDITIONAL[name]())
    with torch.no_grad():
        t.net[-1].bias.mul_(factor)
    c = torch.randn(200, 2, dtype=F64)
    x = 3 * torch.randn(200, 3, dtype=F64)
    y, ladj = t(x, c)
    xx, ladj_inv = t.inverse(y, c)
    assert torch.isfinite(ladj).all() and torch.isfinite(ladj_inv).all()
    torch.testing.assert_close(xx, x, rtol=1e-7, atol=1e-7)


def test_context_parameter_gradients_are_exact() -> None:
    """The implicit-function gradient reaches the context network's weights exactly."""
    t = _perturbed(CONDITIONAL["sylvester"](), scale=0.3)
    names = [n for n, _ in t.named_parameters()]
    y, c = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)

    def score(*params: torch.Tensor) -> torch.Tensor:
        state = {f"transform.{n}": p for n, p in zip(names, params, strict=True)}
        x, ladj = functional_call(T.Inverse(t), state, (y, c))
        return x.sin().sum() + ladj.sum()

    params = tuple(p.detach().clone().requires_grad_() for p in t.parameters())
    assert torch.autograd.gradcheck(score, params, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ef.flows.Planar(3, context=2, transforms=2, hidden=(8,)),
        lambda: ef.flows.Radial(3, context=2, transforms=2, hidden=(8,)),
        lambda: ef.flows.Sylvester(3, context=2, transforms=2, context_hidden=(8,)),
    ],
    ids=["planar", "radial", "sylvester"],
)
def test_conditional_presets_sample_and_score(make) -> None:
    flow = _perturbed(make(), scale=0.3)
    assert flow.config["context"] == 2
    c = torch.randn(4, 2, dtype=F64)
    x, log_q = flow.rsample_and_log_prob((5,), c)
    assert x.shape == (5, 4, 3) and log_q.shape == (5, 4)
    torch.testing.assert_close(flow.log_prob(x.detach(), c), log_q.detach())
    (x.sum() + log_q.sum()).backward()  # amortized VI: the gradient reaches the network
    net = flow.transform.transforms[0].transform.net
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    rebuilt = type(flow)(**flow.config).double()
    rebuilt.load_state_dict(flow.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(x.detach(), c), log_q.detach())


# ---------------------------------------------------------------- stacked steps
def _singles(stacked: T.Transform, make) -> list[T.Transform]:
    """One-step transforms holding the stacked transform's step ``k`` parameters each."""
    singles = []
    for k in range(stacked.steps):
        t = make().double()
        with torch.no_grad():
            for name, p in t.named_parameters():
                p.copy_(getattr(stacked, name)[k])
        singles.append(t)
    return singles


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: T.Planar(3, **kw),
        lambda **kw: T.Planar(3, activation="leaky_relu", negative_slope=0.3, **kw),
        lambda **kw: T.Radial(3, **kw),
    ],
    ids=["planar", "planar-leaky", "radial"],
)
@pytest.mark.parametrize("batch", [(64,), (2, 5), (), (0,)])
def test_stacked_steps_equal_the_composition_of_single_steps(make, batch) -> None:
    stacked = _perturbed(make(steps=4), scale=0.3)
    singles = _singles(stacked, make)
    x = torch.randn(*batch, 3, dtype=F64)
    y, ladj = stacked(x)
    chain = T.Compose(singles)
    y_ref, ladj_ref = chain(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj, ladj_ref, rtol=1e-12, atol=1e-12)
    x_back, ladj_inv = stacked.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-9, atol=1e-9)


def test_stacked_steps_run_the_same_map_with_a_context() -> None:
    """The context path (broadcast parameters) matches the flat one at a zero network output."""
    torch.manual_seed(0)
    for make in (T.Planar, T.Radial):
        t = _perturbed(make(3, context=2, hidden=(8,), steps=3), scale=0.3)
        free = make(3, steps=3).double()
        with torch.no_grad():
            for name, p in free.named_parameters():
                p.copy_(getattr(t, name))
            t.net[-1].weight.zero_()
            t.net[-1].bias.zero_()
        x, c = torch.randn(7, 3, dtype=F64), torch.randn(7, 2, dtype=F64)
        for got, want in zip(t(x, c), free(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_presets_hold_their_steps_stacked() -> None:
    flow = ef.flows.Planar(2, transforms=16)
    (step,) = [s.transform for s in flow.transform.transforms]
    assert step.steps == 16 and step.w.shape == (16, 2) and step.b.shape == (16,)
    assert sum(p.numel() for p in flow.parameters()) == 16 * 5
    radial = ef.flows.Radial(2, transforms=16).transform.transforms[0].transform
    assert radial.center.shape == (16, 2) and radial.alpha_raw.shape == (16,)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        T.Planar(2, steps=0)


def test_radial_initialization_is_a_mild_invertible_non_identity_map() -> None:
    """α = |a|, a ~ U(-1/D, 1/D); α + β = softplus(b), b ~ U(-1 - 1/D, -1 + 1/D)."""
    torch.manual_seed(0)
    for d in (2, 5):
        t = T.Radial(d, steps=2000)
        center, alpha, gap = t._params(None)
        lim = 1 / d
        assert torch.all((alpha > 0) & (alpha <= lim))
        lo, hi = torch.nn.functional.softplus(torch.tensor([-1 - lim, -1 + lim]))
        assert torch.all((gap >= lo) & (gap <= hi))  # β + α > 0: invertible
        beta = gap - alpha
        assert beta.abs().mean() > 0.05  # not the identity
        assert d > 2 or ((beta > 0).any() and (beta < 0).any())  # in 2-D both signs occur
        assert abs(alpha.mean().item() - lim / 2) < 0.05 * lim  # |U(-lim, lim)| has mean lim/2
        assert abs(center.mean().item()) < 0.1 and abs(center.std().item() - 1) < 0.1
    # α stays positive through a = 0, where |a| is not differentiable, and the map is exact.
    t = T.Radial(2).double()
    with torch.no_grad():
        t.alpha_raw.zero_()
    x = torch.randn(50, 2, dtype=F64)
    y, ladj = t(x)
    x_back, ladj_inv = t.inverse(y)
    assert torch.isfinite(ladj).all()
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-9, atol=1e-9)
