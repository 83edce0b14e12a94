"""Memory of one Glow training step with and without the memory-saving backward (``Recompute``).

One training step is the forward and backward pass of the NLL, ``-mean log p(x)``, of a Glow on
1x28x28 images (Fashion-MNIST's size; uniform noise in ``[0, 1)`` as data: memory and time do not
depend on the values). Three ways to run it:

* **plain** — autograd keeps every activation;
* **per coupling** — each coupling layer wrapped in ``ef.transforms.Recompute``;
* **per level** — ``ef.flows.Glow(..., memory_saving=True)``: each level's steps in one
  ``Recompute`` (the preset's option), whose backward pass rebuilds and reruns one step at a
  time.

Measured: (1) the bytes of the tensors autograd saves for the backward pass (distinct storages,
parameters included: ``exactflow.transforms.recompute.saved_bytes``); (2) the peak resident memory
of a fresh process during one step (Linux ``VmHWM``), in total and above what the process held
just before the step (torch, the model, the data); (3) the step time (forward + backward, the
fastest of a few steps); (4) how far the gradients are from the plain ones in float32 (the
rebuilt activations carry the round trip's rounding error), after a few Adam steps that move the
weights off Glow's identity initialization: the largest relative error
``‖g - g_plain‖ / ‖g_plain‖`` over the parameters.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/image_memory.py      # ~2-4 min on 2 threads

Writes ``benchmarks/results/image_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import exactflow as ef
from exactflow.atomic import write_atomic
from exactflow.transforms import Coupling, Recompute
from exactflow.transforms.recompute import saved_bytes

RESULTS = Path(__file__).parent / "results" / "image_memory.md"
SHAPE = (1, 28, 28)
VARIANTS = ("plain", "per coupling", "per level")


def wrap_couplings(module: nn.Module) -> None:
    """Replace every :class:`Coupling` below ``module`` by ``Recompute`` of it, in place."""
    for name, child in module.named_children():
        if isinstance(child, Coupling):
            setattr(module, name, Recompute(child))
        else:
            wrap_couplings(child)


def build(variant: str, args: argparse.Namespace) -> ef.Flow:
    """The Glow of ``args`` run the ``variant`` way, in training mode, ActNorm initialized."""
    torch.manual_seed(0)
    kwargs = {"levels": args.levels, "steps": args.steps, "hidden": args.hidden}
    flow = ef.flows.Glow(shape=SHAPE, memory_saving=variant == "per level", **kwargs)
    if variant == "per coupling":
        wrap_couplings(flow.transform)
    flow.train()
    with torch.no_grad():  # ActNorm's data-dependent initialization, on a batch small enough
        flow.log_prob(data(8))  # not to raise the peak memory measured after it
    return flow


def data(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, *SHAPE, generator=torch.Generator().manual_seed(seed))


def step(flow: ef.Flow, x: torch.Tensor) -> None:
    flow.zero_grad(set_to_none=True)
    (-flow.log_prob(x).mean()).backward()


def resident_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (this script needs Linux)")


def child(variant: str, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Run in a fresh process: the peak memory of one step.

    The peak is ``VmHWM`` after resetting it just before the step (``/proc/self/clear_refs``):
    ``ru_maxrss`` would not do, as Linux carries it over from the parent process across exec.
    """
    torch.set_num_threads(args.threads)
    flow = build(variant, args)
    x = data(batch)
    step(flow, data(2))  # pages in the code of every kernel (LAPACK's for the inverses)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = resident_mib("VmRSS")
    step(flow, x)
    return {"before_mib": before, "peak_mib": resident_mib("VmHWM")}


def run_child(variant: str, batch: int, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", variant, str(batch)]
    for name in ("levels", "steps", "hidden", "threads"):
        command += [f"--{name}", str(getattr(args, name))]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def trained(args: argparse.Namespace) -> list[torch.Tensor]:
    """The parameters of the plain Glow after ``args.train`` Adam steps (off the identity start)."""
    flow = build("plain", args)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for k in range(args.train):
        step(flow, data(16, seed=100 + k))
        optimizer.step()
    return [p.detach().clone() for p in flow.parameters()]


def gradients(variant: str, args: argparse.Namespace, weights: list[torch.Tensor]) -> list:
    """The gradients of one step of ``variant`` with ``weights`` loaded (float32).

    Every variant registers the same parameters in the same order (the wrappers only nest
    them deeper), so weights and gradients are matched in order.
    """
    flow = build(variant, args)
    with torch.no_grad():
        for p, w in zip(flow.parameters(), weights, strict=True):
            p.copy_(w)
    step(flow, data(16, seed=2))
    return [p.grad for p in flow.parameters()]


def relative_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """The largest ``‖a - e‖ / ‖e‖`` over the parameters (``nan`` if any is not finite)."""
    pairs = zip(actual, expected, strict=True)
    errors = [float((a - e).norm() / e.norm().clamp_min(1e-30)) for a, e in pairs]
    return max(errors) if all(math.isfinite(e) for e in errors) else math.nan


def round_trip_error(args: argparse.Namespace, weights: list[torch.Tensor]) -> float:
    """``max |x - f⁻¹(f(x))|`` of the trained plain Glow on a batch of 16 (float32)."""
    flow = build("plain", args).eval()
    with torch.no_grad():
        for p, w in zip(flow.parameters(), weights, strict=True):
            p.copy_(w)
        x = data(16, seed=2)
        return float((flow.transform.inverse(flow.transform(x)[0])[0] - x).abs().max())


def step_times(args: argparse.Namespace) -> dict[tuple[str, int], float]:
    """The fastest of ``args.repeats`` steps of each variant and batch size, in seconds.

    The variants take turns, so that a load on the machine that comes and goes slows them
    alike.
    """
    flows = {variant: build(variant, args) for variant in VARIANTS}
    times: dict[tuple[str, int], float] = {}
    for batch in args.batches:
        x = data(batch)
        for flow in flows.values():
            step(flow, x)  # warm-up
        for _ in range(args.repeats):
            for variant, flow in flows.items():
                start = time.perf_counter()
                step(flow, x)
                elapsed = time.perf_counter() - start
                times[variant, batch] = min(times.get((variant, batch), math.inf), elapsed)
    return times


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    torch.set_num_threads(args.threads)
    weights = trained(args)
    plain = gradients("plain", args, weights)
    args.round_trip = round_trip_error(args, weights)
    times = step_times(args)
    rows = []
    for variant in VARIANTS:
        flow = build(variant, args)
        row: dict[str, object] = {"variant": variant}
        for batch in args.batches:
            x = data(batch)
            saved = saved_bytes(lambda flow=flow, x=x: -flow.log_prob(x).mean())
            row[f"saved_mib_{batch}"] = saved / 2**20
            rss = run_child(variant, batch, args)
            row[f"peak_mib_{batch}"] = rss["peak_mib"]
            row[f"step_mib_{batch}"] = rss["peak_mib"] - rss["before_mib"]
            row[f"step_s_{batch}"] = times[variant, batch]
        error = relative_error(gradients(variant, args, weights), plain)
        row["gradient_error"] = 0.0 if variant == "plain" else error
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    flow = build("plain", args)
    parameters = sum(p.numel() for p in flow.parameters())
    header = ["way"]
    for batch in args.batches:
        header += [
            f"saved for backward, MiB (batch {batch})",
            f"peak RSS, MiB: total / above pre-step (batch {batch})",
            f"step time, s (batch {batch})",
        ]
    header.append("float32 gradient error vs plain")
    lines = [
        f"Glow on {'x'.join(map(str, SHAPE))}: levels={args.levels}, steps={args.steps},"
        f" hidden={args.hidden} ({parameters:,} parameters), float32, {args.threads} threads,"
        f" torch {torch.__version__}, {platform.machine()} CPU. One step = forward + backward of"
        f" the mean NLL; step time = fastest of {args.repeats}, the ways taking turns. Gradient"
        " error: largest ‖g - g_plain‖/‖g_plain‖ over the parameters, after"
        f" {args.train} Adam steps, where the plain flow's round trip is off by"
        f" {args.round_trip:.1e} (max |x - f⁻¹(f(x))|).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [str(row["variant"])]
        for batch in args.batches:
            cells += [
                f"{row[f'saved_mib_{batch}']:.1f}",
                f"{row[f'peak_mib_{batch}']:.0f} / {row[f'step_mib_{batch}']:.0f}",
                f"{row[f'step_s_{batch}']:.2f}",
            ]
        error = row["gradient_error"]
        cells.append("—" if row["variant"] == "plain" else f"{error:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--train", type=int, default=10, help="Adam steps before the gradients")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return
    text = table(measure(args), args)
    print(text)
    write_atomic(args.out, lambda f: f.write(text), binary=False)


if __name__ == "__main__":
    main()
