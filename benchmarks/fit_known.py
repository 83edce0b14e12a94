"""Fit every coupling/autoregressive preset to densities known in closed form; report the KL gap.

For a target density ``p`` with known ``log p`` and a flow ``q`` trained on samples of ``p``,

    E_p[-log q(X)] - H(p) = KL(p ‖ q) >= 0,

so the test negative log-likelihood minus the true entropy measures, in nats, how far the flow
is from the target (0 is a perfect fit). Targets:

* ``8gaussians`` (2-D): eight isotropic Gaussians (σ = 0.2) on a circle of radius 2,
  :func:`exactflow.data.mixtures.eight_gaussians`.
* ``gmm16d`` (16-D): a mixture of 8 diagonal Gaussians with seeded random means in
  ``[-2, 2]^16``, standard deviations in ``[0.3, 1]`` and weights,
  :func:`exactflow.data.mixtures.gaussian_mixture`.

Their entropies are computed by Monte Carlo (2,000,000 draws, 100,000 with ``--quick``), with
the standard error. Every preset (NICE, RealNVP, MAF, IAF, NSF autoregressive, NSF coupling)
gets the same size, optimizer (Adam), learning rate, batch size and number of steps, trained
with :func:`exactflow.train.fit` on a fixed training set; the test set is drawn independently.

A conditional check follows: a conditional NSF (``context=1``) is fitted to
``x | c ~ N(μ(c), diag σ(c)²)`` in 2-D, ``c ~ U(-2, 2)``, and its ``log q(x | c)`` is compared
with the true ``log p(x | c)`` on a grid of ``c`` with ``x`` drawn from the true conditional.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fit_known.py          # 2000 steps
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fit_known.py --quick  # 200 steps, ~1 min

The default run needs about 4 min of CPU time (well under 10 min on an idle 2-core machine). On
a machine shared with other jobs, two torch threads wait on each other: there ``--threads 1`` was
3-4 times faster.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import exactflow as ef
from exactflow.data.density import Density, Entropy, monte_carlo_entropy
from exactflow.data.mixtures import eight_gaussians, gaussian_mixture
from exactflow.train import TrainConfig, fit

RESULTS = Path(__file__).parent / "results" / "fit_known.md"
LOG_2PI = math.log(2 * math.pi)

# Sizes shared by every preset: the comparison is between architectures, not budgets.
TRANSFORMS = 5
HIDDEN = (64, 64)
PRESETS: dict[str, Callable[[int, int], ef.Flow]] = {
    "NICE": lambda d, c: ef.flows.NICE(d, c, transforms=TRANSFORMS, hidden=HIDDEN),
    "RealNVP": lambda d, c: ef.flows.RealNVP(d, c, transforms=TRANSFORMS, hidden=HIDDEN),
    "MAF": lambda d, c: ef.flows.MAF(d, c, transforms=TRANSFORMS, hidden=HIDDEN),
    "IAF": lambda d, c: ef.flows.IAF(d, c, transforms=TRANSFORMS, hidden=HIDDEN),
    "NSF (autoregressive)": lambda d, c: ef.flows.NSF(
        d, c, transforms=TRANSFORMS, hidden=HIDDEN, bins=8, bound=5.0
    ),
    "NSF (coupling)": lambda d, c: ef.flows.NSF(
        d, c, transforms=TRANSFORMS, hidden=HIDDEN, bins=8, bound=5.0, coupling=True
    ),
}


@dataclass
class Settings:
    steps: int
    iaf_steps: int  # steps for IAF on targets with more than 2 dimensions
    batch: int
    lr: float
    train: int
    val: int
    test: int
    entropy_samples: int
    grid_points: int  # conditional check: number of context values
    per_context: int  # conditional check: x draws per context value
    seed: int


@dataclass
class Row:
    preset: str
    steps: int
    nll: float
    nll_se: float
    gap: float
    gap_se: float
    paired: float
    paired_se: float
    seconds: float


def mean_se(values: Tensor) -> tuple[float, float]:
    """Mean and its standard error ``std / √n`` (float64)."""
    values = values.double()
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def config(settings: Settings, steps: int) -> TrainConfig:
    return TrainConfig(
        optimizer="adam",
        lr=settings.lr,
        schedule="cosine",
        epochs=None,
        steps=steps,
        batch_size=settings.batch,
        clip_grad=5.0,
        patience=None,
        seed=settings.seed,
        dtype="float32",
        out=None,
        standardize=False,
        tensorboard=False,
    )


@dataclass
class Split:
    """Training, validation and test draws of a target, and the true ``log p`` of the test set."""

    train: Tensor
    val: Tensor
    test: Tensor
    log_p: Tensor  # (test,), float64


def draw_split(target: Density, settings: Settings) -> Split:
    """Independent seeded draws (float32) for training, validation and test."""
    seed = settings.seed
    test = target.sample(settings.test, seed=seed + 3).float()
    return Split(
        train=target.sample(settings.train, seed=seed + 1).float(),
        val=target.sample(settings.val, seed=seed + 2).float(),
        test=test,
        log_p=target.log_prob(test.double()),
    )


def score(name: str, steps: int, seconds: float, q: Tensor, split: Split, entropy: Entropy) -> Row:
    """Test NLL, KL gap and paired KL gap from the flow's ``log q`` of the test set ``(N,)``."""
    nll, nll_se = mean_se(-q)
    paired, paired_se = mean_se(split.log_p - q)
    return Row(
        preset=name,
        steps=steps,
        nll=nll,
        nll_se=nll_se,
        gap=nll - entropy.value,
        gap_se=math.hypot(nll_se, entropy.error),
        paired=paired,
        paired_se=paired_se,
        seconds=seconds,
    )


def known_targets() -> dict[str, Density]:
    """The benchmark's targets by name: ``8gaussians`` (2-D) and ``gmm16d`` (16-D)."""
    return {
        "8gaussians": eight_gaussians(radius=2.0, scale=0.2),
        "gmm16d": gaussian_mixture(dim=16, components=8, seed=0, spread=2.0, scales=(0.3, 1.0)),
    }


def fit_target(target: Density, entropy: Entropy, settings: Settings) -> list[Row]:
    """Train every preset on samples of ``target``; one row of results per preset."""
    split = draw_split(target, settings)
    rows = []
    for name, make in PRESETS.items():
        steps = settings.iaf_steps if name == "IAF" and target.features > 2 else settings.steps
        torch.manual_seed(settings.seed)
        flow = make(target.features, 0)
        start = time.perf_counter()
        result = fit(
            flow,
            ef.objectives.NLL(),
            split.train,
            config(settings, steps),
            val=split.val,
            progress=False,
        )
        seconds = time.perf_counter() - start
        q = ef.metrics.log_density(result.flow, split.test)
        rows.append(score(name, result.steps, seconds, q, split, entropy))
        print(f"  {name:22s} KL gap {rows[-1].gap:8.4f}  ({seconds:6.1f} s)", file=sys.stderr)
    return rows


def target_table(title: str, target: Density, entropy: Entropy, rows: list[Row]) -> str:
    check = ""
    if target.features == 2:  # the data package integrates 2-D densities on a grid
        exact = target.entropy()
        check = f"; grid quadrature gives {exact.value:.4f} ± {exact.error:.1e}"
    lines = [
        f"**{title}** (D = {target.features}): true entropy H = {entropy.value:.4f}"
        f" ± {entropy.error:.4f} nats (Monte Carlo, {entropy.samples:,} samples, ± 1 s.e.)" + check,
        "",
        "| preset | steps | test NLL (nats) | KL gap = NLL - H | paired KL gap"
        " | train time (s) | ms/step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.steps} | {r.nll:.4f} ± {r.nll_se:.4f}"
            f" | {r.gap:.4f} ± {r.gap_se:.4f} | {r.paired:.4f} ± {r.paired_se:.4f}"
            f" | {r.seconds:.1f} | {1000 * r.seconds / r.steps:.0f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the conditional check


def cond_params(c: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``μ(c) = (sin 2c, c²/2 - 1)`` and scale ``σ(c) = (0.3 + 0.2|c|, 0.5 - 0.1|c|)``."""
    c = c.squeeze(-1)
    loc = torch.stack([torch.sin(2 * c), c.square() / 2 - 1], -1)
    scale = torch.stack([0.3 + 0.2 * c.abs(), 0.5 - 0.1 * c.abs()], -1)
    return loc, scale


def cond_sample(c: Tensor, generator: torch.Generator) -> Tensor:
    """One draw of ``x | c`` per row of ``c (N, 1)``: shape ``(N, 2)``, float64."""
    loc, scale = cond_params(c)
    return loc + scale * torch.randn(loc.shape, dtype=torch.float64, generator=generator)


def cond_log_prob(x: Tensor, c: Tensor) -> Tensor:
    """True ``log p(x | c)`` of ``x (N, 2)`` given ``c (N, 1)``."""
    loc, scale = cond_params(c.double())
    z = (x.double() - loc) / scale
    return -0.5 * (z.square() + LOG_2PI).sum(-1) - scale.log().sum(-1)


def conditional_check(settings: Settings) -> tuple[str, dict[str, float]]:
    """Fit a conditional NSF to the known conditional density; compare log densities on a grid."""
    g = torch.Generator().manual_seed(settings.seed + 10)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        c = 4 * torch.rand(n, 1, dtype=torch.float64, generator=g) - 2
        return cond_sample(c, g).float(), c.float()

    train, val = draw(settings.train), draw(settings.val)
    torch.manual_seed(settings.seed)
    flow = PRESETS["NSF (autoregressive)"](2, 1)
    start = time.perf_counter()
    result = fit(
        flow, ef.objectives.NLL(), train, config(settings, settings.steps), val=val, progress=False
    )
    seconds = time.perf_counter() - start

    grid = torch.linspace(-2, 2, settings.grid_points, dtype=torch.float64)
    lines = [
        f"**Conditional NSF** (autoregressive, context = 1, {result.steps} steps,"
        f" {seconds:.1f} s): x | c ~ N(μ(c), diag sigma(c)²),"
        " μ(c) = (sin 2c, c²/2 - 1), sigma(c) = (0.3 + 0.2|c|, 0.5 - 0.1|c|), c ~ U(-2, 2);"
        f" {settings.per_context} draws x ~ p(x | c) at each c.",
        "",
        "| c | mean abs error of log p(x\\|c) | max abs error | mean error (true - flow) |",
        "|---:|---:|---:|---:|",
    ]
    errors = []
    for value in grid:
        c = value.expand(settings.per_context, 1)
        x = cond_sample(c, g)
        error = cond_log_prob(x, c) - ef.metrics.log_density(result.flow, x.float(), c.float())
        errors.append(error)
        lines.append(
            f"| {value:+.2f} | {error.abs().mean():.4f} | {error.abs().max():.4f}"
            f" | {error.mean():+.4f} |"
        )
    every = torch.cat(errors)
    summary = {"mean_abs": float(every.abs().mean()), "max_abs": float(every.abs().max())}
    lines += [
        f"| all | {summary['mean_abs']:.4f} | {summary['max_abs']:.4f}"
        f" | {float(every.mean()):+.4f} |",
    ]
    return "\n".join(lines), summary


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="Adam steps per preset")
    parser.add_argument(
        "--iaf-steps",
        type=int,
        default=None,
        help="steps for IAF in 16-D, whose density costs D sequential passes (default: steps)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~1 min)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (200 if args.quick else 2000)
    iaf_steps = args.iaf_steps if args.iaf_steps is not None else steps
    if min(steps, iaf_steps, args.batch, args.threads) < 1 or not args.lr > 0:
        parser.error("steps, iaf-steps, batch and threads must be >= 1 and lr > 0")
    settings = Settings(
        steps=steps,
        iaf_steps=iaf_steps,
        batch=args.batch,
        lr=args.lr,
        train=10_000 if args.quick else 50_000,
        val=2_000 if args.quick else 5_000,
        test=5_000 if args.quick else 20_000,
        entropy_samples=100_000 if args.quick else 2_000_000,
        grid_points=5 if args.quick else 9,
        per_context=500 if args.quick else 2_000,
        seed=args.seed,
    )
    return settings, args


def main(argv: list[str] | None = None) -> None:
    settings, args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(settings.seed)
    command = "python benchmarks/fit_known.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    targets = known_targets()
    sections = []
    for title, target in targets.items():
        print(f"{title}: entropy ...", file=sys.stderr)
        entropy = monte_carlo_entropy(target, settings.entropy_samples, seed=settings.seed + 4)
        rows = fit_target(target, entropy, settings)
        sections.append(target_table(title, target, entropy, rows))
    print("conditional NSF ...", file=sys.stderr)
    conditional, _ = conditional_check(settings)
    sections.append(conditional)
    total = time.perf_counter() - started

    header = [
        f"Command: `{command.strip()}` — {datetime.date.today().isoformat()},"
        f" torch {torch.__version__}, torch threads {torch.get_num_threads()},"
        f" {platform.machine()}; total {total / 60:.1f} min (timings indicative: shared CPU).",
        "",
        f"Every preset: {TRANSFORMS} transforms, hidden {HIDDEN}, NSF with 8 bins on [-5, 5];"
        f" Adam, lr {settings.lr:g} with cosine decay, batch {settings.batch}, gradient norm"
        f" clipped at 5, float32; {settings.steps} steps"
        + (
            f" ({settings.iaf_steps} for IAF in 16-D: its density is D sequential passes)"
            if settings.iaf_steps != settings.steps
            else ""
        )
        + f"; {settings.train:,} training, {settings.val:,} validation (best epoch kept) and"
        f" {settings.test:,} test samples. KL gap ± 1 s.e. (test set and entropy);"
        " the paired gap is mean(log p - log q) over the test set, the same quantity with"
        " the sampling noise of log p cancelled.",
    ]
    text = "\n\n".join(["\n".join(header), *sections]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
