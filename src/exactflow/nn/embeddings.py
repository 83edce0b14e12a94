"""Context embeddings: networks that map a raw context to the vector a conditional flow reads.

A conditional preset built with ``embedding=`` applies the embedding once to every context it
is given and conditions its transforms on the result, so ``log p(x | c) = log p(x | e(c))``
with ``e`` trained jointly with the flow (its parameters are the flow's). Each embedding maps
``(*B, *in_shape) -> (*B, features)`` and keeps its constructor's keywords in ``config``, so a
checkpoint rebuilds it through :mod:`exactflow.registry`:

* :class:`MLPEmbedding` — a fully connected network, for vector contexts ``(*B, D)``;
* :class:`ConvEmbedding` — a small convolutional network, for image contexts ``(*B, C, H, W)``;
* :class:`SetEmbedding` — a permutation-invariant DeepSets encoder, for sets ``(*B, N, F)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP

__all__ = ["ConvEmbedding", "MLPEmbedding", "SetEmbedding"]

_POOLINGS = ("mean", "sum", "max")


def _positive(name: str, key: str, value: object) -> int:
    """``value`` as an int >= 1; ``TypeError``/``ValueError`` naming ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: {key} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: {key} must be >= 1, got {value}")
    return value


def _widths(name: str, key: str, values: object, length: int | None = None) -> list[int]:
    """``values`` as a list of ints >= 1 (``length`` of them if given); errors naming ``key``."""
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{name}: {key} must be a list of sizes, got {type(values).__name__}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name}: {key} must have {length} sizes, got {tuple(values)}")
    return [_positive(name, key, v) for v in values]


class _Embedding(nn.Module):
    """Shared shape handling: check ``(*B, *in_shape)``, embed ``(N, *in_shape)``, restore ``B``.

    Subclasses set ``in_shape``, ``features`` and ``config`` and implement :meth:`embed`.
    """

    in_shape: tuple[int, ...]
    features: int

    @property
    def config(self) -> dict:
        """The constructor's keywords as JSON values (a checkpoint's spec saves them)."""
        return json.loads(self._config)

    @config.setter
    def config(self, value: dict) -> None:
        # Kept as JSON text, like a flow's config: no lists inside dicts on the module.
        self.__dict__["_config"] = json.dumps(value)

    def embed(self, context: Tensor) -> Tensor:
        """``(N, *in_shape) -> (N, features)``."""
        raise NotImplementedError

    def forward(self, context: Tensor) -> Tensor:
        """The embedded context: ``(*B, *in_shape) -> (*B, features)``."""
        n = len(self.in_shape)
        if context.dim() < n or tuple(context.shape[context.dim() - n :]) != self.in_shape:
            expected = ", ".join(map(str, self.in_shape))
            raise ValueError(
                f"{type(self).__name__} takes contexts of shape (..., {expected}),"
                f" got {tuple(context.shape)}"
            )
        batch = context.shape[: context.dim() - n]
        out = self.embed(context.reshape(batch.numel(), *self.in_shape))
        return out.reshape(*batch, self.features)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, features={self.features}"


class MLPEmbedding(_Embedding):
    """A fully connected embedding of vector contexts: ``e(c) = MLP(c)``, ``(*, D) -> (*, F)``.

    Args:
        in_features: Width ``D`` of the raw context.
        features: Width ``F`` of the embedding (the flow's ``context``).
        hidden: Widths of the hidden layers (ReLU between layers).

    Shapes: ``(*B, D) -> (*B, F)``.

    Example:
        >>> import torch, exactflow as ef
        >>> e = ef.nn.MLPEmbedding(10, 4, hidden=(16,))
        >>> e(torch.randn(3, 10)).shape, e.in_shape, e.config
        (torch.Size([3, 4]), (10,), {'in_features': 10, 'features': 4, 'hidden': [16]})
        >>> flow = ef.flows.MAF(features=2, context=4, transforms=1, embedding=e)
        >>> flow.log_prob(torch.randn(3, 2), context=torch.randn(3, 10)).shape
        torch.Size([3])

    """

    def __init__(self, in_features: int, features: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        in_features = _positive("MLPEmbedding", "in_features", in_features)
        features = _positive("MLPEmbedding", "features", features)
        hidden = _widths("MLPEmbedding", "hidden", hidden)
        self.in_shape, self.features = (in_features,), features
        self.net = MLP(in_features, features, hidden)
        self.config = {"in_features": in_features, "features": features, "hidden": hidden}

    def embed(self, context: Tensor) -> Tensor:
        return self.net(context)


class ConvEmbedding(_Embedding):
    """A small convolutional embedding of image contexts, ``(*, C, H, W) -> (*, F)``.

    Each entry of ``channels`` is a 3x3 convolution with stride 2 (padding 1, so the sides
    become ``⌈H/2⌉, ⌈W/2⌉``) followed by a ReLU; the last feature map is flattened and an
    :class:`~exactflow.nn.MLP` with ``hidden`` layers maps it to ``F`` features.

    Args:
        in_shape: Shape ``(C, H, W)`` of one raw context image.
        features: Width ``F`` of the embedding (the flow's ``context``).
        channels: Output channels of the strided convolutions, in order.
        hidden: Widths of the fully connected layers after the convolutions.

    Shapes: ``(*B, C, H, W) -> (*B, F)``.

    Example:
        >>> import torch, exactflow as ef
        >>> e = ef.nn.ConvEmbedding((1, 8, 8), 16, channels=(8, 16), hidden=(32,))
        >>> e(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 16])

    """

    def __init__(
        self,
        in_shape: Sequence[int],
        features: int,
        channels: Sequence[int] = (16, 32),
        hidden: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        shape = _widths("ConvEmbedding", "in_shape (C, H, W)", in_shape, 3)
        features = _positive("ConvEmbedding", "features", features)
        channels = _widths("ConvEmbedding", "channels", channels)
        hidden = _widths("ConvEmbedding", "hidden", hidden)
        self.in_shape, self.features = tuple(shape), features
        layers: list[nn.Module] = []
        width, height, side = shape
        for c in channels:
            layers += [nn.Conv2d(width, c, 3, stride=2, padding=1), nn.ReLU()]
            width, height, side = c, math.ceil(height / 2), math.ceil(side / 2)
        self.convs = nn.Sequential(*layers)
        self.head = MLP(width * height * side, features, hidden)  # (N, c·h·w) -> (N, F)
        self.config = {
            "in_shape": shape,
            "features": features,
            "channels": channels,
            "hidden": hidden,
        }

    def embed(self, context: Tensor) -> Tensor:
        return self.head(self.convs(context).flatten(1))


class SetEmbedding(_Embedding):
    """A DeepSets embedding of a set of ``N`` elements, order-blind: ``(*, N, E) -> (*, F)``.

    ``e({c_1..c_N}) = ρ(pool_i φ(c_i))`` (Zaheer et al. 2017): ``φ`` is an
    :class:`~exactflow.nn.MLP` ``E -> hidden...`` applied to every element, ``pool`` the mean,
    sum or maximum over the elements, ``ρ`` an MLP ``hidden[-1] -> hidden[-1] -> F``. The
    elements are first put in a canonical order (by ``Σ_j c_ij √(j+2)``), so that reordering
    them gives the same embedding bit for bit, not only up to rounding (a matrix product's
    rounding may depend on a row's position). The number of elements ``N`` is fixed per flow
    (``in_shape = (N, E)``, which the flow checks contexts against).

    Args:
        element_features: Width ``E`` of one element.
        features: Width ``F`` of the embedding (the flow's ``context``).
        elements: Number ``N`` of elements in a set.
        hidden: Widths of ``φ``'s layers (its last one is the pooled width).
        pooling: ``"mean"``, ``"sum"`` or ``"max"``.

    Shapes: ``(*B, N, E) -> (*B, F)``.

    Example:
        >>> import torch, exactflow as ef
        >>> e = ef.nn.SetEmbedding(3, 8, elements=5, hidden=(16, 16))
        >>> s = torch.randn(2, 5, 3)
        >>> torch.equal(e(s), e(s[:, [4, 2, 0, 1, 3]]))
        True

    """

    def __init__(
        self,
        element_features: int,
        features: int,
        elements: int,
        hidden: Sequence[int] = (64, 64),
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        element_features = _positive("SetEmbedding", "element_features", element_features)
        features = _positive("SetEmbedding", "features", features)
        elements = _positive("SetEmbedding", "elements", elements)
        hidden = _widths("SetEmbedding", "hidden", hidden)
        if not hidden:
            raise ValueError("SetEmbedding: hidden must hold at least one width (φ's output)")
        if pooling not in _POOLINGS:
            raise ValueError(f"SetEmbedding: pooling must be one of {_POOLINGS}, got {pooling!r}")
        self.in_shape, self.features, self.pooling = (elements, element_features), features, pooling
        self.phi = nn.Sequential(MLP(element_features, hidden[-1], hidden[:-1]), nn.ReLU())
        self.rho = MLP(hidden[-1], features, hidden[-1:])
        self.config = {
            "element_features": element_features,
            "features": features,
            "elements": elements,
            "hidden": hidden,
            "pooling": pooling,
        }

    def embed(self, context: Tensor) -> Tensor:
        # The canonical order: by a weighted sum of each element's features, an elementwise
        # product and a row sum (unlike a matrix product, rounded the same in every row).
        weights = torch.arange(context.shape[-1], dtype=context.dtype, device=context.device)
        order = (context * weights.add(2).sqrt()).sum(dim=-1).argsort(dim=-1)  # (N, elements)
        context = context.gather(-2, order[..., None].expand_as(context))
        h = self.phi(context)  # (N, elements, hidden[-1])
        if self.pooling == "max":
            pooled = h.amax(dim=-2)
        else:
            pooled = h.sum(dim=-2) if self.pooling == "sum" else h.mean(dim=-2)
        return self.rho(pooled)
