"""Scaling with width: exactflow against zuko and nflows for D in {2, 16, 64, 256, 784}.

For MAF, RealNVP and NSF built exactly as in ``benchmarks/compare.py`` (its builders: hidden
128-128, 5 / 8 / 5 steps, 8 bins on ``[-5, 5]``), one process measures, cell by cell
(a model at a width ``D``; 784 is a flattened 28x28 image), every library in turn:

* **train step**: ``-log_prob(x).mean()``, backward and ``Adam.step()`` on a batch of 256
  standard-normal rows; the **bare** row is compare.py's conditioner networks alone;
* **log_prob**: rows per second on batches of 256, without gradient;
* **sample**: rows per second of one draw, without gradient (the draw is smaller at large
  ``D``: MAF and NSF sampling is ``D`` sequential passes, which the peers make through the
  whole network each time);
* **sampling ways** (MAF, NSF): exactflow's sampler with :meth:`exactflow.nn.MADE.autoregress`
  as shipped (each hidden unit computed once), with its per-step trunk path (one trunk pass
  and the ``P`` output rows per coordinate), and with ``D`` full MADE passes (the textbook
  inverse, what the peers do);
* **memory** of one training step, in a fresh process per library: the peak resident memory
  above what the process held just before the step (Linux ``VmHWM`` after a reset, so
  allocator caching, Adam's state and the gradients count as the OS sees them; Adam's state is
  made by an earlier batch-2 step), and the bytes autograd saves for backward
  (:func:`exactflow.transforms.recompute.saved_bytes`, parameters included).

Timings are medians of rounds that visit every library in turn (compare.py's
``time_models``), so that load from elsewhere falls on all alike. Every cell's figures are
cached as JSON under ``runs/scaling/`` (one file per part, model and width): a stopped run
resumes, and ``--parts``, ``--models``, ``--dims`` and ``--force`` rerun a piece.

Run (from a clean clone, with the peers installed: ``pip install -e ".[bench]"``)::

    OMP_NUM_THREADS=2 python benchmarks/scaling.py          # writes results/scaling.md (+ .json)
    OMP_NUM_THREADS=2 python benchmarks/scaling.py --quick  # smoke run, small budgets
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from compare import (
    MODELS,
    Model,
    Settings,
    build,
    build_bare,
    log,
    rate,
    ratio,
    time_models,
)
from image_memory import resident_mib

from exactflow.atomic import write_atomic
from exactflow.nn import MADE
from exactflow.transforms.recompute import saved_bytes

DIMS = (2, 16, 64, 256, 784)
PEERS = ("zuko", "nflows")
LIBRARIES = ("exactflow", *PEERS)
PARTS = ("speed", "sampling", "memory")
AUTOREGRESSIVE = ("MAF", "NSF")
WAYS = ("autoregress", "trunk per step", "full passes")
BATCH = 256
ROOT = Path(__file__).parents[1]
RESULTS = Path(__file__).parent / "results" / "scaling.md"
# Rows per draw: the peers' D sequential full-network passes make wide draws slow.
SAMPLE_ROWS = {2: 1024, 16: 1024, 64: 256, 256: 32, 784: 8}


@dataclass(frozen=True)
class Budget:
    """Timing rounds over all the libraries, calls per library and round, warm-up calls."""

    rounds: int
    per_round: int
    warmup: int


def budget(features: int, quick: bool) -> Budget:
    if quick:
        return Budget(2, 1, 1)
    if features <= 64:
        return Budget(5, 3, 2)
    return Budget(3, 2, 1) if features <= 256 else Budget(2, 1, 1)


def sample_rows(features: int, quick: bool) -> int:
    rows = SAMPLE_ROWS.get(features, 16)
    return min(rows, 64) if quick else rows


def batch(features: int, rows: int = BATCH) -> Tensor:
    return torch.randn(rows, features, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- sampling without autoregress


def full_passes(made: MADE) -> Callable[..., Tensor]:
    """``made.autoregress`` done the textbook way: ``D`` passes of the whole network."""

    def autoregress(
        solve: Callable[[int, Tensor], Tensor], shape: torch.Size, context: Tensor | None = None
    ) -> Tensor:
        x = made.output.weight.new_zeros((*shape, made.features))
        for i in torch.argsort(made.degrees).tolist():
            x[..., i] = solve(i, made(x, context)[..., i, :]).squeeze(-1)
        return x

    return autoregress


def trunk_per_step(made: MADE) -> Callable[..., Tensor]:
    """``made.autoregress`` forced onto its differentiable path (a trunk pass per step)."""

    def autoregress(
        solve: Callable[[int, Tensor], Tensor], shape: torch.Size, context: Tensor | None = None
    ) -> Tensor:
        return made._autoregress_trunk(solve, shape, context)

    return autoregress


def sampling_way(model: str, features: int, way: str) -> Model:
    """exactflow's ``model`` whose MADEs invert by ``way`` (one of :data:`WAYS`)."""
    m = build("exactflow", model, features, seed=0)
    if way != WAYS[0]:
        for made in m.module.modules():
            if isinstance(made, MADE):
                # An instance attribute shadows the method for this flow only.
                made.autoregress = (full_passes if way == WAYS[2] else trunk_per_step)(made)
    return m


# ---------------------------------------------------------------- the three parts of a cell


def speed(model: str, features: int, quick: bool) -> dict[str, object]:
    models = {lib: build(lib, model, features, seed=0) for lib in LIBRARIES}
    models["bare"] = build_bare(model, features)
    b = budget(features, quick)
    rows = sample_rows(features, quick)
    settings = Settings(rounds=b.rounds, per_round=b.per_round, warmup=b.warmup, sample_size=rows)
    timings = time_models(models, batch(features), settings)
    return {"sample_rows": rows, **{name: asdict(t) for name, t in timings.items()}}


def sampling(model: str, features: int, quick: bool) -> dict[str, object]:
    """Rows per second of exactflow's draw in each of :data:`WAYS`, in interleaved rounds."""
    flows = {way: sampling_way(model, features, way) for way in WAYS}
    rows = sample_rows(features, quick)
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    with torch.no_grad():
        for m in flows.values():
            m.sample(rows)
        for _ in range(budget(features, quick).rounds):
            for way, m in flows.items():
                start = time.perf_counter()
                m.sample(rows)
                times[way].append(time.perf_counter() - start)
    return {"sample_rows": rows, **{w: rows / statistics.median(t) for w, t in times.items()}}


def child(library: str, model: str, features: int, threads: int) -> dict[str, float]:
    """In a fresh process: the memory one training step of ``library``'s ``model`` takes."""
    torch.set_num_threads(threads)
    m = build_bare(model, features) if library == "bare" else build(library, model, features, 0)
    optimizer = torch.optim.Adam(m.module.parameters(), lr=1e-3)

    def step(x: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        (-m.log_prob(x).mean()).backward()
        optimizer.step()

    step(batch(features, 2))  # makes Adam's state and pages in every kernel's code
    x = batch(features)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = resident_mib("VmRSS")
    step(x)  # the first batch-256 pass: memory the allocator kept from earlier cannot hide it
    peak = resident_mib("VmHWM") - before
    saved = saved_bytes(lambda: -m.log_prob(x).mean())
    return {"saved_mib": saved / 2**20, "peak_mib": peak}


def memory(model: str, features: int, threads: int) -> dict[str, object]:
    result = {}
    for library in (*LIBRARIES, "bare"):
        command = [sys.executable, __file__, "--child", library, model, str(features)]
        out = subprocess.run(
            [*command, "--threads", str(threads)], capture_output=True, text=True, check=True
        )
        result[library] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- cache and report


def cache_path(cache: Path, part: str, model: str, features: int) -> Path:
    return cache / f"{part}-{model}-{features}.json"


def load(cache: Path, part: str, model: str, features: int) -> dict | None:
    path = cache_path(cache, part, model, features)
    return json.loads(path.read_text()) if path.exists() else None


def fastest(values: dict[str, float], lower_is_better: bool) -> tuple[str, float]:
    """The best peer's name and figure among ``values`` (NaN when none was measured)."""
    measured = {k: v for k, v in values.items() if not math.isnan(v)}
    if not measured:
        return "—", math.nan
    pick = min if lower_is_better else max
    name = pick(measured, key=measured.__getitem__)
    return name, measured[name]


def figure(cell: dict | None, library: str, key: str) -> float:
    value = (cell or {}).get(library, {}).get(key)
    return math.nan if value is None else float(value)


def number(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def model_tables(model: str, cells: dict, dims: tuple[int, ...]) -> tuple[list[str], list[str]]:
    """Markdown tables of one model, and the verdict lines of its targets."""
    lines = [f"### {model}", ""]
    lines += [
        "| D | exactflow step (ms) | zuko | nflows | bare | vs fastest peer | vs bare"
        " | exactflow log_prob (rows/s) | zuko | nflows | vs best peer |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    step_met, step_missed, draw_met, draw_missed = [], [], [], []
    for d in dims:
        cell = cells.get(("speed", model, d))
        steps = {lib: figure(cell, lib, "step_ms") for lib in (*LIBRARIES, "bare")}
        rates = {lib: figure(cell, lib, "log_prob_rate") for lib in LIBRARIES}
        _, peer_step = fastest({p: steps[p] for p in PEERS}, lower_is_better=True)
        _, peer_rate = fastest({p: rates[p] for p in PEERS}, lower_is_better=False)
        if not math.isnan(steps["exactflow"] / peer_step):
            (step_met if steps["exactflow"] <= peer_step else step_missed).append(d)
        lines.append(
            f"| {d} | "
            + " | ".join(number(steps[k], 2) for k in (*LIBRARIES, "bare"))
            + f" | {ratio(steps['exactflow'], peer_step)}"
            + f" | {ratio(steps['exactflow'], steps['bare'])}"
            + " | "
            + " | ".join(rate(rates[k]) for k in LIBRARIES)
            + f" | {ratio(rates['exactflow'], peer_rate)} |"
        )
    lines += ["", "| D | rows per draw | exactflow sample (rows/s) | zuko | nflows | vs best peer"]
    ways = model in AUTOREGRESSIVE
    if ways:
        lines[-1] += " | " + " | ".join(f"exactflow, {w}" for w in WAYS) + " | saved by autoregress"
    lines[-1] += " |"
    lines.append("|" + "---:|" * (lines[-1].count("|") - 1))
    for d in dims:
        cell = cells.get(("speed", model, d))
        rates = {lib: figure(cell, lib, "sample_rate") for lib in LIBRARIES}
        _, peer = fastest({p: rates[p] for p in PEERS}, lower_is_better=False)
        if ways and not math.isnan(rates["exactflow"] / peer):
            (draw_met if rates["exactflow"] >= 2 * peer else draw_missed).append(d)
        rows = (cell or {}).get("sample_rows", "—")
        line = f"| {d} | {rows} | " + " | ".join(rate(rates[k]) for k in LIBRARIES)
        line += f" | {ratio(rates['exactflow'], peer)}"
        if ways:
            way_cell = cells.get(("sampling", model, d)) or {}
            by_way = {w: float(way_cell.get(w, math.nan)) for w in WAYS}
            line += " | " + " | ".join(rate(by_way[w]) for w in WAYS)
            line += f" | {ratio(by_way[WAYS[0]], by_way[WAYS[2]])}"
        lines.append(line + " |")
    lines += [
        "",
        "| D | peak RSS of a step, MiB: exactflow | zuko | nflows | bare"
        " | saved for backward, MiB: exactflow | zuko | nflows | bare |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in dims:
        cell = cells.get(("memory", model, d))
        libraries = (*LIBRARIES, "bare")
        lines.append(
            f"| {d} | "
            + " | ".join(number(figure(cell, k, "peak_mib"), 1) for k in libraries)
            + " | "
            + " | ".join(number(figure(cell, k, "saved_mib"), 1) for k in libraries)
            + " |"
        )
    lines.append("")

    def where(met: list[int], missed: list[int]) -> str:
        say = [
            f"met at D = {', '.join(map(str, met))}" if met else "",
            f"**missed** at D = {', '.join(map(str, missed))}" if missed else "",
        ]
        return "; ".join(s for s in say if s) or "not measured"

    verdicts = [f"- {model}: step ≤ the fastest peer's: {where(step_met, step_missed)}"]
    if ways:
        verdicts.append(
            f"- {model}: sampling ≥ 2x the fastest peer's: {where(draw_met, draw_missed)}"
        )
    return lines, verdicts


def report(cells: dict, models: tuple[str, ...], dims: tuple[int, ...], threads: int) -> str:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("torch", *PEERS)
        if importlib.util.find_spec(name) is not None
    )
    lines = [
        "# Scaling with width",
        "",
        f"`OMP_NUM_THREADS={threads} python benchmarks/scaling.py`"
        f" ({datetime.date.today()}, {versions}, {threads} torch threads, {platform.machine()},"
        " float32, batch 256). The machine's cores were shared with other jobs: figures are"
        " medians of interleaved rounds, and single cells can still be off by tens of percent.",
        "",
        "Ratios: exactflow's step time / the fastest peer's (lower is better); throughputs:"
        " exactflow's / the best peer's (higher is better). *vs bare*: exactflow's step / the"
        " bare conditioner networks' step. *Saved by autoregress*: exactflow's shipped sampler"
        " against the same flow inverted by D full MADE passes. Peak RSS: resident memory above"
        " the pre-step level during one training step in a fresh process (batch 256, Adam's"
        " state made before); saved for backward: bytes autograd keeps between the passes.",
        "",
    ]
    verdicts: list[str] = []
    for model in models:
        tables, said = model_tables(model, cells, dims)
        lines += tables
        verdicts += said
    lines += ["## Targets", "", *verdicts, ""]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, D up to 64")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--dims", nargs="+", type=int, default=None)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--force", action="store_true", help="remeasure cached cells")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="only rewrite the tables")
    parser.add_argument("--child", nargs=3, metavar=("LIBRARY", "MODEL", "D"), help="internal")
    args = parser.parse_args(argv)
    if args.dims is None:
        args.dims = [d for d in DIMS if d <= 64] if args.quick else list(DIMS)
    name = "scaling-quick" if args.quick else "scaling"
    args.cache = args.cache or ROOT / "runs" / name
    args.out = args.out or (args.cache / "scaling.md" if args.quick else RESULTS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child:
        library, model, features = args.child
        print(json.dumps(child(library, model, int(features), args.threads)))
        return
    torch.set_num_threads(args.threads)
    dims = tuple(args.dims)
    for features in dims if not args.report_only else ():
        # Narrow first, every part at a width before the next: a stopped run has the narrow end.
        for part in args.parts:
            for model in args.models:
                if part == "sampling" and model not in AUTOREGRESSIVE:
                    continue
                path = cache_path(args.cache, part, model, features)
                if path.exists() and not args.force:
                    continue
                log(f"{part} {model} D={features}")
                if part == "speed":
                    result = speed(model, features, args.quick)
                elif part == "sampling":
                    result = sampling(model, features, args.quick)
                else:
                    result = memory(model, features, args.threads)
                write_atomic(path, lambda f, r=result: json.dump(r, f, indent=1), binary=False)
    cells = {
        (part, model, d): cell
        for part in PARTS
        for model in args.models
        for d in dims
        if (cell := load(args.cache, part, model, d)) is not None
    }
    text = report(cells, tuple(args.models), dims, args.threads)
    write_atomic(args.out, lambda f: f.write(text), binary=False)
    flat = {"/".join(map(str, key)): cell for key, cell in cells.items()}
    json_path = args.out.with_suffix(".json")
    write_atomic(json_path, lambda f: json.dump(flat, f, indent=1), binary=False)
    print(text)


if __name__ == "__main__":
    main()
