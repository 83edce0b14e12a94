"""A flow seen as a ``torch.distributions.Distribution``: :class:`FlowDistribution`.

Built by calling a flow, ``flow(context)``; :mod:`exactflow.flow` re-exports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from .distributions import ShapeLike, as_shape
from .numerics import tracing

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .flow import Flow

__all__ = ["FlowDistribution"]


# What a flow's distribution view cannot compute in closed form: the attribute, what it lacks,
# and how to estimate it ({c}: the context argument, {all}: the reduction over an event).
_NO_CLOSED_FORM: dict[str, tuple[str, str]] = {
    "mean": ("mean", "estimate it with flow.sample((n,){c}).mean(0)"),
    "mode": ("mode", "find it by maximizing flow.log_prob(x{c}) over x, from flow.sample((n,){c})"),
    "variance": ("variance", "estimate it with flow.sample((n,){c}).var(0)"),
    "stddev": ("standard deviation", "estimate it with flow.sample((n,){c}).std(0)"),
    "entropy()": (
        "entropy",
        "estimate it with -flow.sample_and_log_prob((n,){c})[1].mean(0) (unbiased Monte Carlo)",
    ),
    "cdf(value)": (
        "CDF",
        "estimate P(X <= value) with (flow.sample((n,){c}) <= value){all}.double().mean(0)",
    ),
    "icdf(value)": (
        "inverse CDF",
        "per-coordinate quantiles are flow.sample((n,){c}).quantile(q, dim=0)",
    ),
}


class FlowDistribution(Distribution):
    """A :class:`~exactflow.Flow` seen as a ``torch.distributions.Distribution``.

    With a context of shape ``(*B, C)``, ``batch_shape == B`` and ``event_shape`` is the flow's.
    An unconditional flow has ``batch_shape == ()`` until :meth:`expand` gives it one (Pyro's
    plates do): then its draws are independent over ``B`` and ``log_prob`` broadcasts to
    ``B``. Works wherever torch expects a distribution (``Independent``, ``kl`` by sampling,
    Pyro-style ``log_prob``/``rsample``). Built by calling the flow: ``flow(context)``.

    **Drawn once, scored for free.** Every draw (:meth:`rsample`, :meth:`sample`, Pyro's
    ``d()``) is made by ``flow.rsample_and_log_prob``, which returns ``log q(x)`` with ``x``, and
    the pair is kept: ``log_prob`` of that very tensor (the same object, not modified in place,
    no optimizer step on the flow since: the version counter of its first parameter is checked)
    returns the kept value rather than inverting the flow (``D`` sequential passes per layer for
    an IAF). The kept value carries the draw's graph, so its
    gradient is the one a recomputation would give. A draw made without gradients
    (:meth:`sample`, or under ``torch.no_grad``) is reused only while gradients are off: with
    them on, ``log_prob`` of the fixed point is recomputed so its gradient is the score.

    A flow has no closed-form mean, mode, variance, entropy or CDF: those raise
    ``NotImplementedError`` naming the Monte-Carlo estimate to use.

    Example:
        >>> import torch, exactflow as ef
        >>> d = ef.flows.MAF(features=2, transforms=1)().expand((3,))
        >>> d.sample((5,)).shape, d.log_prob(torch.zeros(2)).shape
        (torch.Size([5, 3, 2]), torch.Size([3]))
        >>> x, log_q = d.rsample_and_log_prob((5,))
        >>> d.log_prob(x) is log_q  # the kept density: no inverse pass
        True

    """

    arg_constraints: dict = {}  # noqa: RUF012  (torch reads this class attribute)

    def __init__(
        self, flow: Flow, context: Tensor | None = None, batch_shape: ShapeLike = ()
    ) -> None:
        if context is not None:  # kept raw: the flow's calls embed it
            context = flow._check_context(context)
            batch_shape = context.shape[: context.dim() - len(flow.context_shape)]
        elif flow.context:
            flow._check_context(None)  # raises the "needs a context" error
        self.flow = flow
        self.context = context
        self._kept: tuple | None = None
        super().__init__(as_shape(batch_shape), flow.event_shape, validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        """Whether draws are differentiable: the base's ``has_rsample`` (a mixture's are not)."""
        return self.flow.base.has_rsample

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(self.flow.transform.domain, len(self.event_shape))

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The flow's parameters: what a variational fit of this distribution trains.

        sbi's ``VIPosterior(potential_fn, prior, q=flow())`` finds a custom ``q``'s
        parameters here.
        """
        return self.flow.parameters()

    def modules(self) -> Iterator[torch.nn.Module]:
        """The flow's modules (``flow.modules()``), as sbi asks of a custom ``q``."""
        return self.flow.modules()

    def _shape(self, sample_shape: ShapeLike) -> torch.Size:
        """Sample shape for the flow: an expanded unconditional flow draws ``(*S, *B)`` points."""
        shape = as_shape(sample_shape)
        return shape + self.batch_shape if self.context is None else shape

    def _broadcast(self, log_prob: Tensor) -> Tensor:
        if self.context is not None or not self.batch_shape:
            return log_prob
        return log_prob.expand(torch.broadcast_shapes(log_prob.shape, self.batch_shape))

    # ------------------------------------------------------------------ drawn once, scored for free
    def _stamp(self) -> tuple[int, int]:
        """Version counters of what a kept density depends on besides the draw itself.

        The flow's first parameter tensor stands for all of them: an optimizer step over the
        flow bumps it, while walking every module on each call would cost a quarter of a
        Pyro step.
        """
        first = next(self.flow.parameters(), None)
        context = self.context
        return (
            -1 if first is None else first._version,
            -1 if context is None else context._version,
        )

    def __getstate__(self) -> dict:
        # A copy or a pickle starts with nothing kept: the kept pair may carry a graph, which
        # deepcopy refuses, and belongs to draws the copy did not make.
        return {**self.__dict__, "_kept": None}

    def _keep(self, value: Tensor, log_prob: Tensor, graph: bool) -> tuple[Tensor, Tensor]:
        if not tracing():  # version counters are host-side state
            self._kept = (value, log_prob, value._version, self._stamp(), graph)
        return value, log_prob

    def _recall(self, value: Tensor) -> Tensor | None:
        """The kept log density of ``value`` if it is the last draw and still valid, else None."""
        if self._kept is None or self._kept[0] is not value or tracing():
            return None
        _, log_prob, version, stamp, graph = self._kept
        if value._version != version or self._stamp() != stamp:
            return None
        if not torch.is_grad_enabled():
            return log_prob.detach()
        return log_prob if graph else None

    def log_prob(self, value: Tensor) -> Tensor:
        kept = self._recall(value)
        if kept is not None:
            return kept
        return self._broadcast(self.flow.log_prob(value, self.context))

    def rsample(self, sample_shape: ShapeLike = torch.Size()) -> Tensor:  # noqa: B008
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: ShapeLike = torch.Size()) -> Tensor:  # noqa: B008
        return self.sample_and_log_prob(sample_shape)[0]

    def rsample_and_log_prob(
        self,
        sample_shape: ShapeLike = torch.Size(),  # noqa: B008
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized draws ``(*S, *B, *event)`` and their log density ``(*S, *B)``."""
        value, log_prob = self.flow.rsample_and_log_prob(self._shape(sample_shape), self.context)
        return self._keep(value, log_prob, torch.is_grad_enabled())

    def sample_and_log_prob(
        self,
        sample_shape: ShapeLike = torch.Size(),  # noqa: B008
    ) -> tuple[Tensor, Tensor]:
        """Draws ``(*S, *B, *event)`` and their log density ``(*S, *B)``, without gradient."""
        value, log_prob = self.flow.sample_and_log_prob(self._shape(sample_shape), self.context)
        return self._keep(value, log_prob, False)

    def transform(self, value: Tensor) -> Tensor:
        """The base point ``z = T(x; c)`` of data ``value (*, *event)`` under this context.

        The flow's own map to its base (no log-determinant), broadcast against the context as
        ``log_prob`` is. It is what a zuko distribution's ``.transform(x)`` gives, so code
        written for zuko flows (sbi's ``ZukoFlow.inverse_transform`` and its ``LC2ST_NF`` use)
        runs on exactflow flows too.
        """
        x, context = self.flow._align(value, self.context)
        return self.flow.transform(x, context)[0]

    def expand(self, batch_shape: ShapeLike, _instance: object = None) -> FlowDistribution:
        batch_shape = as_shape(batch_shape)
        new = self._get_checked_instance(type(self), _instance)
        new.flow, new.context, new._kept = self.flow, self.context, None
        if self.context is not None:  # checked when self was built: no second pass over it
            try:
                event = self.context.shape[self.context.dim() - len(self.flow.context_shape) :]
                new.context = self.context.expand(batch_shape + event)
            except RuntimeError:
                raise ValueError(
                    f"cannot expand a flow distribution of batch shape"
                    f" {tuple(self.batch_shape)} to {tuple(batch_shape)}"
                ) from None
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        return new

    # ------------------------------------------------------------------ no closed form
    def _no_closed_form(self, name: str) -> NotImplementedError:
        what, use = _NO_CLOSED_FORM[name]
        c = "" if self.context is None else ", context"
        k = len(self.event_shape)
        reduce = "" if k == 0 else ".all(-1)" if k == 1 else f".flatten(-{k}).all(-1)"
        view = "flow(context)" if c else "flow()"
        use = use.format(c=c, all=reduce)
        return NotImplementedError(f"{view}.{name}: a flow's {what} has no closed form; {use}")

    @property
    def mean(self) -> Tensor:
        raise self._no_closed_form("mean")

    @property
    def mode(self) -> Tensor:
        raise self._no_closed_form("mode")

    @property
    def variance(self) -> Tensor:
        raise self._no_closed_form("variance")

    @property
    def stddev(self) -> Tensor:
        raise self._no_closed_form("stddev")

    def entropy(self) -> Tensor:
        raise self._no_closed_form("entropy()")

    def cdf(self, value: Tensor) -> Tensor:
        raise self._no_closed_form("cdf(value)")

    def icdf(self, value: Tensor) -> Tensor:
        raise self._no_closed_form("icdf(value)")

    def enumerate_support(self, expand: bool = True) -> Tensor:
        c = "" if self.context is None else ", context"
        raise NotImplementedError(
            f"a flow is continuous: it has no finite support to enumerate;"
            f" draw points with flow.sample((n,){c})"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)},"
            f" event_shape={tuple(self.event_shape)})"
        )
