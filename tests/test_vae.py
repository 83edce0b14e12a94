"""The VAE with a flow posterior: its bounds against a closed-form log p(x), and its plumbing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import exactflow as ef
from exactflow import checkpoint, registry
from exactflow.models import VAE, DenseVAE, posterior
from exactflow.objectives import ELBO, IWAE
from exactflow.train import TrainConfig, fit

from tinyflow import Interrupt, interrupt_at

D, L, SIGMA = 4, 2, 0.5


# ---------------------------------------------------------------------------- linear Gaussian


class LinearGaussian:
    """``z ~ N(0, I_L)``, ``x = W z + b + σ ε``: ``p(x) = N(b, W Wᵀ + σ² I)`` in closed form.

    ``W``'s columns are orthogonal, so the exact posterior ``N(M (x - b), Σ)`` with
    ``Σ = (I + WᵀW/σ²)⁻¹`` and ``M = Σ Wᵀ/σ²`` is a diagonal Gaussian: the VAE's amortized
    diagonal Gaussian can represent it exactly.
    """

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=torch.float64))
        self.W = q * torch.tensor([1.5, 0.7], dtype=torch.float64)  # (D, L), orthogonal columns
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.cov = self.W @ self.W.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
        self.post_cov = torch.linalg.inv(
            torch.eye(L, dtype=torch.float64) + self.W.T @ self.W / SIGMA**2
        )
        self.M = self.post_cov @ self.W.T / SIGMA**2  # (L, D)

    def sample(self, n: int, seed: int = 1) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, L, generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + SIGMA * torch.randn(n, D, generator=g, dtype=torch.float64)

    def log_p(self, x: Tensor) -> Tensor:
        normal = torch.distributions.MultivariateNormal(self.b, covariance_matrix=self.cov)
        return normal.log_prob(x)

    def vae(self, shift: float = 0.0, widen: float = 0.0) -> VAE:
        """The VAE of this model; its posterior is exact unless ``shift``/``widen`` move it."""
        likelihood = ef.models.Gaussian(scale=SIGMA)
        q = posterior("gaussian", latent=L, context=D)
        vae = VAE(nn.Linear(D, D), nn.Linear(L, D), q, likelihood, event_shape=(D,)).double()
        head = q.base.net[0]  # h -> (loc, log_scale), linear (base_hidden=())
        with torch.no_grad():
            vae.encoder.weight.copy_(torch.eye(D))  # h = x
            vae.encoder.bias.zero_()
            vae.decoder.weight.copy_(self.W)  # mean W z + b
            vae.decoder.bias.copy_(self.b)
            head.weight.zero_()
            head.weight[:L].copy_(self.M)
            head.bias[:L].copy_(-self.M @ self.b + shift)
            head.bias[L:].copy_(0.5 * torch.diagonal(self.post_cov).log() + widen)
        return vae


@pytest.fixture(scope="module")
def model() -> LinearGaussian:
    return LinearGaussian()


def test_an_exact_posterior_makes_every_weight_the_closed_form_log_p(model: LinearGaussian) -> None:
    x = model.sample(16)
    torch.manual_seed(0)
    log_w = model.vae().log_weights(x, k=5)
    assert log_w.shape == (5, 16)
    # q(z|x) = p(z|x) exactly, so log p(x, z) - log q(z|x) = log p(x) for every draw z
    expected = model.log_p(x).expand(5, 16)
    torch.testing.assert_close(log_w, expected, atol=1e-9, rtol=0)


def test_elbo_below_iwae_below_log_p_on_an_inexact_posterior(model: LinearGaussian) -> None:
    x = model.sample(8)
    vae = model.vae(shift=0.3, widen=0.4)
    exact = model.log_p(x)
    torch.manual_seed(1)
    repeats, k = 4000, 10
    log_w = vae.log_weights(x, k=repeats * k).detach()  # (R·k, B)
    elbo = log_w.mean(0)
    elbo_se = log_w.std(0) / math.sqrt(len(log_w))
    per_run = torch.logsumexp(log_w.reshape(repeats, k, -1), 1) - math.log(k)  # (R, B)
    iwae, iwae_se = per_run.mean(0), per_run.std(0) / math.sqrt(repeats)
    gap_elbo = (exact - elbo).mean()  # the mean KL(q || p(z|x)) over the rows
    assert gap_elbo > 0.05  # the posterior is visibly inexact
    # ELBO < IWAE-k < log p, row by row, beyond 3 standard errors
    assert bool((iwae - elbo > 3 * (elbo_se + iwae_se)).all())
    assert bool((exact - iwae > 3 * iwae_se).all())
    assert float((exact - iwae).mean()) < 0.5 * float(gap_elbo)  # IWAE-10 closes most of it


def test_log_marginal_agrees_with_the_closed_form_within_its_standard_error(
    model: LinearGaussian,
) -> None:
    x = model.sample(8, seed=2)
    vae = model.vae(shift=0.3, widen=0.4)
    torch.manual_seed(2)
    estimate, stderr = vae.log_marginal(x, k=4000, chunk=512)
    exact = model.log_p(x)
    assert estimate.shape == stderr.shape == (8,)
    assert bool((stderr > 0).all()) and bool((stderr < 0.05).all())
    assert bool(((estimate - exact).abs() < 4 * stderr + 1e-3).all())
    # a chunk of any size draws the same weights' statistics: the estimate does not depend on it
    torch.manual_seed(2)
    again, _ = vae.log_marginal(x, k=4000, chunk=4000)
    torch.testing.assert_close(again, estimate, atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------- every posterior

FAMILIES = [(f, {}) for f in ef.models.FAMILIES] + [
    ("sylvester", {"kind": k}) for k in ("householder", "triangular")
]
IDS = [f + ("-" + o["kind"] if o else "") for f, o in FAMILIES]


def dense(family: str, options: dict, **changes: object) -> DenseVAE:
    settings = {"features": 6, "latent": 3, "hidden": [16], "context": 8, "transforms": 2}
    return DenseVAE(posterior=family, **options, **{**settings, **changes})


@pytest.mark.parametrize(("family", "options"), FAMILIES, ids=IDS)
def test_log_weights_have_shape_k_by_batch_for_every_posterior(family: str, options: dict) -> None:
    vae = dense(family, options)
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    log_w = vae.log_weights(x, k=7)
    assert log_w.shape == (7, 5)
    assert bool(torch.isfinite(log_w).all())
    assert vae.elbo(x, k=3).shape == (5,)
    assert vae.latent == 3 and vae.event_shape == (6,)


@pytest.mark.parametrize(("family", "options"), FAMILIES, ids=IDS)
def test_gradients_reach_every_parameter(family: str, options: dict) -> None:
    vae = dense(family, options, likelihood="gaussian")
    x = torch.rand(5, 6)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for _ in range(3):  # zero-initialized output layers block the layers below at first
        optimizer.zero_grad()
        (-vae.log_weights(x, k=2).mean()).backward()
        optimizer.step()
    for name, p in vae.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert bool(p.grad.abs().sum() > 0), name


def test_a_dense_vae_on_images_reshapes_inside() -> None:
    vae = DenseVAE(features=16, latent=2, hidden=[8], context=4, event_shape=[1, 4, 4])
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    assert vae.log_weights(x, k=2).shape == (2, 3)
    assert vae.reconstruct(x).shape == x.shape
    assert vae.sample(5).shape == (5, 1, 4, 4)
    mean = vae.sample(5, mean=True)
    assert bool(((mean > 0) & (mean < 1)).all())
    with pytest.raises(ValueError, match="16 entries, not features=15"):
        DenseVAE(features=15, event_shape=[1, 4, 4])


def test_check_data_names_the_first_non_binary_value_and_wrong_shapes() -> None:
    vae = dense("gaussian", {})
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    vae.check_data(x, None)
    x[2, 3] = 0.5
    with pytest.raises(ValueError, match=r"binary.*0\.5 at index \(2, 3\)"):
        vae.check_data(x, None, "train")
    with pytest.raises(ValueError, match=r"shape \(N, 6\), got \(4, 5\)"):
        vae.check_data(torch.zeros(4, 5), None)
    with pytest.raises(ValueError, match="unconditional"):
        vae.check_data(torch.zeros(4, 6), torch.zeros(4, 2))
    dense("gaussian", {}, likelihood="gaussian").check_data(torch.rand(4, 6), None)  # any reals


def test_a_prior_flow_replaces_the_standard_normal() -> None:
    prior = ef.flows.MAF(features=2, transforms=1, hidden=(8,))
    vae = VAE(
        ef.nn.MLP(6, 4, hidden=(8,)),
        ef.nn.MLP(2, 6, hidden=(8,)),
        posterior("iaf", latent=2, context=4, transforms=1, hidden=(8,)),
        prior=prior,
    )
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    assert vae.log_weights(x, k=2).shape == (2, 3)
    assert vae.sample(4).shape == (4, 6)
    assert any(n.startswith("prior.") for n, _ in vae.named_parameters())


# ---------------------------------------------------------------------------- checkpoints, fit


def test_checkpoint_round_trip_gives_the_same_log_weights(tmp_path: Path) -> None:
    vae = dense("sylvester", {"kind": "householder"}, seed=3)
    with torch.no_grad():  # move the weights off their initialization
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = checkpoint.save(tmp_path / "vae.safetensors", vae, spec=registry.spec_of(vae))
    loaded = checkpoint.load(path).model  # rebuilt from the spec alone
    assert type(loaded) is DenseVAE and loaded.config == vae.config
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    torch.manual_seed(0)
    expected = vae.log_weights(x, k=3)
    torch.manual_seed(0)
    torch.testing.assert_close(loaded.log_weights(x, k=3), expected, atol=0, rtol=0)


def test_the_registry_rebuilds_a_dense_vae_and_bounds_its_size() -> None:
    vae = dense("iaf", {}, event_shape=[2, 3])
    spec = registry.spec_of(vae)
    assert spec["name"] == "DenseVAE" and spec["kwargs"]["event_shape"] == [2, 3]
    rebuilt = registry.build(spec)
    assert rebuilt.event_shape == (2, 3)
    for a, b in zip(rebuilt.state_dict().values(), vae.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the seed fixes the initial weights
    with pytest.raises(ValueError, match="parameters, over the limit"):
        registry.build({"name": "DenseVAE", "kwargs": {"features": 6, "latent": 10**7}})
    with pytest.raises(ValueError, match="latent"):
        registry.build({"name": "DenseVAE", "kwargs": {"features": 6, "latent": -1}})


def settings(**changes: object) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 32, "lr": 1e-2, "patience": None, "tensorboard": False}
    return TrainConfig(**{**base, **changes})


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def test_fit_trains_and_resumes_exactly(tmp_path: Path) -> None:
    x = torch.bernoulli(torch.full((160, 6), 0.3), generator=torch.Generator().manual_seed(0))
    train, val = x[:128], x[128:]
    c = settings(out=str(tmp_path / "a"), checkpoint_every=3)
    reference = fit(dense("iaf", {}), ELBO(), train, c, val=val, progress=False)
    assert len(reference.history) == 4 and "val_neg_elbo" in reference.history[0]

    c.out = str(tmp_path / "b")
    vae = dense("iaf", {})
    handle = interrupt_at(vae.decoder, 8)
    with pytest.raises(Interrupt):
        fit(vae, ELBO(), train, c, val=val, progress=False)
    handle.remove()
    resumed = fit(dense("iaf", {}, seed=7), ELBO(), train, c, val=val, resume=True, progress=False)
    assert without_time(resumed.history) == without_time(reference.history)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])


def test_fit_refuses_non_binary_data_for_a_bernoulli_vae() -> None:
    x = torch.rand(64, 6)
    with pytest.raises(ValueError, match="binary"):
        fit(dense("gaussian", {}), IWAE(k=2), x[:48], settings(), val=x[48:], progress=False)


def test_a_dense_vae_trained_briefly_on_binary_digits_improves_its_elbo() -> None:
    ds = ef.data.load("binary-digits")
    vae = DenseVAE(features=64, latent=4, hidden=[64], context=32, posterior="planar")
    torch.manual_seed(0)
    with torch.no_grad():
        before = float(vae.elbo(ds.val, k=4).mean())
    result = fit(vae, ELBO(), ds, settings(epochs=5, batch_size=64, lr=3e-3), progress=False)
    torch.manual_seed(0)
    with torch.no_grad():
        after = float(result.model.elbo(ds.val, k=4).mean())
    assert after > before + 5  # nats per image
    assert -result.best_val == pytest.approx(after, abs=2.0)


def test_bounds_are_the_per_row_elbo_and_estimate_in_batches() -> None:
    vae = DenseVAE(features=6, latent=2, hidden=[8], context=4, likelihood="gaussian").train()
    x = torch.randn(10, 6)
    torch.manual_seed(0)
    elbo, estimate, stderr = vae.bounds(x, k=20, batch_size=10)
    assert vae.training  # the mode is restored
    assert elbo.dtype == estimate.dtype == torch.float64 and elbo.shape == (10,)
    vae.eval()
    torch.manual_seed(0)
    expected_elbo = vae.elbo(x).double().detach()
    expected, expected_stderr = vae.log_marginal(x, k=20)
    torch.testing.assert_close(elbo, expected_elbo)
    torch.testing.assert_close(estimate, expected)
    torch.testing.assert_close(stderr, expected_stderr)
