"""Speed and fit side by side: exactflow against zuko, nflows and normflows.

For each model every library builds the same architecture — MAF (5 affine autoregressive
steps), RealNVP (8 affine coupling steps), NSF (5 autoregressive rational-quadratic spline
steps, 8 bins on ``[-5, 5]``), every conditioner with two hidden layers of 128 units — and one
process measures each library in turn with the same code:

* **train step**: ``-log_prob(x).mean()``, backward and ``Adam.step()`` on a batch of 256;
* **log_prob**: rows per second of ``log_prob`` on batches of 256, without gradient;
* **sample**: rows per second of drawing 1024 samples, without gradient;
* **GMM test NLL** after a fixed number of Adam steps on a 16-D Gaussian mixture with a known
  density, and the KL gap ``test NLL - entropy`` (entropy by Monte Carlo);
* **digits test NLL**: the bundled 8x8 digits are small enough that a fixed step count
  overfits every library, so each trains with the same validation-based early stopping and
  the table gives the test NLL at the best validation point.

The **bare** row times the same conditioner networks (plain ``nn.Linear`` stacks of the same
sizes, one per step, all fed the batch) through forward, backward and the Adam step with no
flow arithmetic: the floor a flow's training step can approach. The **compiled** row runs
exactflow's ``log_prob`` (training and density), ``sample`` and, in the training step, the Adam
update through ``torch.compile`` (CPU inductor), as ``exactflow fit --compile`` does; the bare
row stays eager. exactflow runs with its defaults, input validation included.

Every library goes through the same minimal loop below (same batches, optimizer, learning
rate, steps and early stopping); only the adapters in :data:`BUILDERS` differ. Timings are
medians of repeated ``time.perf_counter`` measurements after warm-up calls.

Install and run (from a clean clone)::

    pip install -e ".[bench]"
    python benchmarks/compare.py            # full run, ~15 min; writes results/compare.md
    python benchmarks/compare.py --quick    # smoke run, a few minutes
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import importlib.metadata
import math
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
from exactflow.train.compiled import tensor_lr

RESULTS = Path(__file__).parent / "results" / "compare.md"
LIBRARIES = ("exactflow", "zuko", "nflows", "normflows")
PEERS = LIBRARIES[1:]
MODELS = ("MAF", "RealNVP", "NSF")
HIDDEN = 128
STEPS = {"MAF": 5, "RealNVP": 8, "NSF": 5}  # flow steps (transforms) per model
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
    compiled_update: bool = False  # the Adam update under torch.compile, as `fit --compile` runs it

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def build_exactflow(model: str, features: int) -> Model:
    hidden, steps = (HIDDEN, HIDDEN), STEPS[model]
    if model == "MAF":
        flow = ef.flows.MAF(features, transforms=steps, hidden=hidden)
    elif model == "RealNVP":
        flow = ef.flows.RealNVP(features, transforms=steps, hidden=hidden)
    else:
        flow = ef.flows.NSF(features, transforms=steps, hidden=hidden, bins=BINS, bound=BOUND)
    note = {
        "MAF": "log-scale 3 tanh(a / 3); order reversed between steps",
        "RealNVP": "log-scale 3 tanh(a / 3); alternating masks",
        "NSF": "linear tails; order reversed between steps",
    }[model]
    return Model(flow, flow.log_prob, lambda n: flow.sample((n,)), note)


def build_zuko(model: str, features: int) -> Model:
    import zuko

    hidden, steps = (HIDDEN, HIDDEN), STEPS[model]
    if model == "MAF":
        flow = zuko.flows.MAF(features, transforms=steps, hidden_features=hidden)
    elif model == "RealNVP":
        flow = zuko.flows.RealNVP(features, transforms=steps, hidden_features=hidden)
    else:
        flow = zuko.flows.NSF(features, transforms=steps, bins=BINS, hidden_features=hidden)
    note = {
        "MAF": "log-scale a / (1 + abs(a / log 1e-3)); order reversed between steps",
        "RealNVP": "log-scale a / (1 + abs(a / log 1e-3)); alternating masks",
        "NSF": "splines on [-5, 5], identity outside; order reversed between steps",
    }[model]
    # zuko builds the distribution from its module on every call, as its users do.
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)), note)


class _IgnoreContext(nn.Module):
    """nflows' coupling layers pass a context to their network; its plain MLP takes none."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def plain_spline_made(layer: type[nn.Module], features: int) -> nn.Module:
    """nflows' autoregressive spline layer (normflows ships a copy) with the plain MADE."""
    return layer(
        features,
        HIDDEN,
        num_bins=BINS,
        tails="linear",
        tail_bound=BOUND,
        num_blocks=1,
        use_residual_blocks=False,
    )


def build_nflows(model: str, features: int) -> Model:
    from nflows import distributions, flows, transforms
    from nflows.nn.nets import MLP
    from nflows.utils import torchutils

    def coupling_net(n_in: int, n_out: int) -> nn.Module:
        return _IgnoreContext(MLP((n_in,), (n_out,), [HIDDEN, HIDDEN]))

    steps: list[nn.Module] = []
    for k in range(STEPS[model]):
        if model == "RealNVP":
            mask = torchutils.create_alternating_binary_mask(features, even=k % 2 == 0)
            steps.append(transforms.AffineCouplingTransform(mask, coupling_net))
            continue
        if k:
            steps.append(transforms.ReversePermutation(features))
        if model == "MAF":
            layer = transforms.MaskedAffineAutoregressiveTransform(
                features, HIDDEN, num_blocks=1, use_residual_blocks=False
            )
        else:
            layer = plain_spline_made(
                transforms.MaskedPiecewiseRationalQuadraticAutoregressiveTransform, features
            )
        steps.append(layer)
    base = distributions.StandardNormal([features])
    flow = flows.Flow(transforms.CompositeTransform(steps), base)
    note = {
        "MAF": "scale sigmoid(a + 2) + 1e-3; order reversed between steps",
        "RealNVP": "scale sigmoid(a + 2) + 1e-3; alternating masks",
        "NSF": "linear tails; order reversed between steps",
    }[model]
    return Model(flow, flow.log_prob, flow.sample, note)


def build_normflows(model: str, features: int) -> Model:
    import normflows as nf
    from normflows.flows.neural_spline.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressive,
    )

    steps: list[nn.Module] = []  # data -> base order, reversed below
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
            # The wrapper always uses residual blocks; put in the plain two-layer MADE.
            layer.mprqat = plain_spline_made(
                MaskedPiecewiseRationalQuadraticAutoregressive, features
            )
            steps.append(layer)
    # normflows' steps run base -> data, in list order.
    base = nf.distributions.DiagGaussian(features, trainable=False)
    flow = nf.NormalizingFlow(base, steps[::-1])
    note = {
        "MAF": "scale sigmoid(a + 2) + 1e-3; no ReLU after the MADE's first layer;"
        " halves swapped between steps",
        "RealNVP": "log-scale unbounded; checkerboard masks",
        "NSF": "no ReLU after the MADE's first layer; halves swapped between steps",
    }[model]
    return Model(flow, flow.log_prob, lambda n: flow.sample(n)[0], note)


BUILDERS: dict[str, Callable[[str, int], Model]] = {
    "exactflow": build_exactflow,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
}


def build(library: str, model: str, features: int, seed: int) -> Model:
    torch.manual_seed(seed)
    return BUILDERS[library](model, features)


def conditioner_sizes(model: str, features: int) -> list[tuple[int, int]]:
    """``(inputs, outputs)`` of each conditioner network of ``model``."""
    if model == "RealNVP":
        half = features // 2
        return [(features - half, 2 * half)] * STEPS[model]
    per_feature = 2 if model == "MAF" else 3 * BINS - 1
    return [(features, per_feature * features)] * STEPS[model]


def build_bare(model: str, features: int) -> Model:
    """The conditioners alone: one plain MLP per step, all fed the batch, outputs averaged."""
    torch.manual_seed(0)
    nets = nn.ModuleList(
        nn.Sequential(
            nn.Linear(n_in, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, n_out),
        )
        for n_in, n_out in conditioner_sizes(model, features)
    )

    def score(x: Tensor) -> Tensor:
        return sum(net(x[..., : net[0].in_features]).mean(-1) for net in nets)

    def no_sampler(n: int) -> Tensor:
        raise NotImplementedError("the bare row has no sampler")

    return Model(nets, score, no_sampler, "plain nn.Linear stacks of the same sizes")


def compiled(m: Model) -> Model:
    """exactflow's ``log_prob``, ``sample`` and Adam update through ``torch.compile``.

    The training step is the one ``exactflow fit --compile`` runs: the loss compiled (its
    backward through AOTAutograd) and the optimizer's update compiled with a tensor learning
    rate (:mod:`exactflow.train.compiled`).
    """
    flow = m.module
    log_prob = torch.compile(flow.log_prob, dynamic=False)
    sample = torch.compile(flow.sample)
    return Model(flow, log_prob, lambda n: sample((n,)), "torch.compile (inductor)", True)


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


def time_models(models: dict[str, Model], x: Tensor, settings: Settings) -> dict[str, Timing]:
    """Median times of every model's train step, ``log_prob`` and sampling.

    Measured in rounds that visit every model in turn, so that a burst of load from
    elsewhere on the machine falls on all of them alike rather than on one.
    """
    calls: dict[str, dict[str, Callable[[], None]]] = {}
    for name, m in models.items():
        optimizer = torch.optim.Adam(m.module.parameters(), lr=settings.lr)
        update = optimizer.step
        if m.compiled_update:
            tensor_lr(optimizer, x.device)
            update = torch.compile(optimizer.step, dynamic=False)

        def step(m: Model = m, optimizer: torch.optim.Optimizer = optimizer, update=update) -> None:
            loss = -m.log_prob(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            update()

        @torch.no_grad()
        def density(m: Model = m) -> None:
            m.log_prob(x)

        @torch.no_grad()
        def draw(m: Model = m) -> None:
            m.sample(settings.sample_size)

        calls[name] = {"step": step, "density": density}
        if name != "bare":
            calls[name]["draw"] = draw
    times: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    for name, fns in calls.items():
        for what, fn in fns.items():
            for _ in range(1 if what == "draw" else settings.warmup):
                fn()
            times[name][what] = []
    for _ in range(settings.rounds):
        for name, fns in calls.items():
            for what, fn in fns.items():
                if what != "draw":
                    fn()  # untimed: the first call after another model's runs on cold caches
                for _ in range(1 if what == "draw" else settings.per_round):
                    start = time.perf_counter()
                    fn()
                    times[name][what].append(time.perf_counter() - start)
    timings = {}
    for name, measured in times.items():
        median = {what: statistics.median(values) for what, values in measured.items()}
        timings[name] = Timing(
            step_ms=1e3 * median["step"],
            log_prob_rate=len(x) / median["density"],
            sample_rate=settings.sample_size / median["draw"] if "draw" in median else math.nan,
        )
    return timings


# ---------------------------------------------------------------- the shared training loop


@dataclass
class Fit:
    nll: float = math.nan  # mean test NLL (nats)
    nll_se: float = math.nan
    steps: int = 0  # steps run
    best_step: int = 0  # step of the reported weights
    seconds: float = 0.0
    diverged: bool = False


@torch.no_grad()
def nll(m: Model, x: Tensor, chunk: int = 2048) -> Tensor:
    """``-log q(x)`` per row (float64), in chunks."""
    return torch.cat([-m.log_prob(x[i : i + chunk]).double() for i in range(0, len(x), chunk)])


def batches(n: int, batch: int, seed: int) -> Callable[[], Tensor]:
    """Endless row indices, reshuffled every epoch; the same sequence for every library."""
    generator = torch.Generator().manual_seed(seed)
    order, at = torch.randperm(n, generator=generator), 0

    def next_batch() -> Tensor:
        nonlocal order, at
        if at + batch > n:
            order, at = torch.randperm(n, generator=generator), 0
        at += batch
        return order[at - batch : at]

    return next_batch


def train(
    m: Model, data: dict[str, Tensor], steps: int, settings: Settings, early_stopping: bool
) -> Fit:
    """Adam on ``-log_prob`` for ``steps`` steps, or until validation stops improving."""
    optimizer = torch.optim.Adam(m.module.parameters(), lr=settings.lr)
    next_rows = batches(len(data["train"]), settings.batch, settings.seed)
    best, best_state, bad = math.inf, None, 0
    fit = Fit(best_step=steps)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = -m.log_prob(data["train"][next_rows()]).mean()
        if not torch.isfinite(loss):
            fit.diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        fit.steps = step
        if early_stopping and step % settings.eval_every == 0:
            val = float(nll(m, data["val"]).mean())
            if val < best:
                best, fit.best_step, bad = val, step, 0
                best_state = copy.deepcopy(m.module.state_dict())
            else:
                bad += 1
                if bad >= settings.patience:
                    break
    fit.seconds = time.perf_counter() - start
    if best_state is not None:
        m.module.load_state_dict(best_state)
    elif early_stopping or fit.diverged:
        return fit
    values = nll(m, data["test"])
    fit.nll = float(values.mean())
    fit.nll_se = float(values.std() / math.sqrt(len(values)))
    return fit


# ---------------------------------------------------------------- settings and the run


@dataclass
class Settings:
    threads: int = 2
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0
    sample_size: int = 1024
    rounds: int = 10  # timing rounds over all the models
    per_round: int = 3  # train steps and log_prob calls per model and round (one draw)
    warmup: int = 5
    gmm_steps: int = 2000
    gmm_train: int = 50_000
    gmm_test: int = 20_000
    entropy_samples: int = 500_000
    digits_max_steps: int = 2000
    eval_every: int = 10
    patience: int = 40
    seeds: int = 3  # every library is trained with seeds 0 .. seeds - 1 (run-to-run noise)
    compile: bool = True
    fit: bool = True
    quick: bool = False
    libraries: tuple[str, ...] = LIBRARIES
    models: tuple[str, ...] = MODELS
    skipped: dict[str, str] = field(default_factory=dict)


QUICK = {
    "rounds": 4,
    "warmup": 2,
    "gmm_steps": 200,
    "gmm_train": 5_000,
    "gmm_test": 2_000,
    "entropy_samples": 50_000,
    "digits_max_steps": 200,
    "patience": 10,
    "seeds": 2,
}


@dataclass
class Row:
    library: str
    params: int
    timing: Timing
    gmm: list[Fit] = field(default_factory=list)  # one per seed
    digits: list[Fit] = field(default_factory=list)
    note: str = ""


@dataclass
class Data:
    gmm: dict[str, Tensor]
    entropy: float
    entropy_se: float
    digits: dict[str, Tensor]
    digits_offset: float  # added to a standardized-digits NLL to give it in pixel units


def load_data(settings: Settings) -> Data:
    ds = ef.data.load(
        "gmm", dim=16, n_train=settings.gmm_train, n_val=1000, n_test=settings.gmm_test, seed=0
    )
    entropy = monte_carlo_entropy(ds.density, settings.entropy_samples)
    digits = ef.data.load("digits")
    standardize = Standardize.fit(digits.train)
    return Data(
        gmm={"train": ds.train, "val": ds.val, "test": ds.test},
        entropy=entropy.value,
        entropy_se=entropy.error,
        digits={k: standardize(v) for k, v in digits.splits().items()},
        # log p(pixels) = log p(standardized) + log|det| of the standardization.
        digits_offset=-float(standardize.log_det),
    )


_START = time.perf_counter()


def log(message: str) -> None:
    print(f"{time.perf_counter() - _START:7.1f} s  {message}", file=sys.stderr, flush=True)


def run_model(model: str, settings: Settings, data: Data) -> list[Row]:
    features = data.gmm["train"].shape[-1]
    x = data.gmm["train"][: settings.batch]
    models = {lib: build(lib, model, features, settings.seed) for lib in settings.libraries}
    notes = {name: m.note for name, m in models.items()}
    if settings.compile and "exactflow" in settings.libraries:
        name = "exactflow, compiled"
        log(f"[{model}] exactflow: torch.compile")
        m = compiled(build("exactflow", model, features, settings.seed))
        try:
            start = time.perf_counter()
            m.log_prob(x).mean().backward()
            with torch.no_grad():
                m.log_prob(x)
                m.sample(settings.sample_size)
            models[name] = m
            notes[name] = (
                f"torch.compile of log_prob, sample and the Adam update (as `fit --compile`);"
                f" {time.perf_counter() - start:.0f} s to compile"
            )
        except Exception as error:  # the report says what failed
            notes[name] = f"torch.compile failed: {type(error).__name__}: {error}"[:300]
    models["bare"] = build_bare(model, features)
    notes["bare"] = models["bare"].note
    log(f"[{model}] timing {', '.join(models)}")
    timings = time_models(models, x, settings)
    rows = [
        Row(name, models[name].params if name in models else 0, timings.get(name, Timing()))
        for name in notes
    ]
    for row in rows:
        row.note = notes[row.library]
        if row.library not in settings.libraries or not settings.fit:
            continue
        for seed in range(settings.seeds):
            run = dataclasses.replace(settings, seed=seed)
            log(f"[{model}] {row.library}: GMM, seed {seed}")
            m = build(row.library, model, features, seed)
            row.gmm.append(train(m, data.gmm, settings.gmm_steps, run, early_stopping=False))
            log(f"[{model}] {row.library}: digits, seed {seed}")
            m = build(row.library, model, data.digits["train"].shape[-1], seed)
            row.digits.append(
                train(m, data.digits, settings.digits_max_steps, run, early_stopping=True)
            )
    return rows


# ---------------------------------------------------------------- the report


def mean_sd(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` of ``values`` (one value alone; a dash for none)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "—" if math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def nlls(results: list[Fit]) -> list[float]:
    """Test NLL of every seed that trained without diverging."""
    return [f.nll for f in results if not f.diverged and not math.isnan(f.nll)]


def spread(values: list[float]) -> float:
    return max(values) - min(values) if len(values) > 1 else 0.0


def fits(results: list[Fit], offset: float = 0.0, entropy: float | None = None) -> str:
    """Mean test NLL over the seeds, with the KL gap or the best steps in brackets."""
    if not results:
        return "—"
    values = nlls(results)
    diverged = [str(i) for i, f in enumerate(results) if f.diverged]
    if not values:
        return f"diverged (seeds {', '.join(diverged)})"
    mean = statistics.mean(values)
    text = f"{mean + offset:.3f}"
    if entropy is not None:
        text += f" ({mean - entropy:.3f})"
    else:
        text += f" (steps {'/'.join(str(f.best_step) for f in results if not f.diverged)})"
    if diverged:
        text += f"; diverged: seeds {', '.join(diverged)}"
    return text


# Largest train step over the bare row's: affine flows, splines; compiled, every model.
BARE_LIMITS = {"MAF": 1.15, "RealNVP": 1.15, "NSF": 1.6}
COMPILED_LIMIT = 1.1


@dataclass
class Verdict:
    target: str
    value: str
    met: bool


def verdicts(model: str, rows: list[Row], data: Data) -> list[Verdict]:
    by_name = {r.library: r for r in rows}
    ours, bare = by_name.get("exactflow"), by_name.get("bare")
    peers = [r for r in rows if r.library in PEERS]
    if ours is None or not peers:
        return []
    t = ours.timing
    fastest = min(peers, key=lambda r: r.timing.step_ms)
    best_lp = max(peers, key=lambda r: r.timing.log_prob_rate)
    best_sample = max(peers, key=lambda r: r.timing.sample_rate)
    out = [
        Verdict(
            "train step ≤ 0.6x the fastest peer's",
            f"{t.step_ms / fastest.timing.step_ms:.2f}x ({fastest.library})",
            t.step_ms <= 0.6 * fastest.timing.step_ms,
        ),
        Verdict(
            "log_prob throughput ≥ 1.5x the best peer's",
            f"{t.log_prob_rate / best_lp.timing.log_prob_rate:.2f}x ({best_lp.library})",
            t.log_prob_rate >= 1.5 * best_lp.timing.log_prob_rate,
        ),
        Verdict(
            "sampling throughput ≥ 2x the best peer's",
            f"{t.sample_rate / best_sample.timing.sample_rate:.2f}x ({best_sample.library})",
            t.sample_rate >= 2 * best_sample.timing.sample_rate,
        ),
    ]
    if bare is not None:
        limit = BARE_LIMITS[model]
        out.append(
            Verdict(
                f"train step ≤ {limit}x the bare row's (eager)",
                f"{t.step_ms / bare.timing.step_ms:.2f}x",
                t.step_ms <= limit * bare.timing.step_ms,
            )
        )
        if (compiled_row := by_name.get("exactflow, compiled")) is not None:
            ms = compiled_row.timing.step_ms
            out.append(
                Verdict(
                    f"compiled train step ≤ {COMPILED_LIMIT}x the bare row's (eager)",
                    f"{ms / bare.timing.step_ms:.2f}x",
                    ms <= COMPILED_LIMIT * bare.timing.step_ms,
                )
            )
    for name, key, offset in (("GMM", "gmm", 0.0), ("digits", "digits", data.digits_offset)):
        mine = nlls(getattr(ours, key))
        theirs = [(statistics.mean(v), r.library, v) for r in peers if (v := nlls(getattr(r, key)))]
        if not mine or not theirs:
            continue
        best, who, values = min(theirs)
        mean = statistics.mean(mine)
        noise = max(spread(mine), spread(values))
        out.append(
            Verdict(
                f"{name} test NLL no worse than the best peer's (means over seeds ± seed spread)",
                f"{mean + offset:.3f} vs {best + offset:.3f} ({who}) over"
                f" {len(mine)} / {len(values)} seeds; spread {spread(mine):.3f} (exactflow),"
                f" {spread(values):.3f} ({who})",
                mean <= best + max(noise, 1e-12),
            )
        )
    return out


def model_table(model: str, rows: list[Row], data: Data) -> list[str]:
    peers = [r for r in rows if r.library in PEERS]
    bare = next((r for r in rows if r.library == "bare"), None)
    fastest = min((r.timing.step_ms for r in peers), default=math.nan)
    best_lp = max((r.timing.log_prob_rate for r in peers), default=math.nan)
    best_sample = max((r.timing.sample_rate for r in peers), default=math.nan)
    bare_ms = bare.timing.step_ms if bare else math.nan
    title = f"### {model}: {STEPS[model]} steps" + (f", {BINS} bins" if model == "NSF" else "")
    lines = [
        title + f", conditioners {HIDDEN}-{HIDDEN}",
        "",
        "| library | params | train step (ms) | vs fastest peer | vs bare | log_prob (rows/s)"
        " | vs best peer | sample (rows/s) | vs best peer | GMM test NLL (KL gap)"
        " | digits test NLL (best step) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r.timing
        lines.append(
            f"| {r.library} | {r.params:,} | {t.step_ms:.2f} | {ratio(t.step_ms, fastest)}"
            f" | {ratio(t.step_ms, bare_ms)} | {rate(t.log_prob_rate)}"
            f" | {ratio(t.log_prob_rate, best_lp)} | {rate(t.sample_rate)}"
            f" | {ratio(t.sample_rate, best_sample)} | {fits(r.gmm, 0.0, data.entropy)}"
            f" | {fits(r.digits, data.digits_offset)} |"
        )
    checks = verdicts(model, rows, data)
    if checks:
        lines += ["", "| target | exactflow | met |", "|---|---|---|"]
        lines += [f"| {v.target} | {v.value} | {'yes' if v.met else '**no**'} |" for v in checks]
    return lines


def notes_table(results: dict[str, list[Row]]) -> list[str]:
    lines = ["| model | library | notes |", "|---|---|---|"]
    for model, rows in results.items():
        lines += [f"| {model} | {r.library} | {r.note} |" for r in rows if r.note]
    return lines


def report(settings: Settings, data: Data, results: dict[str, list[Row]], minutes: float) -> str:
    versions = ", ".join(
        f"{lib} {ef.__version__ if lib == 'exactflow' else importlib.metadata.version(lib)}"
        for lib in settings.libraries
    )
    header = [
        "# exactflow against zuko, nflows and normflows",
        "",
        f"Run of {datetime.datetime.now():%Y-%m-%d %H:%M}: {platform.machine()},"
        f" {settings.threads} threads, torch {torch.__version__}, {versions}; float32;"
        f" {minutes:.1f} min in all" + (" (`--quick` settings)" if settings.quick else "") + ".",
        "",
        f"- Timing: batch {settings.batch} for the train step (Adam, lr {settings.lr}) and"
        f" log_prob, {settings.sample_size} samples per draw; medians over {settings.rounds}"
        f" rounds that time every library in turn (per round and library: one untimed call,"
        f" then {settings.per_round} timed calls; one draw for sampling), after warm-up."
        " exactflow runs with its defaults, input validation included.",
        f"- GMM: 16-D mixture of 8 Gaussians, {settings.gmm_train:,} training and"
        f" {settings.gmm_test:,} test rows, {settings.gmm_steps} Adam steps; entropy"
        f" {data.entropy:.3f} ± {data.entropy_se:.3f} nats (Monte Carlo,"
        f" {settings.entropy_samples:,} draws); KL gap = test NLL - entropy, in brackets.",
        "- Digits: the bundled 8x8 digits (64-D, 1257/270/270 rows), standardized on the"
        " training split; test NLL in nats per image on the [0, 1) pixel scale, at the best"
        f" validation NLL (evaluated every {settings.eval_every} steps, patience"
        f" {settings.patience} evaluations, at most {settings.digits_max_steps} steps).",
        f"- Test NLL: every library is trained with seeds 0 to {settings.seeds - 1} (a seed"
        " sets the initialization and the batch order); the tables give means over the seeds,"
        " and exactflow counts as no worse when its mean is within the larger of the two seed"
        " spreads (exactflow's, the best peer's) of the best peer's mean.",
        "- Ratios compare exactflow rows with the best peer (zuko, nflows, normflows); the"
        " bare row is the conditioners alone.",
        "",
    ]
    if settings.skipped:
        skipped = ", ".join(f"{k} ({v})" for k, v in settings.skipped.items())
        header += [f"Skipped: {skipped}.", ""]
    sections = []
    for model, rows in results.items():
        sections += [*model_table(model, rows, data), ""]
    noise = []
    for model, rows in results.items():
        for r in rows:
            if len(r.gmm) > 1:
                gmm = ", ".join(f"{f.nll:.3f}" for f in r.gmm)
                digits = ", ".join(f"{f.nll + data.digits_offset:.3f}" for f in r.digits)
                noise.append(f"{model}, {r.library}: GMM {gmm}; digits {digits}")
    footer = []
    if noise:
        footer += ["Test NLL of each seed (0, 1, ...):", "", *(f"- {n}" for n in noise), ""]
    footer += ["Notes on each library's architecture:", "", *notes_table(results), ""]
    return "\n".join([*header, *sections, *footer])


def parse() -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke-test settings")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-fit", action="store_true", help="timings only, no training")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args()
    settings = Settings(
        threads=args.threads, compile=not args.no_compile, fit=not args.no_fit, quick=args.quick
    )
    if args.quick:
        settings = dataclasses.replace(settings, **QUICK)
    settings.models = tuple(args.models)
    libraries = []
    for library in args.libraries:
        try:
            __import__(library)
            libraries.append(library)
        except ImportError:
            settings.skipped[library] = 'not installed: pip install -e ".[bench]"'
    settings.libraries = tuple(libraries)
    return settings, args.out


def main() -> None:
    settings, out = parse()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    data = load_data(settings)
    results = {model: run_model(model, settings, data) for model in settings.models}
    text = report(settings, data, results, (time.perf_counter() - started) / 60)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
