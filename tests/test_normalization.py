"""ActNorm's data-dependent initialization and BatchNorm's batch/running statistics."""

from __future__ import annotations

import math

import pytest
import torch

from exactflow import transforms as T

F64 = torch.float64


def _batch(shape: tuple[int, ...], seed: int, loc: float = 4.0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    per_feature = torch.linspace(1.0, 2.0, shape[1], dtype=F64).view(-1, *[1] * (len(shape) - 2))
    return loc + scale * per_feature * torch.randn(shape, dtype=F64, generator=g)


def _moments(y: torch.Tensor, event_ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    channel = y.dim() - event_ndim
    dims = [d for d in range(y.dim()) if d != channel]
    var, mean = torch.var_mean(y, dim=dims, correction=0)
    return mean, var


# ------------------------------------------------------------------ ActNorm


@pytest.mark.parametrize(
    ("shape", "event_ndim"), [((64, 5), 1), ((16, 3, 4, 4), 3)], ids=["vector", "image"]
)
def test_actnorm_first_training_batch_is_standardized(shape: tuple, event_ndim: int) -> None:
    t = T.ActNorm(shape[1], event_ndim=event_ndim).double().train()
    assert not bool(t.initialized)
    x = _batch(shape, seed=0)
    y, ladj = t(x)
    assert bool(t.initialized)
    mean, var = _moments(y, event_ndim)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-10, rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-5, rtol=0)
    positions = 16 if event_ndim == 3 else 1
    torch.testing.assert_close(ladj, (-positions * t.log_scale.sum()).expand(shape[0]))


def test_actnorm_initializes_only_once() -> None:
    t = T.ActNorm(3).double().train()
    t(_batch((32, 3), seed=0))
    shift, log_scale = t.shift.detach().clone(), t.log_scale.detach().clone()
    t(_batch((32, 3), seed=1, loc=-50.0, scale=0.1))
    assert torch.equal(t.shift, shift)
    assert torch.equal(t.log_scale, log_scale)


def test_actnorm_init_is_saved_and_not_redone_after_loading() -> None:
    trained = T.ActNorm(3).double().train()
    trained(_batch((32, 3), seed=0))
    state = trained.state_dict()
    assert "initialized" in state
    assert bool(state["initialized"])

    fresh = T.ActNorm(3).double()
    fresh.load_state_dict(state)
    fresh.train()
    very_different = _batch((32, 3), seed=1, loc=-100.0, scale=0.01)
    y, _ = fresh(very_different)
    assert torch.equal(fresh.shift, trained.shift)
    assert torch.equal(fresh.log_scale, trained.log_scale)
    torch.testing.assert_close(y, trained(very_different)[0])


def test_actnorm_uninitialized_eval_and_inverse_use_current_parameters() -> None:
    t = T.ActNorm(2).double()
    x = _batch((10, 2), seed=0)
    t.eval()
    y, ladj = t(x)
    assert torch.equal(y, x)  # identity at construction
    assert torch.equal(ladj, torch.zeros(10, dtype=F64))
    t.train()
    x_back, _ = t.inverse(x)
    assert torch.equal(x_back, x)
    assert not bool(t.initialized)


def test_actnorm_rejects_a_single_row_for_initialization() -> None:
    t = T.ActNorm(3).train()
    with pytest.raises(ValueError, match="at least 2"):
        t(torch.randn(1, 3))


def test_actnorm_initializes_finitely_on_huge_float32_data() -> None:
    t = T.ActNorm(2).train()
    x = 1e30 * (1 + torch.randn(64, 2, generator=torch.Generator().manual_seed(0)))
    y, ladj = t(x)
    assert torch.isfinite(t.log_scale).all() and torch.isfinite(t.shift).all()
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    assert y.std(0, correction=0).sub(1).abs().max() < 1e-4


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_actnorm_refuses_to_initialize_on_non_finite_values(bad: float) -> None:
    t = T.ActNorm(2).train()
    x = torch.randn(8, 2)
    x[3, 1] = bad
    with pytest.raises(ValueError, match="cannot initialize"):
        t(x)
    assert not bool(t.initialized) and torch.equal(t.log_scale, torch.zeros(2))


# ------------------------------------------------------------------ BatchNorm


def _perturbed_batchnorm(**kwargs) -> T.BatchNorm:
    torch.manual_seed(0)
    t = T.BatchNorm(**kwargs).double()
    with torch.no_grad():
        t.log_gamma.add_(0.3 * torch.randn(t.features, dtype=F64))
        t.beta.add_(0.3 * torch.randn(t.features, dtype=F64))
    return t


@pytest.mark.parametrize(
    ("shape", "event_ndim"), [((64, 4), 1), ((8, 2, 3, 3), 3)], ids=["vector", "image"]
)
def test_batchnorm_training_uses_batch_statistics(shape: tuple, event_ndim: int) -> None:
    t = _perturbed_batchnorm(features=shape[1], momentum=0.25, event_ndim=event_ndim).train()
    x = _batch(shape, seed=0)
    y, ladj = t(x)
    mean, var = _moments(y, event_ndim)
    # standardized, then scaled by exp(log_gamma) and shifted by beta
    torch.testing.assert_close(mean, t.beta.detach())
    gamma2 = torch.exp(2 * t.log_gamma.detach())
    batch_mean, batch_var = _moments(x, event_ndim)
    torch.testing.assert_close(var, gamma2 * batch_var / (batch_var + t.eps))
    positions = 9 if event_ndim == 3 else 1
    expected = positions * (t.log_gamma - 0.5 * torch.log(batch_var + t.eps)).sum()
    torch.testing.assert_close(ladj, expected.expand(shape[0]))
    # running statistics moved a quarter of the way, with the unbiased variance
    count = x.numel() // shape[1]
    torch.testing.assert_close(t.running_mean, 0.25 * batch_mean)
    torch.testing.assert_close(t.running_var, 0.75 + 0.25 * batch_var * count / (count - 1))
    assert t.running_mean.grad_fn is None and t.running_var.grad_fn is None


def test_batchnorm_eval_uses_running_statistics() -> None:
    t = _perturbed_batchnorm(features=3, momentum=1.0).train()
    t(_batch((50, 3), seed=0))
    running_mean, running_var = t.running_mean.clone(), t.running_var.clone()
    t.eval()
    x = _batch((20, 3), seed=1, loc=-7.0)
    y, ladj = t(x)
    scale = torch.exp(t.log_gamma) / torch.sqrt(running_var + t.eps)
    torch.testing.assert_close(y, (x - running_mean) * scale + t.beta)
    torch.testing.assert_close(ladj, torch.log(scale).sum().expand(20))
    assert torch.equal(t.running_mean, running_mean)  # eval mode leaves them alone
    assert torch.equal(t.running_var, running_var)


def test_batchnorm_inverse_uses_running_statistics_even_in_training() -> None:
    t = _perturbed_batchnorm(features=3).train()
    t(_batch((50, 3), seed=0))
    y = torch.randn(7, 3, dtype=F64)
    x_train, ladj_train = t.inverse(y)
    x_eval, ladj_eval = t.eval().inverse(y)
    torch.testing.assert_close(x_train, x_eval)
    torch.testing.assert_close(ladj_train, ladj_eval)
    torch.testing.assert_close(t(x_eval)[0], y)


def test_batchnorm_rejects_a_single_row_in_training_only() -> None:
    t = T.BatchNorm(3).train()
    with pytest.raises(ValueError, match="single row"):
        t(torch.randn(1, 3))
    y, _ = t.eval()(torch.randn(1, 3))
    assert y.shape == (1, 3)


def test_batchnorm_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="momentum"):
        T.BatchNorm(3, momentum=0.0)
    with pytest.raises(ValueError, match="eps"):
        T.BatchNorm(3, eps=0.0)
    with pytest.raises(ValueError, match="BatchNorm"):
        T.BatchNorm(3)(torch.randn(4, 2))
