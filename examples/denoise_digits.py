"""Sampling 8x8 digits given a noisy version of the image: a flow with a learned image context.

The model is ``p(x | y)``: ``x`` an 8x8 digit (the bundled UCI digits, 64 pixels dequantized
to ``[0, 1)``), ``y = x + σε`` its noisy copy (``ε ~ N(0, I)``, drawn afresh for every batch),
read as an image ``(1, 8, 8)`` by a :class:`~exactflow.nn.ConvEmbedding` trained jointly with
a conditional MAF::

    flow = ef.flows.MAF(features=64, context=64, embedding=ef.nn.ConvEmbedding((1, 8, 8), 64))
    flow.log_prob(x, context=noisy_images)     # exact log p(x | y), (N,)
    flow.sample((3,), context=noisy_images)    # three digits per noisy image, (3, N, 64)

The same MAF without a context models ``p(x)``. Their test NLLs differ by the information the
noisy image carries about the digit, ``E[log p(x | y) - log p(x)] = I(x; y) >= 0``: the
conditional flow's NLL must be much lower. Run::

    python examples/denoise_digits.py --figure denoise.png            # about 2 minutes
    python examples/denoise_digits.py --figure denoise.png --quick    # seconds, a smaller model

It prints both test NLLs (nats per image) and writes a figure: clean test digits, their noisy
versions, conditional samples given those, and unconditional samples.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import exactflow as ef
from exactflow.data import Batches, BatchSource, epoch_generator
from exactflow.train import TrainConfig, fit

SHAPE = (1, 8, 8)


def corrupt(x: Tensor, noise: float, generator: torch.Generator) -> Tensor:
    """Noisy images ``x + σε`` of digits ``x (N, 64)``, shaped ``(N, 1, 8, 8)``."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + noise * eps).reshape(-1, *SHAPE)


class NoisyDigits(BatchSource):
    """Shuffled batches ``(x, y)`` of digits and noisy copies, with fresh noise every epoch."""

    def __init__(self, x: Tensor, noise: float, batch_size: int, seed: int) -> None:
        self.batches = Batches(x, batch_size, seed=seed)
        self.noise, self.seed = noise, seed

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, index: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = epoch_generator(self.seed + 1, index)
        for x in self.batches.epoch(index):
            yield x, corrupt(x, self.noise, generator)


@dataclass(frozen=True)
class Settings:
    """Model and training sizes."""

    transforms: int = 5
    hidden: int = 128
    features: int = 64  # width of the embedded noisy image
    channels: tuple[int, ...] = (32,)
    epochs: int = 150
    lr: float = 1e-3
    batch_size: int = 128
    patience: int = 20


QUICK = Settings(transforms=2, hidden=32, features=32, channels=(16,), epochs=25, lr=1e-2)


def conditional_flow(settings: Settings) -> ef.Flow:
    """MAF of ``x | y`` whose context is the noisy image through a ConvEmbedding."""
    embedding = ef.nn.ConvEmbedding(
        SHAPE, settings.features, channels=settings.channels, hidden=(128,)
    )
    hidden = (settings.hidden, settings.hidden)
    return ef.flows.MAF(
        features=64,
        context=settings.features,
        transforms=settings.transforms,
        hidden=hidden,
        embedding=embedding,
    )


def unconditional_flow(settings: Settings) -> ef.Flow:
    """The same MAF without a context: ``p(x)``."""
    hidden = (settings.hidden, settings.hidden)
    return ef.flows.MAF(features=64, transforms=settings.transforms, hidden=hidden)


@dataclass
class Comparison:
    """Both trained flows, their test NLLs ``(mean, stderr)`` and the noisy test images."""

    conditional: ef.Flow
    unconditional: ef.Flow
    nll_conditional: tuple[float, float]
    nll_unconditional: tuple[float, float]
    test: Tensor  # (N, 64)
    noisy_test: Tensor  # (N, 1, 8, 8)


def compare(
    settings: Settings = Settings(),
    noise: float = 0.1,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> Comparison:
    """Train the conditional and the unconditional flow alike; their test NLLs.

    Validation and test contexts are noisy copies drawn once (seeded); training draws fresh
    noise every batch. With ``out``, each run writes its checkpoints to ``out/conditional``
    and ``out/unconditional`` (``exactflow eval``/``sample`` read them).
    """
    digits = ef.data.load_digits(seed)
    fixed = torch.Generator().manual_seed(seed + 2)
    val = (digits.val, corrupt(digits.val, noise, fixed))
    test = (digits.test, corrupt(digits.test, noise, fixed))
    flows = {}
    for name, make in (("conditional", conditional_flow), ("unconditional", unconditional_flow)):
        torch.manual_seed(seed)
        flow = make(settings)
        config = TrainConfig(
            epochs=settings.epochs,
            lr=settings.lr,
            batch_size=settings.batch_size,
            patience=settings.patience,
            seed=seed,
            out=None if out is None else str(Path(out) / name),
            tensorboard=False,
        )
        if name == "conditional":
            data = NoisyDigits(digits.train, noise, settings.batch_size, seed)
            fit(flow, ef.objectives.NLL(), data, config, val=val, progress=progress)
        else:
            fit(flow, ef.objectives.NLL(), digits.train, config, val=val[0], progress=progress)
        flows[name] = flow.eval()
    return Comparison(
        conditional=flows["conditional"],
        unconditional=flows["unconditional"],
        nll_conditional=ef.metrics.nll(flows["conditional"], *test),
        nll_unconditional=ef.metrics.nll(flows["unconditional"], test[0]),
        test=test[0],
        noisy_test=test[1],
    )


def figure(path: str | Path, result: Comparison, n: int = 8, draws: int = 3) -> Path:
    """A picture of the digits, their noisy copies and samples, as a PNG at ``path``.

    Rows: ``n`` clean test digits, their noisy copies, ``draws`` rows of conditional samples
    given the noisy copies, and a row of unconditional samples (pixels clipped to ``[0, 1]``).
    """
    torch.manual_seed(0)
    noisy = result.noisy_test[:n]
    samples = result.conditional.sample((draws,), context=noisy)  # (draws, n, 64)
    rows = [
        result.test[:n].reshape(-1, *SHAPE),
        noisy,
        samples.reshape(-1, *SHAPE),
        result.unconditional.sample((n,)).reshape(-1, *SHAPE),
    ]
    title = f"clean, noisy, {draws} rows of x | noisy, x unconditional"
    return ef.plot.image_grid(path, torch.cat(rows), rows=3 + draws, title=title)


def main(argv: Sequence[str] | None = None) -> Comparison:
    """Command line: train both flows, print their test NLLs, write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=Path, help="write the picture here (PNG)")
    parser.add_argument("--out", type=Path, help="run folders (checkpoints) under this one")
    parser.add_argument(
        "--noise", type=float, default=0.1, help="standard deviation of the noise (default 0.1)"
    )
    parser.add_argument("--epochs", type=int, help="training epochs (default 150; quick 25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small model, trained briefly")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    if args.epochs is not None:
        settings = Settings(**{**settings.__dict__, "epochs": args.epochs})
    result = compare(settings, args.noise, args.seed, args.out)
    for name, (mean, stderr) in (
        ("x | noisy x", result.nll_conditional),
        ("x", result.nll_unconditional),
    ):
        print(f"test NLL of {name:<12} {mean:8.2f} ± {stderr:.2f} nats per image")
    gain = result.nll_unconditional[0] - result.nll_conditional[0]
    print(f"the noisy image is worth {gain:.1f} nats ({gain / 64 / math.log(2):.3f} bits/pixel)")
    if args.figure is not None:
        print(f"wrote {figure(args.figure, result)}")
    return result


if __name__ == "__main__":
    main()
