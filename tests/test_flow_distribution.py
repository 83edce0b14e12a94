"""The view ``flow(context)``: kept densities of its own draws, errors with no closed form."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest
import torch

import exactflow as ef
from density_passes import CountDensityPasses
from exactflow import distributions as D
from exactflow import transforms as T


def _iaf(context: int = 0) -> ef.Flow:
    torch.manual_seed(0)
    flow = ef.flows.IAF(features=3, context=context, transforms=2, hidden=(8,)).double()
    with torch.no_grad():  # away from the identity, so a wrong density would show
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("context", [0, 4], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("draw", ["rsample", "rsample_and_log_prob"])
def test_log_prob_of_its_own_draw_is_kept_with_its_gradient(context: int, draw: str) -> None:
    flow = _iaf(context)
    c = torch.randn(5, context, dtype=torch.float64) if context else None
    d = flow(c) if c is not None else flow().expand((5,))
    passes = CountDensityPasses(flow)
    x = getattr(d, draw)((2,))
    x = x[0] if isinstance(x, tuple) else x
    kept = d.log_prob(x)
    assert passes.calls == 0 and kept.shape == (2, 5)
    recomputed = flow.log_prob(x, None if c is None else c.expand(2, 5, context))
    assert passes.calls == 1
    torch.testing.assert_close(kept, recomputed)
    params = list(flow.parameters())
    g_kept = torch.autograd.grad(kept.sum(), params, retain_graph=True)
    g_recomputed = torch.autograd.grad(recomputed.sum(), params)
    for a, b in zip(g_kept, g_recomputed, strict=True):
        torch.testing.assert_close(a, b)


def test_a_changed_draw_or_flow_is_scored_again() -> None:
    flow = _iaf()
    d = flow()
    passes = CountDensityPasses(flow)
    x, kept = d.rsample_and_log_prob((4,))
    assert d.log_prob(x.detach()) is not kept and passes.calls == 1  # another tensor
    x2, kept2 = d.rsample_and_log_prob((4,))
    assert d.log_prob(x) is not kept and d.log_prob(x2) is kept2  # only the last draw is kept
    with torch.no_grad():
        x2[0, 0] += 1.0  # modified in place: its version changes
    torch.testing.assert_close(d.log_prob(x2), flow.log_prob(x2))
    x3, kept3 = d.rsample_and_log_prob((4,))
    optimizer = torch.optim.SGD(flow.parameters(), lr=0.1)
    kept3.sum().backward()
    optimizer.step()  # the flow changed: the kept density is stale
    fresh = d.log_prob(x3)
    assert fresh is not kept3
    torch.testing.assert_close(fresh, flow.log_prob(x3))


def test_a_draw_without_gradient_is_kept_only_while_gradients_are_off() -> None:
    flow = _iaf()
    d = flow()
    x, kept = d.sample_and_log_prob((6,))
    assert not kept.requires_grad
    with torch.no_grad():
        assert d.log_prob(x) is not None and d.log_prob(x).data_ptr() == kept.data_ptr()
    scored = d.log_prob(x)  # gradients on: the density at the fixed point, with its score
    assert scored.requires_grad
    torch.testing.assert_close(scored, kept)
    y = d.sample((6,))
    assert d.log_prob(y).requires_grad  # sample() keeps no graph either


def test_kept_density_is_detached_under_no_grad() -> None:
    d = _iaf()()
    x = d.rsample((3,))
    with torch.no_grad():
        assert not d.log_prob(x).requires_grad


def test_copies_start_with_nothing_kept() -> None:
    d = _iaf()()
    x = d.rsample((3,))  # the kept density carries a graph, which deepcopy refuses
    twin = copy.deepcopy(d)
    assert twin._kept is None and d.log_prob(x) is d._kept[1]
    torch.testing.assert_close(pickle.loads(pickle.dumps(d)).log_prob(x), d.log_prob(x))


def test_expand_keeps_the_class_and_skips_no_context_check() -> None:
    flow = _iaf(context=4)
    d = flow(torch.randn(5, 4, dtype=torch.float64))
    e = d.expand((7, 5))
    assert type(e) is type(d) and e.batch_shape == (7, 5) and e.context.shape == (7, 5, 4)
    assert e.sample().shape == (7, 5, 3)
    with pytest.raises(ValueError, match=r"batch shape \(5,\) to \(3,\)"):
        d.expand((3,))
    u = _iaf()().expand((2,))
    assert type(u.expand((4, 2))) is type(u) and u.expand((4, 2)).sample().shape == (4, 2, 3)


def test_mixture_base_is_not_reparameterized() -> None:
    flow = ef.Flow(T.Affine(2), D.GaussianMixture(2, components=3))
    assert not flow().has_rsample and _iaf()().has_rsample
    assert flow().sample((5,)).shape == (5, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda d: d.mean,
            r"^flow\(\)\.mean: a flow's mean has no closed form; estimate it with"
            r" flow\.sample\(\(n,\)\)\.mean\(0\)$",
        ),
        (lambda d: d.variance, r"^flow\(\)\.variance: .* flow\.sample\(\(n,\)\)\.var\(0\)$"),
        (lambda d: d.stddev, r"^flow\(\)\.stddev: .* standard deviation .*\.std\(0\)$"),
        (lambda d: d.mode, r"^flow\(\)\.mode: .* maximizing flow\.log_prob\(x\) over x"),
        (
            lambda d: d.entropy(),
            r"^flow\(\)\.entropy\(\): a flow's entropy has no closed form; estimate it with"
            r" -flow\.sample_and_log_prob\(\(n,\)\)\[1\]\.mean\(0\) \(unbiased Monte Carlo\)$",
        ),
        (lambda d: d.perplexity(), r"entropy\(\): a flow's entropy"),
        (lambda d: d.cdf(torch.zeros(3)), r"P\(X <= value\) .* <= value\)\.all\(-1\)"),
        (lambda d: d.icdf(torch.zeros(3)), r"inverse CDF .*\.quantile\(q, dim=0\)$"),
        (lambda d: d.enumerate_support(), r"continuous: .* flow\.sample\(\(n,\)\)$"),
    ],
    ids=["mean", "variance", "stddev", "mode", "entropy", "perplexity", "cdf", "icdf", "support"],
)
def test_no_closed_form_says_what_to_use(call: object, message: str) -> None:
    with pytest.raises(NotImplementedError, match=message):
        call(_iaf()())


def test_no_closed_form_names_the_context_and_event() -> None:
    flow = _iaf(context=4)
    with pytest.raises(NotImplementedError, match=r"^flow\(context\)\.mean: .*\(\(n,\), context\)"):
        _ = flow(torch.zeros(4, dtype=torch.float64)).mean
    image = ef.Flow(T.Compose([T.Flatten((1, 2, 2)), T.Affine(4)]), D.StandardNormal(4))
    with pytest.raises(NotImplementedError, match=r"<= value\)\.flatten\(-3\)\.all\(-1\)"):
        image().cdf(torch.zeros(1, 2, 2))


def test_importing_exactflow_does_not_import_pyro() -> None:
    code = (
        "import sys, torch, exactflow as ef\n"
        "d = ef.flows.MAF(features=2, transforms=1)()\n"
        "d.log_prob(d.sample((3,)))\n"
        "assert type(d) is ef.flow.FlowDistribution, type(d)\n"
        "assert 'pyro' not in sys.modules, 'exactflow imported pyro'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_transform_is_the_flows_map_to_its_base_under_the_context() -> None:
    flow = ef.flows.MAF(features=2, context=3, transforms=2, hidden=(8,)).double()
    x, c = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(flow(c).transform(x), flow.transform(x, c)[0])
    # One point against a batch of contexts broadcasts, as log_prob does.
    z = flow(c).transform(x[0])
    assert z.shape == (5, 2) and torch.equal(z[1], flow.transform(x[:1], c[1:2])[0][0])
    with pytest.raises(ValueError, match="shape"):
        flow(c).transform(torch.zeros(5, 3, dtype=torch.float64))
