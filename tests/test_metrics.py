"""ef.metrics: NLL and its standard error, bits/dim, KL gap, exactness certificate, evaluate."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor

import exactflow as ef

T = ef.transforms


def gaussian_flow() -> ef.Flow:
    return ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.StandardNormal(2))


def test_nll_is_the_mean_negative_log_density_with_its_standard_error() -> None:
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    flow = gaussian_flow()
    mean, stderr = ef.metrics.nll(flow, x, batch_size=64)
    exact = 0.5 * (x.double() ** 2).sum(-1) + math.log(2 * math.pi)
    assert mean == pytest.approx(float(exact.mean()), rel=1e-6)
    assert stderr == pytest.approx(float(exact.std()) / math.sqrt(1000), rel=1e-5)
    assert flow.training  # its mode is restored
    assert math.isnan(ef.metrics.nll(flow, x[:1])[1])
    with pytest.raises(ValueError, match="at least one point"):
        ef.metrics.nll(flow, x[:0])


def test_bits_per_dim_has_one_implementation() -> None:
    assert ef.metrics.bits_per_dim is ef.data.bits_per_dim
    assert ef.metrics.bits_per_dim(0.0, dims=784) == pytest.approx(8.0)


def test_kl_gap_is_nll_minus_the_known_entropy() -> None:
    ds = ef.data.load("8gaussians", n_train=100, n_val=50, n_test=200)
    flow = ef.flows.MAF(features=2, transforms=1, hidden=[8])
    gap, stderr = ef.metrics.kl_gap(flow, ds)
    mean, nll_stderr = ef.metrics.nll(flow, ds.test)
    assert gap == pytest.approx(mean - ds.entropy.value)
    assert stderr >= nll_stderr
    with pytest.raises(ValueError, match="entropy .* is unknown"):
        ef.metrics.kl_gap(flow, ef.data.load_digits())


class WrongLadj(T.Transform):
    """A shift whose log-determinant is off by ``error`` (it should be 0)."""

    def __init__(self, error: float) -> None:
        super().__init__()
        self.error = error

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x + 1, x.new_full(x.shape[:-1], self.error)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y - 1, y.new_full(y.shape[:-1], -self.error)


class WrongInverse(WrongLadj):
    """A doubling whose inverse forgets to halve."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return 2 * x, x.new_full(x.shape[:-1], 2 * math.log(2))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y, y.new_full(y.shape[:-1], -2 * math.log(2))


def flow_of(step: T.Transform) -> ef.Flow:
    return ef.Flow(T.Compose([step]), ef.distributions.StandardNormal(2))


def test_certificate_passes_an_exact_flow() -> None:
    torch.manual_seed(0)
    flow = ef.flows.NSF(features=3, transforms=2, hidden=[16])
    report = ef.metrics.certificate(flow, torch.randn(20, 3), points=5)
    assert report["passed"] is True and report["points"] == 5
    assert report["round_trip_error"] < 1e-8 and report["ladj_error"] < 1e-8
    assert report["note"] is None


@pytest.mark.parametrize(
    ("step", "failing"),
    [(WrongLadj(0.5), "ladj_error"), (WrongInverse(0.0), "round_trip_error")],
    ids=["ladj", "inverse"],
)
def test_certificate_fails_a_flow_that_is_not_exact(step: T.Transform, failing: str) -> None:
    report = ef.metrics.certificate(flow_of(step), torch.randn(10, 2))
    assert report["passed"] is False
    assert report[failing] > 0.1


def test_certificate_skips_the_jacobian_above_its_dimension_limit() -> None:
    flow = ef.flows.MAF(features=3, transforms=1, hidden=[8])
    report = ef.metrics.certificate(flow, torch.randn(4, 3), max_features=2)
    assert report["ladj_error"] is None and report["passed"] is True
    assert "Jacobian check skipped" in report["note"] and "limit of 2" in report["note"]


def test_evaluate_writes_strict_json_with_the_certificate() -> None:
    ds = ef.data.load("moons", n_train=100, n_val=50, n_test=1)
    report = ef.metrics.evaluate(ef.flows.MAF(features=2, transforms=1), ds)
    text = json.dumps(report, allow_nan=False)  # a NaN would raise here
    assert report["points"] == 1 and report["nll_stderr"] is None
    assert {"nll", "kl_gap", "entropy", "entropy_method", "certificate"} <= set(report)
    assert json.loads(text)["certificate"]["passed"] is True


def test_evaluate_on_an_empty_split_is_a_clear_error() -> None:
    ds = ef.data.load("moons", n_train=100, n_val=50, n_test=1)
    empty = ef.data.Dataset("empty", "toy2d", ds.train, ds.val, ds.test[:0])
    with pytest.raises(ValueError, match="test split of empty has no points"):
        ef.metrics.evaluate(ef.flows.MAF(features=2, transforms=1), empty)
    with pytest.raises(ValueError, match="split must be one of"):
        ef.metrics.evaluate(ef.flows.MAF(features=2, transforms=1), ds, split="dev")


def test_evaluate_reports_bits_per_dim_for_quantized_data() -> None:
    ds = ef.data.load_digits()
    report = ef.metrics.evaluate(ef.flows.MAF(features=64, transforms=1, hidden=[8]), ds)
    assert report["bits_per_dim"] == pytest.approx(
        ef.data.bits_per_dim(report["nll"], 64, levels=17)
    )
