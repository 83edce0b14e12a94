"""Bounded-prior NPE through sbi: posterior mass outside the prior, without rejection sampling.

Task: ``θ ~ U[0, 1]²``, ``x = θ + 0.1 ε``, ``ε ~ N(0, I)``. The posterior at ``x_o`` is a product
of normals ``N(x_o,i, 0.1²)`` truncated to ``[0, 1]``, so it is known exactly (density, draws by
the inverse CDF, mean); at observations near a corner or an edge much of its mass lies against
the bounds. Estimators, each trained by sbi's own loop (``NPE(prior, density_estimator=...)``,
``append_simulations(θ, x).train()``: batch 200, Adam at 5e-4, early stopping after 20 epochs)
on the same simulations:

* ``sbi NSF``: sbi 0.27's default NSF (``density_estimator="nsf"``: 5 transforms, 50 hidden,
  10 bins), on the real line;
* ``exactflow NSF (bounds)``: ``posterior_nn("NSF", transforms=5, hidden=(50, 50), bins=10,
  bounds=[(0, 1), (0, 1)])`` (:mod:`exactflow.integrations.sbi`): a scaled logit maps the box to
  the real line with its exact log-Jacobian, z-scoring comes after it;
* ``exactflow NSF``: the same without ``bounds`` (a control).

Per estimator and observation: the **fraction of draws outside the prior** of the density
estimator itself (``posterior.sample(..., reject_outside_prior=False)``; sbi's default rejection
sampling hides it by discarding them, at this cost in proposals), sbi's ``c2st`` (random forest,
5-fold; 0.5 = indistinguishable) between draws of sbi's posterior as users get them (with its
rejection) and exact draws, the error of the posterior mean, and ``KL(p ‖ q)`` of the estimator's
own density (``norm_posterior=False``: no leakage renormalization) by Monte Carlo over exact draws.

Run (the machine is shared: one thread)::

    OMP_NUM_THREADS=1 python benchmarks/sbi_bounded.py            # writes results/sbi_bounded.md
    OMP_NUM_THREADS=1 python benchmarks/sbi_bounded.py --simulations 2000 --max-epochs 50
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from sbi.inference import NPE
from sbi.utils import BoxUniform
from sbi.utils.metrics import c2st
from sbi.utils.tracking import TensorBoardTracker
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from exactflow.atomic import write_atomic
from exactflow.integrations.sbi import posterior_nn

RESULTS = Path(__file__).resolve().parent / "results"
LOGS = Path(__file__).resolve().parent.parent / "runs" / "sbi_bounded"  # sbi's logs, not ./sbi-logs
NOISE = 0.1
BOX = [(0.0, 1.0), (0.0, 1.0)]
OBSERVATIONS = {
    "corner (0.02, 0.03)": (0.02, 0.03),
    "edge (0.5, 0.98)": (0.5, 0.98),
    "outside (-0.05, 0.4)": (-0.05, 0.4),
    "centre (0.5, 0.5)": (0.5, 0.5),
}
ESTIMATORS = {
    "sbi NSF": lambda: "nsf",
    "exactflow NSF (bounds)": lambda: posterior_nn(
        "NSF", transforms=5, hidden=(50, 50), bins=10, bounds=BOX
    ),
    "exactflow NSF": lambda: posterior_nn("NSF", transforms=5, hidden=(50, 50), bins=10),
}


def truncated(x_o: Tensor) -> tuple[Tensor, Tensor]:
    """Standardized bounds ``(a, b)`` of each coordinate's truncated normal."""
    return (0.0 - x_o) / NOISE, (1.0 - x_o) / NOISE


def exact_draws(x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` exact posterior draws ``(n, 2)`` by the inverse CDF, float64."""
    a, b = truncated(x_o.double())
    lo, hi = torch.special.ndtr(a), torch.special.ndtr(b)
    u = lo + (hi - lo) * torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return x_o.double() + NOISE * torch.special.ndtri(u)


def exact_log_prob(theta: Tensor, x_o: Tensor) -> Tensor:
    """The exact posterior log density of ``theta (n, 2)`` inside the box."""
    a, b = truncated(x_o.double())
    z = (theta.double() - x_o.double()) / NOISE
    mass = torch.special.ndtr(b) - torch.special.ndtr(a)
    normal = -0.5 * z.square() - 0.5 * math.log(2 * math.pi) - math.log(NOISE)
    return (normal - mass.log()).sum(-1)


def exact_mean(x_o: Tensor) -> Tensor:
    """``E[θ | x_o]``: ``x + σ (φ(a) - φ(b)) / (Φ(b) - Φ(a))`` per coordinate."""
    a, b = truncated(x_o.double())
    pdf = lambda t: torch.exp(-0.5 * t.square()) / math.sqrt(2 * math.pi)  # noqa: E731
    mass = torch.special.ndtr(b) - torch.special.ndtr(a)
    return x_o.double() + NOISE * (pdf(a) - pdf(b)) / mass


def outside(theta: Tensor) -> Tensor:
    """Whether each draw ``(n, 2)`` lies outside the open box ``(0, 1)²``."""
    return ((theta <= 0) | (theta >= 1)).any(-1)


def run(simulations: int, draws: int, seed: int, max_epochs: int | None) -> list[dict]:
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    torch.manual_seed(seed)
    theta = prior.sample((simulations,))
    x = theta + NOISE * torch.randn_like(theta)
    rows = []
    for name, estimator in ESTIMATORS.items():
        torch.manual_seed(1000 + seed)  # the same training randomness for every estimator
        tracker = TensorBoardTracker(SummaryWriter(str(LOGS)))
        inference = NPE(
            prior, density_estimator=estimator(), tracker=tracker, show_progress_bars=False
        )
        start = time.perf_counter()
        extra = {} if max_epochs is None else {"max_num_epochs": max_epochs}
        inference.append_simulations(theta, x).train(**extra)
        seconds = time.perf_counter() - start
        epochs = len(inference._summary["validation_loss"])
        posterior = inference.build_posterior()
        for i, (where, point) in enumerate(OBSERVATIONS.items()):
            x_o = torch.tensor(point)
            generator = torch.Generator().manual_seed(10_000 * seed + i)
            truth = exact_draws(x_o, draws, generator)
            raw = posterior.sample((draws,), x=x_o, reject_outside_prior=False,
                                   show_progress_bars=False)  # fmt: skip
            kept = posterior.sample((draws,), x=x_o, show_progress_bars=False)
            with torch.no_grad():
                log_q = posterior.log_prob(truth.float(), x=x_o, norm_posterior=False).double()
            kl = exact_log_prob(truth, x_o) - log_q
            rows.append(
                {
                    "estimator": name,
                    "observation": where,
                    "seed": seed,
                    "outside": float(outside(raw).double().mean()),
                    "c2st": float(c2st(truth.float(), kept, seed=seed)),
                    "mean_error": float((kept.double().mean(0) - exact_mean(x_o)).norm()),
                    "kl": float(kl.mean()),
                    "kl_stderr": float(kl.std() / math.sqrt(len(kl))),
                    "epochs": epochs,
                    "train_seconds": seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict], simulations: int, draws: int) -> str:
    lines = [
        "# Bounded-prior NPE through sbi: mass outside the prior",
        "",
        f"`python benchmarks/sbi_bounded.py --simulations {simulations} --draws {draws}"
        f" --seed S` for seeds {sorted({r.get('seed', 0) for r in rows})} (simulations and"
        " training randomness; sbi 0.27.0, CPU, float32). Task: θ ~ U[0, 1]², x = θ + 0.1 ε; the"
        " exact posterior is a truncated normal per coordinate. *outside*: fraction of the"
        f" density estimator's own draws outside the prior ({draws} draws, no rejection"
        " sampling); *c2st*: draws of sbi's posterior as users get them (sbi rejects the"
        " outside draws) against exact draws, 0.5 is best; *mean error*: ‖E_q[θ] - E_p[θ]‖;"
        " *KL(p‖q)*: nats, Monte Carlo over exact draws (± standard error), q the estimator's"
        " own density (no leakage renormalization).",
        "",
        "| estimator | observation | seed | outside | c2st | mean error | KL(p‖q) | epochs |"
        " train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (list(ESTIMATORS).index(r["estimator"]), r.get("seed", 0))):
        lines.append(
            f"| {r['estimator']} | {r['observation']} | {r.get('seed', 0)} | {r['outside']:.4f} |"
            f" {r['c2st']:.3f} |"
            f" {r['mean_error']:.4f} | {r['kl']:.3f} ± {r['kl_stderr']:.3f} | {r['epochs']} |"
            f" {r['train_seconds']:.0f} |"
        )
    lines += ["", "Over the observations and seeds:", ""]
    for name in dict.fromkeys(r["estimator"] for r in rows):
        mine = [r for r in rows if r["estimator"] == name]
        lines.append(
            f"* {name}: outside fraction at most {max(r['outside'] for r in mine):.4f}"
            f" (sbi's rejection sampling keeps {1 - max(r['outside'] for r in mine):.1%} of the"
            f" proposals at the worst observation), mean c2st"
            f" {sum(r['c2st'] for r in mine) / len(mine):.3f}, mean KL(p‖q)"
            f" {sum(r['kl'] for r in mine) / len(mine):.3f} nats."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=5000)
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument(
        "--report", action="store_true", help="rewrite the table from results/sbi_bounded.json"
    )
    args = parser.parse_args()
    saved = RESULTS / "sbi_bounded.json"
    rows = json.loads(saved.read_text()) if saved.exists() else []
    if not args.report:  # this seed's rows replace any it had
        rows = [r for r in rows if r.get("seed", 0) != args.seed]
        rows += run(args.simulations, args.draws, args.seed, args.max_epochs)
    RESULTS.mkdir(exist_ok=True)
    text = table(rows, args.simulations, args.draws)
    write_atomic(RESULTS / "sbi_bounded.md", lambda f: f.write(text), binary=False)
    if not args.report:
        write_atomic(saved, lambda f: f.write(json.dumps(rows)), binary=False)
    print(text)


if __name__ == "__main__":
    main()
