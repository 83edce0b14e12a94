"""Uniform dequantization of integer pixels: once per split, or afresh for every batch.

A flow is a density on continuous data, so integer pixels ``k ∈ {0, …, L-1}`` are dequantized:
``x = (k + u)/L`` with ``u ~ U[0, 1)``, in ``[0, 1)``. :func:`dequantize` adds the noise once
(the loaders' validation and test splits); :class:`UniformDequantization` draws it afresh for
every batch of every epoch, as training should (a fixed draw lets a flow fit the noise), and
replays any epoch exactly from ``(seed, epoch)``. :func:`integer_pixels` recovers ``k`` from
values ``k/L`` (the loaders' ``dequantize_pixels=False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from torch import Tensor

from .checks import count, floating_dtype, seed_option
from .dataset import Dataset, stream_seed
from .loader import Batch, Batches, BatchSource

__all__ = [
    "UniformDequantization",
    "add_noise",
    "check_pixels",
    "dequantize",
    "dequantize_splits",
    "dequantized",
    "integer_pixels",
]


def dequantize(
    pixels: Tensor,
    levels: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform dequantization ``x = (k + u) / L``, ``u ~ U[0, 1)``, of integers ``k`` in ``0..L-1``.

    The result lies in ``[0, 1)``: values that would round up to 1 in ``dtype`` are clamped to
    the largest number below 1, so that a logit never sees exactly 1. The noise is drawn on the
    device of ``pixels`` (``generator`` must live there).

    Args:
        pixels: Integer-valued tensor of any shape.
        levels: Number of levels ``L``.
        generator: Source of the uniform noise.
        dtype: Floating dtype of the result.

    Example:
        >>> import torch
        >>> from exactflow.data import dequantize
        >>> x = dequantize(torch.tensor([0, 255]), 256)
        >>> bool((x >= 0).all() and (x < 1).all()), (x * 256).floor().tolist()
        (True, [0.0, 255.0])

    """
    count("dequantize: levels", levels, 2)
    floating_dtype("dequantize: dtype", dtype)
    check_pixels("dequantize", pixels, levels)
    return add_noise(pixels, levels, generator, dtype)


def check_pixels(name: str, pixels: Tensor, levels: int) -> None:
    """Refuse anything but integer values ``k`` in ``0..levels-1``, naming the first bad one."""
    if not isinstance(pixels, Tensor) or pixels.is_complex() or pixels.dtype == torch.bool:
        what = pixels.dtype if isinstance(pixels, Tensor) else type(pixels).__name__
        raise TypeError(f"{name}: pixels must be a real tensor of integers k, got {what}")
    if not pixels.numel():
        return
    bad = (pixels < 0) | (pixels > levels - 1)
    if pixels.is_floating_point():
        bad |= pixels != pixels.round()  # NaN too
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"{name}: values must be integers in 0..{levels - 1} (k, not k/{levels}), got"
            f" {float(pixels[where]):.6g} at index {where}"
        )


def add_noise(
    pixels: Tensor, levels: int, generator: torch.Generator | None, dtype: torch.dtype
) -> Tensor:
    """``(k + u)/L`` clamped below 1, with ``u`` drawn on ``pixels``' device; no checks."""
    # float32 keeps k + u to 2^-16 for k < 256 and halves the memory of float64 on large sets.
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u = torch.rand(pixels.shape, generator=generator, dtype=work, device=pixels.device)
    x = ((pixels.to(work) + u) / levels).to(dtype)
    below_one = torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
    return x.clamp_(max=float(below_one))


def integer_pixels(values: Tensor, levels: int) -> Tensor:
    """The integers ``k`` of values ``k/L`` (a loader's ``dequantize_pixels=False`` splits).

    Returned as ``uint8`` for ``L <= 256`` (a quarter of float32's memory), else ``int32``.

    Raises:
        ValueError: A value that is not ``k/L`` for an integer ``k`` in ``0..L-1`` (e.g.
            already dequantized data), naming the first one.

    Example:
        >>> import torch
        >>> from exactflow.data import integer_pixels
        >>> integer_pixels(torch.tensor([0.0, 3 / 17, 16 / 17]), 17).tolist()
        [0, 3, 16]

    """
    count("integer_pixels: levels", levels, 2)
    if not isinstance(values, Tensor) or not values.is_floating_point():
        what = values.dtype if isinstance(values, Tensor) else type(values).__name__
        raise TypeError(f"integer_pixels: values must be a float tensor k/L, got {what}")
    scaled = values.double() * levels
    k = scaled.round()
    bad = ~((scaled - k).abs() <= 1e-3) | (k < 0) | (k > levels - 1)  # NaN is bad too
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"integer_pixels: values must be k/{levels} for integers k in 0..{levels - 1}"
            f" (load the data with dequantize_pixels=False), got {float(values[where]):.6g} at"
            f" index {where}"
        )
    return k.to(torch.uint8 if levels <= 256 else torch.int32)


def dequantize_splits(
    parts: list[Tensor], levels: int, seed: int, dtype: torch.dtype
) -> list[Tensor]:
    """Each split's integer pixels dequantized with noise from its own stream of ``seed``."""
    return [
        add_noise(k, levels, torch.Generator().manual_seed(stream_seed(seed, i)), dtype)
        for i, k in enumerate(parts)
    ]


def dequantized(dataset: Dataset, seed: int = 0) -> Dataset:
    """A data set of values ``k/L`` with every split dequantized ``(k + u)/L`` as the loaders do.

    Split ``i`` (train, val, test) gets noise from its own stream of ``seed``, so
    ``dequantized(load_mnist(root, dequantize_pixels=False, seed=s), s)`` equals
    ``load_mnist(root, seed=s)``: a command can keep the integer training pixels (for fresh
    noise every batch, :class:`~exactflow.data.UniformDequantization`) and still evaluate on
    exactly the dequantized validation and test splits the loader gives.

    Example:
        >>> import torch
        >>> from exactflow.data import dequantized, load_digits
        >>> raw = load_digits(seed=3, dequantize_pixels=False)
        >>> torch.equal(dequantized(raw, 3).test, load_digits(seed=3).test)
        True

    """
    if dataset.levels is None:
        raise ValueError(f"dequantized: {dataset.name} has no levels: it is not quantized data")
    seed = seed_option("dequantized: seed", seed)
    parts = [integer_pixels(x, dataset.levels) for x in dataset.splits().values()]
    splits = dequantize_splits(parts, dataset.levels, seed, dataset.train.dtype)
    return dataclasses.replace(
        dataset,
        **dict(zip(("train", "val", "test"), splits, strict=True)),
        description=f"{dataset.description}, dequantized (k + u)/{dataset.levels}",
    )


class UniformDequantization(BatchSource):
    """Minibatches of integer pixels dequantized afresh: ``x = (k + u)/L``, new ``u`` every batch.

    The rows are shuffled every epoch as :class:`~exactflow.data.Batches` shuffles them, and
    every batch gets uniform noise ``u ~ U[0, 1)`` from the epoch's generator, clamped below 1
    like :func:`dequantize`: no two batches or epochs share their noise, and epoch ``k`` is a
    pure function of ``(seed, k)``, so a resumed run replays it. With ``context`` the batches
    are pairs ``(x, context)`` (e.g. one-hot class labels ``(N, K)``, rows shuffled alike).
    Batches are drawn on the device ``pixels`` live on.

    Args:
        pixels: The **integers** ``k ∈ 0..L-1`` ``(N, *event)``, of an integer or a float dtype
            (not the values ``k/L``: :func:`integer_pixels` turns those into ``k``). Kept as
            given: ``uint8`` keeps a quarter of float32's memory.
        levels: Number of levels ``L`` (256 for 8-bit images).
        batch_size: Rows per batch.
        seed: Seed of the shuffles and of the noise.
        shuffle: Shuffle the rows every epoch.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.
        context: Optional contexts ``(N, K)`` yielded alongside.
        dtype: Floating dtype of the batches.

    Example:
        >>> import torch
        >>> from exactflow.data import UniformDequantization
        >>> source = UniformDequantization(torch.randint(0, 256, (10, 1, 2, 2)), 256, 4)
        >>> [tuple(x.shape) for x in source.epoch(0)]
        [(4, 1, 2, 2), (4, 1, 2, 2), (2, 1, 2, 2)]

    """

    def __init__(
        self,
        pixels: Tensor,
        levels: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        context: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.levels = count("UniformDequantization: levels", levels, 2)
        self.dtype = floating_dtype("UniformDequantization: dtype", dtype)
        self.seed = seed_option("UniformDequantization: seed", seed)
        check_pixels("UniformDequantization", pixels, self.levels)
        if pixels.dim() < 2:
            raise ValueError(
                "UniformDequantization: pixels must be rows (N, *event), got shape"
                f" {tuple(pixels.shape)}"
            )
        if context is not None and (not isinstance(context, Tensor) or context.dim() != 2):
            what = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"UniformDequantization: context must be (N, K), got {what}")
        self.pixels, self.context = pixels, context
        tensors = pixels if context is None else (pixels, context)
        self._batches = Batches(
            tensors, batch_size, shuffle, self.seed, drop_last, transform=self._noise
        )

    def _noise(self, k: Tensor, generator: torch.Generator) -> Tensor:
        return add_noise(k, self.levels, generator, self.dtype)

    def __len__(self) -> int:
        return len(self._batches)

    def epoch(self, index: int) -> Iterator[Batch]:
        return self._batches.epoch(index)
