"""Glow side by side: exactflow's ``ef.flows.Glow`` against normflows' Glow on Fashion-MNIST.

Both libraries build the same architecture on 1x28x28 images: the logit preprocessing
``logit(α + (1 - 2α)x)`` with α = 0.05, then ``levels`` levels of a squeeze, ``steps`` Glow
steps (ActNorm, LU-parameterized invertible 1x1 convolution, channel-wise affine coupling whose
network is 3x3 -> ReLU -> 1x1 -> ReLU -> 3x3 with ``hidden`` channels, zero-initialized output)
and, at every level but the last, half of the channels factored out. What differs is listed in
the report (the affine coupling's scale, the factored-out channels' prior).

Measured, in one process with both libraries interleaved (so a burst of load from elsewhere
on the machine falls on both alike):

* **train step**: ``-log_prob(x).mean()``, backward and ``Adam.step()`` on a batch of 64;
  medians over rounds that time each library in turn, after warm-up;
* **sample**: drawing a batch of 64 images without gradient (same rounds);
* two more rows, timed in the same rounds: exactflow's Glow with its convolution weights in
  ``channels_last`` memory format (``flow.to(memory_format=torch.channels_last)``), and
  **bare**: the same coupling networks alone on inputs of the same shapes (forward, backward,
  Adam), the floor a Glow's training step can approach (``--more-variants`` adds exactflow
  with ``validate=False`` and with ``prior=False``);
* **test bits/dim** after the same wall-clock training budget: both libraries see the same
  batches in the same order with the same fresh uniform dequantization noise per batch
  (``x = (k + u)/256``), Adam with the same learning rate, and train in alternating slices of
  a few seconds until each has used the budget; the test split (10,000 images, dequantized once
  with a fixed seed, the same for both) is then scored in eval mode. Bits/dim are on the 8-bit
  pixel scale: ``(nll + D log 256)/(D log 2)`` with ``D = 784``.

Run (2 torch threads)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/glow_compare.py --quick   # about a minute
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/glow_compare.py           # ~15 min when idle

normflows must be installed (``pip install -e ".[bench]"``). Writes
``results/glow_compare.md`` and ``results/glow_compare.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

import exactflow as ef
from exactflow.atomic import write_atomic

sys.path.insert(0, str(Path(__file__).parent))
import compare
from compare import Model

RESULTS = Path(__file__).parent / "results"
SHAPE = (1, 28, 28)
LEVELS = 256
ALPHA = 0.05


# ---------------------------------------------------------------- the two models


@dataclass(frozen=True)
class Arch:
    levels: int = 2
    steps: int = 8
    hidden: int = 128


def build_exactflow(arch: Arch, seed: int, channels_last: bool = False, **options: object) -> Model:
    torch.manual_seed(seed)
    flow = ef.flows.Glow(
        shape=SHAPE, levels=arch.levels, steps=arch.steps, hidden=arch.hidden, alpha=ALPHA,
        **options,
    )  # fmt: skip
    if channels_last:  # the convolutions' weights in NHWC, which oneDNN runs faster on CPU
        flow.to(memory_format=torch.channels_last)
    prior = (
        "learned conditional prior N(mu(h), sigma(h)^2) on the factored-out channels (a"
        " zero-initialized 3x3 convolution of the kept ones, as in Glow)"
        if options.get("prior", True)
        else "no prior on the factored-out channels (prior=False)"
    )
    checks = "on" if options.get("validate", True) else "off (validate=False)"
    layout = "; weights in channels_last" if channels_last else ""
    note = (
        f"affine coupling y = x·exp(s) + t, s = 3·tanh(a/3); {prior}; standard normal base;"
        f" input validation {checks}{layout}"
    )
    return Model(flow, flow.log_prob, lambda n: flow.sample((n,)), note)


def build_normflows(arch: Arch, seed: int) -> Model:
    """normflows' multi-scale Glow, as in its Glow example (``examples/glow.ipynb``)."""
    import normflows as nf

    torch.manual_seed(seed)
    c, h, w = SHAPE
    levels = arch.levels
    bases, merges, flows = [], [], []
    for i in range(levels):  # i = 0 is the deepest level; each list runs base -> data
        channels = c * 2 ** (levels + 1 - i)
        blocks = [
            nf.flows.GlowBlock(channels, arch.hidden, split_mode="channel", scale=True)
            for _ in range(arch.steps)
        ]
        flows.append([*blocks, nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), h // 2**levels, w // 2**levels)
        bases.append(nf.distributions.DiagGaussian(latent))
    model = nf.MultiscaleFlow(
        bases, flows, merges, transform=nf.transforms.Logit(alpha=ALPHA), class_cond=False
    )
    note = (
        "affine coupling y = (x - t)·sigmoid(a + 2) (Glow's code); every level's latent has a"
        " learned diagonal Gaussian N(mu, sigma^2) (not conditioned on the kept channels); sampling"
        " also computes log q (MultiscaleFlow.sample returns it)"
    )
    return Model(model, lambda x: model.log_prob(x, None), lambda n: model.sample(n)[0], note)


def coupling_shapes(arch: Arch) -> list[tuple[int, int, int]]:
    """``(in_channels, out_channels, side)`` of every coupling network of the Glow, in order."""
    c, h, _ = SHAPE
    shapes = []
    for _ in range(arch.levels):
        c, h = 4 * c, h // 2
        shapes += [(c // 2, 2 * (c - c // 2), h)] * arch.steps
        c -= c // 2
    return shapes


def build_bare(arch: Arch, seed: int = 0) -> Model:
    """The coupling networks alone (forward, backward, Adam): the floor of a Glow's step."""
    torch.manual_seed(seed)
    shapes = coupling_shapes(arch)
    nets = torch.nn.ModuleList(ef.nn.GlowNet(i, o, arch.hidden) for i, o, _ in shapes)

    def score(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_()  # as in a flow, every network's input needs a gradient
        total = x.new_zeros(len(x))
        for net, (i, _, side) in zip(nets, shapes, strict=True):
            kept = x.reshape(len(x), -1, side, side)[:, :i].contiguous()
            total = total + net(kept).flatten(1).sum(1)
        return total

    def no_sampler(n: int) -> Tensor:
        raise NotImplementedError("the bare networks do not sample")

    note = "the same coupling networks (ef.nn.GlowNet) on inputs of the same shapes, nothing else"
    return Model(nets, score, no_sampler, note)


BUILDERS: dict[str, Callable[..., Model]] = {
    "exactflow": build_exactflow,
    "normflows": build_normflows,
}


# ---------------------------------------------------------------- data


@dataclass
class Pixels:
    """Fashion-MNIST as integer pixels ``(N, 1, 28, 28)`` (uint8) and a fixed-noise test set."""

    train: Tensor
    test: Tensor  # dequantized once, float32

    @classmethod
    def load(cls, test_rows: int, seed: int = 0) -> Pixels:
        """The 50,000 training images' pixels; the first ``test_rows`` test images, dequantized
        as ``ef.data.load_mnist(fashion=True, seed=seed)`` gives them."""
        raw = ef.data.load_mnist(fashion=True, n_test=test_rows, dequantize_pixels=False)
        test = ef.data.dequantized(raw, seed).test
        return cls(ef.data.integer_pixels(raw.train, LEVELS), test)

    def batch(self, rows: Tensor, seed: int, step: int) -> Tensor:
        """Training batch ``step`` of a run: its rows with fresh noise seeded by the step."""
        noise = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return ef.data.dequantize(self.train[rows], LEVELS, noise)


@torch.no_grad()
def bits_per_dim(m: Model, x: Tensor, chunk: int = 500) -> tuple[float, float]:
    """Mean test bits/dim (8-bit pixels) of ``x`` and its standard error, in eval mode."""
    was_training = m.module.training
    m.module.eval()
    try:
        nll = torch.cat([-m.log_prob(x[i : i + chunk]).double() for i in range(0, len(x), chunk)])
    finally:
        m.module.train(was_training)
    dims = math.prod(SHAPE)
    bpd = ef.data.bits_per_dim(nll, dims, LEVELS)
    if not bool(torch.isfinite(bpd).all()):
        return math.nan, math.nan
    return float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd)))


# ---------------------------------------------------------------- training on a time budget


@dataclass
class Fit:
    bpd: float = math.nan
    bpd_se: float = math.nan
    steps: int = 0
    seconds: float = 0.0
    train_bpd: float = math.nan  # mean over the last 50 training batches
    diverged: bool = False


@dataclass
class _Run:
    model: Model
    optimizer: torch.optim.Optimizer
    next_rows: Callable[[], Tensor]
    fit: Fit = field(default_factory=Fit)
    losses: list[float] = field(default_factory=list)


def train_interleaved(
    models: dict[str, Model],
    data: Pixels,
    budget: float,
    seed: int,
    lr: float,
    batch: int,
    slice_seconds: float,
    log: Callable[[str], None],
) -> dict[str, Fit]:
    """Adam on ``-log_prob`` for ``budget`` seconds of each model, in alternating slices.

    Batch ``k`` of every model holds the same rows with the same dequantization noise.
    """
    runs = {
        name: _Run(
            m,
            torch.optim.Adam(m.module.parameters(), lr=lr),
            compare.batches(len(data.train), batch, seed),
        )
        for name, m in models.items()
    }
    dims = math.prod(SHAPE)
    next_report = 0.0
    while any(r.fit.seconds < budget and not r.fit.diverged for r in runs.values()):
        for r in runs.values():
            if r.fit.seconds >= budget or r.fit.diverged:
                continue
            start = time.perf_counter()
            while True:
                x = data.batch(r.next_rows(), seed, r.fit.steps)
                loss = -r.model.log_prob(x).mean()
                if not torch.isfinite(loss):
                    r.fit.diverged = True
                    break
                r.model.module.zero_grad(set_to_none=True)
                loss.backward()
                r.optimizer.step()
                r.fit.steps += 1
                r.losses.append(float(loss))
                used = time.perf_counter() - start
                if used >= slice_seconds or r.fit.seconds + used >= budget:
                    break
            r.fit.seconds += time.perf_counter() - start
        done = min(r.fit.seconds for r in runs.values())
        if done >= next_report:
            status = ", ".join(
                f"{name} {r.fit.steps} steps, train"
                f" {ef.data.bits_per_dim(statistics.fmean(r.losses[-20:]), dims, LEVELS):.3f}"
                for name, r in runs.items()
                if r.losses
            )
            log(f"  {done:5.0f} s of {budget:.0f}: {status}")
            next_report = done + max(30.0, budget / 10)
    for r in runs.values():
        if r.losses:
            r.fit.train_bpd = ef.data.bits_per_dim(statistics.fmean(r.losses[-50:]), dims, LEVELS)
    return {name: r.fit for name, r in runs.items()}


# ---------------------------------------------------------------- timing


@dataclass
class Timing:
    """Medians over the rounds; ratios are medians of the per-round ratios to normflows."""

    step_ms: float = math.nan  # wall time of a train step
    step_cpu_ms: float = math.nan  # process CPU time of a train step (all threads)
    sample_ms: float = math.nan  # wall time of a draw of a batch
    sample_cpu_ms: float = math.nan
    step_ratio: float = math.nan  # this / normflows, wall
    step_cpu_ratio: float = math.nan
    sample_speedup: float = math.nan  # normflows / this, wall
    sample_cpu_speedup: float = math.nan


def time_models(
    models: dict[str, Model], x: Tensor, lr: float, rounds: int, warmup: int
) -> dict[str, Timing]:
    """Wall and CPU time of every model's train step and draw, in rounds visiting each in turn.

    Each round times one train step and one draw of ``len(x)`` images of every model, back to
    back, so that load from elsewhere on the machine falls on all of them alike; the ratios to
    normflows are taken within each round (the paired measurements closest in time), then the
    median over rounds.
    """
    calls: dict[str, dict[str, Callable[[], object]]] = {}
    for name, m in models.items():
        optimizer = torch.optim.Adam(m.module.parameters(), lr=lr)

        def step(m: Model = m, optimizer: torch.optim.Optimizer = optimizer) -> None:
            loss = -m.log_prob(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        calls[name] = {"step": step}
        if name != "bare":
            calls[name]["sample"] = torch.no_grad()(lambda m=m: m.sample(len(x)))
        for _ in range(warmup):
            step()
        if "sample" in calls[name]:
            calls[name]["sample"]()
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, fns in calls.items():
            for what, fn in fns.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall.setdefault((name, what), []).append(time.perf_counter() - start)
                cpu.setdefault((name, what), []).append(time.process_time() - start_cpu)

    def paired(a: list[float], b: list[float]) -> float:
        return statistics.median(p / q for p, q in zip(a, b, strict=True))

    timings = {}
    for name in models:
        t = Timing()
        t.step_ms = 1e3 * statistics.median(wall[name, "step"])
        t.step_cpu_ms = 1e3 * statistics.median(cpu[name, "step"])
        t.step_ratio = paired(wall[name, "step"], wall["normflows", "step"])
        t.step_cpu_ratio = paired(cpu[name, "step"], cpu["normflows", "step"])
        if (name, "sample") in wall:
            t.sample_ms = 1e3 * statistics.median(wall[name, "sample"])
            t.sample_cpu_ms = 1e3 * statistics.median(cpu[name, "sample"])
            t.sample_speedup = paired(wall["normflows", "sample"], wall[name, "sample"])
            t.sample_cpu_speedup = paired(cpu["normflows", "sample"], cpu[name, "sample"])
        timings[name] = t
    return timings


# ---------------------------------------------------------------- where the time goes


def operator_times(fn: Callable[[], object], repeats: int) -> dict[str, tuple[float, float]]:
    """Self CPU time (ms) and calls of every torch operator, per call of ``fn`` (after one)."""
    fn()
    with torch.profiler.profile() as prof:
        for _ in range(repeats):
            fn()
    return {
        e.key: (e.self_cpu_time_total / 1e3 / repeats, e.count / repeats)
        for e in prof.key_averages()
    }


def profile_table(models: dict[str, Model], x: Tensor, lr: float, top: int = 15) -> list[str]:
    """Markdown: the operators that take the most time in a train step and in sampling."""
    lines = []
    for what in ("train step", "sampling"):
        profiles = {}
        for name, m in models.items():
            if what == "sampling":
                profiles[name] = operator_times(torch.no_grad()(lambda m=m: m.sample(len(x))), 3)
                continue
            optimizer = torch.optim.Adam(m.module.parameters(), lr=lr)

            def step(m: Model = m, optimizer: torch.optim.Optimizer = optimizer) -> None:
                loss = -m.log_prob(x).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            profiles[name] = operator_times(step, 3)
        ops = sorted(
            set().union(*profiles.values()),
            key=lambda op: -max(p.get(op, (0.0, 0.0))[0] for p in profiles.values()),
        )
        lines += [
            f"{what.capitalize()}, batch {len(x)}: self CPU time (ms) and calls per {what},"
            " by torch operator (torch.profiler; its overhead inflates the totals)",
            "",
            "| operator | " + " | ".join(profiles) + " |",
            "|---|" + "---:|" * len(profiles),
        ]
        for op in ops[:top]:
            cells = (p.get(op, (0.0, 0.0)) for p in profiles.values())
            lines.append(
                f"| `{op[:50]}` | " + " | ".join(f"{t:.1f} ({n:g})" for t, n in cells) + " |"
            )
        totals = (
            (sum(t for t, _ in p.values()), sum(n for _, n in p.values()))
            for p in profiles.values()
        )
        lines += ["| total | " + " | ".join(f"{t:.1f} ({n:g})" for t, n in totals) + " |", ""]
    return lines


# ---------------------------------------------------------------- settings and the run


@dataclass
class Settings:
    arch: Arch = Arch()
    threads: int = 2
    batch: int = 64
    lr: float = 1e-3
    rounds: int = 15  # timing rounds over the models (one step and one draw each)
    warmup: int = 3
    budget: float = 100.0  # seconds of training per library and seed
    slice_seconds: float = 5.0
    seeds: int = 3
    test_rows: int = 10_000
    quick: bool = False
    variants: bool = True  # also time exactflow in channels_last and the bare networks
    more_variants: bool = False  # and exactflow without validation, without the prior
    profile: bool = False  # add the operator profile of both libraries


QUICK = {
    "rounds": 4,
    "warmup": 1,
    "budget": 10.0,
    "slice_seconds": 2.0,
    "seeds": 1,
    "test_rows": 500,
    "variants": False,
}


@dataclass
class Result:
    settings: Settings
    params: dict[str, int]
    timings: dict[str, Timing]
    fits: dict[str, list[Fit]]
    notes: dict[str, str]
    profile: list[str] = field(default_factory=list)
    minutes: float = 0.0


_START = time.perf_counter()


def log(message: str) -> None:
    print(f"{time.perf_counter() - _START:7.1f} s  {message}", file=sys.stderr, flush=True)


def run(settings: Settings) -> Result:
    data = Pixels.load(settings.test_rows)
    log(f"Fashion-MNIST: {len(data.train)} training images, {len(data.test)} test images")
    arch = settings.arch
    models = {name: build(arch, 0) for name, build in BUILDERS.items()}
    if settings.variants:
        models["exactflow, channels_last"] = build_exactflow(arch, 0, channels_last=True)
        models["bare"] = build_bare(arch)
    if settings.more_variants:
        models["exactflow, validate=False"] = build_exactflow(arch, 0, validate=False)
        models["exactflow, prior=False"] = build_exactflow(arch, 0, prior=False)
    notes = {name: m.note for name, m in models.items()}
    params = {name: m.params for name, m in models.items()}
    x = data.batch(torch.arange(settings.batch), 0, 0)
    log(f"timing {', '.join(models)} (batch {settings.batch})")
    timings = time_models(models, x, settings.lr, settings.rounds, settings.warmup)
    for name, t in timings.items():
        log(
            f"  {name}: step {t.step_ms:.0f} ms ({t.step_cpu_ms:.0f} ms CPU),"
            f" sampling {t.sample_ms:.0f} ms ({t.sample_cpu_ms:.0f} ms CPU)"
        )
    profile = []
    if settings.profile:
        log("profiling a train step and sampling of each library")
        profile = profile_table({name: models[name] for name in BUILDERS}, x, settings.lr)
    fits: dict[str, list[Fit]] = {name: [] for name in BUILDERS}
    for seed in range(settings.seeds):
        log(f"seed {seed}: training each library for {settings.budget:.0f} s")
        pair = {name: build(arch, seed) for name, build in BUILDERS.items()}
        results = train_interleaved(
            pair, data, settings.budget, seed, settings.lr, settings.batch,
            settings.slice_seconds, log,
        )  # fmt: skip
        for name, fit in results.items():
            fit.bpd, fit.bpd_se = bits_per_dim(pair[name], data.test)
            fits[name].append(fit)
            log(f"  {name}: {fit.steps} steps, test {fit.bpd:.4f} ± {fit.bpd_se:.4f} bits/dim")
    return Result(settings, params, timings, fits, notes, profile)


# ---------------------------------------------------------------- the report


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if len(finite) == len(values) and finite else math.nan


def _spread(values: list[float]) -> str:
    return f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""


def report(result: Result) -> str:
    s, arch = result.settings, result.settings.arch
    versions = ", ".join(f"{lib} {importlib.metadata.version(lib)}" for lib in ("normflows",))
    t = result.timings
    ours = t["exactflow"]
    lines = [
        "# Glow on Fashion-MNIST: exactflow against normflows",
        "",
        f"Run of {datetime.datetime.now():%Y-%m-%d %H:%M}: {platform.machine()},"
        f" {s.threads} torch threads, torch {torch.__version__}, {versions}; float32;"
        f" {result.minutes:.1f} min in all" + (" (`--quick` settings)" if s.quick else "") + ".",
        "",
        f"Architecture (both): 1x28x28, logit (alpha = {ALPHA}), {arch.levels} levels x"
        f" {arch.steps} steps, coupling networks 3x3-1x1-3x3 with {arch.hidden} channels.",
        f"Timing: batch {s.batch}; {s.rounds} rounds, each timing one train step and one draw"
        f" of {s.batch} images of every model in turn, after {s.warmup} warm-up steps; medians"
        " over the rounds. Wall: elapsed time; CPU: the process's CPU time (all its threads),"
        " which a busy machine inflates less. Ratios: medians of the per-round ratios to"
        " normflows.",
        "",
        "| model | parameters | train step, wall (CPU) ms | / normflows, wall (CPU) |"
        " sampling 64, wall (CPU) ms | speed-up over normflows, wall (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def pair(a: float, b: float, unit: str = "", digits: int = 0) -> str:
        if math.isnan(a):
            return "—"
        return f"{a:.{digits}f}{unit} ({b:.{digits}f}{unit})"

    for name, timing in t.items():
        lines.append(
            f"| {name} | {result.params[name]:,} | {pair(timing.step_ms, timing.step_cpu_ms)} |"
            f" {pair(timing.step_ratio, timing.step_cpu_ratio, 'x', 2)} |"
            f" {pair(timing.sample_ms, timing.sample_cpu_ms)} |"
            f" {pair(timing.sample_speedup, timing.sample_cpu_speedup, 'x', 2)} |"
        )
    step, speedup = ours.step_ratio, ours.sample_speedup
    lines += [
        "",
        f"- Train step, exactflow / normflows: **{step:.2f}x** wall, {ours.step_cpu_ratio:.2f}x"
        f" CPU (target ≤ 0.70x: {'met' if step <= 0.7 else 'missed'}).",
        f"- Sampling, exactflow's speed-up over normflows: **{speedup:.2f}x** wall,"
        f" {ours.sample_cpu_speedup:.2f}x CPU (target ≥ 1.5x:"
        f" {'met' if speedup >= 1.5 else 'missed'}).",
        "",
    ]
    if s.seeds:
        lines += [
            f"Test bits/dim after {s.budget:.0f} s of training each ({s.seeds} seed(s);"
            f" batch {s.batch}, Adam lr {s.lr}, same batches and noise for both; test set"
            f" {s.test_rows:,} images):",
            "",
            "| library | steps in budget | train bits/dim (last 50 batches) | test bits/dim |",
            "|---|---:|---:|---:|",
        ]
        for name, fits in result.fits.items():
            steps = [f.steps for f in fits]
            train = [f.train_bpd for f in fits]
            test = [f.bpd for f in fits]
            diverged = sum(f.diverged for f in fits)
            flag = f" ({diverged} diverged)" if diverged else ""
            lines.append(
                f"| {name} | {statistics.fmean(steps):.0f} | {_mean(train):.3f}{_spread(train)}"
                f" | {_mean(test):.3f}{_spread(test)}{flag} |"
            )
        per_seed = "; ".join(
            f"{name}: " + ", ".join(f"{f.bpd:.3f}" for f in fits)
            for name, fits in result.fits.items()
        )
        lines += ["", f"Test bits/dim by seed (0, 1, ...): {per_seed}.", ""]
    lines += ["What differs between the models:", ""]
    lines += [f"- {name}: {note}" for name, note in result.notes.items()]
    if result.profile:
        lines += ["", *result.profile]
    return "\n".join(lines) + "\n"


def as_json(result: Result) -> dict:
    return {
        "settings": dataclasses.asdict(result.settings),
        "params": result.params,
        "timings": {k: dataclasses.asdict(v) for k, v in result.timings.items()},
        "fits": {k: [dataclasses.asdict(f) for f in v] for k, v in result.fits.items()},
        "notes": result.notes,
        "minutes": result.minutes,
        "torch": torch.__version__,
        "normflows": importlib.metadata.version("normflows"),
    }


def parse() -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (about a minute)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--levels", type=int, default=Arch.levels)
    parser.add_argument("--steps", type=int, default=Arch.steps)
    parser.add_argument("--hidden", type=int, default=Arch.hidden)
    parser.add_argument("--budget", type=float, help="training seconds per library and seed")
    parser.add_argument("--seeds", type=int, help="training runs per library")
    parser.add_argument("--rounds", type=int, help="timing rounds")
    parser.add_argument("--test-rows", type=int, help="test images scored (default 10,000)")
    parser.add_argument("--profile", action="store_true", help="add an operator profile")
    parser.add_argument("--no-variants", action="store_true", help="time the two Glows only")
    parser.add_argument(
        "--more-variants", action="store_true", help="also exactflow without checks, prior"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "glow_compare.md")
    args = parser.parse_args()
    settings = Settings(
        arch=Arch(args.levels, args.steps, args.hidden), threads=args.threads, quick=args.quick
    )
    if args.quick:
        settings = dataclasses.replace(settings, **QUICK)
    settings.profile = args.profile
    settings.variants = settings.variants and not args.no_variants
    settings.more_variants = args.more_variants
    for name in ("budget", "seeds", "rounds", "test_rows"):
        if getattr(args, name) is not None:
            settings = dataclasses.replace(settings, **{name: getattr(args, name)})
    return settings, args.out


def main() -> None:
    settings, out = parse()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    result = run(settings)
    result.minutes = (time.perf_counter() - started) / 60
    text = report(result)
    print(text)
    write_atomic(out, lambda f: f.write(text), binary=False)
    payload = json.dumps(as_json(result), indent=1)
    write_atomic(out.with_suffix(".json"), lambda f: f.write(payload), binary=False)
    log(f"written to {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
