"""Posterior quality through sbi: exactflow's estimators against sbi's default NSF.

Every estimator is trained by sbi's own loop (``NPE(prior, density_estimator=...)``,
``append_simulations(θ, x).train()`` with sbi's defaults: batch 200, Adam at 5e-4, early
stopping after 20 epochs without a better validation loss) on **the same** 10⁴ simulations per
seed. Its posterior at each observation ``x_o`` is scored by sbi's ``c2st`` (random forest,
5-fold; 0.5 = indistinguishable) between ``n`` posterior draws and ``n`` exact draws of the true
posterior. Simulators:

* ``linear-gaussian-10d``: ``θ ~ N(0, I₁₀)``, ``x = θ - 1 + ε``, ``ε ~ N(0, 0.3 I)``
  (sbi's ``linear_gaussian``); the posterior is Gaussian (sbi's
  ``true_posterior_linear_gaussian_mvn_prior``).
* ``squares-2d``: ``θ ~ N(0, I₂)``, ``x_i = θ_i² + 0.2 ε_i``: four modes ``(±|θ₁|, ±|θ₂|)``.
  Its posterior factorizes over the coordinates; each is drawn exactly by rejection from the
  prior (accept ``θ_i`` with probability ``exp(-(x_i - θ_i²)² / (2 · 0.2²))``).

Each (simulator, estimator, seed) cell is cached under ``runs/sbi_compare/`` so parts can be
(re)run alone; ``report`` writes ``results/sbi_compare.{md,json}`` from the cache.

Run (one core per job; the machine is shared)::

    OMP_NUM_THREADS=1 python benchmarks/sbi_compare.py run --simulator linear-gaussian-10d \
        --estimator "exactflow NSF" --seed 0
    OMP_NUM_THREADS=1 python benchmarks/sbi_compare.py all      # every missing cell, then report
    python benchmarks/sbi_compare.py report
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from sbi.inference import NPE
from sbi.simulators.linear_gaussian import (
    linear_gaussian,
    true_posterior_linear_gaussian_mvn_prior,
)
from sbi.utils.metrics import c2st
from sbi.utils.tracking import TensorBoardTracker
from scipy.stats import chi2
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal
from torch.utils.tensorboard import SummaryWriter

from exactflow.atomic import write_atomic
from exactflow.integrations.sbi import posterior_nn

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CACHE = ROOT.parent / "runs" / "sbi_compare"
SIMULATIONS = 10_000
OBSERVATIONS = 3
DRAWS = 3_000
SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Simulator:
    """A prior, a simulator and exact draws of the true posterior at an observation."""

    prior: Distribution
    simulate: Callable[[Tensor], Tensor]
    true_draws: Callable[[Tensor, int, torch.Generator], Tensor]  # (x_o, n, generator) -> (n, D)
    true_posterior: Callable[[Tensor], MultivariateNormal] | None = None  # closed form, if any


def _linear_gaussian(dim: int = 10) -> Simulator:
    shift, cov = -torch.ones(dim), 0.3 * torch.eye(dim)
    prior = MultivariateNormal(torch.zeros(dim), torch.eye(dim))

    def posterior(x_o: Tensor) -> MultivariateNormal:
        return true_posterior_linear_gaussian_mvn_prior(
            x_o, shift, cov, prior.mean, prior.covariance_matrix
        )

    def draws(x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        post = posterior(x_o)
        eps = torch.randn(n, dim, generator=generator)
        return post.mean + eps @ post.scale_tril.T

    return Simulator(prior, lambda theta: linear_gaussian(theta, shift, cov), draws, posterior)


def _squares(dim: int = 2, noise: float = 0.2) -> Simulator:
    prior = MultivariateNormal(torch.zeros(dim), torch.eye(dim))

    def draws(x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        columns = []
        for x in x_o.reshape(-1).tolist():
            kept: list[Tensor] = []
            count = 0
            while count < n:
                theta = torch.randn(20 * n, generator=generator)
                accept = torch.rand(20 * n, generator=generator) < torch.exp(
                    -((x - theta**2) ** 2) / (2 * noise**2)
                )
                kept.append(theta[accept])
                count += int(accept.sum())
            columns.append(torch.cat(kept)[:n])
        return torch.stack(columns, -1)

    return Simulator(prior, lambda theta: theta**2 + noise * torch.randn_like(theta), draws)


SIMULATORS: dict[str, Callable[[], Simulator]] = {
    "linear-gaussian-10d": _linear_gaussian,
    "squares-2d": _squares,
}

# name -> sbi `density_estimator` argument (a string for sbi's own, a builder for exactflow's)
ESTIMATORS: dict[str, Callable[[], object]] = {
    "sbi NSF": lambda: "nsf",
    "exactflow NSF": lambda: posterior_nn("NSF"),
    "exactflow NSF (no z-score)": lambda: posterior_nn("NSF", z_score_theta=None, z_score_x=None),
    "exactflow NSF (bins 10, bound 3)": lambda: posterior_nn("NSF", bins=10, bound=3.0),
    "exactflow NSF (lu)": lambda: posterior_nn("NSF", permutation="lu"),
    "exactflow NSF (hidden 50)": lambda: posterior_nn("NSF", hidden=(50, 50)),
    "exactflow NSF coupling": lambda: posterior_nn("NSF", coupling=True, permutation="lu"),
    "exactflow MAF": lambda: posterior_nn("MAF"),
}
DEFAULT_ESTIMATORS = ("sbi NSF", "exactflow NSF")


def _key(simulator: str, estimator: str, seed: int) -> Path:
    name = f"{simulator}__{estimator}__{seed}".replace(" ", "_").replace("/", "-")
    return CACHE / f"{name}.json"


def run_cell(simulator: str, estimator: str, seed: int, max_epochs: int | None = None) -> dict:
    """Train one estimator on one seed's simulations; C2ST at each observation."""
    sim = SIMULATORS[simulator]()
    torch.manual_seed(seed)
    theta = sim.prior.sample((SIMULATIONS,))
    x = sim.simulate(theta)
    observed = sim.simulate(sim.prior.sample((OBSERVATIONS,)))
    torch.manual_seed(1000 + seed)  # the same training randomness for every estimator
    tracker = TensorBoardTracker(SummaryWriter(str(CACHE / "tensorboard")))  # not ./sbi-logs
    inference = NPE(
        sim.prior,
        density_estimator=ESTIMATORS[estimator](),
        tracker=tracker,
        show_progress_bars=False,
    )
    start = time.perf_counter()
    kwargs = {} if max_epochs is None else {"max_num_epochs": max_epochs}
    inference.append_simulations(theta, x).train(**kwargs)
    seconds = time.perf_counter() - start
    posterior = inference.build_posterior()
    summary = inference._summary
    scores, divergences = [], []
    for i, x_o in enumerate(observed):
        generator = torch.Generator().manual_seed(10_000 * seed + i)
        truth = sim.true_draws(x_o, DRAWS, generator)
        draws = posterior.sample((DRAWS,), x=x_o, show_progress_bars=False)
        scores.append(float(c2st(truth, draws, seed=seed)))
        if sim.true_posterior is not None:
            divergences.append(_divergences(sim.true_posterior(x_o), posterior, x_o, truth, draws))
    validation = [float(v) for v in summary["validation_loss"]]
    cell = {
        "simulator": simulator,
        "estimator": estimator,
        "seed": seed,
        "c2st": scores,
        "epochs": len(validation),
        "best_epoch": int(min(range(len(validation)), key=validation.__getitem__)) + 1,
        "best_validation_loss": min(validation),
        "validation_loss": validation,
        "training_loss": [float(v) for v in summary["training_loss"]],
        "train_seconds": seconds,
        "divergences": divergences,
    }
    write_atomic(
        _key(simulator, estimator, seed), lambda f: f.write(json.dumps(cell)), binary=False
    )
    return cell


def _divergences(
    p: MultivariateNormal, posterior: object, x_o: Tensor, truth: Tensor, draws: Tensor
) -> dict:
    """Both KL directions (Monte Carlo, with standard errors) and q's mass in p's far tail.

    ``KL(p ‖ q)`` (what maximum likelihood minimizes, averaged over x) misses mass that ``q``
    puts where ``p`` has none; ``KL(q ‖ p)`` and the fraction of ``q``'s draws beyond ``p``'s
    99.9 % Mahalanobis radius (0.001 for a perfect ``q``) see it, as a C2ST does.
    """
    with torch.no_grad():
        pq = p.log_prob(truth) - posterior.log_prob(truth, x=x_o)
        qp = posterior.log_prob(draws, x=x_o) - p.log_prob(draws)
        white = torch.linalg.solve_triangular(p.scale_tril, (draws - p.mean).T, upper=False)
        radius = float(chi2.ppf(0.999, df=draws.shape[-1]))
        tail = (white.square().sum(0) > radius).double().mean()
        scale = (draws.std(0) / p.stddev).mean()
    n = len(truth)
    return {
        "kl_pq": float(pq.mean()),
        "kl_pq_se": float(pq.std() / n**0.5),
        "kl_qp": float(qp.mean()),
        "kl_qp_se": float(qp.std() / n**0.5),
        "tail_0.999": float(tail),
        "std_ratio": float(scale),
    }


def _cells() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(CACHE.glob("*.json"))]


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _per_seed(group: list[dict]) -> str:
    """Each seed's mean C2ST over its observations."""
    return ", ".join(f"{statistics.mean(c['c2st']):.3f}" for c in sorted(group, key=_seed))


def _seed(cell: dict) -> int:
    return cell["seed"]


def _findings(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """Why exactflow's NSF "stops improving after ~9 epochs" on the 10-D linear Gaussian."""
    ours = groups.get(("linear-gaussian-10d", "exactflow NSF"), [])
    theirs = groups.get(("linear-gaussian-10d", "sbi NSF"), [])
    if not ours or not theirs:
        return []
    # The true posterior's covariance is (I + I / 0.3)^-1 = (0.3 / 1.3) I for every x: the
    # lowest expected validation loss is its entropy.
    entropy = 0.5 * 10 * math.log(2 * math.pi * math.e * 0.3 / 1.3)

    def last_train(group: list[dict]) -> str:
        ends = [c["training_loss"][-1] for c in group if c.get("training_loss")]
        return f"{statistics.mean(ends):.2f}" if ends else "-"

    def best(group: list[dict]) -> tuple[float, float]:
        val = statistics.mean(c["best_validation_loss"] for c in group)
        return val, statistics.mean(c["best_epoch"] for c in group)

    (v_ours, e_ours), (v_theirs, e_theirs) = best(ours), best(theirs)
    return [
        "",
        '## Findings: why exactflow\'s NSF "stops improving after ~9 epochs"',
        "",
        f"- **It has learned what the simulations hold.** On the 10-D linear Gaussian its best"
        f" validation loss is {v_ours:.3f} (epoch {e_ours:.0f} on average) against sbi's NSF"
        f" {v_theirs:.3f} (epoch {e_theirs:.0f}); the true posterior's entropy, the lowest"
        f" expected value, is {entropy:.3f}, so the held-out KL(p‖q) averaged over x is"
        f" {v_ours - entropy:.2f} nats for exactflow and {v_theirs - entropy:.2f} for sbi."
        f" Its training loss keeps falling (last epoch: {last_train(ours)}; sbi's"
        f" {last_train(theirs)}), below the entropy: the networks memorize the 9,000 training"
        " simulations, the validation loss flattens, and sbi's stopping rule (20 epochs"
        " without a better validation loss) ends the run. An optimization stall would show a"
        " high validation loss; this is an early optimum.",
        f"- **The C2ST difference is seed noise.** Per seed (mean over its observations):"
        f" exactflow {_per_seed(ours)}; sbi {_per_seed(theirs)}. The issue's 0.605 against"
        " 0.570 is within that spread.",
        "- **Where the posterior is known, exactflow's is closer in both directions** (second"
        " table): lower KL(p‖q) and KL(q‖p), and less of q's mass beyond p's 99.9 % radius.",
        "- **Variants (seed 0): the spline's bound matters, and exactflow's is the better one.**"
        " With sbi's bound and bins (3 and 10 instead of 5 and 8) exactflow's NSF gets worse:"
        " validation loss 7.38 against 7.10, q 15 % too wide, 6 % of its draws beyond p's"
        " 99.9 % radius, KL(q‖p) 1.07 (second table) — the same excess, smaller, that sbi's"
        " own NSF (bound 3) shows. LU mixing between the layers, hidden width 50 and no"
        " z-scoring change nothing beyond the noise. So the NSF preset keeps its defaults.",
        "- **What did need fixing in the library** was the rest of the issue: the builders"
        " (`exactflow.integrations.sbi`), `FlowDistribution.parameters()` for sbi's custom `q`,"
        " and the two containers sbi's `VIPosterior` could not copy (a preset's `config` dict"
        " holding lists, the spline's per-dtype cache holding tuples).",
    ]


def report() -> None:
    """``results/sbi_compare.{md,json}`` from the cached cells."""
    cells = _cells()
    lines = [
        "# Posterior quality through sbi: C2ST against the true posterior",
        "",
        f"sbi's `NPE(...).train()` with its defaults on {SIMULATIONS:,} simulations per seed;",
        f"C2ST (sbi's `c2st`, random forest, 5-fold) of {DRAWS:,} posterior draws against",
        f"{DRAWS:,} exact draws, at {OBSERVATIONS} observations per seed; mean ± sd over all",
        "(observation, seed) pairs. 0.5 is a perfect posterior. Epochs: trained / best.",
        "Train s: wall seconds on a shared 2-core machine whose load varied (not a speed test).",
        "",
        '`exactflow NSF` is `posterior_nn("NSF")` with the preset\'s defaults (5 masked',
        "autoregressive spline layers, MADE (64, 64), 8 bins on [-5, 5]); `sbi NSF` is",
        '`density_estimator="nsf"` (5 coupling spline layers with LU mixing, residual nets of',
        "width 50, 10 bins on [-3, 3]). Both z-score θ and x with the first batch's statistics.",
        "",
        "| simulator | estimator | seeds | C2ST | epochs (best) | train s |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["simulator"], cell["estimator"]), []).append(cell)
    for (simulator, estimator), group in sorted(groups.items()):
        scores = [s for c in group for s in c["c2st"]]
        epochs = statistics.mean(c["epochs"] for c in group)
        best = statistics.mean(c["best_epoch"] for c in group)
        seconds = statistics.mean(c["train_seconds"] for c in group)
        lines.append(
            f"| {simulator} | {estimator} | {len(group)} | {mean_sd(scores)} |"
            f" {epochs:.0f} ({best:.0f}) | {seconds:.0f} |"
        )
    lines += [
        "",
        "Validation loss (sbi's: the mean of `-log q(θ | x)` over the 10 % of simulations",
        "held out, in θ's units) of the best epoch, and at each observation both KL directions",
        "by Monte Carlo and the fraction of q's draws beyond p's 99.9 % Mahalanobis radius",
        "(0.001 for q = p):",
        "",
        "| simulator | estimator | cells (obs. with KL) | best val. loss | KL(p‖q) | KL(q‖p)"
        " | q beyond p's 99.9 % | std q / std p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (simulator, estimator), group in sorted(groups.items()):
        found = [d for c in group for d in c.get("divergences", [])]
        val = [c["best_validation_loss"] for c in group]
        row = f"| {simulator} | {estimator} | {len(group)} ({len(found)}) | {mean_sd(val)} |"
        if found:
            row += (
                f" {mean_sd([d['kl_pq'] for d in found])} | {mean_sd([d['kl_qp'] for d in found])}"
                f" | {mean_sd([d['tail_0.999'] for d in found])}"
                f" | {mean_sd([d['std_ratio'] for d in found])} |"
            )
        else:
            row += " | | | |"
        lines.append(row)
    lines += _findings(groups)
    lines += [
        "",
        "Command: `OMP_NUM_THREADS=1 python benchmarks/sbi_compare.py all`"
        " (cells cached under `runs/sbi_compare/`; `report` rewrites this page).",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / "sbi_compare.md", lambda f: f.write("\n".join(lines)), binary=False)
    curves = ("validation_loss", "training_loss")
    slim = [{k: v for k, v in c.items() if k not in curves} for c in cells]
    text = json.dumps(slim, indent=1)
    write_atomic(RESULTS / "sbi_compare.json", lambda f: f.write(text), binary=False)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("run", "all", "report"))
    parser.add_argument("--simulator", choices=sorted(SIMULATORS))
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part == "run":
        cell = run_cell(args.simulator, args.estimator, args.seed, args.max_epochs)
        print(json.dumps({k: v for k, v in cell.items() if not k.endswith("_loss")}))
    elif args.part == "all":
        for simulator in SIMULATORS:
            for estimator in DEFAULT_ESTIMATORS:
                for seed in SEEDS:
                    if not _key(simulator, estimator, seed).exists():
                        cell = run_cell(simulator, estimator, seed)
                        print(simulator, estimator, seed, cell["c2st"], cell["epochs"], flush=True)
        report()
    else:
        report()


if __name__ == "__main__":
    main()
