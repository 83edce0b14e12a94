"""Base densities and :class:`Flow`, the distribution a transform pushes a base density to.

A flow with transform ``T`` (data -> base) and base density ``p_base`` has the exact density

    log p(x) = log p_base(T(x)) + log|det ∂T/∂x|

and is sampled by drawing ``z ~ p_base`` and returning ``T^{-1}(z)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from .nn import MLP
from .transforms.base import Transform

__all__ = [
    "BaseDistribution",
    "ConditionalDiagNormal",
    "DiagNormal",
    "Flow",
    "FlowDistribution",
    "GaussianMixture",
    "StandardNormal",
]

_LOG_2PI = math.log(2 * math.pi)
ShapeLike = int | Sequence[int] | torch.Size


def _as_shape(shape: ShapeLike) -> torch.Size:
    if isinstance(shape, int):
        return torch.Size((shape,))
    return torch.Size(shape)


def _gaussian_log_density(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """Sum over the last dimension of ``log N(z; loc, exp(log_scale)^2)``."""
    u = (z - loc) * torch.exp(-log_scale)
    return -0.5 * (u.square().sum(-1) + z.shape[-1] * _LOG_2PI) - log_scale.sum(-1)


class BaseDistribution(nn.Module):
    """A base density over events of shape ``event_shape``, optionally conditioned on a context.

    Subclasses implement :meth:`log_prob` and :meth:`rsample`. Both take ``context`` already
    broadcast to the batch shape (``(*B, C)`` or ``None``).
    """

    context: int = 0

    def __init__(self, event_shape: ShapeLike) -> None:
        super().__init__()
        self.event_shape = _as_shape(event_shape)
        # Follows the module's dtype and device so samples come out in the right ones.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log density of ``z (*B, *event)``: shape ``(*B)``."""
        raise NotImplementedError

    def rsample(self, shape: ShapeLike, context: Tensor | None = None) -> Tensor:
        """Reparameterized draws of shape ``(*shape, *event)``."""
        raise NotImplementedError

    def sample(self, shape: ShapeLike, context: Tensor | None = None) -> Tensor:
        """Draws of shape ``(*shape, *event)``, without gradient."""
        with torch.no_grad():
            return self.rsample(shape, context)

    def _noise(self, shape: ShapeLike) -> Tensor:
        full = _as_shape(shape) + self.event_shape
        return torch.randn(full, dtype=self._anchor.dtype, device=self._anchor.device)


class StandardNormal(BaseDistribution):
    """Standard normal ``N(0, I)`` over events of shape ``event_shape`` (no parameters).

    Example:
        >>> import exactflow as ef
        >>> ef.distributions.StandardNormal(2).rsample((3,)).shape
        torch.Size([3, 2])

    """

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        flat = z.flatten(z.dim() - len(self.event_shape)) if len(self.event_shape) > 1 else z
        return -0.5 * (flat.square().sum(-1) + flat.shape[-1] * _LOG_2PI)

    def rsample(self, shape: ShapeLike, context: Tensor | None = None) -> Tensor:
        return self._noise(shape)


class DiagNormal(BaseDistribution):
    """Normal with learnable mean and diagonal scale, ``N(μ, diag(exp(2ρ)))``.

    Args:
        features: Event size ``D``.

    """

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return _gaussian_log_density(z, self.loc, self.log_scale)

    def rsample(self, shape: ShapeLike, context: Tensor | None = None) -> Tensor:
        return torch.addcmul(self.loc, self._noise(shape), self.log_scale.exp())


class GaussianMixture(BaseDistribution):
    """Learnable mixture of ``K`` diagonal Gaussians, ``Σ_k π_k N(μ_k, diag(σ_k²))``.

    The component means start spread out (standard normal draws) so the components separate.
    Sampling picks a component, which is not differentiable: :meth:`rsample` raises
    ``NotImplementedError``; use :meth:`sample`.

    Args:
        features: Event size ``D``.
        components: Number of components ``K``.

    """

    def __init__(self, features: int, components: int = 8) -> None:
        super().__init__(features)
        if components < 1:
            raise ValueError(f"GaussianMixture: components must be >= 1, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, features))
        self.log_scale = nn.Parameter(torch.zeros(components, features))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        per_component = _gaussian_log_density(z.unsqueeze(-2), self.loc, self.log_scale)
        return torch.logsumexp(per_component + self.logits.log_softmax(-1), dim=-1)

    def rsample(self, shape: ShapeLike, context: Tensor | None = None) -> Tensor:
        raise NotImplementedError(
            "GaussianMixture cannot be sampled with gradients (the component draw is discrete);"
            " use sample() instead"
        )

    def sample(self, shape: ShapeLike, context: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            shape = _as_shape(shape)
            k = torch.multinomial(self.logits.softmax(-1), max(shape.numel(), 1), True)
            k = k[: shape.numel()].reshape(shape)
            return self.loc[k] + self.log_scale[k].exp() * self._noise(shape)


class ConditionalDiagNormal(BaseDistribution):
    """Diagonal normal whose mean and log-scale come from the context: ``N(μ(c), diag(σ(c)²))``.

    Args:
        features: Event size ``D``.
        context: Context width ``C``.
        hidden: Hidden widths of the network ``c -> (μ, log σ)``.

    """

    def __init__(self, features: int, context: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__(features)
        if context < 1:
            raise ValueError(f"ConditionalDiagNormal: context must be >= 1, got {context}")
        self.context = context
        self.net = MLP(context, 2 * features, hidden)
        # Start at N(0, I) whatever the context, like the unconditional bases.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is None:
            raise ValueError("ConditionalDiagNormal needs a context, got None")
        loc, log_scale = self.net(context).chunk(2, dim=-1)
        return loc, log_scale

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._params(context)
        return _gaussian_log_density(z, loc, log_scale)

    def rsample(self, shape: ShapeLike, context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._params(context)
        return torch.addcmul(loc, self._noise(shape), log_scale.exp())


class Flow(nn.Module):
    """A normalizing flow: a base density pushed through an invertible transform.

    ``log p(x | c) = log p_base(T(x; c) | c) + log|det ∂T/∂x|`` exactly, where ``T`` is
    ``transform`` (data -> base); samples are ``T^{-1}(z; c)`` with ``z ~ p_base``.

    Shapes follow ``torch.distributions``: a context ``(*B, C)`` gives batch shape ``B``;
    ``log_prob`` takes ``(*S, *B, *event)`` (broadcasting) and returns ``(*S, *B)``;
    ``sample(S)`` returns ``(*S, *B, *event)``.

    Args:
        transform: The data -> base transform (usually a :class:`~exactflow.transforms.Compose`).
        base: The base density.
        validate: Check inputs (dtype, shape, finiteness, domain, context) before use.

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

    def __init__(self, transform: Transform, base: BaseDistribution, validate: bool = True) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(f"Flow: transform must be a Transform, got {type(transform).__name__}")
        if not isinstance(base, BaseDistribution):
            raise TypeError(f"Flow: base must be a BaseDistribution, got {type(base).__name__}")
        if len(base.event_shape) != transform.event_ndim:
            raise ValueError(
                f"Flow: the base has events of shape {tuple(base.event_shape)} but the transform"
                f" acts on {transform.event_ndim} trailing dimension(s)"
            )
        self.transform = transform
        self.base = base
        self.validate = validate

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one data point."""
        return self.base.event_shape

    @property
    def features(self) -> int:
        """Number of scalars in one data point."""
        return self.event_shape.numel()

    @property
    def context(self) -> int:
        """Context width the flow is conditioned on (0: unconditional)."""
        return max(self.transform.context, self.base.context)

    # ------------------------------------------------------------------ validation
    def _dtype(self) -> torch.dtype:
        return self.base._anchor.dtype

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

    def _prepare_context(self, context: Tensor | None) -> Tensor | None:
        if self.context == 0:
            if context is not None:
                raise ValueError(
                    f"this flow is unconditional but a context of shape"
                    f" {tuple(context.shape)} was given"
                )
            return None
        if context is None:
            raise ValueError(
                f"this flow is conditional: it needs context= of shape (..., {self.context}),"
                " got None"
            )
        if self.validate:
            self._check_tensor("context", context, (self.context,))
        return context

    # ------------------------------------------------------------------ density
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log density ``log p(x | context)``; shape ``(*batch)``."""
        context = self._prepare_context(context)
        event = tuple(self.event_shape)
        if self.validate:
            self._check_tensor("x", x, event)
            domain = self.transform.domain
            # Finite values are real numbers: only a narrower domain needs a second pass.
            if domain is not constraints.real:
                inside = domain.check(x)
                if not bool(inside.all()):
                    where = (~inside).nonzero()[0].tolist()
                    raise ValueError(
                        f"x is outside the flow's domain {domain} at index {tuple(where)}"
                    )
        if context is not None:
            batch = torch.broadcast_shapes(x.shape[: x.dim() - len(event)], context.shape[:-1])
            x = x.expand(batch + self.event_shape)
            context = context.expand(batch + context.shape[-1:])
        z, ladj = self.transform(x, context)
        return self.base.log_prob(z, context) + ladj

    # ------------------------------------------------------------------ sampling
    def _sample_context(self, shape: ShapeLike, context: Tensor | None) -> tuple:
        shape = _as_shape(shape)
        context = self._prepare_context(context)
        if context is not None:
            shape = shape + context.shape[:-1]
            context = context.expand(shape + context.shape[-1:])
        return shape, context

    def rsample(self, shape: ShapeLike = (), context: Tensor | None = None) -> Tensor:
        """Reparameterized samples ``(*shape, *B, *event)``, differentiable in the parameters."""
        return self.rsample_and_log_prob(shape, context)[0]

    def sample(self, shape: ShapeLike = (), context: Tensor | None = None) -> Tensor:
        """Samples ``(*shape, *B, *event)`` without gradient."""
        with torch.no_grad():
            shape, context = self._sample_context(shape, context)
            z = self.base.sample(shape, context)
            return self.transform.inverse(z, context)[0]

    def rsample_and_log_prob(
        self, shape: ShapeLike = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized samples and their exact log density, in one pass."""
        shape, context = self._sample_context(shape, context)
        z = self.base.rsample(shape, context)
        x, ladj = self.transform.inverse(z, context)
        return x, self.base.log_prob(z, context) - ladj

    def sample_and_log_prob(
        self, shape: ShapeLike = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their exact log density, in one pass (no gradient)."""
        with torch.no_grad():
            shape, context = self._sample_context(shape, context)
            z = self.base.sample(shape, context)
            x, ladj = self.transform.inverse(z, context)
            return x, self.base.log_prob(z, context) - ladj

    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        """A ``torch.distributions.Distribution`` view of this flow (conditioned on ``context``)."""
        return FlowDistribution(self, context)


class FlowDistribution(Distribution):
    """A :class:`Flow` seen as a ``torch.distributions.Distribution``.

    With a context of shape ``(*B, C)``, ``batch_shape == B`` and ``event_shape`` is the flow's.
    Works wherever torch expects a distribution (``Independent``, ``kl`` by sampling, Pyro-style
    ``log_prob``/``rsample``). Built by calling the flow: ``flow(context)``.
    """

    arg_constraints: dict = {}  # noqa: RUF012  (torch reads this class attribute)
    has_rsample = True

    def __init__(self, flow: Flow, context: Tensor | None = None) -> None:
        if context is not None:
            context = flow._prepare_context(context)
        elif flow.context:
            flow._prepare_context(None)  # raises the "needs a context" error
        self.flow = flow
        self.context = context
        batch_shape = context.shape[:-1] if context is not None else torch.Size()
        super().__init__(batch_shape, flow.event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(self.flow.transform.domain, len(self.event_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.flow.log_prob(value, self.context)

    def rsample(self, sample_shape: ShapeLike = torch.Size()) -> Tensor:  # noqa: B008
        return self.flow.rsample(sample_shape, self.context)

    def sample(self, sample_shape: ShapeLike = torch.Size()) -> Tensor:  # noqa: B008
        return self.flow.sample(sample_shape, self.context)

    def sample_and_log_prob(self, sample_shape: ShapeLike = torch.Size()) -> tuple:  # noqa: B008
        return self.flow.sample_and_log_prob(sample_shape, self.context)

    def expand(self, batch_shape: ShapeLike, _instance: object = None) -> FlowDistribution:
        batch_shape = _as_shape(batch_shape)
        if self.context is None:
            raise NotImplementedError(
                "an unconditional flow has no batch shape to expand; wrap it in"
                " torch.distributions.Independent or sample with a larger sample_shape"
            )
        context = self.context.expand(batch_shape + self.context.shape[-1:])
        return FlowDistribution(self.flow, context)

    def __repr__(self) -> str:
        return (
            f"FlowDistribution(batch_shape={tuple(self.batch_shape)},"
            f" event_shape={tuple(self.event_shape)})"
        )
