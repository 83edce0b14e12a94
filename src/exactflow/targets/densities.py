"""Normalized targets with exact samplers: the banana, Neal's funnel, a ring of Gaussians.

Each is a proper density (``log Z = 0`` exactly), so reverse-KL training reports the true
``KL(q‖p)``, and each draws exact samples (:meth:`sample`) for checks that need ``p`` itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import Target, count, positive

__all__ = ["Banana", "Funnel", "Mixture"]

_LOG_2PI = math.log(2 * math.pi)


def _normal(x: Tensor, log_scale: Tensor | float) -> Tensor:
    """``log N(x; 0, e^{2 log_scale})`` elementwise."""
    if isinstance(log_scale, Tensor):
        return -0.5 * x**2 * torch.exp(-2 * log_scale) - log_scale - 0.5 * _LOG_2PI
    return -0.5 * x**2 * math.exp(-2 * log_scale) - (log_scale + 0.5 * _LOG_2PI)


class Banana(Target):
    """A twisted Gaussian, the "banana" of Haario, Saksman & Tamminen (1999), 2-D, normalized.

    ``u ~ N(0, diag(a², 1))`` bent by ``z = (u1, u2 + b (u1² - a²))``. The map shears ``z2`` by a
    function of ``z1`` alone, so its Jacobian is triangular with unit diagonal: it preserves
    volume, and the density is exact,

        log p(z) = log N(z1; 0, a²) + log N(z2 - b (z1² - a²); 0, 1),    log Z = 0.

    ``b a²`` sets how far the arms bend (in units of ``z2``'s spread): Haario et al. take
    ``a = 10``, ``b = 0.03`` (``b a² = 3``); the default ``a = 2``, ``b = 0.5`` (``b a² = 2``) keeps
    the shape on a plot-sized box. ``E[z2] = 0``, because ``E[u1²] = a²``.

    Args:
        a: Standard deviation of ``z1`` (> 0).
        b: Twist (> 0).

    Example:
        >>> import torch
        >>> from exactflow.targets import Banana
        >>> banana = Banana()
        >>> banana(torch.tensor([[0.0, -2.0]]))  # on the ridge: log N(0; 0, 4) + log N(0; 0, 1)
        tensor([-2.5310])
        >>> banana.sample((5,), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])

    """

    name = "banana"
    dim = 2
    log_normalizer = 0.0
    description = "twisted Gaussian (Haario et al. 1999), normalized"

    def __init__(self, a: float = 2.0, b: float = 0.5) -> None:
        self.a = positive(self.name, "a", a)
        self.b = positive(self.name, "b", b)
        twist = self.b * self.a**2
        # z1 within 2.5 sd; z2 from the ridge's bottom to its height at z1 = ±√5 a, ±3 sd.
        self.bounds = (-2.5 * self.a, 2.5 * self.a, -twist - 3.0, 4 * twist + 3.0)

    @property
    def options(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}

    def log_density(self, z: Tensor) -> Tensor:
        z1, z2 = z.unbind(-1)
        return _normal(z1, math.log(self.a)) + _normal(z2 - self.b * (z1**2 - self.a**2), 0.0)

    def from_noise(self, eps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``u = (a ε1, ε2)``, bend it."""
        u1, u2 = eps.unbind(-1)
        u1 = self.a * u1
        return torch.stack([u1, u2 + self.b * (u1**2 - self.a**2)], -1)


class Funnel(Target):
    """Neal's (2003) funnel in ``D`` dimensions, normalized: ``z = (v, x_1, ..., x_{D-1})``.

    ``v ~ N(0, scale²)`` and, given ``v``, ``x_i ~ N(0, e^v)`` independently (variance ``e^v``):

        log p(z) = log N(v; 0, scale²) + Σ_i [-½ x_i² e^{-v} - v/2 - ½ log 2π],    log Z = 0.

    The neck (``v ≪ 0``) and the mouth (``v ≫ 0``) differ in scale by ``e^{±scale}`` per
    standard deviation of ``v``: no single affine map fits both, which is what makes it hard. Neal
    (Slice sampling, Ann. Statist. 2003) uses ``D = 10``, ``scale = 3``, the defaults here.

    Args:
        dim: ``D`` (>= 2).
        scale: Standard deviation of ``v`` (> 0).

    Example:
        >>> import torch
        >>> from exactflow.targets import Funnel
        >>> funnel = Funnel()
        >>> funnel(torch.zeros(4, 10)).shape
        torch.Size([4])
        >>> funnel.sample((3,), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 10])

    """

    name = "funnel"
    log_normalizer = 0.0
    description = "Neal's funnel (2003), normalized"

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        self.dim = count(self.name, "dim", dim, 2)
        self.scale = positive(self.name, "scale", scale)
        if self.dim == 2:
            # v within 2.5 sd; x within ±3 sd at v = scale (one sd up the mouth).
            reach = 3 * math.exp(self.scale / 2)
            self.bounds = (-2.5 * self.scale, 2.5 * self.scale, -reach, reach)

    @property
    def options(self) -> dict[str, Any]:
        return {"dim": self.dim, "scale": self.scale}

    def log_density(self, z: Tensor) -> Tensor:
        v, x = z[..., 0], z[..., 1:]
        return _normal(v, math.log(self.scale)) + _normal(x, 0.5 * v.unsqueeze(-1)).sum(-1)

    def from_noise(self, eps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``v = scale·ε_0`` first, then ``x = e^{v/2} ε_{1:}`` given ``v``."""
        v = self.scale * eps[..., :1]
        return torch.cat([v, torch.exp(0.5 * v) * eps[..., 1:]], -1)


class Mixture(Target):
    """Equal-weight 2-D Gaussians on a circle, well separated, normalized.

    ``p(z) = (1/K) Σ_k N(z; μ_k, s² I)`` with ``μ_k = r (cos 2πk/K, sin 2πk/K)``, so

        log p(z) = logsumexp_k(-‖z - μ_k‖² / 2s²) - log K - log(2π s²),    log Z = 0

    (no truncation). Neighbouring means lie ``2r sin(π/K)`` apart, ``~6 s`` with the defaults
    (``K = 8``, ``r = 4``, ``s = 0.5``): the density between modes is ``~e^{-4.7}`` of a peak, so a
    reverse-KL fit that drops modes (mode seeking) shows plainly, as ``KL ≈ log(K / kept)``.

    Args:
        components: ``K`` (>= 1).
        radius: ``r``, the circle's radius (> 0).
        scale: ``s``, each component's standard deviation (> 0).

    Example:
        >>> import math, torch
        >>> from exactflow.targets import Mixture
        >>> ring = Mixture()
        >>> ring(torch.tensor([[4.0, 0.0]])) + math.log(8 * 2 * math.pi * 0.25)  # at a mode
        tensor([0.])
        >>> ring.sample((6,), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([6, 2])

    """

    name = "mixture"
    dim = 2
    log_normalizer = 0.0
    description = "equal-weight Gaussians on a circle, normalized"

    def __init__(self, components: int = 8, radius: float = 4.0, scale: float = 0.5) -> None:
        self.components = count(self.name, "components", components, 1)
        self.radius = positive(self.name, "radius", radius)
        self.scale = positive(self.name, "scale", scale)
        reach = self.radius + 4 * self.scale
        self.bounds = (-reach, reach, -reach, reach)

    @property
    def options(self) -> dict[str, Any]:
        return {"components": self.components, "radius": self.radius, "scale": self.scale}

    def _means(self, like: Tensor) -> Tensor:
        """``(K, 2)`` in ``like``'s dtype and device, made there (no host-to-device copy)."""
        angle = (2 * math.pi / self.components) * torch.arange(
            self.components, dtype=like.dtype, device=like.device
        )
        return self.radius * torch.stack([angle.cos(), angle.sin()], -1)

    def log_density(self, z: Tensor) -> Tensor:
        d2 = ((z.unsqueeze(-2) - self._means(z)) ** 2).sum(-1)  # (*, K)
        const = math.log(self.components) + math.log(2 * math.pi * self.scale**2)
        return torch.logsumexp(-0.5 * d2 / self.scale**2, -1) - const

    def from_noise(self, eps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A uniform component, then its Gaussian ``μ_k + s ε``."""
        k = torch.randint(self.components, eps.shape[:-1], generator=generator, device=eps.device)
        return self._means(eps)[k] + self.scale * eps
