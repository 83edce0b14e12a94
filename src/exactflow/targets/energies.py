"""The four 2-D energies of Rezende & Mohamed (2015), Table 1, as targets ``p̃(z) = exp(-U(z))``.

With ``w1 = sin(2π z1 / 4)``, ``w2 = 3 exp(-½((z1 - 1)/0.6)²)`` and ``w3 = 3 σ((z1 - 1)/0.3)``:

- ``U1 = ½((‖z‖ - 2)/0.4)² - log(exp(-½((z1 - 2)/0.6)²) + exp(-½((z1 + 2)/0.6)²))`` (a ring cut
  into two arcs),
- ``U2 = ½((z2 - w1)/0.4)²`` (a sine wave),
- ``U3 = -log(exp(-½((z2 - w1)/0.35)²) + exp(-½((z2 - w1 + w2)/0.35)²))`` (a wave with a gap),
- ``U4 = -log(exp(-½((z2 - w1)/0.4)²) + exp(-½((z2 - w1 + w3)/0.35)²))`` (a wave that splits).

**The envelope of U2–U4.** As printed, U2–U4 do not depend on ``z1`` outside the ``w`` terms, so
``∫ exp(-U) dz`` is infinite; the paper draws them on the box ``[-4, 4]²``. exactflow multiplies
them by the smooth envelope ``exp(-½(z1/4)⁴)``, i.e. adds ``½(z1/4)⁴`` to U2–U4 (U1 decays on its
own and is left as printed). The envelope is nearly flat over the paper's box (``≥ 0.96`` for
``|z1| ≤ 2``, ``e^{-1/2}`` at ``|z1| = 4``) and falls fast beyond it, so the density looks like
the paper's Figure 3 and has a finite normalizer; its gradient ``-(z1/4)³/2`` is a gentle
polynomial, where a hard box would have none (or an enormous one) to guide a flow back inside.
normflows uses a quartic envelope too (``½(‖z‖₄ / (20·scale))⁴`` on both coordinates), wider.

**The normalizers** ``log Z = log ∫ exp(-U)``. For U2–U4 it is exact: for every ``z1`` the
``z2``-integral of each Gaussian bump is ``s√(2π)`` whatever its centre, so
``Z = c·√(2π)·∫ exp(-½(z1/4)⁴) dz1 = c·√(2π)·2^{5/4}·Γ(1/4)`` with ``c = 0.4`` (U2),
``2 × 0.35`` (U3), ``0.4 + 0.35`` (U4). U1 has no closed form: its ``log Z`` is a quadrature value,
computed on first use (then cached for the process) by the midpoint rule in float64 on a
1000 × 1000 grid over ``[-6, 6]²``, after checking that the cells within 5% of the box's
edge carry less than ``1e-9`` of the mass (they carry ``2e-19``). The integrand is smooth (its
only kink, at the origin, sits where the density is ``e^{-17}`` of its peak), so the rule
converges faster than any power of the spacing: grids from 300 × 300 to 4000 × 4000, on this box
and on shifted and larger ones, agree with it to ``3e-13`` nats; the same rule reproduces the
closed forms of U2–U4 to ``1e-14``. Values:
U1 1.877502, U2 2.157104, U3 2.716720, U4 2.785713 (nats; more digits from
``Energy(name).log_normalizer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, partial

import torch
from torch import Tensor

from .base import Bounds, Target

__all__ = ["Energy", "log_integral_2d"]

_POINTS = 1000
_EDGE_BAND = 0.05  # the outer 5% of the box on each side
_EDGE_MASS = 1e-9  # the most of the mass that band may hold
_U1_BOX = (-6.0, 6.0, -6.0, 6.0)
# Plot boxes: the paper's [-4, 4]² for the ring; wider in z1 for the waves, whose envelope leaves
# ~16% of the mass outside |z1| <= 4, and down to z2 = -5 for the lower branch of U3/U4.
_U1_BOUNDS = (-4.0, 4.0, -4.0, 4.0)
_WAVE_BOUNDS = (-6.0, 6.0, -5.0, 4.0)


def _w1(z1: Tensor) -> Tensor:
    return torch.sin(0.5 * math.pi * z1)


def _envelope(z1: Tensor) -> Tensor:
    return -0.5 * (z1 / 4) ** 4


def _ring(z: Tensor) -> Tensor:
    z1 = z[..., 0]
    radius = torch.linalg.vector_norm(z, dim=-1)
    arcs = torch.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)
    return -0.5 * ((radius - 2) / 0.4) ** 2 + arcs


def _wave(z: Tensor) -> Tensor:
    z1, z2 = z.unbind(-1)
    return -0.5 * ((z2 - _w1(z1)) / 0.4) ** 2 + _envelope(z1)


def _gap(z: Tensor) -> Tensor:
    z1, z2 = z.unbind(-1)
    d = z2 - _w1(z1)
    w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    return torch.logaddexp(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + w2) / 0.35) ** 2) + _envelope(z1)


def _split(z: Tensor) -> Tensor:
    z1, z2 = z.unbind(-1)
    d = z2 - _w1(z1)
    w3 = 3 * torch.sigmoid((z1 - 1) / 0.3)
    return torch.logaddexp(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + w3) / 0.35) ** 2) + _envelope(z1)


def log_integral_2d(
    log_density: Callable[[Tensor], Tensor],
    box: tuple[float, float, float, float],
    points: int | tuple[int, int],
) -> tuple[float, float]:
    """``log ∫ exp(f(z)) dz`` over a 2-D box by the midpoint rule, and the mass near its edge.

    The box ``(x0, x1, y0, y1)`` is cut into ``n1 × n2`` cells of size ``h1 × h2``;
    ``log Z ≈ logsumexp_ij f(c_ij) + log(h1 h2)`` over the cell centres ``c_ij`` (float64). For a
    smooth integrand that is negligible at the box's edge the rule converges faster than any power
    of ``h``. The second value is the fraction of the mass in the cells within 5% of the box's
    width (or height) of its edge: it must be negligible for the value to be trusted.

    Args:
        log_density: ``f``, a log density of points ``(N, 2)`` (called in float64, no gradient).
        box: ``(x0, x1, y0, y1)``.
        points: Cells per side, ``n`` or ``(n1, n2)``.

    Returns:
        ``(log Z, edge fraction)``.

    Example:
        >>> import math, torch
        >>> from exactflow.targets import log_integral_2d
        >>> normal = lambda z: -0.5 * (z**2).sum(-1)  # ∫ = 2π
        >>> log_z, edge = log_integral_2d(normal, (-9, 9, -9, 9), 300)
        >>> round(log_z - math.log(2 * math.pi), 9), edge < 1e-12
        (0.0, True)

    """
    n1, n2 = (points, points) if isinstance(points, int) else points
    x0, x1, y0, y1 = box
    h1, h2 = (x1 - x0) / n1, (y1 - y0) / n2
    xs = x0 + h1 * (torch.arange(n1, dtype=torch.float64) + 0.5)
    ys = y0 + h2 * (torch.arange(n2, dtype=torch.float64) + 0.5)
    rows = []
    with torch.no_grad():
        for chunk in xs.split(max(1, 2**18 // n2)):
            grid = torch.stack(torch.meshgrid(chunk, ys, indexing="ij"), -1)  # (rows, n2, 2)
            rows.append(log_density(grid.reshape(-1, 2)).reshape(len(chunk), n2))
    log_f = torch.cat(rows)  # (n1, n2)
    band1, band2 = math.ceil(_EDGE_BAND * n1), math.ceil(_EDGE_BAND * n2)
    edge = torch.ones_like(log_f, dtype=torch.bool)
    edge[band1 : n1 - band1, band2 : n2 - band2] = False
    total = torch.logsumexp(log_f.flatten(), 0)
    near = torch.logsumexp(log_f[edge], 0)
    return float(total) + math.log(h1 * h2), math.exp(float(near - total))


@cache
def _ring_log_normalizer() -> float:
    log_z, edge = log_integral_2d(_ring, _U1_BOX, _POINTS)
    if edge > _EDGE_MASS:
        raise RuntimeError(
            f"target 'u1': the quadrature box {_U1_BOX} leaves {edge:.2e} of the mass near its"
            f" edge (at most {_EDGE_MASS:.0e} expected)"
        )
    return log_z


def _wave_log_normalizer(width: float) -> float:
    """``log(width·√(2π)·∫ exp(-½(z1/4)⁴) dz1)``: a sum of z2-Gaussians of total ``width``."""
    return math.log(width) + 0.5 * math.log(2 * math.pi) + 1.25 * math.log(2) + math.lgamma(0.25)


_R_AND_M = "Rezende & Mohamed (2015)"
# name -> (-U, its log normalizer, plot box, description)
_ENERGIES: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[], float], Bounds, str]] = {
    "u1": (_ring, _ring_log_normalizer, _U1_BOUNDS, f"{_R_AND_M} U1: a ring cut into two arcs"),
    "u2": (_wave, partial(_wave_log_normalizer, 0.4), _WAVE_BOUNDS, f"{_R_AND_M} U2: a sine wave"),
    "u3": (_gap, partial(_wave_log_normalizer, 0.7), _WAVE_BOUNDS, f"{_R_AND_M} U3: a wave, a gap"),
    "u4": (
        _split,
        partial(_wave_log_normalizer, 0.75),
        _WAVE_BOUNDS,
        f"{_R_AND_M} U4: a split wave",
    ),
}


class Energy(Target):
    """One of Rezende & Mohamed's (2015) 2-D energies: ``log p̃(z) = -U(z)``, ``z`` of ``(*, 2)``.

    The formulas, the envelope that makes U2–U4 integrable, and how the normalizer is computed
    are in this module's docstring (:mod:`exactflow.targets.energies`).

    Args:
        name: ``"u1"``, ``"u2"``, ``"u3"`` or ``"u4"``.

    Attributes:
        log_normalizer: ``log ∫ exp(-U)``: exact for U2–U4; for U1 a quadrature value
            (1000 × 1000 midpoint rule in float64, accurate to ``~1e-12`` nats), computed on first
            access and cached.

    Example:
        >>> import torch
        >>> from exactflow.targets import Energy
        >>> u1 = Energy("u1")
        >>> u1(torch.tensor([[2.0, 0.0], [0.0, 0.0]])).round(decimals=3)  # on the ring; centre
        tensor([  0.0000, -17.3620])
        >>> round(u1.log_normalizer, 4)
        1.8775

    """

    dim = 2

    def __init__(self, name: str) -> None:
        if name not in _ENERGIES:
            raise ValueError(f"Energy: name must be one of {sorted(_ENERGIES)}, got {name!r}")
        self.name = name
        self._log_u, self._log_z, self.bounds, self.description = _ENERGIES[name]

    @property
    def log_normalizer(self) -> float:  # type: ignore[override]
        return self._log_z()

    def log_density(self, z: Tensor) -> Tensor:
        return self._log_u(z)

    def __repr__(self) -> str:
        return f"Energy({self.name!r})"
