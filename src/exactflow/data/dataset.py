"""The :class:`Dataset` record every loader returns, and the seeded row split."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .density import Density, Entropy

__all__ = ["KINDS", "Dataset", "split_rows", "stream_seed"]

KINDS = ("toy2d", "tabular", "image")


# eq=False: comparing tensors field by field has no single truth value.
@dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """A loaded data set: train/validation/test splits plus what is known about its density.

    Attributes:
        name: Registry name (``"moons"``, ``"power"``, ...) or the file it was read from.
        kind: ``"toy2d"`` (2-D synthetic), ``"tabular"`` (rows ``(N, D)``) or ``"image"``
            (``(N, C, H, W)``).
        train: Training split, float tensor ``(N, D)`` or ``(N, C, H, W)``.
        val: Validation split, same trailing shape.
        test: Test split, same trailing shape.
        density: The generating density when it is known exactly (synthetic sets), else None.
            It gives :attr:`log_density` and :attr:`entropy`.
        levels: For quantized data dequantized to ``[0, 1)``: the number of levels of the
            original integers (256 for 8-bit images, 17 for the bundled digits), so that
            :func:`~exactflow.data.bits_per_dim` can report bits/dim on the original scale.
        feature_names: Column names, when the source had them.
        description: One line about the data and its preprocessing.

    """

    name: str
    kind: str
    train: Tensor
    val: Tensor
    test: Tensor
    density: Density | None = None
    levels: int | None = None
    feature_names: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"Dataset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        shapes = {split: tuple(t.shape) for split, t in self.splits().items()}
        if len({s[1:] for s in shapes.values()}) != 1 or any(len(s) < 2 for s in shapes.values()):
            raise ValueError(
                f"Dataset {self.name!r}: train/val/test must share their trailing shape,"
                f" got {shapes}"
            )
        if self.kind == "image" and len(shapes["train"]) != 4:
            raise ValueError(
                f"Dataset {self.name!r}: image splits must be (N, C, H, W), got {shapes['train']}"
            )

    def splits(self) -> dict[str, Tensor]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one example: ``(D,)`` or ``(C, H, W)``."""
        return self.train.shape[1:]

    @property
    def features(self) -> int:
        """Number of scalars per example (``D``, or ``C·H·W``)."""
        return math.prod(self.event_shape)

    @property
    def log_density(self) -> Callable[[Tensor], Tensor] | None:
        """The true ``log p(x)`` in the data's own units, ``(*, D) -> (*)``, or None if unknown."""
        return None if self.density is None else self.density.log_prob

    @property
    def entropy(self) -> Entropy | None:
        """The true differential entropy in nats, or None if unknown.

        :class:`~exactflow.data.Entropy` says how it was computed. Computed on first access,
        then cached.
        """
        return None if self.density is None else self.density.entropy()

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Dataset:
        """A copy with the splits converted to ``dtype`` and/or moved to ``device``."""
        return dataclasses.replace(
            self,
            train=self.train.to(device=device, dtype=dtype),
            val=self.val.to(device=device, dtype=dtype),
            test=self.test.to(device=device, dtype=dtype),
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.splits().items())
        extra = ", density=known" if self.density is not None else ""
        extra += f", levels={self.levels}" if self.levels else ""
        return f"Dataset({self.name!r}, kind={self.kind!r}, {sizes}{extra})"


def stream_seed(seed: int, stream: int) -> int:
    """A seed for random stream ``stream`` derived from ``seed`` (stable across platforms).

    Loaders draw each split from its own stream, so e.g. the test set of a toy does not change
    when ``n_train`` does.
    """
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> 1)


def split_rows(
    values: Tensor,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    shuffle: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Split rows into train/validation/test by fractions, after an optional seeded shuffle.

    The validation and test sizes are ``round(fraction·N)``; the training split takes the rest.

    Args:
        values: Rows ``(N, ...)``.
        fractions: ``(train, val, test)`` fractions, non-negative and summing to 1.
        seed: Seed of the shuffle.
        shuffle: Shuffle the rows first (otherwise the splits are consecutive blocks, in order).

    Example:
        >>> import torch
        >>> from exactflow.data import split_rows
        >>> [len(s) for s in split_rows(torch.arange(10.0)[:, None])]
        [8, 1, 1]

    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"split fractions must be three non-negative numbers (train, val, test) summing to 1,"
            f" got {fractions}"
        )
    n = len(values)
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    if n - n_val - n_test < 1:
        raise ValueError(f"split {fractions} of {n} rows leaves no training rows")
    if shuffle:
        values = values[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    n_train = n - n_val - n_test
    return values[:n_train], values[n_train : n_train + n_val], values[n_train + n_val :]
