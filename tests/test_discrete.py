"""Discrete columns of a table: dequantized, and the bound on the mixed probability-density."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import exactflow as ef
from exactflow import checkpoint, registry
from exactflow.models import Dequantized
from exactflow.models.columns import DiscreteColumns, integer_columns
from exactflow.train import TrainConfig, fit

RATE, SLOPE, NOISE = 3.0, 0.5, 0.5  # k ~ Poisson(RATE), x | k ~ N(SLOPE k, NOISE²)


def poisson_gaussian(n: int, seed: int) -> torch.Tensor:
    """Rows ``(k, x)`` of the known mixed distribution, float64."""
    generator = torch.Generator().manual_seed(seed)
    k = torch.poisson(torch.full((n,), RATE, dtype=torch.float64), generator=generator)
    x = SLOPE * k + NOISE * torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.stack((k, x), 1)


def exact_log_p(rows: torch.Tensor) -> torch.Tensor:
    """``log P(k) + log p(x | k)``: a probability in ``k``, a density in ``x``, nats per row."""
    k, x = rows[:, 0], rows[:, 1]
    log_pk = k * math.log(RATE) - RATE - torch.lgamma(k + 1)
    normal = torch.distributions.Normal(SLOPE * k, NOISE)
    return log_pk + normal.log_prob(x)


def perturbed(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


# ---------------------------------------------------------------------------- columns
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(lambda n: torch.randint(0, 5, (n,)).double(), True, id="few-integers"),
        pytest.param(lambda n: torch.randn(n, dtype=torch.float64), False, id="continuous"),
        pytest.param(lambda n: torch.arange(n).double(), False, id="all-distinct-integers"),
        pytest.param(lambda n: torch.arange(n).double() % 90, True, id="90-levels-of-2000-rows"),
        pytest.param(lambda n: torch.arange(n).double() % 120, False, id="120-levels-of-2000"),
        pytest.param(lambda n: torch.arange(n).double() % 2 - 0.5, False, id="half-integers"),
    ],
)
def test_integer_columns_rule(values, expected: bool) -> None:
    x = torch.stack((torch.randn(2000, dtype=torch.float64), values(2000)), 1)
    assert integer_columns(x) == ([1] if expected else [])


def test_split_and_merge_are_inverse() -> None:
    columns = DiscreteColumns(5, [3, -1, 0])
    assert columns.indices == [0, 3, 4]
    x = torch.randn(2, 7, 5)
    k, rest = columns.split(x)
    assert k.shape == (2, 7, 3) and rest.shape == (2, 7, 2)
    assert torch.equal(columns.merge(k, rest), x)
    assert torch.equal(rest, x[..., [1, 2]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"discrete": [3]}, ValueError, "indices from 0 to 2", id="out-of-range"),
        pytest.param({"discrete": [1, -2]}, ValueError, "listed twice", id="twice"),
        pytest.param({"discrete": []}, TypeError, "non-empty list", id="empty"),
        pytest.param({"discrete": [0], "levels": 4}, ValueError, "levels applies to", id="levels"),
        pytest.param({"standardize": True}, ValueError, "standardize applies", id="no-columns"),
    ],
)
def test_options_are_checked(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Dequantized(ef.flows.MAF(features=3, transforms=1), **kwargs)


def test_non_integer_values_are_refused_with_their_place() -> None:
    model = Dequantized(ef.flows.MAF(features=2, transforms=1), discrete=[1])
    rows = torch.tensor([[0.3, 1.0], [0.2, 2.5]])
    with pytest.raises(ValueError, match=r"discrete column 1 \(from 0\).*2\.5 at row 1"):
        model.check_data(rows, None)
    model.check_data(rows[:1], None)


# ---------------------------------------------------------------------------- the bound
def test_uniform_log_weights_are_the_flow_at_k_plus_u() -> None:
    flow = perturbed(ef.flows.MAF(features=3, transforms=2, hidden=(8,)).double())
    model = Dequantized(flow, discrete=[0, 2])
    rows = torch.tensor([[2.0, 0.4, -1.0], [0.0, -0.3, 4.0]], dtype=torch.float64)
    torch.manual_seed(5)
    log_w = model.log_weights(rows, k=3)
    torch.manual_seed(5)
    u = torch.rand(3, 2, 2, dtype=torch.float64)
    y = rows.expand(3, 2, 3).clone()
    y[..., [0, 2]] += u
    torch.testing.assert_close(log_w, flow.log_prob(y))


def test_standardization_is_a_flow_step_with_its_log_det() -> None:
    torch.manual_seed(0)
    rows = torch.stack((100 + 20 * torch.randn(64), torch.randint(0, 7, (64,)) * 1.0), 1).double()
    model = Dequantized("MAF", discrete=[1], standardize=True, flow_features=2,
                        flow_transforms=1, flow_hidden=[8])  # fmt: skip
    model = model.double().fit_standardization(rows)
    inner = model.flow.transform[1]
    mean = torch.stack((rows[:, 0].mean(), rows[:, 1].mean() + 0.5))
    std = torch.stack(
        (rows[:, 0].std(correction=0), (rows[:, 1].var(correction=0) + 1 / 12).sqrt())
    )
    torch.manual_seed(1)
    log_w = model.log_weights(rows, k=2)
    torch.manual_seed(1)
    y = rows.expand(2, 64, 2).clone()
    y[..., 1] += torch.rand(2, 64, 1, dtype=torch.float64)[..., 0]
    z, ladj = inner((y - mean) / std)
    expected = model.flow.base.log_prob(z) + ladj - std.log().sum()
    torch.testing.assert_close(log_w, expected)


def test_bound_and_estimate_against_quadrature_of_the_model() -> None:
    """Per row: E_u[log p(k + u, x)] <= log ∫ p(k + u, x) du, which the IW estimate reaches."""
    flow = perturbed(ef.flows.MAF(features=2, transforms=2, hidden=(8,)).double(), seed=3)
    model = Dequantized(flow, discrete=[0]).eval()
    rows = torch.tensor([[0.0, 0.1], [2.0, 1.0], [5.0, -0.5]], dtype=torch.float64)
    nodes = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000  # midpoint rule on [0, 1)
    y = rows.expand(4000, 3, 2).clone()
    y[..., 0] += nodes[:, None]
    log_p = flow.log_prob(y)  # (4000, 3)
    bound = log_p.mean(0)  # ∫ log p du
    log_prob_k = torch.logsumexp(log_p, 0) - math.log(4000)  # log ∫ p du
    assert bool((bound < log_prob_k).all())
    torch.manual_seed(0)
    log_w = model.log_weights(rows, k=8000)
    elbo, se = log_w.mean(0), log_w.std(0) / math.sqrt(8000)
    assert bool(((elbo - bound).abs() < 4 * se).all()), (elbo - bound, se)
    estimate, stderr = model.log_marginal(rows, k=8000)
    assert bool(((estimate - log_prob_k).abs() < 4 * stderr + 1e-6).all())
    assert bool((estimate > elbo).all())


@pytest.mark.parametrize(("dequantizer", "epochs"), [("uniform", 15), ("variational", 8)])
def test_trained_bound_is_below_the_exact_log_probability_and_close(
    dequantizer: str, epochs: int
) -> None:
    train, test = poisson_gaussian(2000, 0).float(), poisson_gaussian(2000, 1)
    torch.manual_seed(0)
    model = Dequantized("MAF", discrete=[0], standardize=True, dequantizer=dequantizer,
                        steps=2, hidden=16, flow_features=2, flow_transforms=2,
                        flow_hidden=[32, 32])  # fmt: skip
    model.fit_standardization(train)
    config = TrainConfig(epochs=epochs, batch_size=256, lr=3e-3, seed=0)
    fit(model, ef.objectives.ELBO(), train[:1700], config, val=train[1700:], progress=False)
    elbo, estimate, _ = model.bounds(test.float(), k=256)
    exact = exact_log_p(test)
    gap = exact - elbo  # >= 0 in expectation: Jensen's gap plus KL(true || model)
    se = float(gap.std()) / math.sqrt(len(gap))
    assert float(gap.mean()) > -3 * se, (float(gap.mean()), se)
    assert float(gap.mean()) < 0.15, float(gap.mean())
    assert float((estimate - elbo).mean()) > 0  # the IW estimate is the tighter figure


# ---------------------------------------------------------------------------- q, samples, files
@pytest.mark.parametrize("discrete", [[1], [0, 2]], ids=["one-column", "two-columns"])
def test_variational_q_lives_in_the_bins_and_trains(discrete: list[int]) -> None:
    model = Dequantized(ef.flows.MAF(features=3, transforms=1), discrete=discrete,
                        dequantizer="variational", steps=2, hidden=8)  # fmt: skip
    perturbed(model.dequantizer, seed=2, scale=0.1)
    rows = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.0]])
    u, log_q = model.dequantizer(rows, 4)
    assert u.shape == (4, 2, len(discrete)) and log_q.shape == (4, 2)
    assert bool(((u > 0) & (u < 1)).all())
    model.elbo(rows).sum().backward()
    grads = [p.grad for p in model.dequantizer.parameters()]
    assert all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads)


def test_samples_are_integers_in_the_discrete_columns() -> None:
    flow = perturbed(ef.flows.MAF(features=3, transforms=1))
    model = Dequantized(flow, discrete=[2])
    torch.manual_seed(0)
    drawn = model.sample(500)
    assert drawn.shape == (500, 3)
    assert torch.equal(drawn[:, 2], drawn[:, 2].floor())
    assert bool((drawn[:, :2] != drawn[:, :2].floor()).all())


@pytest.mark.parametrize("dequantizer", ["uniform", "variational"])
def test_checkpoint_rebuilds_the_model_with_its_standardization(tmp_path, dequantizer) -> None:
    torch.manual_seed(0)
    rows = torch.stack((50 + 5 * torch.randn(40), torch.randint(0, 4, (40,)) * 1.0), 1)
    model = Dequantized("RealNVP", discrete=[1], standardize=True, dequantizer=dequantizer,
                        hidden=8, flow_features=2, flow_transforms=2, flow_hidden=[8])  # fmt: skip
    perturbed(model.fit_standardization(rows))
    spec = registry.spec_of(model)
    assert spec["kwargs"]["discrete"] == [1] and "levels" not in spec["kwargs"]
    path = checkpoint.save(tmp_path / "m.safetensors", model, spec=spec)
    restored = checkpoint.load(path).model
    assert isinstance(restored, Dequantized)
    torch.manual_seed(3)
    expected = model.log_weights(rows, 2)
    torch.manual_seed(3)
    torch.testing.assert_close(restored.log_weights(rows, 2), expected)


# ---------------------------------------------------------------------------- the command line
SMALL = ["--flow", "maf", "--epochs", "1", "--transforms", "1", "--hidden", "8", "--no-progress"]


@pytest.fixture
def table(tmp_path):
    """A CSV with an integer age (42 values), a Poisson count and two continuous columns."""
    generator = torch.Generator().manual_seed(0)
    n = 300
    age = torch.randint(18, 60, (n,), generator=generator)
    rooms = torch.poisson(torch.full((n,), 3.0), generator=generator).long()
    income = 20 + 0.5 * age + 5 * torch.randn(n, generator=generator)
    other = torch.randn(n, generator=generator)
    lines = ["age,income,rooms,other"] + [
        f"{int(a)},{float(i):.5f},{int(r)},{float(o):.5f}"
        for a, i, r, o in zip(age, income, rooms, other, strict=True)
    ]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _fit(tmp_path, table, *options: str) -> tuple[int, dict]:
    from exactflow.cli.main import main

    out = tmp_path / "run"
    code = main(["fit", "--data", str(table), "--out", str(out), "--no-plots", *SMALL, *options])
    record = json.loads((out / "run.json").read_text()) if code == 0 else {}
    return code, record


def test_fit_detects_integer_columns_and_reports_the_bound(tmp_path, table, capsys) -> None:
    from exactflow.cli.main import main

    code, record = _fit(tmp_path, table)
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "columns 1 ('age'), 3 ('rooms'): integer-valued, dequantized uniformly; the reported NLL"
        " is the dequantization bound of their probability" in out
    )
    assert "test dequantization bound" in out and "not exact" in out
    assert record["flow"]["name"] == "Dequantized"
    assert record["flow"]["kwargs"]["discrete"] == [0, 2]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {"bound", "nll_bound", "estimate"} <= set(report) and "nll" not in report
    assert main(["eval", str(tmp_path / "run"), "--k", "20"]) == 0
    assert "dequantization bound" in capsys.readouterr().out
    samples = tmp_path / "samples.csv"
    assert main(["sample", str(tmp_path / "run"), "-n", "50", "-o", str(samples)]) == 0
    drawn = torch.tensor(
        [[float(v) for v in line.split(",")] for line in samples.read_text().split()]
    )
    assert drawn.shape == (50, 4)
    assert torch.equal(drawn[:, [0, 2]], drawn[:, [0, 2]].round())


def test_fit_discrete_options_override_the_detection(tmp_path, table, capsys) -> None:
    code, record = _fit(tmp_path, table, "--discrete", "none")
    assert code == 0 and record["flow"]["name"] == "MAF"
    assert "integer-valued" not in capsys.readouterr().out
    code, record = _fit(
        tmp_path, table, "--discrete", "rooms", "--dequantization", "variational", "--overwrite"
    )
    assert code == 0
    assert record["flow"]["kwargs"]["discrete"] == [2]
    assert record["flow"]["kwargs"]["dequantizer"] == "variational"
    assert "column 3 ('rooms'): integer-valued, dequantized by a learned" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            ["--discrete", "none", "--dequantization", "uniform"],
            "there are none",
            id="dequantization-without-columns",
        ),
        pytest.param(["--discrete", "nope"], "no column named 'nope'", id="unknown-name"),
        pytest.param(
            ["--discrete", "1"],
            r"column 2 \('income'\) is not integer-valued: train row 1",
            id="not-integers",
        ),
    ],
)
def test_fit_refuses_bad_discrete_options(tmp_path, table, capsys, options, message) -> None:
    code, _ = _fit(tmp_path, table, *options)
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_discrete_run_resumes_and_keeps_its_model(tmp_path, table, capsys) -> None:
    from exactflow.cli.main import main

    assert _fit(tmp_path, table, "--dequantization", "variational")[0] == 0
    run = str(tmp_path / "run")
    assert main(["fit", "--out", run, "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert "test dequantization bound" in capsys.readouterr().out
    assert main(["fit", "--out", run, "--resume", "--epochs", "3", "--transforms", "4"]) == 2
    assert "--transforms 4 differs" in capsys.readouterr().err
