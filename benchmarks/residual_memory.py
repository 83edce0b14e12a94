"""Memory and time of a residual block's training step: Neumann-series gradient against backprop.

A residual block trained on its Russian-roulette log-determinant estimate can differentiate the
estimate two ways (:class:`exactflow.transforms.ResidualBlock`, ``gradient=``):
``"backprop"`` keeps the graph of every term of the power series, ``"neumann"`` computes the
terms without a graph and takes the gradient from one vector-Jacobian product (Chen et al.
2019). Each mode runs in its own process, so its peak resident memory is its own: the figure is
the peak RSS during the steps above the RSS before them.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/residual_memory.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from exactflow.transforms import ResidualBlock


def one(gradient: str, features: int, hidden: int, batch: int, terms: int, q: float) -> dict:
    """Peak RSS growth (MiB) and median step time (s) of one mode, in this process."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    block = ResidualBlock(
        features,
        hidden=(hidden, hidden),
        gradient=gradient,
        estimator="roulette",
        exact_terms=terms,
        continue_probability=q,
    )
    x = torch.randn(batch, features)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(5):
        start = time.perf_counter()
        y, ladj = block(x)
        (y.sum() + ladj.sum()).backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (peak - before) / 1024, "step_s": statistics.median(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--terms", type=int, default=8, help="series terms always computed")
    p.add_argument("--continue-probability", type=float, default=0.8)
    p.add_argument("--mode", choices=("neumann", "backprop"), help=argparse.SUPPRESS)
    args = p.parse_args()
    settings = (args.features, args.hidden, args.batch, args.terms, args.continue_probability)
    if args.mode:
        print(json.dumps(one(args.mode, *settings)))
        return
    print(
        f"ResidualBlock({args.features}, hidden=({args.hidden}, {args.hidden})), batch"
        f" {args.batch}, {args.terms} terms always plus Geometric(1 - {args.continue_probability})"
        " more per row (the most of any row computed), 1 thread, 5 steps"
    )
    print("| gradient | peak memory above start (MiB) | median step (s) |")
    print("|---|---:|---:|")
    for mode in ("neumann", "backprop"):
        out = subprocess.run(
            [sys.executable, *sys.argv, "--mode", mode], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {mode} | {r['peak_mib']:,.0f} | {r['step_s']:.2f} |")


if __name__ == "__main__":
    main()
