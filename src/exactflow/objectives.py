"""Training objectives: what :func:`exactflow.train.fit` minimizes and how it validates.

The trainer knows nothing of flows. It asks an :class:`Objective` for a **per-row loss** on a
batch, minimizes its mean, and validates with the objective's own metric (averaged over the
validation rows); the metric's :attr:`~Objective.name` names the columns of ``metrics.csv``
(``train_<name>``, ``val_<name>``). An objective that draws its own samples (reverse KL) says
so with :attr:`~Objective.needs_data` and is called with ``x=None``.

* :class:`NLL` — maximum likelihood, ``loss = -log p(x | c)`` per row: a flow's density is
  exact, so this is the whole of density estimation.

Example:
    >>> import torch, exactflow as ef
    >>> flow = ef.flows.MAF(features=2, transforms=1, hidden=(8,))
    >>> ef.objectives.NLL().loss(flow, torch.zeros(3, 2)).shape
    torch.Size([3])

"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

from torch import Tensor, nn

from .flow import Flow

__all__ = ["NLL", "Objective"]


class Objective(ABC):
    """The protocol of a training objective.

    Attributes:
        name: Short name of the validation metric; ``metrics.csv`` has ``train_<name>`` and
            ``val_<name>`` columns.
        needs_data: Whether :meth:`loss` reads data; ``False`` for objectives that draw their
            own samples (they are called with ``x=None`` and ``fit`` takes no data).

    """

    name: str = "loss"
    needs_data: bool = True

    def check_model(self, model: nn.Module) -> None:  # noqa: B027  (optional hook)
        """Raise ``TypeError`` unless this objective can train ``model`` (default: any module)."""

    def check_data(  # noqa: B027  (optional hook)
        self, model: nn.Module, x: Tensor, context: Tensor | None, name: str = "data"
    ) -> None:
        """Raise ``ValueError`` unless ``x (N, *event)`` and ``context`` fit ``model``.

        Called once per data set before training (the trainer has already checked that the
        values are finite real tensors with matching row counts), so the hot loop need not.
        """

    @contextlib.contextmanager
    def fitting(self, model: nn.Module) -> Iterator[None]:
        """Context of a training run: per-call input checks may be switched off inside it."""
        yield

    @abstractmethod
    def loss(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        """Per-row loss ``(B,)`` of a batch ``x (B, *event)`` (``x=None`` without data)."""

    def metric(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        """Per-row validation metric ``(B,)`` in eval mode, averaged by the trainer (the loss)."""
        return self.loss(model, x, context)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NLL(Objective):
    """Negative log-likelihood, ``loss(x, c) = -log p(x | c)`` per row (nats).

    Minimizing its mean over the data is maximum likelihood, which for a flow is exact: no bound
    and no estimate (in eval mode; a transform with an estimated log-determinant trains on an
    unbiased estimate). Validation reports the same quantity, ``val_nll``.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.RealNVP(features=2, transforms=2, hidden=(8,))
        >>> x = torch.randn(100, 2)
        >>> bool(torch.allclose(ef.objectives.NLL().loss(flow, x), -flow.log_prob(x)))
        True

    """

    name = "nll"

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, Flow):
            raise TypeError(f"NLL trains an exactflow Flow, got {type(model).__name__}")

    def check_data(
        self, model: nn.Module, x: Tensor, context: Tensor | None, name: str = "data"
    ) -> None:
        flow = model
        event = tuple(flow.event_shape)
        if tuple(x.shape[1:]) != event:
            expected = ", ".join(["N", *map(str, event)])
            raise ValueError(f"{name} must have shape ({expected}), got {tuple(x.shape)}")
        if flow.context == 0 and context is not None:
            raise ValueError(f"the flow is unconditional but {name} comes with a context")
        if flow.context > 0:
            if context is None:
                raise ValueError(
                    f"the flow is conditional (context width {flow.context}): pass {name} as"
                    " (x, context)"
                )
            if context.dim() != 2 or context.shape[1] != flow.context:
                raise ValueError(
                    f"{name} context must have shape (N, {flow.context}), got"
                    f" {tuple(context.shape)}"
                )
        flow.check_domain(x, name)

    @contextlib.contextmanager
    def fitting(self, model: nn.Module) -> Iterator[None]:
        # The data were checked once, up front: no per-step checks (and no host syncs).
        validate = model.validate
        model.validate = False
        try:
            yield
        finally:
            model.validate = validate

    def loss(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        if x is None:
            raise ValueError("NLL needs data: pass data= to fit")
        return -model.log_prob(x, context)
