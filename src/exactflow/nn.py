"""Conditioner networks: the neural networks that predict a transform's parameters."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """Fully connected network ``in -> hidden... -> out`` with an activation between layers.

    Args:
        in_features: Input width.
        out_features: Output width.
        hidden: Widths of the hidden layers.
        activation: Activation class placed after every hidden layer.

    Shapes: ``(*, in_features) -> (*, out_features)``.

    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)
