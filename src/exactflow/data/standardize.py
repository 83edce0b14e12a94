"""Per-feature standardization fitted on the training split, with its log-Jacobian.

``z = (x - μ) / σ`` elementwise, with ``μ`` and ``σ`` the mean and (population) standard
deviation of each feature over the *training* split only. Its log-Jacobian is the constant

    log|det ∂z/∂x| = -Σ_i log σ_i

so a flow ``q`` fitted to standardized data is the density ``log p(x) = log q(z) - Σ_i log σ_i``
of the data in its own units. Prepending the standardization to a flow as a fixed affine step
(:meth:`Standardize.prepend`) does exactly that, so every reported NLL stays in the data's units.
This is exactflow's one standardization: the trainer (``TrainConfig.standardize``), the
checkpoints (``spec["standardize"]``) and the benchmarks all use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..flow import Flow, placement
from ..transforms import Affine, Compose
from .dataset import Dataset

__all__ = ["Standardize"]


@dataclass(frozen=True)
class Standardize:
    """A fitted standardization ``z = (x - mean) / std``.

    Attributes:
        mean: Per-feature means, shape of one example (``(D,)`` or ``(C, H, W)``).
        std: Per-feature standard deviations, same shape, all positive.

    Example:
        >>> import torch
        >>> from exactflow.data import Standardize
        >>> s = Standardize.fit(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> s(torch.tensor([[1.0, 20.0]]))
        tensor([[0., 0.]])
        >>> round(s.log_det, 4)  # -(log 1 + log 10)
        -2.3026

    """

    mean: Tensor
    std: Tensor

    def __post_init__(self) -> None:
        for name, value in (("mean", self.mean), ("std", self.std)):
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"Standardize: {name} must be a floating tensor, got {value!r}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"Standardize: {name} has non-finite entries: {value.tolist()}")
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"Standardize: mean and std differ in shape: {tuple(self.mean.shape)} and"
                f" {tuple(self.std.shape)}"
            )
        bad = (self.std <= 0).flatten().nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"Standardize: std must be positive, got {self.std.flatten()[bad].tolist()} at"
                f" feature(s) {[b + 1 for b in bad]} (counted from 1); a constant feature has no"
                " density: drop it or add noise"
            )

    @classmethod
    def fit(cls, train: Tensor | Dataset) -> Standardize:
        """Fit on the training rows ``(N, *event)`` (or a :class:`Dataset`'s ``train`` split).

        Raises:
            ValueError: Fewer than 2 rows, non-finite values, or a constant feature (``σ = 0``),
                naming the feature (counted from 1, in row-major order for images).

        """
        if isinstance(train, Dataset):
            train = train.train
        if not isinstance(train, Tensor) or not train.is_floating_point() or train.dim() < 2:
            raise TypeError(
                "Standardize.fit takes a floating tensor (N, *event) or a Dataset, got"
                f" {type(train).__name__} {tuple(getattr(train, 'shape', ()))}"
            )
        if len(train) < 2:
            raise ValueError(f"Standardize.fit needs at least 2 training rows, got {len(train)}")
        flat = train.detach().reshape(len(train), -1).to(torch.float64)
        if not torch.isfinite(flat).all():
            row, col = (~torch.isfinite(flat)).nonzero()[0].tolist()
            raise ValueError(
                f"Standardize.fit: non-finite value at training row {row + 1}, feature {col + 1}"
                " (counted from 1)"
            )
        mean, std = flat.mean(0), flat.std(0, correction=0)
        if (std == 0).any():
            col = int((std == 0).nonzero()[0])
            raise ValueError(
                f"Standardize.fit: feature {col + 1} (counted from 1) is constant on the training"
                f" split (value {float(mean[col])}); drop it, or dequantize/jitter it first"
            )
        shape = train.shape[1:]
        return cls(mean.reshape(shape).to(train.dtype), std.reshape(shape).to(train.dtype))

    @property
    def event_ndim(self) -> int:
        """Number of trailing dimensions of one example."""
        return self.mean.dim()

    @property
    def log_det(self) -> float:
        """The constant ``log|det ∂z/∂x| = -Σ_i log σ_i`` (data -> standardized)."""
        return -float(self.std.to(torch.float64).log().sum())

    def ladj(self, x: Tensor) -> Tensor:
        """Per-row ``log|det ∂z/∂x|`` of ``x (*, *event)``: shape ``(*)``, all :attr:`log_det`."""
        batch = x.shape[: x.dim() - self.event_ndim]
        return torch.full(batch, self.log_det, dtype=x.dtype, device=x.device)

    def __call__(self, x: Tensor) -> Tensor:
        """``z = (x - mean) / std``."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, z: Tensor) -> Tensor:
        """``x = z · std + mean``."""
        return z * self.std.to(z) + self.mean.to(z)

    def prepend(self, flow: Flow) -> Flow:
        """A flow of ``x`` in data units: this standardization, then ``flow``'s steps.

        The step is a frozen :class:`~exactflow.transforms.Affine` (``log_scale = -log σ``,
        ``shift = -μ/σ``, ``requires_grad=False``: optimizers leave it alone) whose
        log-determinant ``-Σ_i log σ_i`` makes the new flow's ``log_prob`` a density of ``x``.
        The columns of a flow with ``bounds=`` that have a finite end are left as they are
        (``μ = 0``, ``σ = 1``, which the affine step applies exactly): their bounds are in data
        units, and their maps onto the real line are scale-free; so are the periodic columns of an
        ``NSF(periodic=...)``, whose intervals are in data units too. The flow's ``embedding`` is
        kept.

        Args:
            flow: A flow over vectors ``(*, D)``; its modules are shared, not copied.

        Returns:
            A new :class:`~exactflow.Flow` with transform ``Compose([standardize, flow.transform])``
            and the same base, on the flow's dtype and device.

        Example:
            >>> import torch, exactflow as ef
            >>> x = 10 + 3 * torch.randn(100, 2)
            >>> flow = ef.data.Standardize.fit(x).prepend(ef.flows.MAF(features=2, transforms=1))
            >>> flow.log_prob(x).shape
            torch.Size([100])

        """
        if not isinstance(flow, Flow):
            raise TypeError(
                f"Standardize.prepend takes an exactflow Flow, got {type(flow).__name__}"
            )
        if self.mean.dim() != 1 or tuple(flow.event_shape) != tuple(self.mean.shape):
            raise ValueError(
                f"Standardize.prepend: statistics of shape {tuple(self.mean.shape)} need a flow"
                f" over vectors of that width, got events of shape {tuple(flow.event_shape)}"
            )
        dtype, device = placement(flow)
        affine = Affine(len(self.mean)).to(dtype=dtype, device=device)
        mean, std = self.mean.to(torch.float64), self.std.to(torch.float64)
        fixed = torch.zeros(len(mean), dtype=torch.bool)
        if flow.bounds is not None:  # bounded columns pass unchanged (exactly) to their maps
            fixed |= torch.tensor([math.isfinite(a) or math.isfinite(b) for a, b in flow.bounds])
        # Periodic columns too: an angle's interval is part of the flow (NSF's `periodic`).
        config = getattr(flow, "config", None) or {}
        for column, *_ in config.get("periodic", []):
            fixed[int(column)] = True
        mean, std = mean.masked_fill(fixed, 0.0), std.masked_fill(fixed, 1.0)
        with torch.no_grad():
            affine.log_scale.copy_(-std.log())
            affine.shift.copy_(-mean / std)
        affine.requires_grad_(False)
        return Flow(
            Compose([affine, flow.transform]),
            flow.base,
            validate=flow.validate,
            embedding=flow.embedding,
        )
