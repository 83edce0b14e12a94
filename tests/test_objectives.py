"""ef.objectives: the per-row loss protocol the trainer minimizes, and NLL."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow.objectives import NLL, Objective


def test_nll_is_the_per_row_negative_log_likelihood() -> None:
    flow = ef.flows.MAF(features=2, context=1, transforms=1, hidden=[8])
    x, c = torch.randn(5, 2), torch.randn(5, 1)
    loss = NLL().loss(flow, x, c)
    assert loss.shape == (5,)
    assert torch.equal(loss, -flow.log_prob(x, c))
    assert torch.equal(NLL().metric(flow, x, c), loss)
    assert NLL.name == "nll" and NLL.needs_data


def test_nll_checks_the_data_against_the_flow_once() -> None:
    flow = ef.flows.MAF(features=2, context=1, transforms=1, hidden=[8])
    x, c = torch.randn(5, 2), torch.randn(5, 1)
    NLL().check_data(flow, x, c)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\), got \(5, 3\)"):
        NLL().check_data(flow, torch.randn(5, 3), c)
    with pytest.raises(ValueError, match="conditional .* pass data as"):
        NLL().check_data(flow, x, None)
    with pytest.raises(ValueError, match=r"context must have shape \(N, 1\)"):
        NLL().check_data(flow, x, torch.randn(5, 2))
    with pytest.raises(ValueError, match="unconditional but val comes with a context"):
        NLL().check_data(ef.flows.MAF(features=2, transforms=1), x, c, name="val")
    with pytest.raises(TypeError, match="NLL trains an exactflow Flow"):
        NLL().check_model(torch.nn.Linear(2, 2))


def test_fitting_switches_per_call_validation_off_and_back_on() -> None:
    flow = ef.flows.MAF(features=2, transforms=1, hidden=[8])
    with NLL().fitting(flow):
        assert flow.validate is False
    assert flow.validate is True


def test_an_objective_must_define_its_loss() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Objective()  # type: ignore[abstract]
    with pytest.raises(ValueError, match="NLL needs data"):
        NLL().loss(ef.flows.MAF(features=2, transforms=1), None)
