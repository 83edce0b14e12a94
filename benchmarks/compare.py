"""Speed and fit side by side: exactflow against zuko, nflows and normflows.

For each model (MAF, RealNVP, NSF) every library builds the same architecture (same number of
steps, conditioners with two hidden layers of 128 units, 8 spline bins on ``[-5, 5]``), and one
process times, then trains, each library in turn with the same code:

* **train step**: ``-log_prob(x).mean()``, backward, ``Adam.step()`` on a batch of 256;
* **log_prob**: rows per second of ``log_prob`` on batches of 256, without gradient;
* **sample**: rows per second of drawing 1024 samples, without gradient;
* **test NLL** after a fixed number of Adam steps on a 16-D Gaussian mixture with a known
  density (``KL gap = test NLL - entropy``, entropy by Monte Carlo), and on the bundled digits
  with validation-based early stopping (test NLL at the best validation point).

A **bare** row times the same conditioner networks (plain ``nn.Linear`` stacks of the same
sizes, one per step) through forward, backward and the Adam step with no flow arithmetic: the
floor a flow's training step can approach. **compiled** rows run exactflow's ``log_prob`` and
``sample`` through ``torch.compile`` (CPU inductor).

Every library runs through the same minimal loop below (same batches, optimizer, learning
rate, steps and early stopping); only the adapters in :data:`BUILDERS` differ. Timings are
medians of repeated ``time.perf_counter`` measurements after warm-up, on ``--threads`` threads.

Install and run (from a clean clone)::

    pip install -e ".[bench]"
    python benchmarks/compare.py            # full run, ~15 min; writes results/compare.md
    python benchmarks/compare.py --quick    # smoke run, ~2 min
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

import exactflow as ef
from exactflow.data import Standardize, monte_carlo_entropy

RESULTS = Path(__file__).parent / "results" / "compare.md"
LIBRARIES = ("exactflow", "zuko", "nflows", "normflows")
MODELS = ("MAF", "RealNVP", "NSF")
HIDDEN = 128
STEPS = {"MAF": 5, "RealNVP": 8, "NSF": 5}  # number of flow steps (transforms) per model
BINS = 8
BOUND = 5.0


# ---------------------------------------------------------------- one adapter per library


@dataclass
class Model:
    """What the shared loop needs from a library: its parameters, a density and a sampler."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]
    note: str = ""


def build_exactflow(model: str, features: int) -> Model:
    hidden = (HIDDEN, HIDDEN)
    if model == "MAF":
        flow = ef.flows.MAF(features, transforms=STEPS[model], hidden=hidden)
    elif model == "RealNVP":
        flow = ef.flows.RealNVP(features, transforms=STEPS[model], hidden=hidden)
    else:
        flow = ef.flows.NSF(features, transforms=STEPS[model], hidden=hidden, bins=BINS, bound=BOUND)
    return Model(flow, flow.log_prob, lambda n: flow.sample((n,)))


def build_zuko(model: str, features: int) -> Model:
    import zuko

    hidden = (HIDDEN, HIDDEN)
    if model == "MAF":
        flow = zuko.flows.MAF(features, transforms=STEPS[model], hidden_features=hidden)
        note = "affine log-scale a / (1 + |a / log 1e-3|)"
    elif model == "RealNVP":
        flow = zuko.flows.RealNVP(features, transforms=STEPS[model], hidden_features=hidden)
        note = "affine log-scale a / (1 + |a / log 1e-3|)"
    else:
        flow = zuko.flows.NSF(features, transforms=STEPS[model], bins=BINS, hidden_features=hidden)
        note = "splines on [-5, 5]"
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)), note)


class _IgnoreContext(nn.Module):
    """nflows' coupling layers pass a context to their network; its plain MLP takes none."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def build_nflows(model: str, features: int) -> Model:
    from nflows import distributions, flows, transforms
    from nflows.nn.nets import MLP
    from nflows.utils import torchutils

    steps: list[nn.Module] = []
    for k in range(STEPS[model]):
        if model == "RealNVP":
            mask = torchutils.create_alternating_binary_mask(features, even=k % 2 == 0)
            steps.append(
                transforms.AffineCouplingTransform(
                    mask, lambda i, o: _IgnoreContext(MLP((i,), (o,), [HIDDEN, HIDDEN]))
                )
            )
            continue
        if k:
            steps.append(transforms.ReversePermutation(features))
        if model == "MAF":
            steps.append(
                transforms.MaskedAffineAutoregressiveTransform(
                    features, HIDDEN, num_blocks=1, use_residual_blocks=False
                )
            )
        else:
            steps.append(
                transforms.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    features,
                    HIDDEN,
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                    num_blocks=1,
                    use_residual_blocks=False,
                )
            )
    flow = flows.Flow(transforms.CompositeTransform(steps), distributions.StandardNormal([features]))
    note = {
        "MAF": "scale sigmoid(a + 2) + 1e-3; reversal between steps",
        "RealNVP": "scale sigmoid(a + 2) + 1e-3",
        "NSF": "reversal between steps",
    }[model]
    return Model(flow, flow.log_prob, flow.sample, note)


def build_normflows(model: str, features: int) -> Model:
    import normflows as nf
    from normflows.flows.neural_spline.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressive,
    )

    steps: list[nn.Module] = []
    for k in range(STEPS[model]):
        if model == "RealNVP":
            half = features // 2
            net = nf.nets.MLP([half, HIDDEN, HIDDEN, 2 * half], init_zeros=True)
            split = "checkerboard" if k % 2 == 0 else "checkerboard_inv"
            steps.append(nf.flows.AffineCouplingBlock(net, scale=True, split_mode=split))
            continue
        if k:
            steps.append(nf.flows.Permute(features, mode="swap"))
        if model == "MAF":
            # normflows' layer samples in one pass; Reverse makes it a MAF (one-pass density).
            layer = nf.flows.MaskedAffineAutoregressive(
                features, HIDDEN, num_blocks=1, use_residual_blocks=False
            )
            steps.append(nf.flows.Reverse(layer))
        else:
            layer = nf.flows.AutoregressiveRationalQuadraticSpline(
                features, 1, HIDDEN, num_bins=BINS, tail_bound=BOUND
            )
            # The wrapper forces residual blocks; swap in the plain two-layer MADE.
            layer.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(
                features,
                HIDDEN,
                num_bins=BINS,
                tails="linear",
                tail_bound=BOUND,
                num_blocks=1,
                use_residual_blocks=False,
            )
            steps.append(layer)
    # normflows' flows run base -> data; its NormalizingFlow applies them in list order.
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(features, trainable=False), steps[::-1])
    note = {
        "MAF": "scale sigmoid(a + 2) + 1e-3; no ReLU after the MADE's first layer; half swap",
        "RealNVP": "log-scale a (unbounded)",
        "NSF": "no ReLU after the MADE's first layer; half swap between steps",
    }[model]
    return Model(flow, flow.log_prob, lambda n: flow.sample(n)[0], note)


BUILDERS: dict[str, Callable[[str, int], Model]] = {
    "exactflow": build_exactflow,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
}


def version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def available(library: str) -> bool:
    try:
        __import__(library)
    except ImportError:
        return False
    return True


def conditioner_sizes(model: str, features: int) -> list[tuple[int, int]]:
    """``(inputs, outputs)`` of each conditioner network of ``model``."""
    per_feature = {"MAF": 2, "NSF": 3 * BINS - 1}
    if model == "RealNVP":
        half = features // 2
        return [(features - half, 2 * half)] * STEPS[model]
    return [(features, per_feature[model] * features)] * STEPS[model]


def build_bare(model: str, features: int) -> Model:
    """The conditioners alone: one plain MLP per step, all fed the batch, outputs summed."""
    nets = nn.ModuleList(
        nn.Sequential(
            nn.Linear(i, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, o)
        )
        for i, o in conditioner_sizes(model, features)
    )

    def score(x: Tensor) -> Tensor:
        return sum(net(x[..., : net[0].in_features]).mean(-1) for net in nets)

    def no_sampler(n: int) -> Tensor:
        raise NotImplementedError

    return Model(nets, score, no_sampler, "plain nn.Linear stacks, no flow arithmetic")


# ---------------------------------------------------------------- timing


def median_time(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Timing:
    step_ms: float = math.nan
    log_prob_rate: float = math.nan  # rows / s
    sample_rate: float = math.nan  # rows / s


def time_model(
    m: Model, x: Tensor, settings: Settings, sample: bool = True, lr: float = 1e-3
) -> Timing:
    optimizer = torch.optim.Adam(m.module.parameters(), lr=lr)

    def step() -> None:
        loss = -m.log_prob(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def density() -> None:
        with torch.no_grad():
            m.log_prob(x)

    def draw() -> None:
        with torch.no_grad():
            m.sample(settings.sample_size)

    r, w = settings.repeats, settings.warmup
    result = Timing()
    result.step_ms = 1e3 * median_time(step, r, w)
    result.log_prob_rate = len(x) / median_time(density, r, w)
    if sample:
        result.sample_rate = settings.sample_size / median_time(draw, max(3, r // 4), max(1, w // 2))
    return result


# ---------------------------------------------------------------- the shared training loop


@dataclass
class Fit:
    steps: int = 0
    seconds: float = 0.0
    nll: float = math.nan  # test NLL (nats), mean
    nll_se: float = math.nan
    best_step: int = 0


@torch.no_grad()
def nll(m: Model, x: Tensor, chunk: int = 2048) -> Tensor:
    """``-log q(x)`` per row (float64), in chunks."""
    m.module.eval()
    out = torch.cat([-m.log_prob(x[i : i + chunk]).double() for i in range(0, len(x), chunk)])
    m.module.train()
    return out


def batches(n: int, batch: int, seed: int) -> Callable[[], Tensor]:
    """An endless sequence of row indices, shuffled every epoch; the same for every library."""
    generator = torch.Generator().manual_seed(seed)
    state = {"order": torch.randperm(n, generator=generator), "at": 0}

    def next_batch() -> Tensor:
        if state["at"] + batch > n:
            state["order"], state["at"] = torch.randperm(n, generator=generator), 0
        rows = state["order"][state["at"] : state["at"] + batch]
        state["at"] += batch
        return rows

    return next_batch


def train(
    m: Model,
    data: dict[str, Tensor],
    steps: int,
    settings: Settings,
    early_stopping: bool,
) -> Fit:
    """Adam on ``-log_prob`` for ``steps`` steps (or until validation stops improving)."""
    optimizer = torch.optim.Adam(m.module.parameters(), lr=settings.lr)
    next_rows = batches(len(data["train"]), settings.batch, settings.seed)
    best, best_state, best_step, bad = math.inf, None, 0, 0
    result = Fit()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = -m.log_prob(data["train"][next_rows()]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.steps = step
        if early_stopping and step % settings.eval_every == 0:
            val = float(nll(m, data["val"]).mean())
            if val < best:
                best, best_step, bad = val, step, 0
                best_state = copy.deepcopy(m.module.state_dict())
            else:
                bad += 1
                if bad >= settings.patience:
                    break
    result.seconds = time.perf_counter() - start
    if best_state is not None:
        m.module.load_state_dict(best_state)
    result.best_step = best_step if early_stopping else steps
    values = nll(m, data["test"])
    values = values[torch.isfinite(values)] if not torch.isfinite(values).all() else values
    result.nll = float(values.mean())
    result.nll_se = float(values.std() / math.sqrt(len(values)))
    return result


# ---------------------------------------------------------------- settings and the run


@dataclass
class Settings:
    threads: int = 2
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0
    sample_size: int = 1024
    repeats: int = 40
    warmup: int = 10
    gmm_steps: int = 2000
    gmm_train: int = 50_000
    gmm_test: int = 20_000
    entropy_samples: int = 400_000
    digits_max_steps: int = 4000
    eval_every: int = 50
    patience: int = 10
    seeds: int = 2  # exactflow reruns with other seeds, for the run-to-run noise
    compile: bool = True
    libraries: tuple[str, ...] = LIBRARIES
    models: tuple[str, ...] = MODELS
    skipped: dict[str, str] = field(default_factory=dict)


QUICK = {
    "repeats": 10,
    "warmup": 3,
    "gmm_steps": 200,
    "gmm_train": 5_000,
    "gmm_test": 2_000,
    "entropy_samples": 50_000,
    "digits_max_steps": 200,
    "seeds": 1,
}


@dataclass
class Row:
    library: str
    params: int
    timing: Timing
    gmm: Fit | None = None
    digits: Fit | None = None
    note: str = ""


def gmm_data(settings: Settings) -> tuple[dict[str, Tensor], float, float]:
    ds = ef.data.load(
        "gmm", dim=16, n_train=settings.gmm_train, n_val=1000, n_test=settings.gmm_test, seed=0
    )
    entropy = monte_carlo_entropy(ds.density, settings.entropy_samples)
    return {"train": ds.train, "val": ds.val, "test": ds.test}, entropy.value, entropy.error


def digits_data() -> tuple[dict[str, Tensor], float]:
    """Standardized digits and the log-Jacobian that maps NLLs back to pixel units."""
    ds = ef.data.load("digits")
    standardize = Standardize.fit(ds.train)
    data = {k: standardize(v) for k, v in ds.splits().items()}
    return data, float(standardize.log_det)


def seeded_build(library: str, model: str, features: int, seed: int) -> Model:
    torch.manual_seed(seed)
    return BUILDERS[library](model, features)


def compile_model(m: Model) -> Model:
    flow = m.module
    log_prob = torch.compile(flow.log_prob)
    sample = torch.compile(flow.sample)
    return Model(flow, log_prob, lambda n: sample((n,)), "torch.compile (inductor)")


def run_model(
    model: str,
    settings: Settings,
    gmm: tuple[dict[str, Tensor], float, float],
    digits: tuple[dict[str, Tensor], float],
) -> tuple[list[Row], Row, Row | None, list[Fit]]:
    gmm_splits, _, _ = gmm
    features = gmm_splits["train"].shape[-1]
    x = gmm_splits["train"][: settings.batch]
    rows = []
    for library in settings.libraries:
        print(f"[{model}] {library}: timing", file=sys.stderr, flush=True)
        m = seeded_build(library, model, features, settings.seed)
        row = Row(library, sum(p.numel() for p in m.module.parameters()), time_model(m, x, settings))
        row.note = m.note
        print(f"[{model}] {library}: fit gmm", file=sys.stderr, flush=True)
        m = seeded_build(library, model, features, settings.seed)
        row.gmm = train(m, gmm_splits, settings.gmm_steps, settings, early_stopping=False)
        print(f"[{model}] {library}: fit digits", file=sys.stderr, flush=True)
        m = seeded_build(library, model, digits[0]["train"].shape[-1], settings.seed)
        row.digits = train(m, digits[0], settings.digits_max_steps, settings, early_stopping=True)
        rows.append(row)
    bare_model = seeded_build("exactflow", model, features, 0)  # same RNG use as the flows
    bare_model = build_bare(model, features)
    bare = Row("bare", sum(p.numel() for p in bare_model.module.parameters()), Timing())
    bare.timing = time_model(bare_model, x, settings, sample=False)
    bare.note = bare_model.note
    compiled = None
    if settings.compile:
        print(f"[{model}] exactflow: compiling", file=sys.stderr, flush=True)
        m = seeded_build("exactflow", model, features, settings.seed)
        start = time.perf_counter()
        try:
            cm = compile_model(m)
            with torch.no_grad():
                cm.sample(settings.sample_size)
            cm.log_prob(x).mean().backward()
            seconds = time.perf_counter() - start
            compiled = Row("exactflow compiled", row_params(m), time_model(cm, x, settings))
            compiled.note = f"torch.compile, {seconds:.0f} s to compile"
        except Exception as error:  # report, do not hide: the row says what failed
            compiled = Row("exactflow compiled", row_params(m), Timing())
            compiled.note = f"torch.compile failed: {type(error).__name__}: {error}"[:200]
    reruns = []
    for seed in range(1, settings.seeds):
        print(f"[{model}] exactflow: gmm rerun, seed {seed}", file=sys.stderr, flush=True)
        rerun_settings = copy.replace(settings, seed=seed) if hasattr(copy, "replace") else None
        if rerun_settings is None:
            rerun_settings = copy.copy(settings)
            rerun_settings.seed = seed
        m = seeded_build("exactflow", model, features, seed)
        reruns.append(
            train(m, gmm_splits, settings.gmm_steps, rerun_settings, early_stopping=False)
        )
    return rows, bare, compiled, reruns


def row_params(m: Model) -> int:
    return sum(p.numel() for p in m.module.parameters())


# ---------------------------------------------------------------- the table


def fmt_rate(rate: float) -> str:
    return "—" if math.isnan(rate) else f"{rate / 1e3:,.1f}k"


def fmt_fit(f: Fit | None, offset: float = 0.0, gap: float | None = None) -> str:
    if f is None or math.isnan(f.nll):
        return "—"
    text = f"{f.nll + offset:.3f}"
    if gap is not None:
        text += f" ({f.nll - gap:.3f})"
    return text


def model_table(
    model: str,
    rows: list[Row],
    bare: Row,
    compiled: Row | None,
    entropy: float,
    digits_offset: float,
) -> list[str]:
    peers = [r for r in rows if r.library != "exactflow"]
    ours = next((r for r in rows if r.library == "exactflow"), None)
    fastest_step = min((r.timing.step_ms for r in peers), default=math.nan)
    best_lp = max((r.timing.log_prob_rate for r in peers), default=math.nan)
    best_sample = max((r.timing.sample_rate for r in peers), default=math.nan)
    lines = [
        f"### {model} ({STEPS[model]} steps"
        + (f", {BINS} bins" if model == "NSF" else "")
        + f", conditioners {HIDDEN}-{HIDDEN})",
        "",
        "| library | params | train step (ms) | vs fastest peer | vs bare | log_prob (rows/s)"
        " | vs best peer | sample (rows/s) | vs best peer | GMM test NLL (KL gap)"
        " | digits test NLL (best step) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [*rows, *( [compiled] if compiled else []), bare]:
        t = r.timing
        digits = (
            f"{fmt_fit(r.digits, digits_offset)} ({r.digits.best_step})" if r.digits else "—"
        )
        lines.append(
            f"| {r.library} | {r.params:,} | {t.step_ms:.2f} | {t.step_ms / fastest_step:.2f}×"
            f" | {t.step_ms / bare.timing.step_ms:.2f}× | {fmt_rate(t.log_prob_rate)}"
            f" | {t.log_prob_rate / best_lp:.2f}× | {fmt_rate(t.sample_rate)}"
            f" | {t.sample_rate / best_sample:.2f}× | {fmt_fit(r.gmm, 0.0, entropy)}"
            f" | {digits} |".replace("nan×", "—")
        )
    del ours
    return lines


def notes_table(all_rows: dict[str, list[Row]]) -> list[str]:
    lines = ["| model | library | architecture difference |", "|---|---|---|"]
    for model, rows in all_rows.items():
        for r in rows:
            if r.note:
                lines.append(f"| {model} | {r.library} | {r.note} |")
    return lines


def parse() -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke-test settings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args()
    settings = Settings(threads=args.threads, compile=not args.no_compile)
    if args.quick:
        for key, value in QUICK.items():
            setattr(settings, key, value)
    settings.models = tuple(args.models)
    libraries = []
    for library in args.libraries:
        if available(library):
            libraries.append(library)
        else:
            settings.skipped[library] = "not installed (pip install -e .[bench])"
    settings.libraries = tuple(libraries)
    settings.out = args.out  # type: ignore[attr-defined]
    settings.quick = args.quick  # type: ignore[attr-defined]
    return settings


def main() -> None:
    settings = parse()
    torch.set_num_threads(settings.threads)
    torch.set_default_dtype(torch.float32)
    started = time.perf_counter()
    gmm = gmm_data(settings)
    digits = digits_data()
    entropy, entropy_se = gmm[1], gmm[2]
    sections, all_rows, noise = [], {}, []
    for model in settings.models:
        rows, bare, compiled, reruns = run_model(model, settings, gmm, digits)
        all_rows[model] = rows
        sections += [*model_table(model, rows, bare, compiled, entropy, digits[1]), ""]
        ours = next((r for r in rows if r.library == "exactflow"), None)
        if ours and reruns:
            values = [ours.gmm.nll, *(f.nll for f in reruns)]
            noise.append(
                f"{model}: exactflow GMM test NLL over {len(values)} seeds"
                f" {', '.join(f'{v:.3f}' for v in values)}"
                f" (spread {max(values) - min(values):.3f} nats)"
            )
    minutes = (time.perf_counter() - started) / 60
    versions = ", ".join(f"{lib} {version(lib)}" for lib in settings.libraries)
    header = [
        "# exactflow against zuko, nflows and normflows",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()},"
        f" {settings.threads} threads (torch.set_num_threads), torch {torch.__version__},"
        f" {versions}; float32; {minutes:.1f} min in all"
        + (" (--quick settings)" if settings.quick else "")  # type: ignore[attr-defined]
        + ".",
        "",
        f"Timing: batch {settings.batch} for the train step (Adam, lr {settings.lr}) and"
        f" log_prob; {settings.sample_size} samples per draw; median of {settings.repeats}"
        f" repeats after {settings.warmup} warm-up calls. exactflow runs with its defaults"
        " (input validation on).",
        f"GMM: 16-D mixture of 8 Gaussians, {settings.gmm_train:,} training rows,"
        f" {settings.gmm_test:,} test rows, {settings.gmm_steps} Adam steps of batch"
        f" {settings.batch}; entropy H = {entropy:.3f} ± {entropy_se:.3f} nats (Monte Carlo),"
        " KL gap = test NLL - H in brackets.",
        f"Digits: bundled 8x8 digits (64-D, dequantized, standardized on the training split;"
        f" NLL in nats per image on the [0, 1) pixel scale), up to {settings.digits_max_steps}"
        f" steps, validation NLL every {settings.eval_every} steps, patience"
        f" {settings.patience}; test NLL at the best validation step (in brackets).",
        "",
    ]
    if settings.skipped:
        header += [f"Skipped: {', '.join(f'{k} ({v})' for k, v in settings.skipped.items())}", ""]
    footer = ["Run-to-run noise: " + "; ".join(noise) + "." if noise else "", ""]
    footer += ["Architecture differences the libraries impose:", "", *notes_table(all_rows), ""]
    text = "\n".join([*header, *sections, *footer])
    print(text)
    out: Path = settings.out  # type: ignore[attr-defined]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
