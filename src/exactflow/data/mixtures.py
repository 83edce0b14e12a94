"""Gaussian mixtures with known parameters: eight Gaussians and seeded random mixtures.

The density is

    p(x) = Σ_k π_k Π_d N(x_d; μ_kd, σ_kd²)

in closed form. The entropy of a mixture has no closed form: in two dimensions it is computed by
grid quadrature (:func:`~exactflow.data.density.grid_entropy`), in more dimensions by Monte
Carlo with its standard error; a single Gaussian gets the exact
``Σ_d log σ_d + (D/2)(1 + log 2π)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .checks import check_size, count, length, seed_option
from .density import Density, Entropy, grid_entropy, monte_carlo_entropy

__all__ = ["GaussianMixtureDensity", "eight_gaussians", "gaussian_mixture"]

_LOG_2PI = math.log(2 * math.pi)


class GaussianMixtureDensity(Density):
    """Mixture of diagonal Gaussians ``Σ_k π_k N(μ_k, diag(σ_k²))`` with fixed parameters.

    Args:
        weights: Mixture weights ``π (K,)``, positive (normalized here).
        means: Component means ``μ (K, D)``.
        scales: Component standard deviations ``σ (K, D)``, positive.
        name: Short name used in messages.
        entropy_samples: Monte Carlo sample size of the entropy when ``D > 2``.

    Example:
        >>> import torch
        >>> from exactflow.data import GaussianMixtureDensity
        >>> p = GaussianMixtureDensity(torch.ones(2), torch.tensor([[-2.0], [2.0]]),
        ...                            torch.ones(2, 1))
        >>> p.sample(5, seed=0).shape
        torch.Size([5, 1])

    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        scales: Tensor,
        name: str = "gaussian mixture",
        entropy_samples: int = 1_000_000,
    ) -> None:
        weights, means, scales = (
            torch.as_tensor(t, dtype=torch.float64) for t in (weights, means, scales)
        )
        if means.dim() != 2 or weights.shape != means.shape[:1] or scales.shape != means.shape:
            raise ValueError(
                f"{name}: expected weights (K,), means (K, D) and scales (K, D), got"
                f" {tuple(weights.shape)}, {tuple(means.shape)} and {tuple(scales.shape)}"
            )
        if not (weights > 0).all() or not (scales > 0).all():
            raise ValueError(f"{name}: weights and scales must be positive")
        super().__init__(means.shape[1], name)
        self.weights = weights / weights.sum()
        self.means = means
        self.scales = scales
        self.entropy_samples = entropy_samples

    def _log_prob(self, x: Tensor) -> Tensor:
        z = (x[:, None, :] - self.means) / self.scales  # (N, K, D)
        log_norm = 0.5 * self.features * _LOG_2PI + self.scales.log().sum(-1)  # (K,)
        per_component = -0.5 * z.square().sum(-1) - log_norm
        return torch.logsumexp(per_component + self.weights.log(), dim=-1)

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        if n == 0:
            return torch.zeros(0, self.features, dtype=torch.float64)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.features, dtype=torch.float64, generator=generator)
        return self.means[k] + self.scales[k] * noise

    def _entropy(self) -> Entropy:
        if len(self.weights) == 1:
            value = float(self.scales.log().sum()) + 0.5 * self.features * (1 + _LOG_2PI)
            return Entropy(value, 0.0, "exact")
        if self.features == 2:
            margin = 12 * float(self.scales.max())
            lower = (self.means.min(0).values - margin).tolist()
            upper = (self.means.max(0).values + margin).tolist()
            return grid_entropy(self._log_prob, lower, upper, float(self.scales.min()) / 4)
        return monte_carlo_entropy(self, self.entropy_samples)


def eight_gaussians(radius: float = 2.0, scale: float = 0.2) -> GaussianMixtureDensity:
    """Eight equally weighted isotropic Gaussians evenly spaced on a circle.

    Means ``radius·(cos 2πk/8, sin 2πk/8)``, ``k = 0..7``; every standard deviation ``scale``.

    Args:
        radius: Radius of the circle of means.
        scale: Standard deviation of each component.

    """
    radius = length("8gaussians: radius", radius, zero=True)
    scale = length("8gaussians: scale", scale)
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = radius * torch.stack([angles.cos(), angles.sin()], -1)
    return GaussianMixtureDensity(
        torch.ones(8), means, torch.full((8, 2), float(scale)), name="8gaussians"
    )


def gaussian_mixture(
    dim: int = 2,
    components: int = 8,
    seed: int = 0,
    spread: float = 4.0,
    scales: tuple[float, float] = (0.3, 1.0),
    entropy_samples: int = 1_000_000,
) -> GaussianMixtureDensity:
    """A diagonal Gaussian mixture with seeded random parameters.

    From a generator seeded with ``seed``: means uniform on ``[-spread, spread]^D``, standard
    deviations log-uniform on ``scales``, weights proportional to uniform draws on ``[1, 2]``.
    The same arguments always give the same mixture.

    Args:
        dim: Dimension ``D``.
        components: Number of components ``K``.
        seed: Seed of the parameters (not of the samples).
        spread: Half-width of the box of means.
        scales: Range ``(min, max)`` of the standard deviations.
        entropy_samples: Monte Carlo sample size of the entropy when ``dim > 2``.

    Example:
        >>> from exactflow.data import gaussian_mixture
        >>> p = gaussian_mixture(dim=16, components=10)
        >>> p.sample(3, seed=1).shape
        torch.Size([3, 16])

    """
    dim = count("gaussian_mixture: dim", dim, 1)
    components = count("gaussian_mixture: components", components, 1)
    seed = seed_option("gaussian_mixture: seed", seed)
    spread = length("gaussian_mixture: spread", spread, zero=True)
    entropy_samples = count("gaussian_mixture: entropy_samples", entropy_samples, 2)
    check_size(
        f"gaussian_mixture: {components} components in {dim} dimensions",
        8.0 * 3 * components * dim,
    )
    if isinstance(scales, str) or not isinstance(scales, tuple | list) or len(scales) != 2:
        raise TypeError(f"gaussian_mixture: scales must be a pair (min, max), got {scales!r}")
    low, high = (length("gaussian_mixture: scales", v) for v in scales)
    if not 0 < low <= high:
        raise ValueError(f"gaussian_mixture: scales must satisfy 0 < min <= max, got {scales}")
    g = torch.Generator().manual_seed(seed)
    means = spread * (2 * torch.rand(components, dim, generator=g, dtype=torch.float64) - 1)
    log_scales = math.log(low) + (math.log(high) - math.log(low)) * torch.rand(
        components, dim, generator=g, dtype=torch.float64
    )
    weights = 1 + torch.rand(components, generator=g, dtype=torch.float64)
    name = "gmm2d" if dim == 2 else f"gmm{dim}d"
    return GaussianMixtureDensity(weights, means, log_scales.exp(), name, entropy_samples)
