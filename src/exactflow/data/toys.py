"""Two-dimensional toy densities with exact log densities: the usual flow test pictures.

Every toy is defined as a density first, then sampled, so its ``log p`` is exact:

* :func:`checkerboard` — uniform on the dark squares of a board; entropy ``log(area)``.
* :func:`circles` — concentric rings: a uniform angle on a circle of radius ``r_c`` plus
  isotropic Gaussian noise ``N(0, σ²I)``. Integrating the angle out gives the closed form
  ``p(x) = Σ_c w_c (2πσ²)⁻¹ exp(-(ρ - r_c)²/(2σ²)) i0e(r_c ρ / σ²)``, ``ρ = |x|``, with
  ``i0e`` the exponentially scaled modified Bessel function; the entropy is a 1-D radial
  integral, done by Gauss–Legendre quadrature.
* :func:`moons`, :func:`spirals`, :func:`pinwheel` — points on curves ``m_c(t)`` with a known
  parameter density ``q_c(t)``, plus isotropic Gaussian noise. The density is the continuous
  mixture ``p(x) = (1/C) Σ_c ∫ q_c(t) N(x; m_c(t), σ²I) dt``, a 1-D integral computed by
  composite Gauss–Legendre quadrature with panels one noise-width ``σ`` long in arc length
  and 8 nodes each (the integrand is analytic in ``t``, so the rule is accurate to about
  machine precision: doubling the panels changes ``log p`` by < 1e-10 on the data). The
  entropy is a 2-D trapezoidal grid integral (:func:`~exactflow.data.density.grid_entropy`).

Eight Gaussians and the Gaussian mixtures live in :mod:`exactflow.data.mixtures`. Lengths
(noise, radii, cells, scales) must lie in :data:`~exactflow.data.checks.LENGTHS`
(``1e-6`` to ``1e6``), counts of arms and squares in 1..1000.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .checks import check_size, count, length, real
from .density import Density, Entropy, gauss_legendre, grid_entropy

__all__ = [
    "CheckerboardDensity",
    "Curve",
    "CurveMixtureDensity",
    "RingsDensity",
    "checkerboard",
    "circles",
    "moons",
    "pinwheel",
    "spirals",
]

_F64 = torch.float64


class CheckerboardDensity(Density):
    """Uniform density on the dark squares of an ``n × n`` checkerboard centred at the origin.

    The board covers ``[-n·s/2, n·s/2]²`` with cells of side ``s``; cell ``(i, j)`` (counted
    from the lower-left corner) is dark when ``i + j`` is even. ``log p = -log(area)`` on the
    dark squares and ``-inf`` elsewhere; the entropy is exactly ``log(area)``.

    Args:
        squares: Cells per side ``n``.
        cell: Side ``s`` of one cell.

    """

    def __init__(self, squares: int = 4, cell: float = 1.0) -> None:
        squares = count("checkerboard: squares", squares, 1, 1000)
        cell = length("checkerboard: cell", cell)
        check_size(f"checkerboard: a {squares}x{squares} board", 16.0 * squares**2)
        super().__init__(2, "checkerboard")
        self.squares = squares
        self.cell = float(cell)
        ij = torch.cartesian_prod(torch.arange(squares), torch.arange(squares))
        self._dark = ij[(ij.sum(1) % 2) == 0].to(_F64)  # (M, 2) lower-left cell indices
        self._log_area = math.log(len(self._dark) * self.cell**2)

    def _log_prob(self, x: Tensor) -> Tensor:
        ij = torch.floor(x / self.cell + self.squares / 2)
        inside = ((ij >= 0) & (ij < self.squares)).all(-1) & (ij.sum(-1) % 2 == 0)
        return torch.full_like(x[:, 0], -self._log_area).masked_fill_(~inside, -math.inf)

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.randint(len(self._dark), (n,), generator=generator)
        u = torch.rand(n, 2, generator=generator, dtype=_F64)
        return (self._dark[k] + u - self.squares / 2) * self.cell

    def _entropy(self) -> Entropy:
        return Entropy(self._log_area, 0.0, "exact")


class RingsDensity(Density):
    """Concentric rings: uniform angle on circles of radii ``r_c``, plus ``N(0, σ²I)`` noise.

    ``p(x) = Σ_c w_c (2πσ²)⁻¹ exp(-(ρ - r_c)²/(2σ²)) i0e(r_c ρ/σ²)`` with ``ρ = |x|``
    (the angular average of a Gaussian is a modified Bessel function ``I₀``; ``i0e`` is its
    exponentially scaled form, which keeps the expression finite for any ``ρ``).

    Args:
        radii: Ring radii ``r_c``.
        noise: Noise standard deviation ``σ``.
        weights: Ring probabilities (default: equal).

    """

    def __init__(
        self, radii: Sequence[float], noise: float, weights: Sequence[float] | None = None
    ) -> None:
        if noise <= 0 or len(radii) == 0 or min(radii) < 0:
            raise ValueError(f"circles: need radii >= 0 and noise > 0, got {radii}, {noise}")
        super().__init__(2, "circles")
        self.radii = torch.tensor(radii, dtype=_F64)
        w = (
            torch.ones(len(radii), dtype=_F64)
            if weights is None
            else torch.tensor(weights, dtype=_F64)
        )
        self.weights = w / w.sum()
        self.noise = float(noise)

    def _log_prob(self, x: Tensor) -> Tensor:
        s2 = self.noise**2
        rho = x.norm(dim=-1, keepdim=True)  # (N, 1)
        per_ring = (
            self.weights.log()
            - math.log(2 * math.pi * s2)
            - (rho - self.radii).square() / (2 * s2)
            + torch.special.i0e(rho * self.radii / s2).log()
        )
        return torch.logsumexp(per_ring, dim=-1)

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        ring = torch.multinomial(self.weights, max(n, 1), replacement=True, generator=generator)[:n]
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=_F64)
        centre = self.radii[ring, None] * torch.stack([angle.cos(), angle.sin()], -1)
        return centre + self.noise * torch.randn(n, 2, generator=generator, dtype=_F64)

    def _radial(self, panels: int) -> tuple[float, float]:
        """``(H, mass)`` by ``∫ 2πρ (-p log p)(ρ) dρ`` with ``panels`` Gauss–Legendre panels."""
        top = float(self.radii.max()) + 14 * self.noise
        rho, w = gauss_legendre(np.linspace(0.0, top, panels + 1), order=8)
        log_p = self._log_prob(torch.stack([rho, torch.zeros_like(rho)], -1))
        area = 2 * math.pi * rho * w
        return float(-(area * log_p.exp() * log_p).sum()), float((area * log_p.exp()).sum())

    def _entropy(self) -> Entropy:
        panels = math.ceil((float(self.radii.max()) + 14 * self.noise) / (0.5 * self.noise))
        fine, mass = self._radial(2 * panels)
        coarse, _ = self._radial(panels)
        return Entropy(fine, abs(fine - coarse) + abs(1 - mass), "quadrature")


@dataclass(frozen=True)
class Curve:
    """One curve of a :class:`CurveMixtureDensity`.

    Attributes:
        point: ``t (n,) -> m(t) (n, 2)``, float64.
        lower: Start of the parameter interval.
        upper: End of the parameter interval.
        log_q: Normalized log density of the parameter ``t`` on ``[lower, upper]``.
        draw: Draws ``n`` parameters from ``q`` with a generator.

    """

    point: Callable[[Tensor], Tensor]
    lower: float
    upper: float
    log_q: Callable[[Tensor], Tensor]
    draw: Callable[[int, torch.Generator], Tensor]


class CurveMixtureDensity(Density):
    """Equally weighted curves blurred by isotropic Gaussian noise.

    ``p(x) = (1/C) Σ_c ∫ q_c(t) N(x; m_c(t), σ²I) dt``. The integral is a composite
    Gauss–Legendre rule, so ``log p(x) = logsumexp_j(log ω_j - |x - m_j|²/(2σ²)) - log 2πσ²``
    over fixed nodes ``m_j`` with weights ``ω_j`` (quadrature weight × ``q`` × ``1/C``).

    Args:
        curves: The curves.
        noise: Noise standard deviation ``σ``.
        name: Short name used in messages.
        panel: Arc length of one quadrature panel, in units of ``σ``.
        order: Gauss–Legendre nodes per panel.

    """

    def __init__(
        self,
        curves: Sequence[Curve],
        noise: float,
        name: str,
        panel: float = 1.0,
        order: int = 8,
    ) -> None:
        noise = real(f"{name}: noise", noise, positive=True)
        if not curves:
            raise ValueError(f"{name}: need at least one curve, got none")
        super().__init__(2, name)
        self.curves = tuple(curves)
        self.noise = float(noise)
        centres, log_w, arcs = [], [], []
        for curve in self.curves:
            t = np.linspace(curve.lower, curve.upper, 4097)
            m = curve.point(torch.from_numpy(t)).numpy()
            arcs.append(
                (t, np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(m, axis=0), axis=1))]))
            )
        panels = [max(4, math.ceil(arc[-1] / (panel * self.noise))) for _, arc in arcs]
        # Nodes, their log-weights and two coordinates in float64, plus the (n, M) exponents of
        # one chunk of log_prob (which holds 2**18 numbers).
        check_size(
            f"{name}: the quadrature for noise {self.noise:g}", 8.0 * 4 * order * sum(panels)
        )
        for curve, (t, arc), pieces in zip(self.curves, arcs, panels, strict=True):
            edges = np.interp(np.linspace(0.0, arc[-1], pieces + 1), arc, t)
            nodes, weights = gauss_legendre(edges, order)
            centres.append(curve.point(nodes))
            log_w.append(weights.log() + curve.log_q(nodes) - math.log(len(self.curves)))
        self._centres = torch.cat(centres)  # (M, 2)
        self._log_w = torch.cat(log_w)  # (M,)

    def _log_prob(self, x: Tensor) -> Tensor:
        # Expanding |x - m|² = |x|² - 2x·m + |m|² turns the (N, M) exponents into one matrix
        # product; in float64 the cancellation costs ~1e-13 in log p for data near the curves.
        s2 = 2 * self.noise**2
        offset = self._log_w - self._centres.square().sum(-1) / s2  # (M,)
        out = []
        for part in x.split(max(1, 2**18 // len(self._centres))):  # chunks of ~2 MB
            exponents = torch.addmm(offset, part, self._centres.T, alpha=2 / s2)  # (n, M)
            out.append(torch.logsumexp(exponents, dim=-1) - part.square().sum(-1) / s2)
        return torch.cat(out) - math.log(math.pi * s2)

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        which = torch.randint(len(self.curves), (n,), generator=generator)
        x = torch.zeros(n, 2, dtype=_F64)
        for c, curve in enumerate(self.curves):
            mask = which == c
            x[mask] = curve.point(curve.draw(int(mask.sum()), generator))
        return x + self.noise * torch.randn(n, 2, generator=generator, dtype=_F64)

    def _entropy(self) -> Entropy:
        margin = 12 * self.noise
        lower = (self._centres.min(0).values - margin).tolist()
        upper = (self._centres.max(0).values + margin).tolist()
        return grid_entropy(self._log_prob, lower, upper, self.noise / 3)


def _uniform(lower: float, upper: float) -> tuple[Callable, Callable]:
    """``(log_q, draw)`` of the uniform density on ``[lower, upper]``."""

    def log_q(t: Tensor) -> Tensor:
        return torch.full_like(t, -math.log(upper - lower))

    def draw(n: int, g: torch.Generator) -> Tensor:
        return lower + (upper - lower) * torch.rand(n, generator=g, dtype=_F64)

    return log_q, draw


def checkerboard(squares: int = 4, cell: float = 1.0) -> CheckerboardDensity:
    """Uniform on the dark squares of a ``squares × squares`` board (:class:`CheckerboardDensity`).

    Example:
        >>> from exactflow.data import checkerboard
        >>> float(checkerboard().entropy())  # log 8
        2.0794415416798357

    """
    return CheckerboardDensity(squares, cell)


def circles(noise: float = 0.08, factor: float = 0.5, radius: float = 1.0) -> RingsDensity:
    """Two equally likely concentric rings of radii ``radius`` and ``factor·radius``.

    Args:
        noise: Standard deviation of the isotropic Gaussian noise.
        factor: Inner radius over outer radius.
        radius: Outer radius.

    """
    noise = length("circles: noise", noise)
    factor = length("circles: factor", factor, zero=True)
    radius = length("circles: radius", radius, zero=True)
    return RingsDensity((radius, factor * radius), noise)


def moons(noise: float = 0.1) -> CurveMixtureDensity:
    """Two interleaving half circles plus isotropic Gaussian noise, centred at the origin.

    Upper moon ``(cos t - 1/2, sin t - 1/4)``, lower moon ``(1/2 - cos t, 1/4 - sin t)``,
    ``t ~ U(0, π)``, each with probability 1/2 (the classic two-moons picture shifted so its mean
    is 0).

    Args:
        noise: Standard deviation ``σ`` of the noise.

    """
    noise = length("moons: noise", noise)
    log_q, draw = _uniform(0.0, math.pi)

    def upper(t: Tensor) -> Tensor:
        return torch.stack([t.cos() - 0.5, t.sin() - 0.25], -1)

    def lower(t: Tensor) -> Tensor:
        return torch.stack([0.5 - t.cos(), 0.25 - t.sin()], -1)

    curves = [Curve(upper, 0.0, math.pi, log_q, draw), Curve(lower, 0.0, math.pi, log_q, draw)]
    return CurveMixtureDensity(curves, noise, "moons")


def spirals(
    noise: float = 0.1, radius: float = 3.0, turns: float = 1.5, arms: int = 2
) -> CurveMixtureDensity:
    """Interleaved Archimedean spirals plus isotropic Gaussian noise.

    Arm ``c`` is ``m_c(s) = R·s·(cos(2πc/C + 2π·turns·s), sin(…))`` with ``s ∈ [0, 1]`` of
    density ``q(s) = 2s`` (``s = √u``, ``u ~ U(0, 1)``: points spread evenly over the disc's
    radius squared, so the outer turns are not starved).

    Args:
        noise: Standard deviation ``σ`` of the noise.
        radius: Outer radius ``R``.
        turns: Turns of each arm.
        arms: Number of arms ``C``.

    """
    noise = length("spirals: noise", noise)
    radius = length("spirals: radius", radius)
    turns = real("spirals: turns", turns, minimum=-1e6, maximum=1e6)
    arms = count("spirals: arms", arms, 1, 1000)

    def log_q(s: Tensor) -> Tensor:
        return math.log(2.0) + s.log()

    def draw(n: int, g: torch.Generator) -> Tensor:
        return torch.rand(n, generator=g, dtype=_F64).sqrt()

    def arm(c: int) -> Curve:
        offset = 2 * math.pi * c / arms

        def point(s: Tensor) -> Tensor:
            angle = offset + 2 * math.pi * turns * s
            return radius * s[:, None] * torch.stack([angle.cos(), angle.sin()], -1)

        return Curve(point, 0.0, 1.0, log_q, draw)

    return CurveMixtureDensity([arm(c) for c in range(arms)], noise, "spirals")


def pinwheel(
    arms: int = 5,
    radial_std: float = 0.3,
    noise: float = 0.1,
    rate: float = 0.25,
    scale: float = 2.0,
) -> CurveMixtureDensity:
    """Pinwheel arms bending outwards, plus isotropic Gaussian noise.

    Arm ``c`` is ``m_c(s) = scale·s·(cos φ, sin φ)`` with ``φ = 2πc/C + rate·exp(s)`` and
    radial position ``s ~ N(1, radial_std²)`` truncated to ``1 ± 4·radial_std`` (the truncated
    normal is part of the definition, so the density stays exact); the noise has standard
    deviation ``scale·noise``. This is the pinwheel of Johnson et al. (2016) with isotropic
    instead of purely tangential noise, which makes the density a 1-D integral.

    Args:
        arms: Number of arms ``C``.
        radial_std: Standard deviation of the radial position.
        noise: Noise standard deviation before scaling.
        rate: How fast the arms bend.
        scale: Overall scale of the picture.

    """
    arms = count("pinwheel: arms", arms, 1, 1000)
    radial_std = length("pinwheel: radial_std", radial_std)
    noise = length("pinwheel: noise", noise)
    rate = real("pinwheel: rate", rate, minimum=-1e6, maximum=1e6)
    scale = length("pinwheel: scale", scale)
    lo, hi = 1 - 4 * radial_std, 1 + 4 * radial_std
    log_norm = math.log(radial_std * math.sqrt(2 * math.pi) * math.erf(4 / math.sqrt(2)))

    def log_q(s: Tensor) -> Tensor:
        return -0.5 * ((s - 1) / radial_std).square() - log_norm

    def draw(n: int, g: torch.Generator) -> Tensor:
        s = torch.empty(0, dtype=_F64)
        while len(s) < n:  # rejection: a draw outside 1 ± 4σ happens with probability 6e-5
            more = 1 + radial_std * torch.randn(n - len(s), generator=g, dtype=_F64)
            s = torch.cat([s, more[(more >= lo) & (more <= hi)]])
        return s

    def arm(c: int) -> Curve:
        offset = 2 * math.pi * c / arms

        def point(s: Tensor) -> Tensor:
            angle = offset + rate * s.exp()
            return scale * s[:, None] * torch.stack([angle.cos(), angle.sin()], -1)

        return Curve(point, lo, hi, log_q, draw)

    return CurveMixtureDensity([arm(c) for c in range(arms)], scale * noise, "pinwheel")
