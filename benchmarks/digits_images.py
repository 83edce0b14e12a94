"""The bundled 8x8 digits as 1x8x8 images: Glow and the multi-scale RealNVP beside the vector flows.

Four flows fit the same data, the 1797 UCI digits (pixels 0..16, 17 levels) split 1257 / 270 /
270 by ``ef.data.load_digits(seed=0)``:

* **Glow** and the multi-scale **RealNVP** see each digit as a 1x8x8 image (small settings: see
  :data:`MODELS`);
* the vector **MAF** and **NSF** see it as 64 numbers, with the main job's settings
  (``scripts/main.sh``: 5 transforms, hidden 128,128, 8 spline bins), behind the frozen
  standardization ``exactflow fit`` puts in front of vector flows (``log_prob`` stays in pixel
  units); the image flows take the pixels in ``[0, 1)`` through their logit.

Every model is trained by ``exactflow.train.fit`` with the main job's training settings (Adam,
lr 1e-3 with the cosine schedule, batch 256, gradient norm clipped at 5, at most 300 epochs,
early stopping with patience 15 on the validation NLL, the best epoch kept), on the same
training pixels with fresh uniform noise in every batch (``ef.data.UniformDequantization``),
validated and tested on the splits ``load_digits`` dequantizes once. The table gives test
bits/dim on the 17-level scale, ``(nll + 64 log 17)/(64 log 2)``, the epochs run and the
training time (2 torch threads).

Run::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/digits_images.py            # under 15 minutes
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/digits_images.py --quick    # a smoke run

Writes ``results/digits_images.md`` and ``results/digits_images.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import exactflow as ef
from exactflow.atomic import write_atomic
from exactflow.train import TrainConfig, fit

RESULTS = Path(__file__).parent / "results"
LEVELS = 17
SHAPE = (1, 8, 8)

#: name -> (constructor, whether it takes images, the settings in words)
MODELS: dict[str, tuple[Callable[[], ef.Flow], bool, str]] = {
    "Glow": (
        lambda: ef.flows.Glow(shape=SHAPE, levels=2, steps=4, hidden=64),
        True,
        "levels 2, steps 4, hidden 64 channels, affine couplings, learned priors",
    ),
    "RealNVP (images)": (
        lambda: ef.flows.RealNVP(shape=SHAPE, levels=2, steps=2, hidden=(64, 64)),
        True,
        "levels 2, steps 2, conditioners of 2 residual blocks of 64 channels",
    ),
    "MAF": (
        lambda: ef.flows.MAF(features=64, transforms=5, hidden=(128, 128)),
        False,
        "transforms 5, hidden 128,128 (the main job's)",
    ),
    "NSF": (
        lambda: ef.flows.NSF(features=64, transforms=5, hidden=(128, 128), bins=8),
        False,
        "transforms 5, hidden 128,128, 8 bins (the main job's)",
    ),
}


@dataclass
class Settings:
    threads: int = 2
    seeds: int = 1
    epochs: int = 300
    patience: int = 15
    lr: float = 1e-3
    batch: int = 256
    quick: bool = False
    models: tuple[str, ...] = tuple(MODELS)


QUICK = {"epochs": 5, "patience": 3}


@dataclass
class Fit:
    bpd: float
    bpd_se: float
    epochs: int
    best_epoch: int
    seconds: float
    params: int


def fit_one(name: str, seed: int, settings: Settings) -> Fit:
    """Train model ``name`` with training seed ``seed``; its test bits/dim."""
    build, image, _ = MODELS[name]
    raw = ef.data.load_digits(seed=0, image=True, dequantize_pixels=False)
    fixed = ef.data.dequantized(raw, 0)  # the validation and test splits load_digits gives
    pixels = ef.data.integer_pixels(raw.train, LEVELS)
    val, test = fixed.val, fixed.test
    if not image:
        pixels, val, test = pixels.flatten(1), val.flatten(1), test.flatten(1)
    source = ef.data.UniformDequantization(pixels, LEVELS, settings.batch, seed=seed)
    config = TrainConfig(
        lr=settings.lr,
        epochs=settings.epochs,
        batch_size=settings.batch,
        patience=settings.patience,
        seed=seed,
        tensorboard=False,
    )
    torch.manual_seed(seed)
    flow = build()
    if not image:  # as `exactflow fit` does for vectors (there from the training tensor)
        flow = ef.data.Standardize.fit(fixed.train.flatten(1)).prepend(flow)
    start = time.perf_counter()
    result = fit(flow, ef.objectives.NLL(), source, config, val=val, progress=False)
    seconds = time.perf_counter() - start
    nll, se = ef.metrics.nll(result.model, test)
    dims = math.prod(SHAPE)
    return Fit(
        bpd=float(ef.data.bits_per_dim(nll, dims, LEVELS)),
        bpd_se=se / (dims * math.log(2)),
        epochs=len(result.history),
        best_epoch=result.best_epoch,
        seconds=seconds,
        params=sum(p.numel() for p in flow.parameters()),
    )


_START = time.perf_counter()


def log(message: str) -> None:
    print(f"{time.perf_counter() - _START:7.1f} s  {message}", file=sys.stderr, flush=True)


def report(settings: Settings, fits: dict[str, list[Fit]], minutes: float) -> str:
    lines = [
        "# 8x8 digits as images: Glow and multi-scale RealNVP beside the vector MAF and NSF",
        "",
        f"Run of {datetime.datetime.now():%Y-%m-%d %H:%M}: {platform.machine()},"
        f" {settings.threads} torch threads, torch {torch.__version__}; float32;"
        f" {minutes:.1f} min in all" + (" (`--quick` settings)" if settings.quick else "") + ".",
        "",
        "Same split (1257 / 270 / 270, `load_digits(seed=0)`), fresh uniform noise every"
        f" batch, Adam lr {settings.lr} (cosine), batch {settings.batch}, at most"
        f" {settings.epochs} epochs, patience {settings.patience}; test bits/dim on the"
        f" 17-level scale (± 1 s.e. over the 270 test digits); {settings.seeds} training"
        " seed(s).",
        "",
        "| model | event | settings | parameters | test bits/dim | epochs (best) | train time |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, runs in fits.items():
        _, image, words = MODELS[name]
        bpd = statistics.fmean(f.bpd for f in runs)
        spread = f" (seeds ± {statistics.stdev(f.bpd for f in runs):.3f})" if len(runs) > 1 else ""
        epochs = ", ".join(f"{f.epochs} ({f.best_epoch})" for f in runs)
        seconds = statistics.fmean(f.seconds for f in runs)
        lines.append(
            f"| {name} | {'1x8x8' if image else '64'} | {words} | {runs[0].params:,} |"
            f" {bpd:.3f} ± {runs[0].bpd_se:.3f}{spread} | {epochs} | {seconds:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def parse() -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 epochs each (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per model")
    parser.add_argument("--epochs", type=int, default=300, help="most epochs per model")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS / "digits_images.md")
    args = parser.parse_args()
    settings = Settings(
        threads=args.threads, seeds=args.seeds, epochs=args.epochs, quick=args.quick
    )
    if args.quick:
        settings = dataclasses.replace(settings, **QUICK)
    settings.models = tuple(args.models)
    return settings, args.out


def main() -> None:
    settings, out = parse()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    fits: dict[str, list[Fit]] = {}
    for name in settings.models:
        for seed in range(settings.seeds):
            log(f"{name}, seed {seed}")
            fit_result = fit_one(name, seed, settings)
            fits.setdefault(name, []).append(fit_result)
            log(
                f"  {fit_result.bpd:.3f} bits/dim, {fit_result.epochs} epochs,"
                f" {fit_result.seconds:.0f} s"
            )
    minutes = (time.perf_counter() - started) / 60
    text = report(settings, fits, minutes)
    print(text)
    write_atomic(out, lambda f: f.write(text), binary=False)
    payload = {
        "settings": dataclasses.asdict(settings),
        "fits": {k: [dataclasses.asdict(f) for f in v] for k, v in fits.items()},
        "minutes": minutes,
        "torch": torch.__version__,
    }
    text_json = json.dumps(payload, indent=1)
    write_atomic(out.with_suffix(".json"), lambda f: f.write(text_json), binary=False)
    log(f"written to {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
