"""The data a run trains and validates on, checked once before training starts.

Tensors, ``(x, context)`` pairs, a ``Dataset`` or a batch source; tensors are placed on the run's
device and dtype up front, a batch source's batches as they come.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import Batches, BatchSource, Dataset

__all__ = ["Inputs", "as_pair", "check_rows", "prepare"]

Pair = tuple[Tensor, Tensor | None]


def check_rows(name: str, value: object, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value (N, ...)`` cast to ``dtype`` on ``device``; ``ValueError``/``TypeError`` if unfit.

    Rejects non-tensors, complex or boolean values, zero rows and non-finite values (naming the
    first bad row and column).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got {value.dtype}")
    if value.dim() < 1 or value.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)}): it needs at least 1 row")
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        row, *column = (~finite).nonzero()[0].tolist()
        where = f"row {row}" + (
            f", column {column[0] if len(column) == 1 else tuple(column)}" if column else ""
        )
        raise ValueError(
            f"{name} has a non-finite value ({value[(row, *column)].item()}) at {where}"
        )
    converted = value.detach().to(device=device, dtype=dtype)
    if not bool(torch.isfinite(converted).all()):
        biggest = float(value.detach().abs().max())
        raise ValueError(
            f"{name} has values too large for {dtype} (largest magnitude {biggest:g});"
            " rescale the data or use dtype='float64'"
        )
    return converted


def as_pair(name: str, data: object) -> tuple[object, object]:
    """Split ``x`` or ``(x, context)`` into ``(x, context or None)``."""
    if isinstance(data, Tensor):
        return data, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"{name} must be a tensor x or a pair (x, context), got {type(data).__name__}")


def _rows_pair(name: str, data: object, dtype: torch.dtype, device: torch.device) -> Pair:
    x, context = as_pair(name, data)
    x = check_rows(name, x, dtype, device)
    if context is None:
        return x, None
    context = check_rows(f"{name} context", context, dtype, device)
    if len(context) != len(x):
        raise ValueError(f"{name} has {len(x)} rows but its context has {len(context)}")
    return x, context


@dataclass
class Inputs:
    """Checked training and validation data.

    Attributes:
        source: The training batches (``None`` for an objective that needs no data).
        val: Validation data ``(x, context)`` on the run's device, or ``None``.
        train: The training rows ``(x, context)`` when given as tensors (for standardization).
        dtype: The run's dtype; batches of a source are cast to it as they come.
        device: The run's device.

    """

    source: BatchSource | None
    val: Pair | None
    train: Pair | None
    dtype: torch.dtype
    device: torch.device

    def batches(self, epoch: int) -> Iterator[Pair]:
        """The training batches of ``epoch``, as ``(x, context)`` on the run's device."""
        for batch in self.source.epoch(epoch) if self.source is not None else ():
            x, context = as_pair("a batch", batch)
            yield self._place(x), None if context is None else self._place(context)

    def shards(
        self, epoch: int, rank: int, world: int
    ) -> Iterator[tuple[Tensor, Tensor | None, int]]:
        """Rank ``rank``'s share of each batch of ``epoch``: ``(x, context, rows of the batch)``.

        Every rank draws the whole batch (as one process would) and keeps rows
        ``torch.tensor_split(range(B), world)[rank]``: contiguous shares whose sizes differ by at
        most one. Only the share moves to the device.
        """
        for batch in self.source.epoch(epoch) if self.source is not None else ():
            x, context = as_pair("a batch", batch)
            rows = len(x)
            if rows < world:
                raise ValueError(
                    f"a batch of {rows} rows cannot be shared by {world} processes (each needs"
                    " at least one row): use a larger batch_size or fewer processes"
                )
            x = self._place(x.tensor_split(world)[rank])
            if context is not None:
                context = self._place(context.tensor_split(world)[rank])
            yield x, context, rows

    def _place(self, value: Tensor) -> Tensor:
        return value.to(self.device, self.dtype, non_blocking=True)


def prepare(
    data: object,
    val: object,
    needs_data: bool,
    batch_size: int,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Inputs:
    """Check and place ``data`` (tensor, pair, :class:`Dataset`, :class:`BatchSource`, None)."""
    if isinstance(data, Dataset):
        if val is None:
            val = data.val
        data = data.train
    if not needs_data:
        if data is not None:
            raise ValueError("this objective draws its own samples: call fit without data")
        source, train = None, None
    elif data is None:
        raise ValueError("this objective needs data: pass data= (tensor, (x, context), Dataset)")
    elif isinstance(data, BatchSource):
        if len(data) < 1:
            raise ValueError("the batch source yields no batches (len 0)")
        source, train = data, None
    else:
        train = _rows_pair("data", data, dtype, device)
        if len(train[0]) < 2:
            raise ValueError(f"data has {len(train[0])} row: training needs at least 2")
        tensors = train[0] if train[1] is None else train
        source = Batches(tensors, batch_size, seed=seed)
    if val is None and needs_data:
        raise ValueError(
            "validation data are needed (early stopping and best weights use them): pass val="
            " or an exactflow.data.Dataset"
        )
    checked_val = None if val is None else _rows_pair("val", val, dtype, device)
    return Inputs(source, checked_val, train, dtype, device)
