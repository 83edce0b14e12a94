"""Batch sources: minibatches for training, drawn afresh every epoch and replayable exactly.

A :class:`BatchSource` yields the minibatches of one epoch from :meth:`BatchSource.epoch`, as a
pure function of its seed and the epoch number; that is what lets a resumed training run replay
the epoch it was interrupted in. :class:`Batches` slices in-memory tensors (one index
permutation per epoch, without the per-item overhead of ``DataLoader``) and can transform each
batch with fresh randomness, e.g. dequantization noise drawn per batch instead of once at load
time.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["BatchSource", "Batches", "epoch_generator", "loader"]

Batch = Tensor | tuple[Tensor, ...]


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from ``(seed, epoch)`` alone, so a resumed run redraws the same epoch.

    Example:
        >>> from exactflow.data import epoch_generator
        >>> a = torch.rand(2, generator=epoch_generator(0, 3))
        >>> torch.equal(a, torch.rand(2, generator=epoch_generator(0, 3)))
        True

    """
    key = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(key, "little") >> 1)


class BatchSource(ABC):
    """Minibatches for training: each epoch's batches are a pure function of the epoch number.

    Subclasses implement :meth:`__len__` (batches per epoch) and :meth:`epoch`. Iterating the
    source itself runs epoch 0, 1, 2, ... on successive ``iter()`` calls.
    """

    _epochs_run = 0

    @abstractmethod
    def __len__(self) -> int:
        """Number of batches in one epoch."""

    @abstractmethod
    def epoch(self, index: int) -> Iterator[Batch]:
        """The batches of epoch ``index`` (0-based): ``x (B, *event)`` or ``(x, context)``."""

    def __iter__(self) -> Iterator[Batch]:
        index = self._epochs_run
        self._epochs_run = index + 1
        return self.epoch(index)


def _bounds(rows: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch; a last batch of one row joins the batch before it."""
    if drop_last:
        return [(k * batch_size, (k + 1) * batch_size) for k in range(rows // batch_size)]
    bounds = [(k, min(k + batch_size, rows)) for k in range(0, rows, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        # A single row has no batch statistics (BatchNorm, ActNorm's initialization).
        bounds[-2:] = [(bounds[-2][0], rows)]
    return bounds


class Batches(BatchSource):
    """Minibatches of one tensor, or of several tensors sharing their first dimension.

    Epoch ``k`` shuffles the rows with a permutation drawn from :func:`epoch_generator`
    ``(seed, k)``, so epochs differ from each other yet each one can be replayed on its own. A
    last batch of a single row is merged into the batch before it (``drop_last`` drops the
    short last batch instead).

    Args:
        tensors: A tensor ``(N, ...)`` or a sequence of them (e.g. data and context).
        batch_size: Rows per batch.
        shuffle: Shuffle the rows every epoch.
        seed: Seed of the permutations and of ``transform``'s generator.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.
        transform: ``transform(x, generator) -> x`` applied to the first tensor of every batch
            with the epoch's generator (on the data's device): fresh noise per batch, e.g.
            ``lambda k, g: (k + torch.rand(k.shape, generator=g, device=k.device)) / 256``.

    Example:
        >>> import torch
        >>> from exactflow.data import Batches
        >>> pixels = torch.randint(0, 256, (10, 4)).float()
        >>> noise = lambda k, g: (k + torch.rand(k.shape, generator=g)) / 256
        >>> noisy = Batches(pixels, 4, transform=noise)
        >>> [tuple(b.shape) for b in noisy.epoch(0)]
        [(4, 4), (4, 4), (2, 4)]

    """

    def __init__(
        self,
        tensors: Tensor | Sequence[Tensor],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ) -> None:
        self._single = isinstance(tensors, Tensor)
        self.tensors = (tensors,) if self._single else tuple(tensors)
        if not self.tensors or not all(
            isinstance(t, Tensor) and t.dim() >= 1 for t in self.tensors
        ):
            raise TypeError("loader takes a tensor (N, ...) or a non-empty sequence of them")
        sizes = {len(t) for t in self.tensors}
        if len(sizes) != 1:
            raise ValueError(
                f"loader: the tensors differ in their first dimension: {sorted(sizes)}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"loader: batch_size must be a positive int, got {batch_size!r}")
        self.rows = sizes.pop()
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self._bounds = _bounds(self.rows, batch_size, drop_last)

    def __len__(self) -> int:
        return len(self._bounds)

    def epoch(self, index: int) -> Iterator[Batch]:
        device = self.tensors[0].device
        generator = epoch_generator(self.seed, index)
        order = None
        if self.shuffle:  # drawn on the CPU (reproducible everywhere), moved once per epoch
            order = torch.randperm(self.rows, generator=generator).to(device, non_blocking=True)
        noise = None if self.transform is None else epoch_generator(self.seed, ~index, device)
        for start, stop in self._bounds:
            if order is None:
                batch = tuple(t[start:stop] for t in self.tensors)
            else:
                rows = order[start:stop]
                batch = tuple(
                    t[rows if t.device == device else rows.to(t.device)] for t in self.tensors
                )
            if noise is not None:
                batch = (self.transform(batch[0], noise), *batch[1:])
            yield batch[0] if self._single else batch


def loader(
    tensors: Tensor | Sequence[Tensor],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> Batches:
    """Minibatches of in-memory tensors (see :class:`Batches`).

    Example:
        >>> import torch
        >>> from exactflow.data import loader
        >>> batches = loader(torch.arange(10.0)[:, None], batch_size=4, seed=0)
        >>> [len(b) for b in batches]
        [4, 4, 2]

    """
    return Batches(tensors, batch_size, shuffle, seed, drop_last)
