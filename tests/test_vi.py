"""Variational inference: the reverse-KL objective and the importance-sampled log normalizer."""

import math

import pytest
import torch

import exactflow as ef
from exactflow.train import TrainConfig, fit

LOG_Z = math.log(5.0)


def gaussian_target(z: torch.Tensor) -> torch.Tensor:
    """5 · N((1, -1), diag(0.5², 1.5²)) with a correlation-free twist: log Z = log 5."""
    scale = z.new_tensor([0.5, 1.5])
    u = (z - z.new_tensor([1.0, -1.0])) / scale
    return LOG_Z - 0.5 * (u**2).sum(-1) - math.log(2 * math.pi) - scale.log().sum()


def banana_target(z: torch.Tensor) -> torch.Tensor:
    """A normalized twisted Gaussian (volume-preserving map of N(0, diag(4, 1))): log Z = 0."""
    a, b = z[..., 0], z[..., 1] - 0.25 * (z[..., 0] ** 2 - 4)
    return -0.5 * (a**2 / 4 + b**2) - math.log(2 * math.pi) - math.log(2.0)


def test_reverse_kl_fits_a_2d_target_with_known_normalizer() -> None:
    torch.manual_seed(0)
    flow = ef.flows.NSF(features=2, transforms=3, hidden=(32, 32), bins=8)
    config = TrainConfig(steps=600, epoch_steps=100, lr=3e-3, seed=0, patience=None)
    fit(flow, ef.objectives.ReverseKL(banana_target, samples=256), config=config, progress=False)
    torch.manual_seed(1)
    result = ef.metrics.log_normalizer(flow, banana_target, n=50_000)
    kl = result.kl_to(0.0)  # the true KL up to the ELBO's standard error
    assert kl < 0.05, result
    assert result.ess > 0.8 * result.n
    # The reverse-KL fit is lighter-tailed than p (mode seeking): the importance estimate of
    # log Z = 0 misses the banana's far arms by a little more than its standard error says.
    assert abs(result.log_z) < 0.05


def test_reverse_kl_loss_is_log_q_minus_log_target_of_the_flows_own_samples() -> None:
    flow = ef.flows.IAF(features=2, transforms=2, hidden=(8,)).double()
    objective = ef.objectives.ReverseKL(gaussian_target, samples=7)
    torch.manual_seed(3)
    loss = objective.loss(flow, None)
    torch.manual_seed(3)
    z, log_q = flow.rsample_and_log_prob((7,))
    torch.testing.assert_close(loss, log_q - gaussian_target(z))
    torch.testing.assert_close(flow.log_prob(z), log_q)  # scored exactly, in the same pass
    loss.mean().backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_log_normalizer_is_unbiased_for_z() -> None:
    """Ẑ = mean of w is unbiased: over 400 small, independent runs its mean is Z within 4 se."""
    flow = ef.flows.MAF(features=2, transforms=1, hidden=(8,)).double()  # q ≠ p: weights vary
    torch.manual_seed(0)
    estimates = torch.tensor(
        [math.exp(ef.metrics.log_normalizer(flow, gaussian_target, n=64).log_z) for _ in range(400)]
    )
    z = math.exp(LOG_Z)
    assert abs(estimates.mean() - z) < 4 * estimates.std() / math.sqrt(len(estimates))
    # and log Ẑ is biased low (Jensen), which is why the estimate of Z, not of log Z, is tested
    assert estimates.log().mean() < LOG_Z


def test_log_normalizer_reports_the_exact_kl_of_a_known_pair() -> None:
    """q = N(0, I) against p = N(μ, I): KL(q ‖ p) = |μ|²/2 and log Z = 0."""
    flow = ef.Flow(ef.transforms.Affine(2), ef.distributions.StandardNormal(2)).double()
    mu = torch.tensor([0.6, -0.8], dtype=torch.float64)

    def target(z: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((z - mu) ** 2).sum(-1) - math.log(2 * math.pi)

    torch.manual_seed(0)
    result = ef.metrics.log_normalizer(flow, target, n=200_000)
    assert abs(result.log_z) < 4 * result.stderr
    assert abs(result.kl - 0.5) < 0.02
    assert abs(result.elbo + 0.5) < 4 * result.elbo_stderr
    assert 0.3 * result.n < result.ess < result.n  # ESS = n·exp(-|μ|²) = 0.37 n


def test_reverse_kl_rejects_a_target_of_the_wrong_shape() -> None:
    flow = ef.flows.Planar(features=2, transforms=2)
    with pytest.raises(ValueError, match=r"shape \(n,\); for n=2 it returned \(2, 2\)"):
        fit(flow, ef.objectives.ReverseKL(lambda z: z), config=TrainConfig(steps=1))
    with pytest.raises(TypeError, match="callable"):
        ef.objectives.ReverseKL("u1")
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        ef.objectives.ReverseKL(gaussian_target, samples=0)
    with pytest.raises(ValueError, match="draws its own samples"):
        fit(flow, ef.objectives.ReverseKL(gaussian_target), torch.zeros(4, 2))


def test_reverse_kl_needs_an_unconditional_flow() -> None:
    flow = ef.flows.Planar(features=2, context=3, transforms=1)
    with pytest.raises(ValueError, match="unconditional"):
        ef.objectives.ReverseKL(gaussian_target).check_model(flow)


@pytest.mark.parametrize("n", [0, 1, 2.5])
def test_log_normalizer_rejects_bad_sample_counts(n: object) -> None:
    flow = ef.flows.Planar(features=2, transforms=1)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        ef.metrics.log_normalizer(flow, gaussian_target, n=n)


def test_importance_stats_combine_across_chunks() -> None:
    torch.manual_seed(0)
    log_w = torch.randn(1000, 3, dtype=torch.float64)
    whole = ef.numerics.log_mean_exp_stats(log_w)
    a, b = ef.numerics.importance_sums(log_w[:300]), ef.numerics.importance_sums(log_w[300:])
    parts = ef.numerics.importance_stats(
        torch.logaddexp(a[0], b[0]), torch.logaddexp(a[1], b[1]), 1000
    )
    for x, y in zip(whole, parts, strict=True):
        torch.testing.assert_close(x, y)
    w = log_w.exp()
    torch.testing.assert_close(whole[0], w.mean(0).log())
    torch.testing.assert_close(whole[1], w.std(0) / (w.mean(0) * math.sqrt(1000)))
    torch.testing.assert_close(whole[2], w.sum(0) ** 2 / (w**2).sum(0))


@pytest.mark.parametrize(
    "build",
    [
        lambda: ef.flows.Planar(features=2, transforms=4),
        lambda: ef.flows.Radial(features=2, transforms=4),
        lambda: ef.flows.Sylvester(features=2, transforms=2),
        lambda: ef.flows.IAF(features=2, transforms=2, hidden=(16,)),
        lambda: ef.flows.MAF(features=2, transforms=2, hidden=(16,)),
        lambda: ef.flows.NSF(features=2, transforms=2, hidden=(16,)),
        lambda: ef.flows.NSF(features=2, transforms=2, hidden=(16,), coupling=True),
        lambda: ef.flows.RealNVP(features=2, transforms=2, hidden=(16,)),
    ],
    ids=["planar", "radial", "sylvester", "iaf", "maf", "nsf", "nsf-coupling", "realnvp"],
)
def test_every_preset_is_a_variational_posterior(build) -> None:
    """Each preset trains by reverse KL and improves on its start; its log q is exact."""
    torch.manual_seed(0)
    flow = build()
    objective = ef.objectives.ReverseKL(gaussian_target, samples=128)
    config = TrainConfig(steps=150, epoch_steps=50, lr=1e-2, seed=0, patience=None)
    result = fit(flow, objective, config=config, progress=False)
    start, best = result.history[0]["val_neg_elbo"], result.best_val
    assert best < start, result.history
    flow.double()
    z, log_q = flow.sample_and_log_prob((64,))
    torch.testing.assert_close(flow.log_prob(z), log_q, rtol=1e-7, atol=1e-7)
