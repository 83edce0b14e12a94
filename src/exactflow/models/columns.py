"""Discrete columns of a table: which they are, how a row splits and merges, their moments.

A table row ``x (D,)`` may mix continuous columns with integer or categorical ones (codes
``0..C-1``). A flow has a density on ``R^D``, so it gives an integer column infinite density
unless the column is **dequantized**: ``x_j = k_j + u_j`` with ``u_j`` on ``[0, 1)``.
:class:`DiscreteColumns` holds the indices of those columns and the bookkeeping
:class:`~exactflow.models.Dequantized` needs (split a row into ``k`` and the rest, merge them
back, floor samples, check data, the exact moments of ``k + u``); :func:`integer_columns` is the
rule ``exactflow fit`` uses to detect them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data import Standardize
from ..data.checks import count

__all__ = ["MAX_FRACTION", "MAX_LEVELS", "DiscreteColumns", "integer_columns"]

MAX_LEVELS = 50
"""A column with at most this many distinct integer values is discrete (:func:`integer_columns`)."""
MAX_FRACTION = 0.05
"""... or with at most this fraction of the rows as distinct integer values."""


class DiscreteColumns(nn.Module):
    """The discrete (integer-valued) columns ``J`` of rows ``(*, D)``.

    Holds the 0-based indices ``J`` (``m`` of them, ascending), the others ``R`` and the order
    that interleaves them again; its buffers are not saved (they follow from the spec).

    Args:
        features: Row width ``D``.
        columns: The discrete columns, 0-based and distinct (negative counts from the end).

    Example:
        >>> import torch
        >>> from exactflow.models.columns import DiscreteColumns
        >>> columns = DiscreteColumns(3, [2, 0])
        >>> k, rest = columns.split(torch.tensor([[1.0, 0.5, 4.0]]))
        >>> k, rest
        (tensor([[1., 4.]]), tensor([[0.5000]]))
        >>> columns.merge(k + 0.25, rest)
        tensor([[1.2500, 0.5000, 4.2500]])

    """

    def __init__(self, features: int, columns: Sequence[int]) -> None:
        super().__init__()
        features = count("DiscreteColumns: features", features, 1)
        if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns:
            raise TypeError(
                f"discrete must be a non-empty list of column indices (from 0), got {columns!r}"
            )
        chosen = []
        for c in columns:
            if isinstance(c, bool) or not isinstance(c, int) or not -features <= c < features:
                raise ValueError(
                    f"discrete: columns are indices from 0 to {features - 1} (or negative from"
                    f" the end), got {c!r}"
                )
            chosen.append(c % features)
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"discrete: a column is listed twice in {list(columns)}")
        self.indices = sorted(chosen)
        rest = [j for j in range(features) if j not in chosen]
        self.features = features
        self.register_buffer("index", torch.tensor(self.indices), persistent=False)
        self.register_buffer("rest", torch.tensor(rest, dtype=torch.long), persistent=False)
        order = torch.argsort(torch.tensor(rest + self.indices))
        self.register_buffer("order", order, persistent=False)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (*, D) -> (x_J (*, m), x_R (*, D - m))``."""
        return x.index_select(-1, self.index), x.index_select(-1, self.rest)

    def merge(self, discrete: Tensor, rest: Tensor) -> Tensor:
        """Rows ``(*, D)`` from ``x_J (*, m)`` and ``x_R (*, D - m)``; batch shapes broadcast."""
        batch = torch.broadcast_shapes(discrete.shape[:-1], rest.shape[:-1])
        discrete = discrete.expand(*batch, discrete.shape[-1])
        rest = rest.expand(*batch, rest.shape[-1])
        return torch.cat((rest, discrete), dim=-1).index_select(-1, self.order)

    def quantize(self, x: Tensor) -> Tensor:
        """``x (*, D)`` with each discrete column floored to the integer ``k`` of its bin."""
        k, rest = self.split(x)
        return self.merge(torch.floor(k), rest)

    def check(self, x: Tensor, name: str = "data") -> None:
        """Raise ``ValueError`` naming the first value of a discrete column that is no integer."""
        k, _ = self.split(x)
        bad = k != torch.round(k)
        if bool(bad.any()):
            row, j = bad.nonzero()[0].tolist()
            column = self.indices[j]
            raise ValueError(
                f"{name}: discrete column {column} (from 0) must hold integers k (categories"
                f" coded 0..C-1), got {float(x[row, column]):.6g} at row {row}"
            )

    def moments(self, x: Tensor) -> Standardize:
        """The standardization of the dequantized rows: exact moments of ``k + u``.

        With ``u ~ U[0, 1)`` independent of the rows, ``E[k + u] = E[k] + 1/2`` and
        ``Var[k + u] = Var[k] + 1/12``, so a discrete column is never constant; the continuous
        columns get their plain mean and standard deviation (:meth:`Standardize.fit`).

        Args:
            x: Training rows ``(N, D)``, discrete columns holding integers.

        """
        if len(x) < 2:
            raise ValueError(f"the standardization needs at least 2 training rows, got {len(x)}")
        flat = x.detach().to(torch.float64)
        mean, var = flat.mean(0), flat.var(0, correction=0)
        mean[self.index] += 0.5
        var[self.index] += 1 / 12
        return Standardize(mean.to(x.dtype), var.sqrt().to(x.dtype))


def integer_columns(
    x: Tensor, max_levels: int = MAX_LEVELS, max_fraction: float = MAX_FRACTION
) -> list[int]:
    """The columns of ``x (N, D)`` that look discrete: integers only, few distinct values.

    A column is discrete when every value is an integer and it has at most ``max_levels``
    distinct values or at most ``max_fraction · N`` of them (a count column of a large table);
    a continuous measurement rounded to whole units with many distinct values stays continuous.

    Example:
        >>> import torch
        >>> from exactflow.models.columns import integer_columns
        >>> x = torch.stack([torch.randn(200), torch.randint(0, 5, (200,)).double()], 1)
        >>> integer_columns(x)
        [1]

    """
    if x.dim() != 2:
        raise ValueError(f"integer_columns takes rows (N, D), got shape {tuple(x.shape)}")
    limit = max(max_levels, math.floor(max_fraction * len(x)))
    found = []
    for j in range(x.shape[1]):
        column = x[:, j]
        if bool((column == torch.round(column)).all()) and len(column.unique()) <= limit:
            found.append(j)
    return found
