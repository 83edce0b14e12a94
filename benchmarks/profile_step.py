"""Where a training step's time goes: per-operator CPU time of exactflow, the bare row and peers.

The side-by-side benchmark (``compare.py``) gives one number per step; this script splits a step
(forward, backward and the Adam update, batch 256, float32) into torch operators with
``torch.profiler``, so the time a flow adds on top of its conditioner networks (the bare row)
can be read operator by operator. Same models and builders as ``compare.py``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_step.py NSF
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_step.py MAF \
        --libraries exactflow bare zuko

Profiling adds its own overhead per operator, so the totals run above ``compare.py``'s step
times; compare columns with each other, not with that table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).parent))
import compare


def step_profile(
    library: str, model: str, steps: int, batch: int
) -> dict[str, tuple[float, float]]:
    """Self CPU time (µs) and calls per training step, for each operator."""
    features = 16
    if library == "bare":
        m = compare.build_bare(model, features)
    else:
        m = compare.build(library, model, features, seed=0)
    x = torch.randn(batch, features, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(m.module.parameters(), lr=1e-3)

    def step() -> None:
        loss = -m.log_prob(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(steps):  # warm-up
        step()
    with profile() as prof:
        for _ in range(steps):
            step()
    return {e.key: (e.self_cpu_time_total / steps, e.count / steps) for e in prof.key_averages()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=compare.MODELS)
    parser.add_argument("--libraries", nargs="+", default=["exactflow", "bare"])
    parser.add_argument("--steps", type=int, default=30, help="profiled steps (after as many)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--top", type=int, default=25, help="operators listed")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profiles = {
        lib: step_profile(lib, args.model, args.steps, args.batch) for lib in args.libraries
    }
    ops = sorted(
        set().union(*profiles.values()),
        key=lambda op: -max(p.get(op, (0.0, 0.0))[0] for p in profiles.values()),
    )
    print(f"{args.model}: self CPU time per training step (µs) and calls per step\n")
    print("| operator | " + " | ".join(args.libraries) + " |")
    print("|---|" + "---:|" * len(args.libraries))
    for op in ops[: args.top]:
        cells = (profiles[lib].get(op, (0.0, 0.0)) for lib in args.libraries)
        print(f"| `{op[:60]}` | " + " | ".join(f"{t:,.0f} ({n:g})" for t, n in cells) + " |")
    totals = [sum(t for t, _ in p.values()) for p in profiles.values()]
    calls = [sum(n for _, n in p.values()) for p in profiles.values()]
    print(
        "| **total** | "
        + " | ".join(f"{t:,.0f} ({n:g})" for t, n in zip(totals, calls, strict=True))
        + " |"
    )


if __name__ == "__main__":
    main()
