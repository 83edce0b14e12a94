"""Does ``--compile`` pay? Wall time to the same validation NLL with and without it.

Two jobs, each trained twice from the same seed, eager and with ``TrainConfig.compile``
(the loss with its backward, the clipping and the Adam update under ``torch.compile``):

* ``moons``: the command-line main job, ``exactflow fit --flow nsf --transforms 4 --hidden 64,64
  --bins 8`` on moons, run through :func:`exactflow.cli.main.main` with ``--steps``.
* ``gmm16d``: the 16-D Gaussian mixture of ``benchmarks/fit_known.py`` (its target, split,
  presets and training config are imported from there), for MAF and autoregressive NSF.

For each pair the *target* is the worse of the two runs' best validation NLL, so both reach it;
the table gives the wall time (training, compilation and validation included: the ``time``
column of the run's history) at the first validation at or below it, the trainer's own payoff
report (compile time, eager and compiled ms/step, break-even step) and the speed-up to target.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/compile_payoff.py          # 2000 steps a run
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/compile_payoff.py --quick  # smoke run

The table goes to ``benchmarks/results/compile_payoff.md``. Compile times are cold-cache
figures only on the first run on a machine (inductor caches compiled kernels on disk); the
script reports what it measured and says which.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import io
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import fit_known

import exactflow as ef
from exactflow.cli.main import main as cli
from exactflow.train import CompilePayoff, fit

RESULTS = Path(__file__).parent / "results" / "compile_payoff.md"
MOONS = ["--flow", "nsf", "--transforms", "4", "--hidden", "64,64", "--bins", "8"]


@dataclasses.dataclass
class Curve:
    """One run: its validation curve ``(seconds, val_nll)`` per epoch and its payoff report."""

    times: list[float]
    vals: list[float]
    steps: int
    payoff: CompilePayoff | None

    def time_to(self, target: float) -> float:
        return next(
            (t for t, v in zip(self.times, self.vals, strict=True) if v <= target), math.nan
        )


def moons_run(compiled: bool, steps: int, seed: int) -> Curve:
    """The CLI main job, eager or compiled; its curve from ``metrics.csv``."""
    with tempfile.TemporaryDirectory() as folder:
        argv = ["fit", "--out", f"{folder}/run", *MOONS, "--steps", str(steps), "--seed", str(seed)]
        argv += ["--no-progress", "--no-plots", "--compile" if compiled else "--no-compile"]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = cli(argv)
        if code != 0:
            raise SystemExit(f"exactflow {' '.join(argv)} failed with code {code}")
        with open(f"{folder}/run/metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    line = next((x for x in printed.getvalue().splitlines() if x.startswith("compiled: ")), None)
    print(f"  moons compile={compiled}: {line or 'eager'}", file=sys.stderr)
    return Curve(
        times=[float(r["time"]) for r in rows],
        vals=[float(r["val_nll"]) for r in rows],
        steps=int(rows[-1]["step"]),
        payoff=_payoff_from(line),
    )


def _payoff_from(line: str | None) -> CompilePayoff | None:
    """The CLI prints the payoff; the library run returns it. Parse the printed figures."""
    if line is None:
        return None
    words = line.replace(",", "").replace(":", "").split()
    never = "never" in words
    took = words.index("took") + 1
    return CompilePayoff(
        compile_seconds=float(words[1]),
        compiled_ms=float(words[5]),
        eager_ms=float(words[8]),
        steps=int(words[took]),
        break_even=None if never else int(words[words.index("after") + 1]),
    )


def mixture_run(preset: str, compiled: bool, steps: int, seed: int) -> Curve:
    """A fit_known preset on its 16-D mixture, eager or compiled."""
    settings, _ = fit_known.parse(["--steps", str(steps), "--seed", str(seed)])
    split = fit_known.draw_split(fit_known.known_targets()["gmm16d"], settings)
    config = dataclasses.replace(fit_known.config(settings, steps), compile=compiled)
    torch.manual_seed(seed)
    flow = fit_known.PRESETS[preset](16, 0)
    result = fit(flow, ef.objectives.NLL(), split.train, config, val=split.val, progress=False)
    paid = result.compile_payoff
    print(
        f"  gmm16d {preset} compile={compiled}: {paid.summary() if paid else 'eager'}",
        file=sys.stderr,
    )
    return Curve(
        times=[row["time"] for row in result.history],
        vals=[row["val_nll"] for row in result.history],
        steps=result.steps,
        payoff=paid,
    )


def row(job: str, eager: Curve, compiled: Curve) -> str:
    target = max(min(eager.vals), min(compiled.vals))
    t_eager, t_compiled = eager.time_to(target), compiled.time_to(target)
    p = compiled.payoff
    if p is None:
        report = "too short to time"
    else:
        even = "never" if p.break_even is None else f"{p.break_even:,}"
        report = f"{p.compile_seconds:.1f} s | {p.eager_ms:.2f} | {p.compiled_ms:.2f} | {even}"
    return (
        f"| {job} | {eager.steps:,} | {target:.4f} | {t_eager:.1f} s | {t_compiled:.1f} s"
        f" | {t_eager / t_compiled:.2f}x | {report} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 2000)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="300 steps per run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (300 if args.quick else 2000)
    torch.set_num_threads(args.threads)
    rows = []
    start = time.perf_counter()
    print("moons NSF (the CLI main job)", file=sys.stderr)
    pair = [moons_run(c, steps, args.seed) for c in (False, True)]
    rows.append(row("moons, NSF 4 x (64,64), 8 bins (CLI)", *pair))
    for preset in ("MAF", "NSF (autoregressive)"):
        print(f"gmm16d {preset}", file=sys.stderr)
        pair = [mixture_run(preset, c, steps, args.seed) for c in (False, True)]
        rows.append(row(f"gmm16d (16-D), {preset}", *pair))
    minutes = (time.perf_counter() - start) / 60
    header = (
        "| job | steps | target val NLL | eager: time to target | compiled: time to target"
        " | speed-up | compile time | eager ms/step | compiled ms/step | break-even step |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    text = "\n".join(
        [
            "# Compiled training step: does it pay?",
            "",
            f"`{' '.join(['python', 'benchmarks/compile_payoff.py', *(argv or sys.argv[1:])])}`"
            f" — {datetime.date.today()}, torch {torch.__version__}, {platform.machine()},"
            f" torch threads: {args.threads}, float32, {minutes:.1f} min in all.",
            "",
            header,
            *rows,
            "",
            "Target: the worse of the two runs' best validation NLL. Times are wall-clock seconds"
            " since the start of the run (compilation and validation included) at the first"
            " validation at or below the target. Compile time, ms/step and the break-even step are"
            " the trainer's own report (`FitResult.compile_payoff`): the first 6 steps of a"
            " compiled run are eager and timed (the first is warm-up and not counted), compile"
            " time is the steps that compiled (the first on each batch shape) minus as many"
            " compiled steps. Inductor caches kernels on disk: a second run of this script on the"
            " machine compiles faster than a cold one.",
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ef.atomic.write_atomic(args.out, lambda f: f.write(text.encode()))
    print(text)


if __name__ == "__main__":
    main()
