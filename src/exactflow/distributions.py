"""Base densities: the simple densities a flow's transform maps data to.

Each takes an optional context (already broadcast to the batch shape) and follows its module's
dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .nn import MLP, zero_output

__all__ = [
    "BaseDistribution",
    "ConditionalDiagNormal",
    "DiagNormal",
    "GaussianMixture",
    "StandardNormal",
    "TorusNormal",
]

_LOG_2PI = math.log(2 * math.pi)
ShapeLike = int | Sequence[int] | torch.Size


def as_shape(shape: ShapeLike) -> torch.Size:
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
    has_rsample: bool = True
    """Whether :meth:`rsample` draws differentiably (a mixture's discrete pick does not)."""

    def __init__(self, event_shape: ShapeLike) -> None:
        super().__init__()
        self.event_shape = as_shape(event_shape)
        # Follows the module's dtype and device so samples come out in the right ones.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log density of ``z (*B, *event)``: shape ``(*B)``."""
        raise NotImplementedError

    def rsample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Reparameterized draws of shape ``(*shape, *event)``.

        ``temperature`` scales the standard noise the draw is made from (``T·ε``,
        ``ε ~ N(0, I)``): the spread around the mean, as in Glow's reduced-temperature samples.
        """
        raise NotImplementedError

    def sample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Draws of shape ``(*shape, *event)``, without gradient (``temperature``: see rsample)."""
        with torch.no_grad():
            return self.rsample(shape, context, temperature)

    def _noise(self, shape: ShapeLike, temperature: float = 1.0) -> Tensor:
        full = as_shape(shape) + self.event_shape
        noise = torch.randn(full, dtype=self._anchor.dtype, device=self._anchor.device)
        return noise if temperature == 1.0 else noise * temperature


class StandardNormal(BaseDistribution):
    """Standard normal ``N(0, I)`` over events of any shape ``event_shape`` (no parameters).

    ``log p(z) = -(|z|² + n log 2π) / 2`` with ``n`` the number of entries of one event.

    Shapes: ``z (*B, *event_shape) -> (*B)``.

    Example:
        >>> import exactflow as ef
        >>> ef.distributions.StandardNormal(2).rsample((3,)).shape
        torch.Size([3, 2])
        >>> normal = ef.distributions.StandardNormal((2, 4, 4))
        >>> normal.log_prob(normal.rsample((5,))).shape
        torch.Size([5])

    """

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        n = len(self.event_shape)
        square = z.square().sum(dim=tuple(range(-n, 0))) if n else z.square()
        return -0.5 * (square + self.event_shape.numel() * _LOG_2PI)

    def rsample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        return self._noise(shape, temperature)


class TorusNormal(BaseDistribution):
    """Standard normal on the ordinary columns times uniform on the circle on the periodic ones.

    ``log p(z) = Σ_{i ordinary} -(z_i² + log 2π) / 2 + Σ_{i periodic} -log 2π`` for periodic
    coordinates in ``[-π, π]`` (``±π`` are one point of the circle), and ``-inf`` when one of
    them lies outside (no mass there); samples lie in ``[-π, π)``. The
    base of flows with circular columns (:class:`~exactflow.transforms.CircularSpline`;
    Rezende et al. 2020). A sampling ``temperature`` scales the normal columns only.

    Args:
        periodic: One flag per column (``True``: an angle, uniform on ``[-π, π)``).

    Shapes: ``z (*B, D) -> (*B)``.

    Example:
        >>> import torch, exactflow as ef
        >>> base = ef.distributions.TorusNormal([True, False])
        >>> base.log_prob(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
        tensor([-2.7568,    -inf])

    """

    def __init__(self, periodic: Sequence[bool]) -> None:
        super().__init__(len(periodic))
        self.periodic = [bool(p) for p in periodic]
        self.register_buffer("mask", torch.tensor(self.periodic), persistent=False)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        normal = -0.5 * (z.square() + _LOG_2PI)
        angle = torch.where(z.abs() > math.pi, -math.inf, -_LOG_2PI)
        return torch.where(self.mask, angle, normal).sum(-1)

    def rsample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        normal = self._noise(shape, temperature)
        angle = torch.rand_like(normal) * (2 * math.pi) - math.pi
        # Rounding can lift the largest draws to π itself, which is the point -π.
        angle = torch.where(angle >= math.pi, -math.pi, angle)
        return torch.where(self.mask, angle, normal)


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

    def rsample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        return torch.addcmul(self.loc, self._noise(shape, temperature), self.log_scale.exp())


class GaussianMixture(BaseDistribution):
    """Learnable mixture of ``K`` diagonal Gaussians, ``Σ_k π_k N(μ_k, diag(σ_k²))``.

    The component means start spread out (standard normal draws) so the components separate.
    Sampling picks a component, which is not differentiable: :meth:`rsample` raises
    ``NotImplementedError``; use :meth:`sample`.

    Args:
        features: Event size ``D``.
        components: Number of components ``K``.

    """

    has_rsample = False

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

    def rsample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        raise NotImplementedError(
            "GaussianMixture cannot be sampled with gradients (the component draw is discrete);"
            " use sample() instead"
        )

    def sample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        with torch.no_grad():
            shape = as_shape(shape)
            k = torch.multinomial(self.logits.softmax(-1), max(shape.numel(), 1), True)
            k = k[: shape.numel()].reshape(shape)
            return self.loc[k] + self.log_scale[k].exp() * self._noise(shape, temperature)


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
        zero_output(self.net[-1])

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is None:
            raise ValueError("ConditionalDiagNormal needs a context, got None")
        loc, log_scale = self.net(context).chunk(2, dim=-1)
        return loc, log_scale

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._params(context)
        return _gaussian_log_density(z, loc, log_scale)

    def rsample(
        self, shape: ShapeLike, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        loc, log_scale = self._params(context)
        return torch.addcmul(loc, self._noise(shape, temperature), log_scale.exp())
