"""Minibatches of in-memory tensors, without the per-item overhead of ``DataLoader``.

``DataLoader`` fetches every row through ``__getitem__`` and collates the rows back into a
batch; for a tensor already in memory that is pure overhead. :func:`loader` draws one index
permutation per epoch and slices (or, unshuffled, takes contiguous views).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["Batches", "loader"]


class Batches:
    """Re-iterable minibatches of one tensor, or of several tensors sharing their first dimension.

    Each ``iter()`` is one epoch: a fresh permutation from the seeded generator when shuffling,
    so epochs differ from each other yet the whole sequence is reproducible from ``seed``.

    Args:
        tensors: A tensor ``(N, ...)`` or a sequence of them (e.g. data and context).
        batch_size: Rows per batch.
        shuffle: Shuffle the rows every epoch.
        seed: Seed of the permutations.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.

    """

    def __init__(
        self,
        tensors: Tensor | Sequence[Tensor],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
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
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"loader: batch_size must be a positive int, got {batch_size!r}")
        self.rows = sizes.pop()
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        if self.drop_last:
            return self.rows // self.batch_size
        return -(-self.rows // self.batch_size)

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, ...]]:
        order = torch.randperm(self.rows, generator=self._generator) if self.shuffle else None
        for k in range(len(self)):
            start, stop = k * self.batch_size, min((k + 1) * self.batch_size, self.rows)
            if order is None:
                batch = tuple(t[start:stop] for t in self.tensors)
            else:
                index = order[start:stop]
                batch = tuple(t[index.to(t.device)] for t in self.tensors)
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
