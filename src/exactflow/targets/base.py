"""The :class:`Target` protocol: an unnormalized log density for variational inference.

A target is the ``log p̃(z)`` that reverse-KL training (:class:`exactflow.objectives.ReverseKL`)
fits a flow ``q`` to. Only ``p̃ = Z·p`` is needed for training; its log normalizer ``log Z``, where
known, turns the loss ``E_q[log q - log p̃] = KL(q‖p) - log Z`` into the exact divergence
``KL(q‖p)``, which every report then shows.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from ..numerics import tracing

__all__ = ["Bounds", "Target"]

Bounds = tuple[float, float, float, float]
"""A plot box ``(x0, x1, y0, y1)``."""


class Target(ABC):
    """An unnormalized log density ``log p̃(z)`` on ``R^D``, batched and differentiable.

    ``target(z)`` maps ``z`` of shape ``(*, D)`` to ``log p̃(z)`` of shape ``(*)``, in ``z``'s
    dtype and device, differentiable in ``z`` (no host synchronization: it runs inside a
    training step). Subclasses implement :meth:`log_density`; ``__call__`` adds the input check.

    Attributes:
        name: The registry name (``exactflow.targets.get(name)`` builds it).
        dim: ``D``, the event size.
        options: The keyword arguments that rebuild it: ``get(name, **options)``.
        log_normalizer: ``log Z = log ∫ p̃(z) dz`` when known (exactly, or by quadrature where the
            class says so), else ``None``.
        bounds: ``(x0, x1, y0, y1)``, a plot box holding nearly all the mass, for 2-D targets;
            ``None`` otherwise.
        description: One line saying what the target is.

    Example:
        >>> import math, torch
        >>> from exactflow.targets import Target
        >>> class Normal1(Target):
        ...     name, dim, description = "normal1", 1, "standard normal"
        ...     log_normalizer = 0.0
        ...     def log_density(self, z):
        ...         return -0.5 * z[..., 0] ** 2 - 0.5 * math.log(2 * math.pi)
        >>> Normal1()(torch.zeros(3, 1)).shape
        torch.Size([3])

    """

    name: str
    dim: int
    description: str
    log_normalizer: float | None = None
    bounds: Bounds | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this target with ``get(name, **options)``."""
        return {}

    @abstractmethod
    def log_density(self, z: Tensor) -> Tensor:
        """``log p̃(z)`` for ``z`` of shape ``(*, D)``, without input checks; shape ``(*)``."""

    def sample(
        self,
        sample_shape: tuple[int, ...] = (),
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Exact samples ``(*sample_shape, D)`` of ``p`` (targets that define :meth:`from_noise`).

        Draws standard normal noise ``ε`` of shape ``(*sample_shape, D)`` and maps it by
        :meth:`from_noise`.

        Raises:
            NotImplementedError: The target has no exact sampler (the energies, the posterior).

        """
        eps = torch.randn(
            (*sample_shape, self.dim), generator=generator, dtype=dtype, device=device
        )
        return self.from_noise(eps, generator)

    def from_noise(self, eps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Map standard normal noise ``ε`` of shape ``(*, D)`` to exact samples ``(*, D)`` of ``p``.

        ``generator`` is for any further randomness (a mixture's component).
        """
        raise NotImplementedError(
            f"target {self.name!r} has no exact sampler: sample a flow fitted to it, or run MCMC"
        )

    def __call__(self, z: Tensor) -> Tensor:
        """``log p̃(z)``: ``(*, D) -> (*)``, in ``z``'s dtype and device.

        Raises:
            TypeError: ``z`` is not a floating-point tensor.
            ValueError: ``z``'s last dimension is not ``dim``.

        """
        if not tracing():
            if not isinstance(z, Tensor) or not z.is_floating_point():
                got = z.dtype if isinstance(z, Tensor) else type(z).__name__
                raise TypeError(f"target {self.name!r}: z must be a floating tensor, got {got}")
            if z.dim() == 0 or z.shape[-1] != self.dim:
                raise ValueError(
                    f"target {self.name!r}: z must have shape (*, {self.dim}), got {tuple(z.shape)}"
                )
        return self.log_density(z)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({args})"


def positive(name: str, label: str, value: float) -> float:
    """``value`` as a float, checked finite and positive (``label`` names it in the error)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"target {name!r}: {label} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"target {name!r}: {label} must be finite and > 0, got {value!r}")
    return float(value)


def count(name: str, label: str, value: int, least: int) -> int:
    """``value`` checked to be an ``int`` of at least ``least`` (``label`` names it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"target {name!r}: {label} must be an int, got {value!r}")
    if value < least:
        raise ValueError(f"target {name!r}: {label} must be >= {least}, got {value}")
    return value
