"""Continuous-time flows (Chen et al. 2018; Grathwohl et al. 2019, FFJORD)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import Compose, ContinuousFlow
from ..transforms.bounds import BoundsLike
from .chains import check_preset, config_of

__all__ = ["FFJORD"]


class FFJORD(Flow):
    """FFJORD: ``transforms`` continuous-time flows ``dz/dt = f_k(z, t, c)`` in sequence.

    Each step is a :class:`~exactflow.transforms.ContinuousFlow`: an ODE with a free-form
    network ``f`` (``hidden`` widths, tanh), solved by torchdiffeq's ``solver`` at ``atol``/
    ``rtol`` in training (Hutchinson trace estimate, adjoint gradients) and at the tighter eval
    tolerances in eval mode, where the log-determinant is exact up to the solver's error. The
    ``nfe`` of each step counts the evaluations of its ``f`` in its last solve. Regularize the
    dynamics with ``ef.objectives.NLL(kinetic=..., jacobian=...)``. Base: standard normal.
    Needs ``pip install 'exactflow[ode]'``.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` the dynamics read (0: unconditional).
        transforms: Number of ODE steps.
        hidden: Hidden widths of each step's network.
        time: Integration time ``T`` of each step.
        solver: torchdiffeq method (an adaptive one such as ``"dopri5"``).
        atol: Absolute tolerance of the solver in training.
        rtol: Relative tolerance of the solver in training.
        validate: Check the inputs of direct ``log_prob``/``sample`` calls.
        bounds: Bounded columns, ``(low, high)`` per column or for all (see
            :class:`~exactflow.Flow`).
        embedding: A module from the raw context to the ``context`` features the
            conditioners read, trained with the flow (see :class:`~exactflow.Flow`).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.FFJORD(features=2, hidden=(16,)).eval()
        >>> flow.log_prob(torch.randn(5, 2)).shape, flow.sample((3,)).shape
        (torch.Size([5]), torch.Size([3, 2]))

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 1,
        hidden: Sequence[int] = (64, 64),
        time: float = 1.0,
        solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        config = config_of(locals())
        check_preset("FFJORD", features, transforms)
        steps = [
            ContinuousFlow(features, hidden, context, time, solver, atol, rtol)
            for _ in range(transforms)
        ]
        base = StandardNormal(features)
        super().__init__(Compose(steps), base, validate, bounds=bounds, embedding=embedding)
        self.config = config
