"""A bounded prior in NPE: exactflow's posterior puts no mass outside it, without rejection.

``θ ~ U[0, 1]²``, ``x = θ + 0.1 ε``; the estimator is ``posterior_nn("NSF", bounds=...)``, trained
by sbi's own loop. Its z-scoring of ``θ`` must come after the bound map (it standardizes the
unbounded values), and its draws, taken from the density estimator itself (sbi's rejection
sampling switched off), all lie inside the box.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sbi", reason="the sbi integration needs sbi (the test extra has it)")

from sbi.inference import NPE
from sbi.utils import BoxUniform

from exactflow.integrations.sbi import build_estimator, posterior_nn
from exactflow.transforms import Affine
from exactflow.transforms.bounds import Bounds

BOX = [(0.0, 1.0), (0.0, 1.0)]


def simulations(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 2, generator=generator)
    return theta, theta + 0.1 * torch.randn(n, 2, generator=generator)


def test_z_scoring_follows_the_bound_map() -> None:
    theta, x = simulations(400, 0)
    theta = 0.9 * theta  # not centred: the statistics of logit(θ) differ from θ's
    estimator = build_estimator(theta, x, "NSF", transforms=1, hidden=(8,), bounds=BOX)
    bound_map, rest = estimator.flow.transform.transforms
    assert isinstance(bound_map, Bounds)
    affine = rest.transforms[0]
    assert isinstance(affine, Affine)
    mapped = bound_map(theta)[0]
    torch.testing.assert_close(affine.log_scale, -mapped.std(0).log())
    torch.testing.assert_close(affine.shift, -mapped.mean(0) / mapped.std(0))
    inside, outside = torch.tensor([[0.5, 0.5]]), torch.tensor([[1.2, 0.5]])
    assert bool(torch.isfinite(estimator.log_prob(inside, x[:1])).all())
    assert torch.equal(estimator.log_prob(outside, x[:1]), torch.full((1, 1), -torch.inf))


def test_npe_posterior_draws_never_leave_the_prior(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # sbi's trainers write TensorBoard logs to ./sbi-logs
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    theta, x = simulations(1000, 1)
    torch.manual_seed(0)
    builder = posterior_nn("NSF", transforms=2, hidden=(32, 32), bins=8, bounds=BOX)
    inference = NPE(prior, density_estimator=builder, show_progress_bars=False)
    inference.append_simulations(theta, x).train(max_num_epochs=5, show_train_summary=False)
    posterior = inference.build_posterior()
    for point in [(0.02, 0.03), (-0.05, 0.4), (0.5, 0.98)]:  # posterior mass against the box
        draws = posterior.sample(
            (10_000,), x=torch.tensor(point), reject_outside_prior=False, show_progress_bars=False
        )
        assert draws.shape == (10_000, 2)
        assert int(((draws <= 0) | (draws >= 1)).sum()) == 0
