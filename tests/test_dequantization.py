"""Dequantized models: the dequantization bound against closed forms, the variational q's
density against autograd, training, checks and checkpoints."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import exactflow as ef
from exactflow import checkpoint, registry
from exactflow.models import Dequantized
from exactflow.models.dequantization import VariationalDequantizer
from exactflow.train import TrainConfig, fit

T = ef.transforms
LOG_2PI = math.log(2 * math.pi)


class StandardLogistic(ef.distributions.BaseDistribution):
    """The standard logistic density: the sigmoid carries it onto the uniform on ``(0, 1)``."""

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return (F.logsigmoid(z) + F.logsigmoid(-z)).flatten(z.dim() - len(self.event_shape)).sum(-1)

    def rsample(
        self, shape: tuple[int, ...], context: torch.Tensor | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        full = torch.Size(shape) + self.event_shape
        return torch.logit(torch.rand(full, dtype=self._anchor.dtype)) * temperature


def uniform_flow(shape: tuple[int, ...]) -> ef.Flow:
    """A flow whose density is exactly 1 on ``(0, 1)^D``: a logit onto a logistic base."""
    steps = [T.Logit(0.0, event_ndim=len(shape))]
    if len(shape) > 1:
        steps.append(T.Flatten(shape))
    return ef.Flow(T.Compose(steps), StandardLogistic(math.prod(shape))).double()


def image_flow(shape: tuple[int, int, int] = (1, 4, 4)) -> ef.Flow:
    """A hand-built image flow over ``[0, 1)^(C, H, W)`` (no registered name)."""
    board = T.coupling.coupling_mask(shape, "checkerboard")
    couplings = [T.Coupling(T.AffineMap(), m, shape=shape, hidden=8) for m in (board, ~board)]
    steps = [T.Logit(0.05, event_ndim=3), *couplings, T.Flatten(shape)]
    return ef.Flow(T.Compose(steps), ef.distributions.StandardNormal(math.prod(shape)))


def perturbed(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def quantized(shape: tuple[int, ...], levels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, shape, generator=generator).double() / levels


# ---------------------------------------------------------------------------- known answers


class GaussianBins:
    """A flow ``N(μ, σ²)`` per entry (one ``Affine`` step): every bound has a closed form.

    With ``z = x e^s + t`` standard normal, ``a = e^s k/L + t`` and ``b = e^s/L``:
    ``E_u[log p((k + u)/L)] = -log(2π)/2 + s - (a² + ab + b²/3)/2`` per entry, and
    ``log P(k) = Σ log(Φ(a + b) - Φ(a))``.
    """

    levels = 4
    shift = torch.tensor([-2.5, -3.5, -1.0], dtype=torch.float64)
    log_scale = torch.tensor([1.5, 2.0, 1.0], dtype=torch.float64)

    def flow(self) -> ef.Flow:
        affine = T.Affine(3)
        with torch.no_grad():
            affine.shift.copy_(self.shift)
            affine.log_scale.copy_(self.log_scale)
        return ef.Flow(T.Compose([affine]), ef.distributions.StandardNormal(3)).double()

    def terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.round(x * self.levels)
        a = self.log_scale.exp() * k / self.levels + self.shift
        b = self.log_scale.exp() / self.levels
        return a, b

    def expected_log_p(self, x: torch.Tensor) -> torch.Tensor:
        """``E_u[log p((k + u)/L)]`` per row (the flow's density, before the ``-D log L``)."""
        a, b = self.terms(x)
        return (-0.5 * LOG_2PI + self.log_scale - 0.5 * (a * a + a * b + b * b / 3)).sum(-1)

    def log_probability(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.terms(x)
        normal = torch.distributions.Normal(0.0, 1.0)
        return torch.log(normal.cdf(a + b) - normal.cdf(a)).sum(-1)


def test_uniform_elbo_and_estimate_match_the_closed_form() -> None:
    case = GaussianBins()
    model = Dequantized(case.flow(), levels=case.levels)
    x = torch.tensor([[0, 1, 2], [2, 2, 0], [3, 0, 1]], dtype=torch.float64) / case.levels
    torch.manual_seed(0)
    draws = model.log_weights(x, k=40_000)  # (k, B)
    elbo = case.expected_log_p(x) - 3 * math.log(case.levels)
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - elbo).abs() < 5 * stderr).all(), (draws.mean(0), elbo)
    estimate, error = model.log_marginal(x, k=40_000)
    exact = case.log_probability(x)
    assert ((estimate - exact).abs() < 5 * error + 1e-4).all(), (estimate, exact)
    assert (exact - elbo > 0.05).all()  # the bound is loose enough for the checks to tell
    # Already on the integer scale: the bits/dim of the bound is -ELBO / (D log 2).
    bpd = -elbo / (3 * math.log(2))
    expected = ef.data.bits_per_dim(-case.expected_log_p(x), dims=3, levels=case.levels)
    torch.testing.assert_close(bpd, expected, rtol=1e-12, atol=0)


def test_the_importance_weighted_bound_lies_between_the_elbo_and_log_p() -> None:
    case = GaussianBins()
    model = Dequantized(case.flow(), levels=case.levels)
    x = torch.tensor([[1, 2, 1], [3, 3, 3]], dtype=torch.float64) / case.levels
    torch.manual_seed(1)
    repeats = x.expand(4000, 2, 3)  # (R, B, D): 4000 independent IWAE-16 bounds per row
    iwae = -ef.objectives.IWAE(k=16).loss(model, repeats)  # (R, B)
    elbo = case.expected_log_p(x) - 3 * math.log(case.levels)
    exact = case.log_probability(x)
    stderr = iwae.std(0) / math.sqrt(iwae.shape[0])
    assert (iwae.mean(0) - elbo > 10 * stderr).all(), (iwae.mean(0), elbo)
    assert (iwae.mean(0) < exact + 3 * stderr).all(), (iwae.mean(0), exact)


@pytest.mark.parametrize("levels", [2, 4, 256])
@pytest.mark.parametrize("shape", [(3,), (1, 2, 2)], ids=["vector", "image"])
def test_a_uniform_density_has_exactly_log2_levels_bits_per_dim(
    shape: tuple[int, ...], levels: int
) -> None:
    model = Dequantized(uniform_flow(shape), levels=levels)
    x = quantized((5, *shape), levels)
    dims = math.prod(shape)
    weights = model.log_weights(x, k=7)
    torch.testing.assert_close(weights, torch.full_like(weights, -dims * math.log(levels)))
    bpd = -model.elbo(x) / (dims * math.log(2))
    torch.testing.assert_close(bpd, torch.full_like(bpd, math.log2(levels)), rtol=1e-12, atol=0)
    assert ef.data.bits_per_dim(0.0, dims, levels) == pytest.approx(math.log2(levels), abs=1e-12)


@pytest.mark.parametrize("shape", [(3,), (1, 2, 2)], ids=["vector", "image"])
def test_on_a_uniform_density_the_variational_bound_falls_short_by_log_q(
    shape: tuple[int, ...],
) -> None:
    model = Dequantized(uniform_flow(shape), levels=4, dequantizer="variational", hidden=8)
    perturbed(model.dequantizer, scale=0.1)
    x = quantized((4, *shape), 4)
    dims = math.prod(shape)
    torch.manual_seed(3)
    weights = model.log_weights(x, k=5)
    torch.manual_seed(3)
    log_q = model.dequantizer(x, k=5)[1]
    torch.testing.assert_close(weights, -dims * math.log(4) - log_q, rtol=1e-12, atol=1e-12)
    # log P(k) = -D log 4 exactly. The importance-sampling estimate lies between the ELBO and
    # it: its weights 1/q(u) are heavy-tailed at the bin edges (q vanishes there, p does not),
    # so its standard error would understate the distance to -D log 4.
    torch.manual_seed(4)
    elbo = model.elbo(x, k=2000)
    estimate, error = model.log_marginal(x, k=2000)
    assert (elbo + 0.3 < estimate).all() and (estimate < -dims * math.log(4) + 5 * error).all()


@pytest.mark.parametrize("shape", [(3,), (1, 4, 4)], ids=["vector", "image"])
def test_uniform_log_weights_are_the_flow_density_at_the_drawn_noise(
    shape: tuple[int, ...],
) -> None:
    levels = 4
    flow = perturbed(ef.flows.MAF(features=3, transforms=2) if len(shape) == 1 else image_flow())
    model = Dequantized(flow.double(), levels=levels)
    x = quantized((6, *shape), levels)
    torch.manual_seed(3)
    weights = model.log_weights(x, k=2)
    torch.manual_seed(3)
    u = torch.rand((2, *x.shape), dtype=torch.float64)
    dims = math.prod(shape)
    expected = flow.log_prob((torch.round(x * levels) + u) / levels) - dims * math.log(levels)
    torch.testing.assert_close(weights, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- variational q


@pytest.mark.parametrize("shape", [(3,), (1, 2, 2), (2, 2, 2)], ids=["vector", "C1", "C2"])
def test_log_q_is_the_density_of_u_by_the_autograd_jacobian(shape: tuple[int, ...]) -> None:
    q = perturbed(VariationalDequantizer(shape, steps=3, hidden=6).double(), seed=1, scale=0.1)
    x = quantized((1, *shape), 4)
    torch.manual_seed(7)
    u, log_q = q(x, k=1)
    torch.manual_seed(7)
    eps = torch.randn((1, 1, *shape), dtype=torch.float64)
    h = q.features(2 * x - 1)

    def draw(e: torch.Tensor) -> torch.Tensor:
        return q.transform.inverse(e.reshape(1, 1, *shape), h)[0].reshape(-1)

    jacobian = torch.autograd.functional.jacobian(draw, eps.reshape(-1))
    log_normal = -0.5 * (eps.square().sum() + eps.numel() * LOG_2PI)
    expected = log_normal - torch.linalg.slogdet(jacobian).logabsdet
    torch.testing.assert_close(u.reshape(-1), draw(eps), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_q.reshape(()), expected, rtol=1e-10, atol=1e-10)
    assert torch.func.jacrev(draw)(eps.reshape(-1)).abs().sum() > 0
    # u is a non-trivial function of x: the features reach every step.
    other = q(quantized((1, *shape), 4, seed=5), k=1)[0]
    assert not torch.allclose(other, u)


@pytest.mark.parametrize("shape", [(4,), (1, 4, 4), (3, 2, 2)], ids=["vector", "C1", "C3"])
def test_q_starts_as_a_sigmoid_of_a_standard_normal(shape: tuple[int, ...]) -> None:
    q = VariationalDequantizer(shape, steps=4, hidden=8).double()
    x = quantized((500, *shape), 4)
    torch.manual_seed(2)
    u, log_q = q(x, k=4)
    torch.manual_seed(2)
    eps = torch.randn((4, 500, *shape), dtype=torch.float64)
    torch.testing.assert_close(u, torch.sigmoid(eps), rtol=1e-12, atol=1e-12)
    # KL(q || U[0,1)) per entry: E[log N(ε)] + E[softplus(ε) + softplus(-ε)] ≈ 0.193 nats.
    per_entry = log_q.mean() / math.prod(shape)
    assert per_entry.item() == pytest.approx(0.193, abs=0.01)


def test_u_stays_inside_the_unit_interval_once_q_has_moved() -> None:
    q = perturbed(VariationalDequantizer((1, 4, 4), steps=4, hidden=8), seed=2, scale=0.1)
    u, log_q = q(quantized((64, 1, 4, 4), 2).float(), k=32)
    assert ((u > 0) & (u < 1)).all() and torch.isfinite(log_q).all()
    assert u.min() < 0.01 and u.max() > 0.99  # q reaches near both edges


def test_q_reads_the_context_when_asked() -> None:
    flow = ef.flows.MAF(features=3, transforms=1, context=2, hidden=(8,))
    model = Dequantized(flow, levels=4, dequantizer="variational", steps=2, hidden=8, context=2)
    perturbed(model.dequantizer)
    x = quantized((5, 3), 4).float()
    labels = F.one_hot(torch.tensor([0, 1, 0, 1, 1]), 2).float()
    torch.manual_seed(0)
    weights = model.log_weights(x, k=3, context=labels)
    torch.manual_seed(0)
    assert weights.shape == (3, 5)
    assert not torch.allclose(model.log_weights(x, k=3, context=1 - labels), weights)


def test_variational_dequantization_beats_uniform_after_30_steps() -> None:
    """Binary 8x8 digits: the same flow and seed, trained 30 steps with each q by ELBO."""
    digits = ef.data.load_digits(image=True, dequantize_pixels=False)
    train, test = (torch.round(x * 16) >= 8 for x in (digits.train[:512], digits.test[:256]))
    train, test = train.float() / 2, test.float() / 2  # k/L with L = 2
    torch.manual_seed(0)
    shape = (1, 8, 8)
    board = T.coupling.coupling_mask(shape, "checkerboard")
    couplings = [T.Coupling(T.AffineMap(), m, shape=shape, hidden=16) for m in (board, ~board) * 2]
    steps = [T.Logit(0.05, event_ndim=3), *couplings, T.Flatten(shape)]
    flow = ef.Flow(T.Compose(steps), ef.distributions.StandardNormal(64))
    bits = {}
    for kind in ("uniform", "variational"):
        model = Dequantized(copy.deepcopy(flow), levels=2, dequantizer=kind, steps=2, hidden=16)
        config = TrainConfig(
            steps=30, epoch_steps=10, batch_size=64, lr=1e-2, patience=None, tensorboard=False
        )
        fit(model, ef.objectives.ELBO(), data=train, val=test, config=config, progress=False)
        torch.manual_seed(1)
        with torch.no_grad():
            elbo = model.eval().log_weights(test, k=8).mean()
        bits[kind] = -elbo.item() / (64 * math.log(2))
    # Measured: 0.786 (uniform) and 0.764 (variational) bits/dim; 0.4 nats per image of margin.
    assert bits["uniform"] - bits["variational"] > 0.4 / (64 * math.log(2)), bits


# ---------------------------------------------------------------------------- sampling


def test_samples_are_the_flow_samples_quantized() -> None:
    flow = ef.flows.MAF(features=3, transforms=2, context=2, hidden=(8,))
    model = Dequantized(flow, levels=8)
    labels = torch.eye(2)
    torch.manual_seed(4)
    samples = model.sample(50, context=labels, temperature=0.7)
    torch.manual_seed(4)
    raw = flow.sample((50,), context=labels, temperature=0.7)
    assert samples.shape == (50, 2, 3)
    torch.testing.assert_close(samples, torch.floor(raw * 8).clamp(0, 7) / 8, rtol=0, atol=0)
    assert ((samples * 8).frac() == 0).all() and samples.min() >= 0 and samples.max() <= 7 / 8
    with pytest.raises(ValueError, match="n must be at least 1"):
        model.sample(0, context=labels)


# ---------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("x", "context", "error", "match"),
    [
        (torch.zeros(4, 3, dtype=torch.long), None, TypeError, "floating-point"),
        (torch.zeros(4, 2), None, ValueError, r"shape \(N, 3\), got \(4, 2\)"),
        (torch.tensor([[0.0, 0.3, 0.5]]), None, ValueError, r"k/4 .* got 0.3 at index \(0, 1\)"),
        (torch.tensor([[0.0, 0.25, 1.0]]), None, ValueError, r"0\.\.3 .*got 1 at index \(0, 2\)"),
        (torch.tensor([[0.0, -0.25, 0.5]]), None, ValueError, r"got -0.25 at index \(0, 1\)"),
        (
            torch.tensor([[0.0, math.nan, 0.5]]),
            None,
            ValueError,
            r"non-finite value at index \(0, 1\)",
        ),
        (torch.zeros(4, 3), torch.zeros(4, 2), ValueError, "unconditional"),
    ],
    ids=["integer", "shape", "between-levels", "top", "negative", "nan", "context"],
)
def test_check_data_names_the_first_bad_entry(
    x: torch.Tensor, context: torch.Tensor | None, error: type, match: str
) -> None:
    model = Dequantized(ef.flows.MAF(features=3, transforms=1), levels=4)
    with pytest.raises(error, match=match):
        model.check_data(x, context, "train")
    model.check_data(torch.tensor([[0.0, 0.25, 0.75]]), None)


def test_a_conditional_model_needs_its_context_and_fit_checks_the_data() -> None:
    flow = ef.flows.MAF(features=3, transforms=1, context=2)
    model = Dequantized(flow, levels=4)
    with pytest.raises(ValueError, match=r"needs a context of shape \(1, 2\), got None"):
        model.check_data(torch.zeros(1, 3), None)
    with pytest.raises(ValueError, match=r"got \(1, 3\)"):
        model.check_data(torch.zeros(1, 3), torch.zeros(1, 3))
    model.check_data(torch.zeros(1, 3), torch.zeros(1, 2))
    unconditional = Dequantized(ef.flows.MAF(features=3, transforms=1), levels=4)
    config = TrainConfig(steps=1, batch_size=4, tensorboard=False)
    with pytest.raises(ValueError, match="k/4"):
        fit(unconditional, ef.objectives.ELBO(), data=torch.rand(8, 3), val=torch.zeros(4, 3),
            config=config, progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dequantizer": "gaussian"}, ValueError, "dequantizer must be one of"),
        ({"levels": 1}, ValueError, "levels must be at least 2"),
        ({"levels": 2.5}, TypeError, "levels must be an int"),
        ({"context": 3}, ValueError, "context must be 0 or the flow's context width 0"),
        ({"features": 3}, TypeError, r"unexpected keyword\(s\) \['features'\]"),
        ({"flow_features": 3}, TypeError, "apply to a preset's name"),
        ({"dequantizer": "variational", "steps": 0}, ValueError, "steps must be at least 1"),
    ],
    ids=["dequantizer", "levels", "float-levels", "context", "prefix", "instance", "steps"],
)
def test_constructor_errors_name_the_argument(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Dequantized(ef.flows.MAF(features=3, transforms=1), **kwargs)


def test_unsupported_flows_are_refused() -> None:
    with pytest.raises(TypeError, match="a preset's name, got int"):
        Dequantized(3)
    with pytest.raises(ValueError, match="unknown model 'Nope'"):
        Dequantized("Nope", flow_features=3)
    with pytest.raises(ValueError, match=r"\(D,\) with D >= 1 or \(C, H, W\) with H·W >= 2"):
        VariationalDequantizer((0,))
    with pytest.raises(ValueError, match=r"H·W >= 2, got \(3, 1, 1\)"):
        VariationalDequantizer((3, 1, 1))


# ---------------------------------------------------------------------------- checkpoints


PRESETS = {
    "vector": {"flow": "RealNVP", "flow_features": 3, "flow_transforms": 2, "flow_hidden": [8]},
    "glow": {
        "flow": "Glow",
        "flow_shape": [1, 4, 4],
        "flow_levels": 1,
        "flow_steps": 2,
        "flow_hidden": 8,
    },
}


@pytest.mark.parametrize("dequantizer", ["uniform", "variational"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_checkpoint_round_trip_rebuilds_the_model_by_name(
    tmp_path: Path, preset: str, dequantizer: str
) -> None:
    model = Dequantized(**PRESETS[preset], levels=16, dequantizer=dequantizer, steps=2, hidden=8)
    perturbed(model, scale=0.1)
    spec = registry.spec_of(model)
    assert spec["name"] == "Dequantized" and spec["kwargs"]["flow"] == PRESETS[preset]["flow"]
    for value in spec["kwargs"].values():  # flat JSON, as the registry requires
        assert value is None or isinstance(value, bool | int | float | str | list)
    path = checkpoint.save(tmp_path / "model.safetensors", model, spec=spec)
    loaded = checkpoint.load(path).model  # rebuilt from the spec alone
    assert type(loaded) is Dequantized and loaded.config == model.config
    x = quantized((4, *model.event_shape), 16).float()
    torch.manual_seed(0)
    expected = model.eval().log_weights(x, k=3)
    torch.manual_seed(0)
    torch.testing.assert_close(loaded.log_weights(x, k=3), expected, rtol=0, atol=0)


def test_a_hand_built_flow_checkpoint_loads_into_a_model_passed_in(tmp_path: Path) -> None:
    model = perturbed(Dequantized(image_flow(), levels=4, dequantizer="variational", hidden=8))
    assert model.config is None and registry.spec_of(model) is None
    path = checkpoint.save(tmp_path / "hand.safetensors", model, spec=registry.spec_of(model))
    with pytest.raises(ValueError, match="saved without a spec"):
        checkpoint.load(path)
    fresh = Dequantized(image_flow(), levels=4, dequantizer="variational", hidden=8)
    loaded = checkpoint.load(path, fresh).model
    x = quantized((3, 1, 4, 4), 4).float()
    torch.manual_seed(0)
    expected = model.eval().log_weights(x, k=2)
    torch.manual_seed(0)
    torch.testing.assert_close(loaded.log_weights(x, k=2), expected, rtol=0, atol=0)
