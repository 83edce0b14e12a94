"""Known densities of synthetic data, and their differential entropies.

A :class:`Density` draws seeded samples, evaluates its exact log density ``log p(x)`` and knows
its differential entropy ``H = -E[log p(X)]`` in nats. The entropy is computed on first request
and cached; the :class:`Entropy` record says how it was obtained:

* ``"exact"`` — a closed form; ``error`` is 0.
* ``"quadrature"`` — deterministic numerical integration of ``-p log p``; ``error`` estimates
  the absolute error as the change of the result when the resolution is halved (plus the
  deficit of the integrated mass, ``|1 - ∫p|``).
* ``"monte carlo"`` — ``-(1/n) Σ log p(x_i)`` over ``n`` seeded samples; ``error`` is the
  standard error ``std(log p) / √n``.

With a flow fitted to the data, ``E[-log q(X)] - H`` is the Kullback–Leibler divergence
``KL(p ‖ q) >= 0``, which is why a known entropy is worth having.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .checks import check_size, count

__all__ = ["Density", "Entropy", "grid_entropy", "monte_carlo_entropy"]

# Rows per evaluation chunk, so that large batches never build huge intermediate tensors.
_CHUNK = 16_384


@dataclass(frozen=True)
class Entropy:
    """A differential entropy in nats and how it was computed.

    Attributes:
        value: ``H = -E[log p(X)]`` in nats, in the data's own units.
        error: 0 for ``"exact"``; an estimated absolute error for ``"quadrature"``; the standard
            error for ``"monte carlo"``.
        method: ``"exact"``, ``"quadrature"`` or ``"monte carlo"``.
        samples: Number of Monte Carlo samples (0 for the other methods).

    """

    value: float
    error: float
    method: str
    samples: int = 0

    def __float__(self) -> float:
        return self.value


def as_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU generator: ``seed`` itself if it is one, else a new one seeded with ``seed``.

    ``None`` draws a fresh seed from torch's global generator (not reproducible).
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def gauss_legendre(edges: np.ndarray, order: int = 8) -> tuple[Tensor, Tensor]:
    """Composite Gauss–Legendre rule: ``order`` nodes in each panel ``[edges[i], edges[i+1]]``.

    Returns float64 ``nodes`` and ``weights`` of shape ``(P * order,)`` such that
    ``Σ_j w_j f(t_j) ≈ ∫ f``, exact for polynomials of degree ``2·order - 1`` on each panel.
    """
    x, w = np.polynomial.legendre.leggauss(order)
    a, b = edges[:-1, None], edges[1:, None]
    nodes = 0.5 * (a + b) + 0.5 * (b - a) * x  # (P, order)
    weights = 0.5 * (b - a) * w
    return torch.from_numpy(nodes.ravel()), torch.from_numpy(weights.ravel())


class Density:
    """A density with exact log density, seeded sampler and known entropy.

    Subclasses implement ``_log_prob`` (float64 ``(N, D) -> (N,)``), ``_sample`` (``n`` rows from
    a generator) and, when they can do better than Monte Carlo, ``_entropy``.

    Args:
        features: Event size ``D``.
        name: Short name used in messages.

    """

    def __init__(self, features: int, name: str) -> None:
        self.features = features
        self.name = name
        self._cached_entropy: Entropy | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, features={self.features})"

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` of ``x (*, D)``: shape ``(*)``, in ``x``'s dtype (float64 inside)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name}: log_prob takes a tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.features:
            raise ValueError(
                f"{self.name}: log_prob expects shape (..., {self.features}), got {tuple(x.shape)}"
            )
        flat = x.detach().reshape(-1, self.features).to(torch.float64)
        parts = [self._log_prob(part) for part in flat.split(_CHUNK)]
        out = torch.cat(parts) if parts else flat.new_zeros(0)
        dtype = x.dtype if x.is_floating_point() else torch.float64
        return out.reshape(x.shape[:-1]).to(dtype=dtype, device=x.device)

    def sample(self, n: int, seed: int | torch.Generator | None = None) -> Tensor:
        """``n`` independent draws, shape ``(n, D)``, float64.

        Args:
            n: Number of draws.
            seed: An int seed or a ``torch.Generator`` (same seed, same draws); ``None`` for
                fresh randomness.

        """
        n = count(f"{self.name}: n", n)
        check_size(f"{self.name}: {n} draws of {self.features} features", 8.0 * n * self.features)
        return self._sample(n, as_generator(seed))

    def entropy(self) -> Entropy:
        """Differential entropy ``-E[log p(X)]`` in nats (computed on first call, then cached)."""
        if self._cached_entropy is None:
            self._cached_entropy = self._entropy()
        return self._cached_entropy

    def _log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _entropy(self) -> Entropy:
        return monte_carlo_entropy(self)


def monte_carlo_entropy(density: Density, samples: int = 1_000_000, seed: int = 12345) -> Entropy:
    """Monte Carlo entropy ``-(1/n) Σ log p(x_i)``, ``x_i ~ p``, with its standard error.

    Args:
        density: The density.
        samples: Number of draws ``n``.
        seed: Seed of the draws.

    """
    generator = as_generator(seed)
    total, total_sq, done = 0.0, 0.0, 0
    while done < samples:
        n = min(_CHUNK * 4, samples - done)
        log_p = density.log_prob(density.sample(n, generator))
        total += float(log_p.sum())
        total_sq += float(log_p.square().sum())
        done += n
    mean = total / samples
    var = max(total_sq / samples - mean * mean, 0.0) * samples / max(samples - 1, 1)
    return Entropy(-mean, math.sqrt(var / samples), "monte carlo", samples)


def grid_entropy(
    log_prob: Callable[[Tensor], Tensor],
    lower: tuple[float, float],
    upper: tuple[float, float],
    step: float,
) -> Entropy:
    """Entropy of a smooth 2-D density by the trapezoidal rule on a square grid.

    ``H ≈ -h² Σ p log p`` over the grid points of the box ``[lower, upper]`` (the density must
    be negligible outside it). For smooth, rapidly decaying integrands this rule converges
    faster than any power of ``h``; the reported error is ``|H_h - H_{2h}| + |1 - h² Σ p|``,
    with ``H_{2h}`` the same rule on every other grid point.

    Args:
        log_prob: Log density of points ``(N, 2)`` (float64).
        lower: Lower corner of the box.
        upper: Upper corner of the box.
        step: Grid spacing ``h``.

    """
    axes = [
        lo + step * torch.arange(math.ceil((hi - lo) / step) + 1, dtype=torch.float64)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    xx, yy = torch.meshgrid(axes[0], axes[1], indexing="ij")
    points = torch.stack([xx, yy], -1).reshape(-1, 2)
    log_p = torch.cat([log_prob(part) for part in points.split(_CHUNK)]).reshape(xx.shape)
    p = log_p.exp()
    p_log_p = torch.where(p > 0, p * log_p, torch.zeros_like(p))
    fine = -float(p_log_p.sum()) * step**2
    coarse = -float(p_log_p[::2, ::2].sum()) * (2 * step) ** 2
    mass = float(p.sum()) * step**2
    return Entropy(fine, abs(fine - coarse) + abs(1.0 - mass), "quadrature")
