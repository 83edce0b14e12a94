"""Circular spline flows on the torus: exactflow's ``NSF(periodic=...)`` against zuko's ``NCSF``.

The data is the ``torus`` toy (:func:`exactflow.data.torus`): three products of von Mises
densities on ``[-π, π)²``, two of them across the seam at ``±π``, with a closed-form density
and an entropy from a periodic grid rule (error < 1e-9). Both flows are masked autoregressive
circular rational-quadratic spline flows (Rezende et al. 2020) with the same budget: the same
number of layers, MADE widths, bins and minimum slope, the same seeded data, the same training
loop (Adam, constant learning rate, the same batches), seeds 0, 1, 2. They differ in what
the conditioners read: exactflow's MADE reads each angle as ``(cos, sin)`` and each layer has a
learned rotation; zuko's reads the raw angle and each layer shifts by a fixed ``π``.

Three measurements:

1. **KL gap** ``E_p[-log q] - H(p) = KL(p ‖ q)``: test NLL (10 000 held-out draws, eval mode)
   minus the known entropy, mean ± sd over the seeds (each gap's standard error is also kept).
2. **Seam jump**: ``max |log q(-π + ε, t) - log q(π - ε, t)|`` over 256 values of ``t``, for
   either angle: how far the learned density is from being continuous on the torus.
3. **Step time**: a training step (``log_prob`` of a batch, backward, Adam) of both models in
   one process, visited in turn in every round (interleaved), 2 threads; the median over
   rounds, and the ratio exactflow / zuko.

Run with an environment that has zuko 1.6.0 and exactflow::

    python benchmarks/circular_compare.py            # 17 min on a loaded 2-core machine
    python benchmarks/circular_compare.py --quick    # smoke run
    python benchmarks/circular_compare.py --table    # markdown from the JSON file
    python benchmarks/circular_compare.py --speed    # the step times again, into the JSON file
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import zuko
from torch import Tensor, nn

import exactflow as ef
from exactflow.atomic import write_atomic

RESULTS = Path(__file__).parent / "results"
TRANSFORMS = 4
HIDDEN = (64, 64)
BINS = 8
BATCH = 256
LR = 1e-3


def log(message: str) -> None:
    print(f"{time.perf_counter() - START:7.1f} s  {message}", file=sys.stderr, flush=True)


START = time.perf_counter()


def exactflow_model(seed: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    torch.manual_seed(seed)
    # validate=False: the loop checks the data once, as exactflow's trainer does.
    flow = ef.flows.NSF(
        2, transforms=TRANSFORMS, hidden=HIDDEN, bins=BINS, periodic=[0, 1], validate=False
    )
    return flow, flow.log_prob


def zuko_model(seed: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    torch.manual_seed(seed)
    flow = zuko.flows.NCSF(2, bins=BINS, transforms=TRANSFORMS, hidden_features=HIDDEN)
    return flow, lambda x: flow().log_prob(x)


MODELS = {"exactflow NSF(periodic)": exactflow_model, "zuko NCSF": zuko_model}


def train(log_prob: Callable[[Tensor], Tensor], model: nn.Module, x: Tensor, steps: int, seed: int):
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = x[torch.randint(len(x), (BATCH,), generator=g)]
        loss = -log_prob(batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def test_nll(log_prob: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``-log q`` of every test row, float64."""
    with torch.no_grad():
        return -torch.cat([log_prob(part) for part in x.split(2500)]).double()


def mean_stderr(values: Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std()) / math.sqrt(len(values))


def seam_jump(log_prob: Callable[[Tensor], Tensor], n: int = 256, eps: float = 1e-6) -> float:
    t = torch.linspace(-math.pi + 0.01, math.pi - 0.01, n)
    worst = 0.0
    with torch.no_grad():
        for column in (0, 1):
            low, high = torch.stack([t, t], -1), torch.stack([t, t], -1)
            low[:, column], high[:, column] = -math.pi + eps, math.pi - eps
            worst = max(worst, float((log_prob(low) - log_prob(high)).abs().max()))
    return worst


def step_times(x: Tensor, rounds: int, steps: int) -> tuple[dict[str, float], float]:
    """Median seconds per training step of each model, and the median per-round ratio.

    The models take turns within each round, so a round's ratio compares them under about the
    same load; its median over the rounds is the figure least moved by other work.
    """
    built = {name: make(0) for name, make in MODELS.items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=LR) for name, (m, _) in built.items()}
    g = torch.Generator().manual_seed(0)
    batches = [x[torch.randint(len(x), (BATCH,), generator=g)] for _ in range(steps)]
    times: dict[str, list[float]] = {name: [] for name in built}
    for r in range(rounds + 1):  # round 0 warms up
        for name, (_, log_prob) in built.items():
            optimizer = optimizers[name]
            start = time.perf_counter()
            for batch in batches:
                loss = -log_prob(batch).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if r:
                times[name].append((time.perf_counter() - start) / steps)
    ours, peer = times.values()
    ratio = statistics.median(a / b for a, b in zip(ours, peer, strict=True))
    return {name: statistics.median(values) for name, values in times.items()}, ratio


def table(results: dict) -> str:
    ours, peer = MODELS
    lines = [
        "# Circular spline flows on the torus: exactflow against zuko's NCSF",
        "",
        f"Generated by `benchmarks/circular_compare.py` on {results['machine']} "
        f"({results['threads']} threads), torch {results['torch']}, zuko {results['zuko']}.",
        "",
        f"Data: the `torus` toy (3 products of von Mises on [-π, π)², two across the seam), "
        f"{results['n_train']} training and {results['n_test']} test draws; entropy "
        f"{results['entropy']:.6f} nats (periodic grid rule, error "
        f"{results['entropy_error']:.0e}).",
        f"Both flows: {TRANSFORMS} masked autoregressive circular-spline layers, MADE {HIDDEN}, "
        f"{BINS} bins, minimum slope 1e-3; Adam lr {LR}, batch {BATCH}, {results['steps']} steps, "
        "the same batches; seeds 0, 1, 2.",
        "",
        f"| model | KL gap (nats), mean ± sd | per seed (± stderr) | seam jump | step (ms), "
        f"{results['threads']} threads | step (ms), 1 thread |",
        "|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        rows = results["models"][name]
        gaps = [r["gap"] for r in rows]
        sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        seeds = ", ".join(f"{r['gap']:.4f} ± {r['stderr']:.4f}" for r in rows)
        jump = max(r["seam"] for r in rows)
        step, single = results["step"][name] * 1e3, results["step_1_thread"][name] * 1e3
        mean = statistics.mean(gaps)
        lines.append(
            f"| {name} | {mean:.4f} ± {sd:.4f} | {seeds} | {jump:.2e} | {step:.2f} | {single:.2f} |"
        )
    ratio, ratio_one = results["ratio"], results["ratio_1_thread"]
    one = results["step_1_thread"]
    paired = "; ".join(
        f"seed {p['seed']}: {p['difference']:+.4f} ± {p['stderr']:.4f}" for p in results["paired"]
    )
    lines += [
        "",
        "Paired difference of the test NLLs, exactflow - zuko, on the same test rows (± its "
        f"standard error; negative: exactflow fits better): {paired}.",
        "",
        f"Step time ratio exactflow / zuko: **{ratio:.2f}** with {results['threads']} threads "
        f"and **{ratio_one:.2f}** with 1 thread ({one[ours] * 1e3:.2f} ms against "
        f"{one[peer] * 1e3:.2f} ms): medians over {results['rounds']} rounds of the per-round "
        f"ratio, each round {results['round_steps']} steps of each model in turn, batch {BATCH}. "
        "Training ran on "
        f"{results['train_threads']} thread(s). The machine was shared (1-minute load average "
        f"{results.get('load_average', float('nan')):.1f} when the times were taken): absolute "
        "times, the 2-thread ones above all, are inflated by contention; the ratios come from "
        "interleaved rounds.",
        "",
    ]
    if "breakdown" in results:
        lines += [
            "Where a training step's time goes (1 thread, batch 256, ms, medians of interleaved "
            "rounds; a layer's parts are measured alone):",
            "",
            "| part | ms |",
            "|---|---|",
            *(f"| {name} | {ms:.2f} |" for name, ms in results["breakdown"].items()),
            "",
        ]
        parts = list(results["breakdown"].values())
        both, spline, made = parts[1], TRANSFORMS * parts[3], TRANSFORMS * parts[4]
        lines += [
            f"Over the {TRANSFORMS} layers the circular splines (the rational-quadratic kernel of "
            f"`transforms/splines.py` plus the rotation) take {spline / both:.0%} of exactflow's "
            f"forward and backward pass and the MADEs with their angle features {made / both:.0%};"
            " the Adam update costs the same in both libraries. A step at 0.7x zuko's needs the "
            "spline kernel itself faster.",
            "",
        ]
    lines += [
        "The seam jump is the largest difference of the learned log density at `-π + 1e-6` and "
        "`π - 1e-6` (the same point of the torus) along either angle: exactflow's conditioners "
        "read `(cos, sin)` and its circular splines have equal end slopes, so its density is "
        "continuous there (up to ε times the density's slope); zuko's MADE reads the raw angle, "
        "whose `2π` jump at the seam shows in the density.",
        "",
        "Command: `python benchmarks/circular_compare.py` (environment with zuko 1.6.0).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (few steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--train-threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="markdown from the JSON file")
    parser.add_argument("--speed", action="store_true", help="measure the step times again")
    args = parser.parse_args(argv)
    if args.table or args.speed:
        results = json.loads((RESULTS / "circular_compare.json").read_text())
        if args.speed:
            data = ef.data.load("torus", n_train=results["n_train"], n_val=100, n_test=100)
            measure_speed(results, data.train.float(), args.threads, quick=False)
        write(results)
        return
    torch.set_num_threads(args.train_threads)
    steps = 50 if args.quick else args.steps
    n_train = 2000 if args.quick else 20_000
    data = ef.data.load("torus", n_train=n_train, n_val=100, n_test=10_000, seed=0)
    x, x_test = data.train.float(), data.test.float()
    entropy = data.entropy
    results: dict = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "zuko": importlib.metadata.version("zuko"),
        "entropy": entropy.value,
        "entropy_error": entropy.error,
        "n_train": n_train,
        "n_test": len(x_test),
        "steps": steps,
        "train_threads": args.train_threads,
        "models": {name: [] for name in MODELS},
    }
    results["paired"] = []
    for seed in range(3):
        per_row = []
        for name, make in MODELS.items():
            model, log_prob = make(seed)
            start = time.perf_counter()
            train(log_prob, model, x, steps, seed)
            per_row.append(test_nll(log_prob, x_test))
            nll, stderr = mean_stderr(per_row[-1])
            row = {
                "seed": seed,
                "nll": nll,
                "gap": nll - entropy.value,
                "stderr": math.hypot(stderr, entropy.error),
                "seam": seam_jump(log_prob),
                "train_s": time.perf_counter() - start,
            }
            results["models"][name].append(row)
            log(f"{name} seed {seed}: gap {row['gap']:.4f}, seam {row['seam']:.2e}")
        # Both models on the same test rows: their difference has no sampling noise of H.
        difference, stderr = mean_stderr(per_row[0] - per_row[1])
        results["paired"].append({"seed": seed, "difference": difference, "stderr": stderr})
        log(f"seed {seed}: exactflow - zuko test NLL {difference:.4f} ± {stderr:.4f}")
    measure_speed(results, x, args.threads, args.quick)
    if args.quick:
        print(table(results))
        return
    write(results)


def measure_speed(results: dict, x: Tensor, threads: int, quick: bool) -> None:
    """Step times at ``threads`` threads and at 1 thread, into ``results``."""
    torch.set_num_threads(threads)
    rounds, round_steps = (3, 10) if quick else (30, 10)
    results["threads"], results["rounds"], results["round_steps"] = threads, rounds, round_steps
    results["step"], results["ratio"] = step_times(x, rounds, round_steps)
    log(f"step times ({threads} threads): {results['step']}, ratio {results['ratio']:.3f}")
    torch.set_num_threads(1)
    results["step_1_thread"], results["ratio_1_thread"] = step_times(x, rounds, round_steps)
    log(f"step times (1 thread): {results['step_1_thread']}, ratio {results['ratio_1_thread']:.3f}")
    results["breakdown"] = breakdown(x)
    log(f"breakdown (ms): {results['breakdown']}")
    results["load_average"] = os.getloadavg()[0]  # other work on the machine meanwhile


def breakdown(x: Tensor, rounds: int = 15, repeat: int = 10) -> dict[str, float]:
    """Milliseconds of the parts of a training step (1 thread, interleaved, medians).

    exactflow's step, its forward and backward pass, its Adam update, and per layer the
    rational-quadratic spline kernel (forward and backward) and the MADE with its angle
    features; zuko's step, forward and backward pass and Adam update.
    """
    torch.set_num_threads(1)
    batch = x[:BATCH]
    (ours, our_lp), (peer, peer_lp) = (make(0) for make in MODELS.values())
    our_adam, peer_adam = torch.optim.Adam(ours.parameters()), torch.optim.Adam(peer.parameters())
    layer = ours.transform.transforms[0]
    params = layer.made(layer.angles(batch))[..., ::2, :].detach().requires_grad_(True)

    def step(log_prob: Callable[[Tensor], Tensor], optimizer: torch.optim.Optimizer):
        def run() -> None:
            loss = -log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    def backward(log_prob: Callable[[Tensor], Tensor]):
        return lambda: log_prob(batch).mean().backward()

    def spline() -> None:
        y, ladj = layer.map.forward(batch, params)
        (y.sum() + ladj.sum()).backward()

    def made() -> None:
        layer.made(layer.angles(batch)).sum().backward()

    parts = {
        "exactflow step": step(our_lp, our_adam),
        "exactflow forward + backward": backward(our_lp),
        "exactflow Adam update": our_adam.step,
        "exactflow circular spline, 1 layer (forward + backward)": spline,
        "exactflow MADE + (cos, sin), 1 layer (forward + backward)": made,
        "zuko step": step(peer_lp, peer_adam),
        "zuko forward + backward": backward(peer_lp),
        "zuko Adam update": peer_adam.step,
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for r in range(rounds + 1):
        for name, run in parts.items():
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            if r:
                times[name].append((time.perf_counter() - start) / repeat * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2)
    write_atomic(RESULTS / "circular_compare.json", lambda f: f.write(text), binary=False)
    markdown = table(results)
    write_atomic(RESULTS / "circular_compare.md", lambda f: f.write(markdown), binary=False)
    print(markdown)


if __name__ == "__main__":
    main()
