"""Residual flows (Behrmann et al. 2019; Chen et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import ActNorm, Compose, ResidualBlock, Transform
from .chains import check_preset, config_of

__all__ = ["ResidualFlow"]


class ResidualFlow(Flow):
    """A residual flow: ``transforms`` invertible residual blocks, each after an ActNorm.

    Every block is ``y = x + g(x, c)`` with ``g`` a spectrally normalized network
    (:class:`~exactflow.transforms.ResidualBlock`, Lipschitz bound ``coeff``). In training the
    log-determinants are unbiased Russian-roulette estimates; in eval mode (every reported
    figure) they are exact. Sampling inverts each block by fixed-point iteration, which raises
    if it does not converge. Base: standard normal.

    Args:
        features: Data width ``D``.
        context: Context width ``C`` the blocks read (0: unconditional).
        transforms: Number of residual blocks.
        hidden: Hidden widths of each block's network.
        coeff: Lipschitz bound of every layer of ``g``, in ``(0, 1)``.
        gradient: How training differentiates the estimate: ``"neumann"`` (memory-saving
            Neumann series, the default) or ``"backprop"`` (see
            :class:`~exactflow.transforms.ResidualBlock`).
        validate: Check the inputs of direct ``log_prob``/``sample`` calls.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.ResidualFlow(features=2, transforms=2, hidden=(16,)).eval()
        >>> flow.log_prob(torch.randn(5, 2)).shape, flow.sample((3,)).shape
        (torch.Size([5]), torch.Size([3, 2]))

    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        coeff: float = 0.97,
        gradient: str = "neumann",
        validate: bool = True,
    ) -> None:
        config = config_of(locals())
        check_preset("ResidualFlow", features, transforms)
        steps: list[Transform] = []
        for _ in range(transforms):
            steps += [ActNorm(features), ResidualBlock(features, hidden, context, coeff, gradient=gradient)]
        super().__init__(Compose(steps), StandardNormal(features), validate=validate)
        self.config = config
