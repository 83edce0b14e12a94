"""The flow: a base density pushed through an invertible transform, and its distribution view.

A flow with transform ``T`` (data -> base) and base density ``p_base`` has the exact density

    log p(x) = log p_base(T(x)) + log|det ∂T/∂x|

and is sampled by drawing ``z ~ p_base`` and returning ``T^{-1}(z)``.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from .distributions import BaseDistribution, ShapeLike, as_shape
from .flow_distribution import FlowDistribution
from .numerics import tracing
from .transforms.base import Compose, Transform, sum_events
from .transforms.bounds import Bounds, BoundsLike

__all__ = ["DTYPES", "Flow", "FlowDistribution", "dtype_name", "placement"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
"""The floating-point dtypes a flow is trained, saved and evaluated in, by name."""


def placement(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The floating-point dtype and the device of a module's parameters and buffers.

    The one place exactflow looks these up. The first floating-point tensor decides (integer
    buffers such as permutation indices are skipped); a module without one is float32 on the CPU.

    Example:
        >>> import exactflow as ef
        >>> ef.flow.placement(ef.flows.MAF(features=2, transforms=1).double())
        (torch.float64, device(type='cpu'))

    """
    if isinstance(module, Flow):  # its base density's anchor buffer follows every .to()
        anchor = module.base._anchor
        return anchor.dtype, anchor.device
    for t in itertools.chain(module.parameters(), module.buffers()):  # lazily: stops early
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a supported dtype (``"float32"``/``"float64"``); ``ValueError`` otherwise."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"flows in float32 or float64 are supported, got {dtype}")


def _check_temperature(temperature: object) -> float:
    """``temperature`` as a positive finite float; ``ValueError``/``TypeError`` otherwise."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not 0.0 < temperature < float("inf"):
        raise ValueError(f"temperature must be positive and finite, got {temperature}")
    return float(temperature)


def _check_embedding(embedding: nn.Module | None, context: int) -> nn.Module | None:
    """``embedding`` after checking it fits a flow of context width ``context``."""
    if embedding is None:
        return None
    if not isinstance(embedding, nn.Module):
        raise TypeError(f"Flow: embedding must be an nn.Module, got {type(embedding).__name__}")
    if context == 0:
        raise ValueError("Flow: an embedding needs a conditional flow (context > 0), got context=0")
    features = getattr(embedding, "features", None)
    if features != context:
        raise ValueError(
            f"Flow: the embedding outputs {features} features but the flow reads a context of"
            f" {context}; make them equal"
        )
    in_shape = getattr(embedding, "in_shape", None)
    if not isinstance(in_shape, Sequence) or not all(isinstance(n, int) for n in in_shape):
        raise TypeError(
            f"Flow: embedding.in_shape must be a tuple of ints (the raw context's shape),"
            f" got {in_shape!r}"
        )
    return embedding


class Flow(nn.Module):
    """A normalizing flow: a base density pushed through an invertible transform.

    ``log p(x | c) = log p_base(T(x; c) | c) + log|det ∂T/∂x|`` exactly, where ``T`` is
    ``transform`` (data -> base); samples are ``T^{-1}(z; c)`` with ``z ~ p_base``.

    Shapes follow ``torch.distributions``: a context ``(*B, C)`` gives batch shape ``B``;
    ``log_prob`` takes ``(*S, *B, *event)`` (broadcasting) and returns ``(*S, *B)``;
    ``sample(S)`` returns ``(*S, *B, *event)``. The data's event shape is the base's, mapped back
    through the transform (``transform.inverse_shape(base.event_shape)``), so an image flow
    whose steps flatten ``(C, H, W)`` to ``(D,)`` has a base over ``(D,)`` and events
    ``(C, H, W)``.

    Input checks run on direct calls only: under ``torch.compile``, ``torch.export`` and
    ``torch.func`` transforms (:func:`exactflow.numerics.tracing`) they are skipped.

    Args:
        transform: The data -> base transform (usually a :class:`~exactflow.transforms.Compose`).
        base: The base density.
        validate: Check inputs (dtype, shape, finiteness, domain, context) before use.
        bounds: Bounded columns: one ``(low, high)`` for all columns, or one ``(low, high)``
            or ``None`` per column, either end ``None``/``∓inf`` for open. The flow then starts
            with :class:`~exactflow.transforms.Bounds` (the map of each interval onto the real
            line): its density is zero outside the box (``log_prob`` is ``-inf`` there, never
            NaN nor an error) and its samples lie strictly inside. Vector events only.
        embedding: A module from the raw context ``(*B, *embedding.in_shape)`` to the
            context vector ``(*B, C)`` the transform and base read, with attributes
            ``in_shape`` and ``features == C``. Stored as :attr:`embedding` (trained with the
            flow, saved in its ``state_dict``) and applied once per call, before broadcasting.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> base = ef.distributions.StandardNormal(2)
        >>> flow = ef.Flow(T.Compose([T.Affine(2), T.Reverse(2)]), base)
        >>> flow.log_prob(torch.randn(10, 2)).shape
        torch.Size([10])
        >>> flow.sample((5,)).shape
        torch.Size([5, 2])

    """

    def __init__(
        self,
        transform: Transform,
        base: BaseDistribution,
        validate: bool = True,
        *,
        bounds: BoundsLike = None,
        embedding: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(f"Flow: transform must be a Transform, got {type(transform).__name__}")
        if not isinstance(base, BaseDistribution):
            raise TypeError(f"Flow: base must be a BaseDistribution, got {type(base).__name__}")
        # Base events with more dimensions than the transform writes: its ladj has the extra
        # ones, summed away in log_prob.
        self._extra = len(base.event_shape) - transform.event_ndim_out
        if self._extra < 0:
            raise ValueError(
                f"Flow: the base has events of shape {tuple(base.event_shape)} but the transform"
                f" outputs events of {transform.event_ndim_out} dimension(s)"
            )
        try:
            self._event_shape = transform.inverse_shape(base.event_shape)
        except ValueError as error:
            raise ValueError(
                f"Flow: the transform does not fit the base's event shape"
                f" {tuple(base.event_shape)}: {error}"
            ) from None
        if bounds is not None:
            if len(self._event_shape) != 1:
                raise ValueError(
                    f"Flow: bounds= applies to vector events (*, D), got events of shape"
                    f" {tuple(self._event_shape)}"
                )
            step = Bounds(bounds, self._event_shape[0])
            self._bounds: list[tuple[float, float]] | None = step.pairs
            transform = Compose([step, transform])
        else:
            self._bounds = None
        self.transform = transform
        self.base = base
        self.validate = validate
        self.embedding = _check_embedding(embedding, self.context)

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one data point: ``transform.inverse_shape(base.event_shape)``."""
        return self._event_shape

    @property
    def features(self) -> int:
        """Number of scalars in one data point."""
        return self.event_shape.numel()

    @property
    def bounds(self) -> list[tuple[float, float]] | None:
        """Every column's ``(low, high)`` (open ends ``∓inf``) of a flow built with ``bounds=``.

        ``None`` for a flow without them.
        """
        return None if self._bounds is None else list(self._bounds)

    @property
    def context(self) -> int:
        """Context width ``C`` the transform and base read (0: unconditional).

        With an :attr:`embedding`, its output width; the raw context has shape
        :attr:`context_shape`.
        """
        return max(self.transform.context, self.base.context)

    @property
    def context_shape(self) -> tuple[int, ...]:
        """Event shape of the raw context a call takes: ``embedding.in_shape``, else ``(C,)``.

        ``()`` for an unconditional flow.
        """
        if self.embedding is not None:
            return tuple(self.embedding.in_shape)
        return (self.context,) if self.context else ()

    @property
    def config(self) -> dict | None:
        """The preset's constructor keywords as JSON values (a checkpoint's spec saves them).

        Set by presets (``self.config = config_of(locals())``); a hand-built flow has none
        (``AttributeError``), and a preset with an unregistered ``embedding`` has ``None``.
        Kept as JSON text and read back as a fresh dict: the flow holds no lists inside dicts,
        which tools that walk a module's attributes and rebuild the containers they meet
        cannot handle (sbi's ``VIPosterior`` walks its ``q`` that way).
        """
        text = self.__dict__.get("_config")
        if text is None:
            raise AttributeError(f"{type(self).__name__} has no config (not built by a preset)")
        return json.loads(text)

    @config.setter
    def config(self, value: dict | None) -> None:
        if value is not None and isinstance(value.get("embedding"), nn.Module):
            value = None  # an unregistered embedding: not rebuildable by name
        self.__dict__["_config"] = json.dumps(value)

    def upgrade_weights(self, weights: dict[str, Tensor], version: int) -> dict[str, Tensor]:
        """Weights from a checkpoint of an older format ``version``, in this flow's layout.

        Called by :func:`exactflow.checkpoint.load` before the weights are checked against the
        model, for files written before the current format; a preset whose layout changed maps
        the old weights onto the new one here, or raises ``ValueError`` saying why it cannot.
        """
        return weights

    # ------------------------------------------------------------------ validation
    def _dtype(self) -> torch.dtype:
        return placement(self)[0]

    def _check_tensor(self, name: str, value: object, last: tuple[int, ...]) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        dtype = self._dtype()
        if value.dtype != dtype:
            if not value.is_floating_point():
                raise TypeError(
                    f"{name} must be a floating-point tensor ({dtype}), got {value.dtype}"
                )
            raise TypeError(
                f"{name} has dtype {value.dtype} but the flow's parameters are {dtype};"
                f" convert one with .to({dtype}) or flow.to({value.dtype})"
            )
        n = len(last)
        if value.dim() < n or tuple(value.shape[value.dim() - n :]) != last:
            raise ValueError(
                f"{name} must have shape (..., {', '.join(map(str, last))}),"
                f" got {tuple(value.shape)}"
            )
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            where = (~finite).nonzero()[0].tolist()
            raise ValueError(f"{name} has a non-finite value at index {tuple(where)}")
        return value

    def check_domain(self, x: Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` naming the first entry of ``x`` outside the transform's domain.

        Finite values are real numbers, so only a narrower domain costs a pass over ``x``. The
        box of ``bounds=`` is no error: outside it the density is zero (``log_prob = -inf``).
        """
        domain = self.transform.domain
        if domain is constraints.real or self._bounds is not None:
            return
        inside = domain.check(x)
        if not bool(inside.all()):
            where = tuple((~inside).nonzero()[0].tolist())
            raise ValueError(f"{name} is outside the flow's domain {domain} at index {where}")

    def _check_context(self, context: Tensor | None) -> Tensor | None:
        """The raw context after its checks (``(*B, *context_shape)``); ``ValueError`` else."""
        width = self.context  # a property: read once
        if width == 0:
            if context is not None:
                raise ValueError(
                    f"this flow is unconditional but a context of shape"
                    f" {tuple(context.shape)} was given"
                )
            return None
        embedding = self.embedding
        shape = (width,) if embedding is None else tuple(embedding.in_shape)
        if context is None:
            raise ValueError(
                f"this flow is conditional: it needs context= of shape"
                f" (..., {', '.join(map(str, shape))}), got None"
            )
        if self.validate and not tracing():
            self._check_tensor("context", context, shape)
        return context

    def _prepare_context(self, context: Tensor | None) -> Tensor | None:
        """The checked context as the vector ``(*B, C)`` the transform reads (embedded)."""
        context = self._check_context(context)
        if context is None or self.embedding is None:
            return context
        return self.embedding(context)

    # ------------------------------------------------------------------ density
    def _align(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Checked ``x`` and ``context``, broadcast to one batch shape."""
        context = self._prepare_context(context)
        event = tuple(self.event_shape)
        if self.validate and not tracing():
            self._check_tensor("x", x, event)
            self.check_domain(x)
        if context is not None:
            batch = torch.broadcast_shapes(x.shape[: x.dim() - len(event)], context.shape[:-1])
            x = x.expand(batch + self.event_shape)
            context = context.expand(batch + context.shape[-1:])
        return x, context

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log density ``log p(x | context)``; shape ``(*batch)``."""
        x, context = self._align(x, context)
        z, ladj = self.transform(x, context)
        return self.base.log_prob(z, context) + sum_events(ladj, self._extra)

    # ------------------------------------------------------------------ sampling
    def _sample_context(self, shape: ShapeLike, context: Tensor | None) -> tuple:
        shape = as_shape(shape)
        context = self._prepare_context(context)
        if context is not None:
            shape = shape + context.shape[:-1]
            context = context.expand(shape + context.shape[-1:])
        return shape, context

    def rsample(self, shape: ShapeLike = (), context: Tensor | None = None) -> Tensor:
        """Reparameterized samples ``(*shape, *B, *event)``, differentiable in the parameters."""
        return self.rsample_and_log_prob(shape, context)[0]

    def sample(
        self, shape: ShapeLike = (), context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Samples ``(*shape, *B, *event)`` without gradient.

        ``temperature`` ``T`` scales the base's standard noise: ``z ~ N(0, T²I)`` for a standard
        normal base, ``μ + T·σ·ε`` for learned Gaussian bases (Glow's reduced-temperature
        samples, Kingma & Dhariwal 2018). ``T < 1`` trades diversity for cleaner samples; the
        draws then follow no longer the flow's density but a sharpened one.
        """
        temperature = _check_temperature(temperature)
        with torch.no_grad():
            shape, context = self._sample_context(shape, context)
            z = self.base.sample(shape, context, temperature)
            return self.transform.inverse(z, context)[0]

    def rsample_and_log_prob(
        self, shape: ShapeLike = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized samples and their exact log density, in one pass."""
        shape, context = self._sample_context(shape, context)
        z = self.base.rsample(shape, context)
        x, ladj = self.transform.inverse(z, context)
        return x, self.base.log_prob(z, context) - sum_events(ladj, self._extra)

    def sample_and_log_prob(
        self, shape: ShapeLike = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their exact log density, in one pass (no gradient)."""
        with torch.no_grad():
            shape, context = self._sample_context(shape, context)
            z = self.base.sample(shape, context)
            x, ladj = self.transform.inverse(z, context)
            return x, self.base.log_prob(z, context) - sum_events(ladj, self._extra)

    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        """A ``torch.distributions.Distribution`` view of this flow (conditioned on ``context``).

        Once the program has imported Pyro (exactflow never does), the view is a
        :class:`~exactflow.integrations.pyro.PyroFlowDistribution`, which ``pyro.sample``,
        ``.to_event``, plates and ``Predictive`` take; otherwise a :class:`FlowDistribution`.
        """
        if "pyro" in sys.modules:  # a dictionary lookup: imports nothing
            from .integrations.pyro import PyroFlowDistribution

            return PyroFlowDistribution(self, context)
        return FlowDistribution(self, context)
