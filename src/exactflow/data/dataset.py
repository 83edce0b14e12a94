"""The :class:`Dataset` record every loader returns, and the seeded row split."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .checks import count
from .density import Density, Entropy

__all__ = [
    "KINDS",
    "MIN_ROWS",
    "Dataset",
    "check_rows",
    "convert",
    "one_hot",
    "split_locator",
    "split_rows",
    "stream_seed",
]

KINDS = ("toy2d", "tabular", "image")

#: The fewest rows of each split a loader returns: a standard deviation needs two training rows,
#: and validation and test figures need one row each.
MIN_ROWS = {"train": 2, "val": 1, "test": 1}


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
        labels: Class labels of the train/validation/test rows, int64 ``(N,)`` each, in
            ``0..classes-1``; None when the source has none.
        classes: Number of classes (with ``labels``), else None.

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
    labels: tuple[Tensor, Tensor, Tensor] | None = None
    classes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"Dataset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        for split, t in self.splits().items():
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(
                    f"Dataset {self.name!r}: {split} must be a floating torch.Tensor, got"
                    f" {t.dtype if isinstance(t, Tensor) else type(t).__name__}"
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
        self._check_labels()

    def _check_labels(self) -> None:
        if self.labels is None:
            if self.classes is not None:
                raise ValueError(
                    f"Dataset {self.name!r}: classes={self.classes} needs labels, got None"
                )
            return
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 1:
            raise ValueError(
                f"Dataset {self.name!r}: labels need classes, a positive int, got {self.classes!r}"
            )
        if not isinstance(self.labels, tuple) or len(self.labels) != 3:
            raise TypeError(
                f"Dataset {self.name!r}: labels must be a tuple of 3 tensors (train, val, test),"
                f" got {type(self.labels).__name__}"
            )
        for (split, x), y in zip(self.splits().items(), self.labels, strict=True):
            if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
                got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(
                    f"Dataset {self.name!r}: {split} labels must be int64 ({len(x)},), got {got}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.classes):
                raise ValueError(
                    f"Dataset {self.name!r}: {split} labels must lie in 0..{self.classes - 1},"
                    f" got {int(y.min())}..{int(y.max())}"
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

    def contexts(self, split: str) -> Tensor | None:
        """One-hot class contexts ``(N, classes)`` of a split's labels, in its dtype, or None.

        Example:
            >>> from exactflow.data import load_digits
            >>> load_digits().contexts("test").shape
            torch.Size([270, 10])

        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if self.labels is None:
            return None
        x = self.splits()[split]
        y = self.labels[("train", "val", "test").index(split)]
        return one_hot(y, self.classes, x.dtype).to(x.device)

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Dataset:
        """A copy with the splits converted to ``dtype`` and/or moved to ``device``.

        Labels keep their dtype (int64) and move with the splits.
        """
        labels = None if self.labels is None else tuple(y.to(device) for y in self.labels)
        return dataclasses.replace(
            self,
            train=self.train.to(device=device, dtype=dtype),
            val=self.val.to(device=device, dtype=dtype),
            test=self.test.to(device=device, dtype=dtype),
            labels=labels,
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.splits().items())
        extra = ", density=known" if self.density is not None else ""
        extra += f", levels={self.levels}" if self.levels else ""
        extra += f", classes={self.classes}" if self.classes else ""
        return f"Dataset({self.name!r}, kind={self.kind!r}, {sizes}{extra})"


def one_hot(labels: Tensor, classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot contexts ``(*, classes)`` in ``dtype`` of integer class labels ``(*)``.

    The context a class-conditional flow takes: ``flow.sample((n,), context=one_hot(y, K))``.

    Example:
        >>> import torch
        >>> from exactflow.data import one_hot
        >>> one_hot(torch.tensor([2, 0]), 3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])

    """
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        what = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"one_hot: labels must be an integer tensor, got {what}")
    return torch.nn.functional.one_hot(labels.long(), classes).to(dtype)


def stream_seed(seed: int, stream: int) -> int:
    """A seed for random stream ``stream`` derived from ``seed`` (stable across platforms).

    Loaders draw each split from its own stream, so e.g. the test set of a toy does not change
    when ``n_train`` does.
    """
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> 1)


def check_rows(name: str, n_train: object, n_val: object, n_test: object) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` checked against :data:`MIN_ROWS`, else a one-line error.

    Example:
        >>> from exactflow.data.dataset import check_rows
        >>> check_rows("moons", 100, 10, 10)
        (100, 10, 10)

    """
    checked = []
    for (split, minimum), n in zip(MIN_ROWS.items(), (n_train, n_val, n_test), strict=True):
        n = count(f"{name}: n_{split}", n, -(2**63))
        if n < minimum:
            why = "would be empty" if n <= 0 else "needs two rows for a standard deviation"
            raise ValueError(
                f"{name}: n_{split} must be at least {minimum}, got {n} (the {split} split {why})"
            )
        checked.append(n)
    return tuple(checked)


def _split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    return n - n_val - n_test, n_val, n_test


def _too_few(sizes: tuple[int, int, int], fractions: tuple[float, float, float]) -> bool:
    """Whether a split is below :data:`MIN_ROWS` (a split of fraction 0 may be empty)."""
    return any(
        k < need and (split == "train" or f > 0)
        for (split, need), k, f in zip(MIN_ROWS.items(), sizes, fractions, strict=True)
    )


def split_rows(
    values: Tensor,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    shuffle: bool = True,
    *,
    name: str = "split_rows",
) -> tuple[Tensor, Tensor, Tensor]:
    """Split rows into train/validation/test by fractions, after an optional seeded shuffle.

    The validation and test sizes are ``round(fraction·N)``; the training split takes the rest.
    Every split gets at least its :data:`MIN_ROWS` (a split whose fraction is 0 stays empty);
    too few rows is a ``ValueError`` that says how many the fractions need.

    Args:
        values: Rows ``(N, ...)``.
        fractions: ``(train, val, test)`` fractions, non-negative and summing to 1.
        seed: Seed of the shuffle.
        shuffle: Shuffle the rows first (otherwise the splits are consecutive blocks, in order).
        name: What the rows are (a file name), for messages.

    Example:
        >>> import torch
        >>> from exactflow.data import split_rows
        >>> [len(s) for s in split_rows(torch.arange(20.0)[:, None])]
        [16, 2, 2]

    """
    if isinstance(fractions, str) or not isinstance(fractions, Sequence):
        raise TypeError(
            f"{name}: split must be three fractions (train, val, test), got {fractions!r}"
        )
    if len(fractions) != 3 or not all(
        isinstance(f, int | float) and not isinstance(f, bool) and math.isfinite(f) and f >= 0
        for f in fractions
    ):
        raise ValueError(
            f"{name}: split must be three non-negative numbers (train, val, test) summing to 1,"
            f" got {tuple(fractions)}"
        )
    fractions = tuple(float(f) for f in fractions)
    if abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"{name}: split must be three fractions summing to 1, got {fractions} (sum"
            f" {sum(fractions):.6g})"
        )
    n = len(values)
    sizes = _split_sizes(n, fractions)
    if _too_few(sizes, fractions):
        needed = max(4, *(math.ceil(0.5 / f) for f in fractions[1:] if f > 0))
        while _too_few(_split_sizes(needed, fractions), fractions):
            needed += 1
        minimum = ", ".join(f"{k} {v}" for k, v in MIN_ROWS.items())
        raise ValueError(
            f"{name}: {n} {'row is' if n == 1 else 'rows are'} too few for split {fractions}:"
            " it gives train/val/test"
            f" {sizes[0]}/{sizes[1]}/{sizes[2]} rows, and each split needs at least ({minimum});"
            f" the split needs at least {needed} rows"
        )
    if shuffle:
        values = values[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    n_train, n_val, _ = sizes
    return values[:n_train], values[n_train : n_train + n_val], values[n_train + n_val :]


def split_locator(source: str, split: str) -> Callable[[int | None, int], str]:
    """A ``locate(row, column)`` for :func:`convert` on one split of ``source`` (a name).

    Example:
        >>> from exactflow.data.dataset import split_locator
        >>> split_locator("moons", "val")(3, 1)
        'moons: val split, row 4, column 2 (counted from 1)'

    """

    def locate(row: int | None, col: int) -> str:
        where = "" if row is None else f"row {row + 1}, "
        return f"{source}: {split} split, {where}column {col + 1} (counted from 1)"

    return locate


def convert(values: Tensor, dtype: torch.dtype, locate: Callable[[int | None, int], str]) -> Tensor:
    """``values (N, D)`` (float64) in ``dtype``, after checking that they fit it.

    Refused, with a ``ValueError`` that starts with ``locate(row, column)`` (row None for a
    whole column; both counted from 0): a finite value beyond the largest of ``dtype``
    (``|x| > 3.4e38`` for float32, which would become ``inf``), and a column whose spread
    ``dtype`` cannot resolve (its standard deviation changes by more than 1 % when rounded to
    ``dtype``, e.g. ``1 + i·1e-10`` in float32, which becomes a constant).

    Example:
        >>> import torch
        >>> from exactflow.data.dataset import convert
        >>> convert(torch.tensor([[1.0], [2.0]], dtype=torch.float64), torch.float32,
        ...         lambda row, col: "x").dtype
        torch.float32

    """
    cast = values.to(dtype)
    if dtype == values.dtype or values.numel() == 0:
        return cast
    label = str(dtype).removeprefix("torch.")
    advice = "load it with dtype=torch.float64 (exactflow: --dtype float64) or rescale the column"
    overflow = torch.isinf(cast)
    if bool(overflow.any()) and bool((overflow := overflow & torch.isfinite(values)).any()):
        row, col = overflow.nonzero()[0].tolist()
        largest = torch.finfo(dtype).max
        raise ValueError(
            f"{locate(row, col)}: {float(values[row, col]):.6g} does not fit {label} (largest"
            f" magnitude {largest:.3g}); {advice}"
        )
    wide = values.to(torch.float64)
    spread = wide.std(0, correction=0)
    # Rounding moves each value by at most eps/2 of the column's largest magnitude, and the
    # standard deviation by no more than that: only columns where this bound reaches 1 % of
    # the spread need the exact comparison.
    bound = torch.finfo(dtype).eps / 2 * wide.abs().amax(0)
    for col in (bound > 0.01 * spread).nonzero().flatten().tolist():
        after = float(cast[:, col].to(torch.float64).std(correction=0))
        if abs(after - float(spread[col])) > 0.01 * float(spread[col]):
            raise ValueError(
                f"{locate(None, col)}: its values vary by only {float(spread[col]):.3g} (standard"
                f" deviation) around {float(wide[:, col].mean()):.10g}, which {label} cannot"
                f" resolve (standard deviation {after:.3g} after rounding); {advice}, or"
                " subtract an offset"
            )
    return cast
