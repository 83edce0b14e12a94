"""Best effort on Fashion-MNIST: a Glow trained for about an hour of CPU; test bits/dim, pictures.

The model is ``ef.flows.Glow(shape=(1, 28, 28), levels=2, ...)`` (28 = 4·7 allows two
squeezes, not three), trained by ``exactflow.train.fit`` on the 50,000 training images with
fresh uniform dequantization noise in every batch (``ef.data.UniformDequantization``), Adam with
a cosine schedule annealed to zero over the run, gradient norm clipped at 5. The number of steps
is set from ``--minutes``: a few timed steps (and a timed validation pass) of a throwaway copy of
the model give the time per step, and the run takes as many steps as fit in the budget, so the
schedule ends when the time does. Validation (every epoch, on the first ``--val-rows`` images of
the validation split) keeps the best weights; the test split (10,000 images, dequantized once as
``ef.data.load_mnist(fashion=True)`` gives it) is scored at the end. Bits/dim are on the 8-bit
pixel scale: ``(nll + D log 256)/(D log 2)``, ``D = 784``.

With ``--conditional`` the Glow is class-conditional (a one-hot label of the 10 classes) and the
figures include one row of samples per class; its bits/dim are then those of ``p(x | class)``.

Run (2 threads; the run folder keeps checkpoints, ``--resume`` continues an interrupted run)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fashion_best.py --minutes 50
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fashion_best.py --minutes 2   # smoke run

Writes ``results/glow_fashion_best.md`` and ``.json``, and the pictures
``results/glow_fashion_best-samples.png`` (T = 1 and T = 0.7), ``-reconstructions.png``,
``-interpolations.png`` (and ``-classes.png`` with ``--conditional``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import exactflow as ef
from exactflow.atomic import write_atomic
from exactflow.train import TrainConfig, fit

RESULTS = Path(__file__).parent / "results"
LEVELS = 256
DIMS = 784
#: Fashion-MNIST's class names, by label.
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass
class Settings:
    minutes: float = 50.0
    levels: int = 2
    steps: int = 8
    hidden: int = 128
    coupling: str = "affine"
    lr: float = 1e-3
    batch: int = 64
    val_rows: int = 2000
    seed: int = 0
    threads: int = 2
    conditional: bool = False
    run: str = "runs/fashion-best"
    prefix: str = str(RESULTS / "glow_fashion_best")
    resume: bool = False


@dataclass
class Outcome:
    train_steps: int
    epochs: int
    best_epoch: int
    step_seconds: float  # calibrated
    train_minutes: float
    val_bpd: float
    test_bpd: float
    test_bpd_se: float
    params: int
    figures: list[str]


_START = time.perf_counter()


def log(message: str) -> None:
    print(f"{time.perf_counter() - _START:7.1f} s  {message}", file=sys.stderr, flush=True)


def build(s: Settings) -> ef.Flow:
    torch.manual_seed(s.seed)
    return ef.flows.Glow(
        shape=(1, 28, 28), levels=s.levels, steps=s.steps, hidden=s.hidden,
        coupling=s.coupling, context=len(CLASSES) if s.conditional else 0,
    )  # fmt: skip


def calibrate(
    flow: ef.Flow, source: ef.data.BatchSource, val: Tensor, val_context: Tensor | None, s: Settings
) -> tuple[float, float]:
    """Seconds per training step and per validation pass, timed on a copy of ``flow``."""
    flow = copy.deepcopy(flow)
    optimizer = torch.optim.Adam(flow.parameters(), lr=s.lr)
    times = []
    for k, batch in enumerate(source.epoch(0)):
        x, context = batch if s.conditional else (batch, None)
        start = time.perf_counter()
        loss = -flow.log_prob(x, context).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        if k == 12:
            break
    start = time.perf_counter()
    ef.metrics.nll(flow, val, val_context)
    return statistics.median(times[3:]), time.perf_counter() - start


def bpd(nll: float) -> float:
    return float(ef.data.bits_per_dim(nll, DIMS, LEVELS))


def run(s: Settings) -> Outcome:
    raw = ef.data.load_mnist(fashion=True, dequantize_pixels=False)
    fixed = ef.data.dequantized(raw, 0)  # the validation and test splits load_mnist gives
    pixels = ef.data.integer_pixels(raw.train, LEVELS)
    contexts = {
        split: fixed.contexts(split) if s.conditional else None
        for split in ("train", "val", "test")
    }
    val = fixed.val[: s.val_rows]
    val_context = None if contexts["val"] is None else contexts["val"][: s.val_rows]
    source = ef.data.UniformDequantization(
        pixels, LEVELS, s.batch, seed=s.seed, context=contexts["train"]
    )
    flow = build(s)
    per_epoch = len(source)
    plan = Path(s.run) / "plan.json"  # the step count of the run, kept for --resume
    if s.resume and plan.exists():
        step_seconds, steps = json.loads(plan.read_text())["step_seconds_steps"]
        log(f"resuming {s.run}: {steps} steps in all")
    else:
        step_seconds, val_seconds = calibrate(flow, source, val, val_context, s)
        steps = max(1, int(s.minutes * 60 / (step_seconds + val_seconds / per_epoch)))
        log(
            f"{step_seconds:.3f} s a step, {val_seconds:.1f} s a validation: {steps} steps"
            f" ({steps / per_epoch:.1f} epochs of {per_epoch}) in {s.minutes:g} min"
        )
        record = json.dumps({"step_seconds_steps": [step_seconds, steps]})
        write_atomic(plan, lambda f: f.write(record), binary=False)
    config = TrainConfig(
        lr=s.lr,
        epochs=None,
        steps=steps,
        batch_size=s.batch,
        patience=None,
        seed=s.seed,
        out=s.run,
        checkpoint_every=500,
        tensorboard=False,
    )
    start = time.perf_counter()
    val_data = val if val_context is None else (val, val_context)
    result = fit(
        flow, ef.objectives.NLL(), source, config, val=val_data, resume=s.resume,
        progress=sys.stderr.isatty(),
    )  # fmt: skip
    train_minutes = (time.perf_counter() - start) / 60
    for row in result.history:
        log(f"  epoch {row['epoch']}: val {bpd(float(row['val_nll'])):.4f} bits/dim")
    flow = result.model
    nll, se = ef.metrics.nll(flow, fixed.test, contexts["test"])
    log(f"test: {bpd(nll):.4f} ± {se / (DIMS * math.log(2)):.4f} bits/dim")
    figures = pictures(flow, fixed.test, contexts["test"], s)
    return Outcome(
        train_steps=result.steps,
        epochs=len(result.history),
        best_epoch=result.best_epoch,
        step_seconds=step_seconds,
        train_minutes=train_minutes,
        val_bpd=bpd(result.best_val),
        test_bpd=bpd(nll),
        test_bpd_se=se / (DIMS * math.log(2)),
        params=sum(p.numel() for p in flow.parameters()),
        figures=figures,
    )


def pictures(flow: ef.Flow, test: Tensor, context: Tensor | None, s: Settings) -> list[str]:
    """Samples at T = 1 and 0.7, round trips, interpolations (and per-class samples)."""
    torch.manual_seed(s.seed)
    prefix = s.prefix
    plot = ef.plot
    label = f"Glow on Fashion-MNIST (levels {s.levels}, steps {s.steps}, hidden {s.hidden})"
    figures = []
    if context is None:
        figures.append(plot.temperature_grid(f"{prefix}-samples.png", flow, (1.0, 0.7), 64))
        figures.append(plot.interpolations(f"{prefix}-interpolations.png", flow, test[:6],
                                           test[6:12], steps=10, title=label))  # fmt: skip
    else:
        shirt = ef.data.one_hot(torch.tensor(0), len(CLASSES))
        figures.append(
            plot.temperature_grid(f"{prefix}-samples.png", flow, (1.0, 0.7), 32, context=shirt)
        )
        figures.append(plot.class_grid(f"{prefix}-classes.png", flow, len(CLASSES), 10, 0.7,
                                       names=CLASSES, title=f"{label}, T = 0.7"))  # fmt: skip
        pairs = context[:6]
        figures.append(plot.interpolations(f"{prefix}-interpolations.png", flow, test[:6],
                                           test[6:12], steps=10, title=label,
                                           context=pairs))  # fmt: skip
    figures.append(
        plot.reconstructions(f"{prefix}-reconstructions.png", flow, test[:32],
                             None if context is None else context[:32], title=label)
    )  # fmt: skip
    return [str(Path(f)) for f in figures]


def report(s: Settings, o: Outcome, minutes: float) -> str:
    kind = "class-conditional " if s.conditional else ""
    lines = [
        f"# Best effort on Fashion-MNIST: a {kind}Glow in {s.minutes:g} minutes of CPU",
        "",
        f"Run of {datetime.datetime.now():%Y-%m-%d %H:%M}: {platform.machine()},"
        f" {s.threads} torch threads, torch {torch.__version__}; float32; {minutes:.1f} min in"
        " all.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| model | `ef.flows.Glow(shape=(1, 28, 28), levels={s.levels}, steps={s.steps},"
        f" hidden={s.hidden}, coupling={s.coupling!r}"
        + (f", context={len(CLASSES)}" if s.conditional else "")
        + ")` |",
        f"| parameters | {o.params:,} |",
        f"| training | {o.train_steps:,} steps of batch {s.batch} ({o.epochs} epochs of 50,000"
        f" images), Adam lr {s.lr} cosine to 0, clip 5, fresh noise per batch, seed {s.seed} |",
        f"| time | {o.train_minutes:.1f} min of training ({o.step_seconds:.2f} s a step when"
        " calibrated) |",
        f"| best validation (first {s.val_rows:,} validation images) | {o.val_bpd:.4f} bits/dim,"
        f" epoch {o.best_epoch} |",
        f"| **test (10,000 images)** | **{o.test_bpd:.4f} ± {o.test_bpd_se:.4f} bits/dim** |",
        "",
        "Figures: " + ", ".join(f"`{Path(f).name}`" for f in o.figures) + ".",
    ]
    return "\n".join(lines) + "\n"


def parse() -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings()
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="training budget")
    for name in ("levels", "steps", "hidden", "batch", "val_rows", "seed", "threads"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, name))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--coupling", choices=("affine", "additive", "spline"), default="affine")
    parser.add_argument("--conditional", action="store_true", help="condition on the class")
    parser.add_argument("--run", default=defaults.run, help="run folder (checkpoints)")
    parser.add_argument("--prefix", default=defaults.prefix, help="results file prefix")
    parser.add_argument("--resume", action="store_true", help="continue the run folder's run")
    args = parser.parse_args()
    return Settings(**vars(args))


def main() -> None:
    settings = parse()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    outcome = run(settings)
    minutes = (time.perf_counter() - started) / 60
    text = report(settings, outcome, minutes)
    print(text)
    write_atomic(f"{settings.prefix}.md", lambda f: f.write(text), binary=False)
    payload = json.dumps(
        {"settings": dataclasses.asdict(settings), "outcome": dataclasses.asdict(outcome),
         "minutes": minutes, "torch": torch.__version__},
        indent=1,
    )  # fmt: skip
    write_atomic(f"{settings.prefix}.json", lambda f: f.write(payload), binary=False)
    log(f"written to {settings.prefix}.md and .json")


if __name__ == "__main__":
    main()
