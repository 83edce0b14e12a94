"""Variational inference side by side: exactflow against normflows and Pyro.

Two comparisons, each run in one process with the same code for every library:

* **U1-U4** (Rezende & Mohamed 2015, 2-D): planar and radial flows of ``K`` steps on a fixed
  standard-normal base, exactflow's ``Planar``/``Radial`` presets against normflows'
  ``Planar``/``Radial`` layers in a ``NormalizingFlow`` trained with its ``reverse_kld``.
  normflows ships the four energies as ``normflows.distributions.prior`` classes, but with a
  different envelope and no normalizer, so **both libraries fit exactflow's targets**
  (``ef.targets.get("u1")``, ...): the same density, with a known ``log Z``.
* **Funnel (10-D) and banana (2-D)**: Pyro's ``AutoIAFNormal`` (``K`` affine autoregressive
  layers) and ``AutoNormalizingFlow`` with ``K`` "stable" (sigmoid-gated, Kingma et al. 2016)
  affine autoregressive layers, trained by ``Trace_ELBO`` (``num_particles`` = samples per step,
  vectorized), against exactflow's ``IAF`` with the same layers and hidden widths.

Every library goes through the same loop (Adam, the same learning rate, steps and samples per
step; the loss is each library's own: exactflow's ``ReverseKL``, normflows' ``reverse_kld``,
Pyro's ``Trace_ELBO().differentiable_loss``). After training, ``N`` fresh draws ``z ~ q`` with
their ``log q(z)`` give ``log w = log p̃(z) - log q(z)``: the ELBO (mean of ``log w``, with its
standard error), the importance-sampling ``log Ẑ`` (``exactflow.numerics.log_mean_exp_stats``)
and the **true** ``KL(q ‖ p) = log Z - ELBO``, ``log Z`` being the target's exact (or quadrature)
normalizer. Step times (forward, backward, Adam step) are medians over rounds that visit every
library in turn (``compare.time_models``), so ratios come from one run on the same load.

Run::

    python benchmarks/vi_compare.py            # full run; writes results/vi_compare.{md,json}
    python benchmarks/vi_compare.py --quick    # smoke run, under a minute
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from compare import Model, log, mean_sd, ratio, time_models
from compare import Settings as TimingSettings
from torch import Tensor, nn

import exactflow as ef
from exactflow.atomic import write_atomic

RESULTS = Path(__file__).parent / "results"
ENERGIES = ("u1", "u2", "u3", "u4")
FAMILIES = ("planar", "radial")
PYRO_TARGETS = ("funnel", "banana")
PYRO_LIBRARIES = ("exactflow IAF", "pyro AutoIAFNormal", "pyro AutoNormalizingFlow")

Draw = Callable[[int], tuple[Tensor, Tensor]]  # n -> (z (n, D), log q(z) (n,)), no gradient


@dataclass
class VI:
    """What the shared loop needs from a library: parameters, a loss and a sampler with log q."""

    module: nn.Module
    loss: Callable[[], Tensor]  # -ELBO estimate (per sample or already averaged), differentiable
    draw: Draw
    note: str = ""

    def as_model(self) -> Model:
        """The same object in ``compare.Model``'s shape, so ``compare.time_models`` can time it.

        Its ``log_prob`` ignores the batch and returns ``-loss``: the timed "train step" is then
        ``loss.mean()``, backward and ``Adam.step()``; "log_prob" is a loss without gradient and
        "sample" one draw.
        """
        return Model(self.module, lambda _x: -self.loss(), lambda n: self.draw(n)[0], self.note)


# ---------------------------------------------------------------- adapters


def exactflow_vi(flow: ef.Flow, target: ef.targets.Target, samples: int, note: str) -> VI:
    objective = ef.objectives.ReverseKL(target, samples=samples)
    objective.check_model(flow)
    return VI(flow, lambda: objective.loss(flow, None), lambda n: flow.sample_and_log_prob((n,)))


def build_exactflow(family: str, target: ef.targets.Target, s: Settings) -> VI:
    if family == "planar":
        flow = ef.flows.Planar(target.dim, transforms=s.flow_steps)
    elif family == "radial":
        flow = ef.flows.Radial(target.dim, transforms=s.flow_steps)
    else:
        flow = ef.flows.IAF(target.dim, transforms=s.iaf_steps, hidden=s.iaf_hidden)
    vi = exactflow_vi(flow, target, s.samples, "")
    vi.note = (
        "IAF: log-scale 3 tanh(a / 3); order reversed between steps" if family == "iaf" else ""
    )
    return vi


class _Target:
    """normflows asks its target for ``log_prob``; exactflow's targets are plain callables."""

    def __init__(self, target: ef.targets.Target) -> None:
        self.log_prob = target


def build_normflows(family: str, target: ef.targets.Target, s: Settings) -> VI:
    import normflows as nf

    layer = {"planar": nf.flows.Planar, "radial": nf.flows.Radial}[family]
    base = nf.distributions.DiagGaussian(target.dim, trainable=False)
    flow = nf.NormalizingFlow(
        base, [layer((target.dim,)) for _ in range(s.flow_steps)], _Target(target)
    )
    return VI(
        flow,
        lambda: flow.reverse_kld(s.samples),
        lambda n: flow.sample(n),
        "NormalizingFlow.reverse_kld (reparameterized); fixed N(0, I) base",
    )


def build_pyro(library: str, target: ef.targets.Target, s: Settings) -> VI:
    import pyro
    import pyro.distributions as dist
    from pyro.distributions.transforms import affine_autoregressive, iterated
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoIAFNormal, AutoNormalizingFlow

    dim = target.dim

    def model() -> None:
        # A standard-normal site whose density the factor swaps for the target's:
        # the model's log joint is log p̃(z) exactly.
        prior = dist.Normal(torch.zeros(dim), 1.0).to_event(1)
        z = pyro.sample("z", prior)
        pyro.factor("target", target(z) - prior.log_prob(z))

    pyro.clear_param_store()
    hidden = list(s.iaf_hidden)
    if library == "pyro AutoIAFNormal":
        guide = AutoIAFNormal(model, hidden_dim=hidden, num_transforms=s.iaf_steps)
        note = "AffineAutoregressive, log-scale clamped to [-5, 3]; random order per step"
    else:
        guide = AutoNormalizingFlow(
            model,
            lambda d: iterated(
                s.iaf_steps, affine_autoregressive, d, hidden_dims=hidden, stable=True
            ),
        )
        note = "AffineAutoregressive(stable=True): sigmoid-gated scale; random order per step"
    guide()  # builds the guide's parameters
    elbo = Trace_ELBO(num_particles=s.samples, vectorize_particles=True, max_plate_nesting=0)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        posterior = guide.get_posterior()
        z = posterior.rsample((n,))
        return z, posterior.log_prob(z)  # the transforms' caches make this one pass

    return VI(guide, lambda: elbo.differentiable_loss(model, guide), draw, note)


def build(library: str, family: str, target: ef.targets.Target, s: Settings, seed: int) -> VI:
    torch.manual_seed(seed)
    if library == "normflows":
        return build_normflows(family, target, s)
    if library.startswith("pyro"):
        import pyro

        pyro.set_rng_seed(seed)
        return build_pyro(library, target, s)
    return build_exactflow(family, target, s)


# ---------------------------------------------------------------- training and evaluation


@dataclass
class Fit:
    seed: int
    kl: float = math.nan  # log Z - ELBO
    elbo: float = math.nan
    elbo_stderr: float = math.nan
    log_z: float = math.nan  # importance-sampling estimate
    log_z_stderr: float = math.nan
    ess: float = math.nan
    seconds: float = math.nan
    diverged: bool = False


def train(vi: VI, steps: int, lr: float) -> bool:
    """Adam on the library's loss; ``False`` when it went non-finite."""
    optimizer = torch.optim.Adam(vi.module.parameters(), lr=lr)
    for step in range(steps):
        loss = vi.loss().mean()
        if step % 100 == 0 and not torch.isfinite(loss):
            return False
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return True


@torch.no_grad()
def evaluate(vi: VI, target: ef.targets.Target, n: int, fit: Fit, chunk: int = 10_000) -> None:
    """ELBO, ``log Ẑ`` and the true KL from ``n`` fresh draws of ``q`` (float64 weights)."""
    parts = []
    for start in range(0, n, chunk):
        z, log_q = vi.draw(min(chunk, n - start))
        parts.append(target(z).double() - log_q.double())
    log_w = torch.cat(parts)
    if not torch.isfinite(log_w).all():
        fit.diverged = True
        return
    log_z, stderr, ess = ef.numerics.log_mean_exp_stats(log_w)
    fit.elbo, fit.elbo_stderr = float(log_w.mean()), float(log_w.std() / math.sqrt(n))
    fit.log_z, fit.log_z_stderr, fit.ess = float(log_z), float(stderr), float(ess)
    fit.kl = target.log_normalizer - fit.elbo


@dataclass
class Row:
    target: str
    family: str
    library: str
    params: int
    note: str
    step_ms: float = math.nan
    fits: list[Fit] = field(default_factory=list)


def run_case(target_name: str, family: str, libraries: tuple[str, ...], s: Settings) -> list[Row]:
    target = ef.targets.get(target_name)
    models = {lib: build(lib, family, target, s, seed=0) for lib in libraries}
    log(f"[{target_name}, {family}] timing {', '.join(libraries)}")
    timing = TimingSettings(
        lr=s.lr, rounds=s.rounds, per_round=s.per_round, warmup=s.warmup, sample_size=s.samples
    )
    timings = time_models(
        {lib: vi.as_model() for lib, vi in models.items()},
        torch.empty(s.samples, target.dim),
        timing,
    )
    rows = []
    for lib, vi in models.items():
        params = sum(p.numel() for p in vi.module.parameters())
        row = Row(target_name, family, lib, params, vi.note, timings[lib].step_ms)
        for seed in range(s.seeds):
            log(f"[{target_name}, {family}] {lib}: seed {seed}")
            vi = build(lib, family, target, s, seed)
            fit = Fit(seed)
            start = time.perf_counter()
            fit.diverged = not train(vi, s.steps, s.lr)
            fit.seconds = time.perf_counter() - start
            if not fit.diverged:
                evaluate(vi, target, s.eval_samples, fit)
            row.fits.append(fit)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- settings


@dataclass
class Settings:
    threads: int = 1  # tiny models: a second thread only waits on a shared machine
    seeds: int = 3
    steps: int = 1000  # Adam steps per fit (U1-U4)
    pyro_steps: int = 1000  # Adam steps per fit (funnel, banana)
    samples: int = 256  # draws of q per step (Pyro: vectorized particles)
    lr: float = 5e-3  # U1-U4
    pyro_lr: float = 2e-3  # funnel, banana
    flow_steps: int = 16  # K planar / radial steps
    iaf_steps: int = 4
    iaf_hidden: tuple[int, ...] = (64, 64)
    eval_samples: int = 100_000
    rounds: int = 10
    per_round: int = 3
    warmup: int = 5
    quick: bool = False
    parts: tuple[str, ...] = ("energies", "pyro")
    energies: tuple[str, ...] = ENERGIES
    pyro_targets: tuple[str, ...] = PYRO_TARGETS
    skipped: dict[str, str] = field(default_factory=dict)


QUICK = {
    "seeds": 2,
    "steps": 50,
    "pyro_steps": 50,
    "energies": ("u2",),
    "pyro_targets": ("banana",),
    "eval_samples": 5_000,
    "rounds": 3,
    "warmup": 2,
    "per_round": 2,
}


# ---------------------------------------------------------------- the report


def ok(fits: list[Fit]) -> list[Fit]:
    return [f for f in fits if not f.diverged and not math.isnan(f.kl)]


def row_cells(row: Row, fastest: float, log_z: float, n: int) -> str:
    good = ok(row.fits)
    diverged = [str(f.seed) for f in row.fits if f.diverged]
    kl = mean_sd([f.kl for f in good])
    if diverged:
        kl += f" (diverged: seeds {', '.join(diverged)})"
    elbo_se = max((f.elbo_stderr for f in good), default=math.nan)
    ess = mean_sd([100 * f.ess / n for f in good], 1)
    return (
        f"| {row.library} | {row.params:,} | {kl} | {elbo_se:.4f}"
        f" | {mean_sd([f.log_z for f in good])} (true {log_z:.3f})"
        f" | {ess} | {row.step_ms:.2f} | {ratio(row.step_ms, fastest)} |"
    )


def verdict(rows: list[Row], ours: str) -> tuple[str, str]:
    """KL no worse than the best peer's (within the seed spread); step time ≤ 0.7x the fastest."""
    mine = next((r for r in rows if r.library == ours), None)
    peers = [r for r in rows if r.library != ours and ok(r.fits)]
    if mine is None or not peers or not ok(mine.fits):
        return "—", "—"
    kls = [f.kl for f in ok(mine.fits)]
    best = min(peers, key=lambda r: statistics.mean(f.kl for f in ok(r.fits)))
    theirs = [f.kl for f in ok(best.fits)]
    noise = max(
        statistics.stdev(kls) if len(kls) > 1 else 0.0,
        statistics.stdev(theirs) if len(theirs) > 1 else 0.0,
    )
    met = statistics.mean(kls) <= statistics.mean(theirs) + noise
    fastest = min(peers, key=lambda r: r.step_ms)
    speed = mine.step_ms / fastest.step_ms
    kl_text = (
        f"{statistics.mean(kls):.3f} vs {statistics.mean(theirs):.3f} ({best.library}),"
        f" sd {noise:.3f}: {'yes' if met else '**no**'}"
    )
    speed_text = f"{speed:.2f}x ({fastest.library}): {'yes' if speed <= 0.7 else '**no**'}"
    return kl_text, speed_text


def table(title: str, rows: list[Row], ours: str, n: int) -> list[str]:
    target = ef.targets.get(rows[0].target)
    peers = [r.step_ms for r in rows if r.library != ours]
    fastest = min(peers, default=math.nan)
    lines = [
        title,
        "",
        "| library | params | KL(q‖p) mean ± sd | ELBO s.e. | IS log Ẑ mean ± sd | ESS (of the"
        " draws) | step (ms) | vs fastest peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [row_cells(r, fastest, target.log_normalizer, n) for r in rows]
    kl_text, speed_text = verdict(rows, ours)
    lines += ["", f"KL no worse than the best peer's: {kl_text}. Step ≤ 0.7x: {speed_text}.", ""]
    return lines


def report(s: Settings, results: list[Row], minutes: float) -> str:
    versions = ", ".join(
        f"{lib} {importlib.metadata.version(lib)}" for lib in ("exactflow", "normflows", "pyro-ppl")
    )
    header = [
        "# Variational inference: exactflow against normflows and Pyro",
        "",
        f"Run of {datetime.datetime.now():%Y-%m-%d %H:%M}: {platform.machine()}, {s.threads}"
        f" torch thread(s) on a 2-core machine shared with other jobs, torch {torch.__version__},"
        f" {versions}; float32; {minutes:.1f} min in all"
        + (" (`--quick` settings)" if s.quick else "")
        + ".",
        "",
        f"- Budget: Adam (no schedule, no clipping), {s.samples} draws of q per step;"
        f" U1-U4: {s.steps} steps at lr {s.lr}, planar and radial flows of K ="
        f" {s.flow_steps} steps on a fixed N(0, I) base; funnel (10-D) and banana:"
        f" {s.pyro_steps} steps at lr {s.pyro_lr}, {s.iaf_steps} autoregressive layers with"
        f" hidden widths {list(s.iaf_hidden)}. Seeds 0 to"
        f" {s.seeds - 1} (initialization and draws).",
        "- Every library fits the same density: exactflow's target function (`ef.targets.get`),"
        " whose log Z is exact (U2-U4, funnel, banana) or a fine quadrature (U1). normflows ships"
        " U1-U4 as `normflows.distributions.prior` classes with another envelope and no"
        " normalizer; they are not used.",
        f"- **KL(q‖p) = log Z_true - ELBO**, the ELBO from {s.eval_samples:,} fresh draws of q"
        " (its standard error in the next column, the largest over the seeds); mean ± sd over"
        " the seeds. IS log Ẑ: the importance-sampling estimate from the same draws (biased low"
        " for a mode-seeking q). ESS: Kish's effective sample size in % of the draws.",
        f"- Step: median of forward + backward + Adam step over {s.rounds} rounds that time every"
        f" library in turn ({s.per_round} timed steps per library and round, after warm-up),"
        " seed-0 models. The machine's 2 cores were shared with other jobs, so absolute times"
        " are noisy; the ratios are measured side by side within one run.",
        "",
    ]
    if s.skipped:
        header += [f"Skipped: {', '.join(f'{k} ({v})' for k, v in s.skipped.items())}.", ""]
    sections: list[str] = []
    cases: dict[tuple[str, str], list[Row]] = {}
    for r in results:
        cases.setdefault((r.target, r.family), []).append(r)
    for (target, family), rows in cases.items():
        ours = "exactflow IAF" if family == "iaf" else "exactflow"
        name = ef.targets.get(target).description
        what = f"{family}, K = {s.flow_steps}" if family != "iaf" else "IAF vs Pyro guides"
        sections += table(f"### {target} ({name}): {what}", rows, ours, s.eval_samples)
    notes = ["Notes on each library:", ""]
    notes += sorted({f"- {r.library}: {r.note}" for r in results if r.note})
    seeds = ["", "KL of each seed (0, 1, ...):", ""]
    seeds += [
        f"- {r.target}, {r.family}, {r.library}: "
        + ", ".join("diverged" if f.diverged else f"{f.kl:.4f}" for f in r.fits)
        for r in results
    ]
    return "\n".join([*header, *sections, *notes, *seeds, ""])


def parse() -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget: a smoke run")
    parser.add_argument("--seeds", type=int, help="seeds per library (default 3)")
    parser.add_argument("--steps", type=int, help="Adam steps per fit (both parts)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--parts", nargs="+", choices=("energies", "pyro"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args()
    s = Settings(threads=args.threads, quick=args.quick)
    if args.quick:
        s = dataclasses.replace(s, **QUICK)
    if args.seeds is not None:
        s.seeds = args.seeds
    if args.steps is not None:
        s.steps = s.pyro_steps = args.steps
    if args.parts:
        s.parts = tuple(args.parts)
    return s, args.out


def main() -> None:
    s, out = parse()
    torch.set_num_threads(s.threads)
    started = time.perf_counter()
    results: list[Row] = []
    if "energies" in s.parts:
        try:
            import normflows  # noqa: F401

            libraries: tuple[str, ...] = ("exactflow", "normflows")
        except ImportError:
            s.skipped["normflows"] = "not installed"
            libraries = ("exactflow",)
        for target in s.energies:
            for family in FAMILIES:
                results += run_case(target, family, libraries, s)
    if "pyro" in s.parts:
        try:
            import pyro  # noqa: F401

            libraries = PYRO_LIBRARIES
        except ImportError:
            s.skipped["pyro-ppl"] = "not installed"
            libraries = PYRO_LIBRARIES[:1]
        pyro_settings = dataclasses.replace(s, steps=s.pyro_steps, lr=s.pyro_lr)
        for target in s.pyro_targets:
            results += run_case(target, "iaf", libraries, pyro_settings)
    text = report(s, results, (time.perf_counter() - started) / 60)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "vi_compare.md", lambda f: f.write(text), binary=False)
    payload = {
        "settings": dataclasses.asdict(s),
        "torch": torch.__version__,
        "rows": [dataclasses.asdict(r) for r in results],
    }
    write_atomic(out / "vi_compare.json", lambda f: json.dump(payload, f, indent=1), binary=False)
    log(f"written to {out / 'vi_compare.md'} and vi_compare.json")


if __name__ == "__main__":
    main()
