"""Observation models ``p(x | z)`` of a latent-variable model: what its decoder's outputs mean.

A decoder maps a latent ``z`` to ``P·D`` numbers for data of ``D`` scalars: ``P`` blocks of
``D`` (``P = likelihood.params``), e.g. the logits of a Bernoulli, or the means and then the
log-scales of a Gaussian. A :class:`Likelihood` turns them into ``log p(x | z)`` summed over the
``D`` scalars, the mean ``E[x | z]`` and draws of ``x``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Bernoulli", "Gaussian", "Likelihood", "likelihood"]

_LOG_2PI = math.log(2 * math.pi)


class Likelihood(ABC):
    """``p(x | z)`` given by a decoder's outputs: ``P`` blocks of ``D`` per data point.

    Shapes: data ``x (*, D)``, decoder outputs ``params (*, P·D)`` (broadcasting over ``*``)
    ``-> log_prob (*)``; ``mean``/``sample`` ``(*, P·D) -> (*, D)``.

    Attributes:
        name: The name :func:`likelihood` knows it by.
        params: ``P``, the number of decoder outputs per data scalar.
        binary: Whether the data must be 0/1.

    """

    name: str = ""
    params: int = 1
    binary: bool = False

    def split(self, params: Tensor) -> tuple[Tensor, ...]:
        """The ``P`` blocks ``(*, D)`` of ``params (*, P·D)``."""
        if params.shape[-1] % self.params:
            raise ValueError(
                f"{type(self).__name__}: the decoder's last dimension must be a multiple of"
                f" {self.params}, got {params.shape[-1]}"
            )
        return params.chunk(self.params, dim=-1)

    @abstractmethod
    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """``log p(x | z) = Σ_i log p(x_i | z)``: ``x (*, D)``, ``params (*, P·D)`` ``-> (*)``."""

    @abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """``E[x | z]``, ``(*, D)``."""

    @abstractmethod
    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``x ~ p(x | z)``, ``(*, D)``, without gradient."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels for binary data: the decoder outputs logits ``ℓ``.

    ``log p(x | z) = Σ_i x_i ℓ_i - softplus(ℓ_i)`` (the negative binary cross-entropy with
    logits, stable for any ``ℓ``); ``E[x_i | z] = σ(ℓ_i)``. Data must be 0 or 1.

    Example:
        >>> import torch, exactflow as ef
        >>> bern = ef.models.Bernoulli()
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> round(float(bern.log_prob(x, torch.zeros(1, 2))), 4)  # 2 · log(1/2)
        -1.3863

    """

    name = "bernoulli"
    params = 1
    binary = True

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return (x * params - F.softplus(params)).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            return torch.bernoulli(torch.sigmoid(params), generator=generator)


class Gaussian(Likelihood):
    """Independent Gaussian pixels for continuous data, ``N(x_i; μ_i, σ_i²)``.

    With a learned scale (``scale=None``) the decoder outputs the means ``μ`` and raw
    log-scales ``r`` (``P = 2``), and ``log σ = m + softplus(r - m)`` with
    ``m = log(min_scale)``: about ``r`` when ``r ≫ m``, never below ``m``, so the density of a
    nearly constant pixel cannot run off to infinity (a smooth lower bound; its gradient never
    vanishes abruptly as a clamp's would). With a fixed ``scale`` the decoder outputs only the
    means (``P = 1``).

    ``log p(x | z) = Σ_i -(x_i - μ_i)²/(2σ_i²) - log σ_i - log(2π)/2``; ``E[x | z] = μ``.

    Args:
        scale: A fixed standard deviation ``σ > 0`` for every pixel, or ``None`` to learn it.
        min_scale: The lower bound of a learned ``σ``.

    Example:
        >>> import torch, exactflow as ef
        >>> g = ef.models.Gaussian(scale=1.0)
        >>> round(float(g.log_prob(torch.zeros(1, 1), torch.zeros(1, 1))), 4)  # -log(2π)/2
        -0.9189
        >>> ef.models.Gaussian().params
        2

    """

    name = "gaussian"

    def __init__(self, scale: float | None = None, min_scale: float = 1e-3) -> None:
        for what, value in (("scale", scale), ("min_scale", min_scale)):
            if value is None and what == "scale":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Gaussian: {what} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Gaussian: {what} must be finite and > 0, got {value!r}")
        self.scale = None if scale is None else float(scale)
        self.min_scale = float(min_scale)
        self.params = 1 if scale is not None else 2

    def loc_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The means ``μ (*, D)`` and log-scales ``log σ`` (``(*, D)``, or a 0-d fixed one)."""
        if self.scale is not None:
            (loc,) = self.split(params)
            return loc, params.new_tensor(math.log(self.scale))
        loc, raw = self.split(params)
        floor = math.log(self.min_scale)
        return loc, floor + F.softplus(raw - floor)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        loc, log_scale = self.loc_scale(params)
        u = (x - loc) * torch.exp(-log_scale)
        return (-0.5 * (u.square() + _LOG_2PI) - log_scale).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return self.loc_scale(params)[0]

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            loc, log_scale = self.loc_scale(params)
            noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
            return loc + noise * log_scale.exp()

    def __repr__(self) -> str:
        if self.scale is not None:
            return f"Gaussian(scale={self.scale})"
        return f"Gaussian(min_scale={self.min_scale})"


_LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}


def likelihood(name: str | Likelihood) -> Likelihood:
    """The observation model called ``name`` (``"bernoulli"`` or ``"gaussian"``), or ``name``.

    Example:
        >>> import exactflow as ef
        >>> ef.models.likelihood("bernoulli")
        Bernoulli()

    """
    if isinstance(name, Likelihood):
        return name
    if not isinstance(name, str) or name.lower() not in _LIKELIHOODS:
        raise ValueError(
            f"likelihood must be one of {sorted(_LIKELIHOODS)} or a Likelihood, got {name!r}"
        )
    return _LIKELIHOODS[name.lower()]()
