"""Normalization transforms: per-feature affine maps whose scale and shift come from data.

Both act per feature on vectors ``(*, D)`` (``event_ndim=1``) and per channel on images
``(*, C, H, W)`` (``event_ndim=3``): the channel axis is dimension ``-event_ndim`` and every
trailing dimension after it is spatial, so the log-determinant of one event is the per-channel
sum times the number of spatial positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..numerics import tracing
from .base import Transform

__all__ = ["ActNorm", "BatchNorm"]


def _check_positive_int(name: str, label: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: {label} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: {label} must be at least 1, got {value}")


def _check_input(name: str, x: Tensor, features: int, event_ndim: int) -> None:
    """Raise a ValueError unless ``x`` has ``features`` entries along dimension ``-event_ndim``."""
    if x.dim() < event_ndim or x.shape[-event_ndim] != features:
        raise ValueError(
            f"{name}: expected {features} features/channels at dimension {-event_ndim}"
            f" (event_ndim={event_ndim}), got input of shape {tuple(x.shape)}"
        )


def _per_channel(param: Tensor, event_ndim: int) -> Tensor:
    """View a per-channel vector ``(C,)`` so it broadcasts against ``(*, C, *spatial)``."""
    return param.view(-1, *([1] * (event_ndim - 1)))


def _positions(x: Tensor, event_ndim: int) -> int:
    """Number of spatial positions per event: the product of the dimensions after the channel."""
    return math.prod(x.shape[x.dim() - event_ndim + 1 :])


def _channel_statistics(name: str, x: Tensor, event_ndim: int) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and (biased) variance over batch and spatial dimensions, and the count."""
    channel = x.dim() - event_ndim
    dims = [d for d in range(x.dim()) if d != channel]
    count = x.numel() // max(x.shape[channel], 1)
    if count < 2:
        raise ValueError(
            f"{name}: batch statistics need at least 2 values per feature/channel, got a batch"
            f" of shape {tuple(x.shape)} (a single row); use a larger batch or eval mode"
        )
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    return mean, var, count


class ActNorm(Transform):
    """Activation normalization ``y = (x - t) · exp(-s)`` with data-dependent initialization.

    A per-feature (or per-channel) affine map with learnable shift ``t`` and log-scale ``s``;
    ``log|det J| = -Σ_c s_c`` for vectors and ``-H·W·Σ_c s_c`` for images ``(*, C, H, W)``
    (Kingma & Dhariwal 2018, Glow).

    Initialization: the first forward pass in training mode while :attr:`initialized` is false
    sets ``t`` and ``s`` to the batch's per-feature mean and log standard deviation, so that this
    batch comes out with zero mean and unit variance, and sets :attr:`initialized`. The flag is a
    persistent buffer, so a module loaded from a ``state_dict`` keeps the loaded parameters. An
    uninitialized ActNorm in eval mode, or in the inverse direction, uses its current parameters
    (the identity at construction). The flag is read from the device once (not at every training
    step), and not at all under a tracer (:func:`exactflow.numerics.tracing`), where the current
    parameters are used.

    Args:
        features: Number of features ``D`` (or channels ``C``).
        event_ndim: 1 for vectors ``(*, D)``; 3 for images ``(*, C, H, W)``, normalized per
            channel.

    Shapes: ``x (*, D) -> y (*, D)`` or ``x (*, C, H, W) -> y (*, C, H, W)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.ActNorm(3)
        >>> y, ladj = t(5 + 2 * torch.randn(100, 3))  # training mode: initializes on this batch
        >>> bool(t.initialized)
        True

    """

    # Added to the variance at initialization so a constant feature gets a finite scale.
    init_eps = 1e-6

    def __init__(self, features: int, event_ndim: int = 1) -> None:
        super().__init__()
        _check_positive_int("ActNorm", "features", features)
        _check_positive_int("ActNorm", "event_ndim", event_ndim)
        self.features = features
        self.event_ndim = event_ndim
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))
        self._checked = False  # the flag was read and found set: no need to read it again

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set the parameters so that ``x`` maps to zero mean and unit variance per feature.

        The statistics are computed in float64, so data of large magnitude (``1e30`` in
        float32) still gets a finite shift and log-scale.

        Raises:
            ValueError: ``x`` has non-finite values, or its mean or log-scale does not fit the
                parameters' dtype (nothing is changed then).

        """
        mean, var, _ = _channel_statistics("ActNorm", x.to(torch.float64), self.event_ndim)
        log_scale = 0.5 * torch.log(var + self.init_eps)
        dtype = self.shift.dtype
        if not bool(
            torch.isfinite(mean.to(dtype)).all() & torch.isfinite(log_scale.to(dtype)).all()
        ):
            biggest = float(x.detach().abs().max())
            raise ValueError(
                f"ActNorm: cannot initialize on this batch: its per-feature mean or scale is not"
                f" finite in {dtype} (largest |x| = {biggest:g}); rescale the data (standardize)"
                " or use float64"
            )
        self.shift.copy_(mean)
        self.log_scale.copy_(log_scale)
        self.initialized.fill_(True)

    def _ladj(self, x: Tensor) -> Tensor:
        total = self.log_scale.sum() * _positions(x, self.event_ndim)
        return total.expand(x.shape[: x.dim() - self.event_ndim])

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._checked = False

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("ActNorm", x, self.features, self.event_ndim)
        if self.training and not self._checked and not tracing():
            if not bool(self.initialized):
                self.initialize(x.detach())
            self._checked = True
        shift = _per_channel(self.shift, self.event_ndim)
        log_scale = _per_channel(self.log_scale, self.event_ndim)
        return (x - shift) * torch.exp(-log_scale), -self._ladj(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("ActNorm", y, self.features, self.event_ndim)
        shift = _per_channel(self.shift, self.event_ndim)
        log_scale = _per_channel(self.log_scale, self.event_ndim)
        return y * log_scale.exp() + shift, self._ladj(y)


class BatchNorm(Transform):
    """Batch normalization as a flow: ``y = (x - m) / sqrt(v + ε) · exp(γ) + β``.

    In training mode ``m`` and ``v`` are the batch's per-feature mean and (biased) variance, and
    the running averages are updated outside autograd:
    ``running ← (1 - momentum) · running + momentum · batch`` (the running variance uses the
    unbiased batch variance). In eval mode ``m`` and ``v`` are the running averages. The inverse
    always uses the running averages, since there is no batch of data to take statistics from
    (Dinh et al. 2017, RealNVP; Papamakarios et al. 2017, MAF).

    ``log|det J| = Σ_c (γ_c - ½ log(v_c + ε))`` (times ``H·W`` for images). In training mode this
    treats the batch statistics as constants, the usual convention: the exact Jacobian of a
    batch-normalized batch couples the rows. Gradients still flow through ``m`` and ``v``. In eval
    mode the map is an ordinary per-feature affine map and the log-determinant is exact.

    Args:
        features: Number of features ``D`` (or channels ``C``).
        momentum: Weight of the newest batch in the running averages, in ``(0, 1]``.
        eps: Added to the variance for numerical stability.
        event_ndim: 1 for vectors ``(*, D)``; 3 for images ``(*, C, H, W)``, normalized per
            channel.

    Shapes: ``x (*, D) -> y (*, D)`` or ``x (*, C, H, W) -> y (*, C, H, W)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> t = ef.transforms.BatchNorm(3)
        >>> y, ladj = t(torch.randn(100, 3))  # training mode: batch statistics
        >>> x, _ = t.eval().inverse(y)  # eval mode and inverse: running statistics

    """

    def __init__(
        self, features: int, momentum: float = 0.1, eps: float = 1e-5, event_ndim: int = 1
    ) -> None:
        super().__init__()
        _check_positive_int("BatchNorm", "features", features)
        _check_positive_int("BatchNorm", "event_ndim", event_ndim)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"BatchNorm: momentum must be in (0, 1], got {momentum}")
        if not eps > 0:
            raise ValueError(f"BatchNorm: eps must be positive, got {eps}")
        self.features = features
        self.momentum = momentum
        self.eps = eps
        self.event_ndim = event_ndim
        self.log_gamma = nn.Parameter(torch.zeros(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        mean, var, count = _channel_statistics("BatchNorm", x, self.event_ndim)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1), self.momentum)
        return mean, var

    def _log_slope(self, var: Tensor) -> Tensor:
        """Per-feature ``log|dy/dx| = γ - ½ log(v + ε)``, shape ``(C,)``."""
        return self.log_gamma - 0.5 * torch.log(var + self.eps)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("BatchNorm", x, self.features, self.event_ndim)
        mean, var = self._statistics(x)
        log_slope = self._log_slope(var)
        scale = _per_channel(log_slope.exp(), self.event_ndim)
        y = (x - _per_channel(mean, self.event_ndim)) * scale + _per_channel(
            self.beta, self.event_ndim
        )
        ladj = log_slope.sum() * _positions(x, self.event_ndim)
        return y, ladj.expand(x.shape[: x.dim() - self.event_ndim])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_input("BatchNorm", y, self.features, self.event_ndim)
        log_slope = self._log_slope(self.running_var)
        scale = _per_channel(torch.exp(-log_slope), self.event_ndim)
        x = (y - _per_channel(self.beta, self.event_ndim)) * scale + _per_channel(
            self.running_mean, self.event_ndim
        )
        ladj = -log_slope.sum() * _positions(y, self.event_ndim)
        return x, ladj.expand(y.shape[: y.dim() - self.event_ndim])
