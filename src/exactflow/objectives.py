"""Training objectives: what :func:`exactflow.train.fit` minimizes and how it validates.

The trainer knows nothing of flows. It asks an :class:`Objective` for a **per-row loss** on a
batch, minimizes its mean, and validates with the objective's own metric (averaged over the
validation rows); the metric's :attr:`~Objective.name` names the columns of ``metrics.csv``
(``train_<name>``, ``val_<name>``). An objective that draws its own samples (reverse KL) says
so with :attr:`~Objective.needs_data` and is called with ``x=None``.

* :class:`NLL` — maximum likelihood, ``loss = -log p(x | c)`` per row: a flow's density is
  exact, so this is the whole of density estimation.
* :class:`ReverseKL` — variational inference: a flow ``q`` fitted to an unnormalized target
  ``p̃`` by minimizing ``E_q[log q(z) - log p̃(z)] = KL(q ‖ p) - log Z`` on its own samples.
* :class:`ELBO` and :class:`IWAE` — a latent-variable model
  (:class:`~exactflow.models.LatentVariableModel`, e.g. a VAE whose posterior is a flow) fitted
  by its evidence lower bound, or by the tighter importance-weighted bound.

Example:
    >>> import torch, exactflow as ef
    >>> flow = ef.flows.MAF(features=2, transforms=1, hidden=(8,))
    >>> ef.objectives.NLL().loss(flow, torch.zeros(3, 2)).shape
    torch.Size([3])

"""

from __future__ import annotations

import contextlib
import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .flow import Flow
from .models import LatentVariableModel
from .transforms.continuous import ContinuousFlow, regularization

__all__ = ["ELBO", "IWAE", "NLL", "Objective", "ReverseKL"]


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

    def shard(self, rank: int, world: int) -> Objective:
        """The objective for rank ``rank`` of ``world`` training processes (default: itself).

        The trainer shares out the batches of an objective with data; one that draws its own
        samples returns a copy that draws rank ``rank``'s share of them.
        """
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NLL(Objective):
    """Negative log-likelihood, ``loss(x, c) = -log p(x | c)`` per row (nats).

    Minimizing its mean over the data is maximum likelihood, which for a flow is exact: no bound
    and no estimate (in eval mode; a transform with an estimated log-determinant trains on an
    unbiased estimate). Validation reports the same quantity, ``val_nll``.

    **Regularized dynamics** (continuous-time flows, :class:`~exactflow.flows.FFJORD`): with
    ``kinetic`` or ``jacobian`` above zero the training loss adds, per row,
    ``kinetic·∫‖f‖² dt + jacobian·∫‖∂f/∂z‖_F² dt`` integrated along each
    :class:`~exactflow.transforms.ContinuousFlow`'s solve (Finlay et al. 2020; the Frobenius
    norm by Hutchinson's estimate in training): straighter, cheaper trajectories. The training
    loss (``train_nll``) then includes the penalty; validation (``val_nll``) stays the pure NLL.

    Args:
        kinetic: Weight of the kinetic energy ``∫‖f‖² dt`` (0: off).
        jacobian: Weight of the Jacobian norm ``∫‖∂f/∂z‖_F² dt`` (0: off).

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.RealNVP(features=2, transforms=2, hidden=(8,))
        >>> x = torch.randn(100, 2)
        >>> bool(torch.allclose(ef.objectives.NLL().loss(flow, x), -flow.log_prob(x)))
        True

    """

    name = "nll"

    def __init__(self, kinetic: float = 0.0, jacobian: float = 0.0) -> None:
        for key, value in (("kinetic", kinetic), ("jacobian", jacobian)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"NLL: {key} must be a finite number >= 0, got {value!r}")
        self.kinetic, self.jacobian = float(kinetic), float(jacobian)

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, Flow):
            raise TypeError(f"NLL trains an exactflow Flow, got {type(model).__name__}")
        if self.kinetic or self.jacobian:
            if not any(isinstance(m, ContinuousFlow) for m in model.modules()):
                raise ValueError(
                    "NLL: kinetic and jacobian regularize continuous-time flows (FFJORD);"
                    f" this {type(model).__name__} has none"
                )

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
            shape = flow.context_shape  # the raw context's: an embedding's input, else (C,)
            if tuple(context.shape[1:]) != shape or context.dim() != 1 + len(shape):
                expected = ", ".join(["N", *map(str, shape)])
                raise ValueError(
                    f"{name} context must have shape ({expected}), got {tuple(context.shape)}"
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
        if not (self.kinetic or self.jacobian):
            return -model.log_prob(x, context)
        with regularization(model, self.kinetic, self.jacobian) as penalty:
            nll = -model.log_prob(x, context)
        return nll + penalty()

    def metric(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        if x is None:
            raise ValueError("NLL needs data: pass data= to fit")
        return -model.log_prob(x, context)

    def __repr__(self) -> str:
        if not (self.kinetic or self.jacobian):
            return "NLL()"
        return f"NLL(kinetic={self.kinetic}, jacobian={self.jacobian})"


def _count(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


class ReverseKL(Objective):
    """Reverse KL divergence to an unnormalized target: variational inference with a flow.

    For a flow ``q`` and a target known up to its normalizer, ``p(z) = p̃(z)/Z``,

        E_q[log q(z) - log p̃(z)] = KL(q ‖ p) - log Z = -ELBO,

    so minimizing it over ``q`` minimizes ``KL(q ‖ p)`` without knowing ``Z`` (Rezende &
    Mohamed 2015). Each step draws ``samples`` points by reparameterization and scores them in
    the same pass (:meth:`~exactflow.Flow.rsample_and_log_prob`: one network pass per layer for
    IAF, planar, radial and Sylvester flows and for coupling flows such as RealNVP and
    ``NSF(coupling=True)``; ``D`` sequential passes per layer for MAF and autoregressive NSF,
    whose sampling direction is the autoregressive one). Validation
    reports the same estimate, ``val_neg_elbo``, on ``val_samples`` fresh draws. The per-sample
    loss is an unbiased estimate of ``-ELBO``; :func:`exactflow.metrics.log_normalizer` turns a
    trained flow into an estimate of ``log Z`` and of the KL itself.

    Args:
        log_target: ``z (..., D) -> log p̃(z) (...)``, batched and differentiable (e.g. an
            :mod:`exactflow.targets` target).
        samples: Draws per training step.
        val_samples: Draws per validation.

    Example:
        >>> import torch, exactflow as ef
        >>> def log_target(z):  # N(1, 0.5²) in 2-D, unnormalized
        ...     return -0.5 * (((z - 1) / 0.5) ** 2).sum(-1)
        >>> flow = ef.flows.IAF(features=2, transforms=2, hidden=(16,))
        >>> objective = ef.objectives.ReverseKL(log_target, samples=64)
        >>> objective.loss(flow, None).shape
        torch.Size([64])

    """

    name = "neg_elbo"
    needs_data = False

    def __init__(
        self,
        log_target: Callable[[Tensor], Tensor],
        samples: int = 256,
        val_samples: int = 4096,
    ) -> None:
        if not callable(log_target):
            raise TypeError(
                f"ReverseKL: log_target must be a callable z -> log density, got"
                f" {type(log_target).__name__}"
            )
        self.log_target = log_target
        self.samples = _count("ReverseKL", "samples", samples)
        self.val_samples = _count("ReverseKL", "val_samples", val_samples)

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, Flow):
            raise TypeError(f"ReverseKL trains an exactflow Flow, got {type(model).__name__}")
        if model.context:
            raise ValueError(
                f"ReverseKL fits an unconditional flow; this one needs a context of width"
                f" {model.context}"
            )
        with torch.no_grad():
            z = model.sample((2,))
            value = self.log_target(z)
        if not isinstance(value, Tensor) or tuple(value.shape) != (2,):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"log_target must map z of shape (n, {model.features}) to log densities of"
                f" shape (n,); for n=2 it returned {got}"
            )
        if not value.is_floating_point():
            raise TypeError(f"log_target must return floating-point values, got {value.dtype}")

    def loss(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        return self._estimate(model, self.samples)

    def metric(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        return self._estimate(model, self.val_samples)

    def shard(self, rank: int, world: int) -> ReverseKL:
        """A copy drawing rank ``rank``'s share of ``samples`` and ``val_samples``.

        The shares' sizes differ by at most one and add up to the whole.

        Example:
            >>> objective = ReverseKL(lambda z: -(z**2).sum(-1), samples=10, val_samples=7)
            >>> [objective.shard(r, 3).samples for r in range(3)]
            [4, 3, 3]

        """
        if min(self.samples, self.val_samples) < world:
            raise ValueError(
                f"ReverseKL: samples ({self.samples}) and val_samples ({self.val_samples}) must be"
                f" at least the number of processes ({world})"
            )
        share = copy.copy(self)
        share.samples = self.samples // world + (rank < self.samples % world)
        share.val_samples = self.val_samples // world + (rank < self.val_samples % world)
        return share

    def _estimate(self, model: nn.Module, n: int) -> Tensor:
        z, log_q = model.rsample_and_log_prob((n,))
        return log_q - self.log_target(z)

    def __repr__(self) -> str:
        return f"ReverseKL(samples={self.samples}, val_samples={self.val_samples})"


class _Bound(Objective):
    """Objectives on the importance log-weights of a latent-variable model."""

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, LatentVariableModel):
            raise TypeError(
                f"{type(self).__name__} trains an exactflow.models.LatentVariableModel (such as"
                f" ef.models.VAE), got {type(model).__name__}"
            )

    def check_data(
        self, model: nn.Module, x: Tensor, context: Tensor | None, name: str = "data"
    ) -> None:
        model.check_data(x, context, name)

    @contextlib.contextmanager
    def fitting(self, model: nn.Module) -> Iterator[None]:
        # The data were checked once, up front: the flows inside (the posterior, a flow prior)
        # skip their per-call checks and host syncs while training.
        flows = [m for m in model.modules() if isinstance(m, Flow)]
        saved = [flow.validate for flow in flows]
        for flow in flows:
            flow.validate = False
        try:
            yield
        finally:
            for flow, validate in zip(flows, saved, strict=True):
                flow.validate = validate


class ELBO(_Bound):
    """The negative evidence lower bound, ``-E_q[log p(x, z) - log q(z | x)]`` per row.

    ``ELBO(x) = log p(x) - KL(q(z | x) ‖ p(z | x)) ≤ log p(x)`` (Kingma & Welling 2014),
    estimated with ``samples`` reparameterized posterior draws per row. Validation reports the
    same estimate (``val_neg_elbo``). A flow posterior tightens the bound by shrinking the KL
    term; only an exact posterior closes it.

    Args:
        samples: Posterior draws per row.

    Example:
        >>> import exactflow as ef
        >>> ef.objectives.ELBO(samples=2)
        ELBO(samples=2)

    """

    name = "neg_elbo"

    def __init__(self, samples: int = 1) -> None:
        self.samples = _count("ELBO", "samples", samples)

    def loss(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        if x is None:
            raise ValueError("ELBO needs data: pass data= to fit")
        return -model.log_weights(x, self.samples, context).mean(0)

    def __repr__(self) -> str:
        return f"ELBO(samples={self.samples})"


class IWAE(_Bound):
    """The negative importance-weighted bound, ``-E[log (1/k) Σ_j w_j]`` per row.

    With ``w_j = p(x, z_j)/q(z_j | x)`` for ``k`` posterior draws, the bound is at least the ELBO
    and increases to ``log p(x)`` as ``k`` grows (Burda et al. 2016). ``IWAE(1)`` is the ELBO.
    Validation reports the same bound (``val_neg_iwae``).

    Args:
        k: Posterior draws per row.

    Example:
        >>> import exactflow as ef
        >>> ef.objectives.IWAE(k=5)
        IWAE(k=5)

    """

    name = "neg_iwae"

    def __init__(self, k: int = 5) -> None:
        self.k = _count("IWAE", "k", k)

    def loss(self, model: nn.Module, x: Tensor | None, context: Tensor | None = None) -> Tensor:
        if x is None:
            raise ValueError("IWAE needs data: pass data= to fit")
        log_w = model.log_weights(x, self.k, context)
        return math.log(self.k) - torch.logsumexp(log_w, 0)

    def __repr__(self) -> str:
        return f"IWAE(k={self.k})"
