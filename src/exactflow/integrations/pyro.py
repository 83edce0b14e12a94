"""A flow's distribution view as a Pyro distribution.

``flow(context)`` returns a :class:`PyroFlowDistribution` by itself once the program has imported
Pyro (``"pyro" in sys.modules``); nothing needs to import this module, and importing exactflow
never imports Pyro. Pyro's own ``TorchDistributionMixin`` supplies what Pyro asks of a
distribution: ``d()`` (a reparameterized draw), ``.to_event``, ``.mask``, ``.expand_by``,
``event_dim``, ``shape``, ``score_parts``. The flow's view supplies the rest, including the kept
density of its own draws, so a guide's ``log q(z)`` at the ``z`` it just drew costs nothing
(:class:`~exactflow.flow.FlowDistribution`).

As a guide, with ``pyro.module`` registering the flow's parameters::

    import pyro, pyro.distributions as dist
    flow = ef.flows.IAF(features=2)

    def model(x):                                      # x: (N, 2)
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("q", flow)
        pyro.sample("z", flow())

A conditional flow ``flow(c)`` with ``c`` of shape ``(N, C)`` has batch shape ``(N,)``: sample it
inside a plate of size ``N`` (an amortized guide), or use it as a likelihood,
``pyro.sample("x", flow(c), obs=x)``. Plates and ``vectorize_particles`` expand unconditional
flows too.
"""

from __future__ import annotations

from pyro.distributions.torch_distribution import TorchDistributionMixin

from ..flow_distribution import FlowDistribution

__all__ = ["PyroFlowDistribution"]


class PyroFlowDistribution(FlowDistribution, TorchDistributionMixin):
    """A :class:`~exactflow.flow.FlowDistribution` that is also a Pyro distribution.

    Built by ``flow(context)`` once Pyro is imported; its shapes, draws and densities are the
    :class:`~exactflow.flow.FlowDistribution`'s. The torch base comes first in the method order,
    as in Pyro's own wrappers, so ``batch_shape``, ``event_shape`` and ``expand`` (which returns
    this class, also for unconditional flows) are the flow's; Pyro's mixin adds ``__call__``,
    ``to_event``, ``mask``, ``expand_by``, ``event_dim``, ``shape`` and ``score_parts``.

    Example:
        >>> import torch, pyro, exactflow as ef
        >>> flow = ef.flows.MAF(features=2, transforms=1)
        >>> d = flow().expand((3,)).to_event(1)
        >>> d.batch_shape, d.event_shape
        (torch.Size([]), torch.Size([3, 2]))
        >>> pyro.sample("z", flow()).shape
        torch.Size([2])

    """

    @classmethod
    def infer_shapes(cls, **arg_shapes: tuple[int, ...]) -> tuple:
        raise NotImplementedError(
            "PyroFlowDistribution.infer_shapes: the event shape is the flow's, not its"
            " arguments'; read flow(context).batch_shape and .event_shape instead"
        )
