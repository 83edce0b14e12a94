"""Masked autoregressive presets: MAF and IAF."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..flow import Flow
from ..transforms import AffineMap
from ..transforms.bounds import BoundsLike
from .chains import autoregressive_flow, config_of

__all__ = ["IAF", "MAF"]


class MAF(Flow):
    """Masked autoregressive flow (Papamakarios et al. 2017).

    ``transforms`` masked autoregressive affine layers
    ``y_i = x_i · exp(s_i(x_{<i}, c)) + t_i(x_{<i}, c)``, each conditioned by a
    :class:`~exactflow.nn.MADE`; ``log|det J| = Σ_layers Σ_i s_i``. Density: one network pass
    per layer. Sampling: ``D`` passes per layer. Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` the MADEs read (0: unconditional).
        transforms: Number of autoregressive layers.
        hidden: Hidden widths of each MADE.
        permutation: How the coordinates mix between layers: ``"reverse"`` reverses the
            autoregressive order every layer, ``"random"`` draws a random order per layer (from
            ``seed``), ``"lu"`` reverses it and adds a learnable LU-factorized linear map
            between layers.
        residual: Masked residual blocks in the MADEs.
        seed: Seed of the random orders.
        scale_bound: Largest absolute log-scale per layer, approached softly
            (:class:`~exactflow.transforms.AffineMap`); ``None``: unbounded.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.MAF(features=3, transforms=2, hidden=(16, 16))
        >>> flow.log_prob(torch.randn(10, 3)).shape
        torch.Size([10])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        scale_bound: float | None = 3.0,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        autoregressive_flow(
            self, "MAF", AffineMap(scale_bound), config_of(locals()), validate,
            bounds=bounds, embedding=embedding,
        )  # fmt: skip


class IAF(Flow):
    """Inverse autoregressive flow (Kingma et al. 2016).

    The layers of :class:`MAF`, each inverted: sampling computes
    ``x_i = z_i · exp(s_i(z_{<i}, c)) + t_i(z_{<i}, c)`` in one network pass per layer, while
    the density of data not drawn from the flow needs ``D`` passes per layer. The natural
    choice for variational posteriors, which are sampled and scored on their own samples
    (:meth:`~exactflow.Flow.rsample_and_log_prob` is one pass). Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` the MADEs read (0: unconditional).
        transforms: Number of autoregressive layers.
        hidden: Hidden widths of each MADE.
        permutation: ``"reverse"``, ``"random"`` or ``"lu"`` (see :class:`MAF`).
        residual: Masked residual blocks in the MADEs.
        seed: Seed of the random orders.
        scale_bound: Largest absolute log-scale per layer, approached softly
            (:class:`~exactflow.transforms.AffineMap`); ``None``: unbounded.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls (see
            :class:`~exactflow.Flow`).
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.IAF(features=3, transforms=2, hidden=(16, 16))
        >>> x, log_p = flow.rsample_and_log_prob((10,))
        >>> log_p.shape
        torch.Size([10])

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        residual: bool = False,
        seed: int = 0,
        scale_bound: float | None = 3.0,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        autoregressive_flow(
            self, "IAF", AffineMap(scale_bound), config_of(locals()), validate, inverse=True,
            bounds=bounds, embedding=embedding,
        )  # fmt: skip
