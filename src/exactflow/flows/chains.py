"""Building blocks the presets share: argument checks and chains of layers that mix coordinates."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import (
    Compose,
    Coupling,
    ElementwiseMap,
    Inverse,
    LULinear,
    MaskedAutoregressive,
    Transform,
)
from ..transforms.bounds import BoundsLike, bounds_config
from ..transforms.coupling import coupling_mask

__all__ = [
    "autoregressive_flow",
    "autoregressive_layers",
    "check_preset",
    "config_of",
    "coupling_layers",
    "layer_mask",
    "layer_order",
]

_PERMUTATIONS = ("reverse", "random", "lu")


def check_preset(name: str, features: int, transforms: int, permutation: str | None = None) -> None:
    """Raise ``ValueError`` for a width or a step count below 1, or an unknown permutation.

    ``permutation=None``: a preset without one (nothing to check).
    """
    if features < 1 or transforms < 1:
        raise ValueError(
            f"{name}: features and transforms must be >= 1, got {features} and {transforms}"
        )
    if permutation is not None and permutation not in _PERMUTATIONS:
        raise ValueError(f"{name}: permutation must be one of {_PERMUTATIONS}, got {permutation!r}")


def _own(map: ElementwiseMap) -> ElementwiseMap:
    """The map for one more layer: a copy if it holds parameters, else the map itself.

    A map that is an ``nn.Module`` (UMNN's integrand network) is copied so that the layers do
    not share weights (nor a checkpoint's tensors).
    """
    return copy.deepcopy(map) if isinstance(map, nn.Module) else map


def _chain(layers: list[Transform], features: int, permutation: str) -> list[Transform]:
    """The layers, with a learnable LU linear map between consecutive ones for ``"lu"``."""
    steps: list[Transform] = []
    for k, layer in enumerate(layers):
        if k and permutation == "lu":
            steps.append(LULinear(features))
        steps.append(layer)
    return steps


def layer_mask(features: int, permutation: str, seed: int, k: int) -> Tensor:
    """The mask of coupling layer ``k``: alternating halves swapped every layer, or random.

    ``"reverse"`` and ``"lu"`` swap the odd and even indices every layer; ``"random"`` draws a
    random half per layer from ``seed + k``.
    """
    if permutation == "random":
        return coupling_mask(features, "random", seed + k)
    return coupling_mask(features, "alternating") ^ (k % 2 == 1)


def layer_order(features: int, permutation: str, seed: int, k: int) -> Tensor:
    """The degrees ``1..D`` of autoregressive layer ``k``: reversed every layer, or random.

    ``"reverse"`` and ``"lu"`` reverse the order every layer; ``"random"`` draws a random order
    per layer from ``seed + k``.
    """
    if permutation == "random":
        return torch.randperm(features, generator=torch.Generator().manual_seed(seed + k)) + 1
    order = torch.arange(1, features + 1)
    return order.flip(0) if k % 2 == 1 else order


def coupling_layers(
    map: ElementwiseMap,
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    permutation: str,
    residual: bool,
    seed: int,
) -> list[Transform]:
    """Coupling layers whose transformed coordinates change from layer to layer.

    ``"reverse"`` and ``"lu"`` swap the odd and even indices every layer; ``"random"`` draws a
    random half per layer from ``seed``. (A permutation before a coupling layer only relabels
    its fully connected conditioner's inputs, so the choice of mask is the whole of it.)
    """
    layers: list[Transform] = []
    for k in range(transforms):
        layers.append(
            Coupling(
                _own(map),
                layer_mask(features, permutation, seed, k),
                hidden=hidden,
                context=context,
                features=features,
                residual=residual,
            )
        )
    return _chain(layers, features, permutation)


def autoregressive_layers(
    map: ElementwiseMap,
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    permutation: str,
    residual: bool,
    seed: int,
    inverse: bool = False,
) -> list[Transform]:
    """Masked autoregressive layers whose order changes from layer to layer.

    ``"reverse"`` and ``"lu"`` reverse the order every layer; ``"random"`` draws a random order
    per layer from ``seed``. (Permuting the coordinates before a layer is the same as giving its
    MADE permuted degrees, which costs nothing.) ``inverse`` wraps every layer in
    :class:`~exactflow.transforms.Inverse`.
    """
    layers: list[Transform] = []
    for k in range(transforms):
        order = layer_order(features, permutation, seed, k)
        layer = MaskedAutoregressive(
            _own(map), features, hidden, context, order=order, residual=residual
        )
        layers.append(Inverse(layer) if inverse else layer)
    return _chain(layers, features, permutation)


def config_of(arguments: dict[str, object]) -> dict:
    """A preset's constructor keywords as the JSON values they round-trip to.

    Called as ``config_of(locals())`` on the first line of a preset's ``__init__``, so the
    saved keywords are exactly the signature's; ``validate`` is left out (it switches input
    checks, it does not shape the model), and so are ``bounds`` and ``embedding`` when ``None``
    (the configs of flows without them are unchanged). ``bounds`` is recorded as ``[low, high]``
    lists (``None`` for an open end, :func:`~exactflow.transforms.bounds_config`), an
    ``embedding`` as its registry spec ``{"name", "kwargs"}``; an embedding that is not
    registered stays the module itself, and :attr:`exactflow.Flow.config` then records
    ``None`` (the flow cannot be rebuilt by name).
    """
    config = {
        k: list(v) if isinstance(v, tuple | list) else v
        for k, v in arguments.items()
        if k not in ("self", "validate", "__class__", "bounds", "embedding")
    }
    if arguments.get("bounds") is not None:
        config["bounds"] = bounds_config(arguments["bounds"])  # type: ignore[arg-type]
    embedding = arguments.get("embedding")
    if isinstance(embedding, nn.Module):
        from ..registry import spec_of  # the registry imports the presets

        config["embedding"] = spec_of(embedding) or embedding
    elif embedding is not None:
        config["embedding"] = embedding  # not a module: the flow's check names it
    return config


def autoregressive_flow(
    flow: Flow,
    name: str,
    map: ElementwiseMap,
    settings: dict,
    validate: bool,
    inverse: bool = False,
    *,
    bounds: BoundsLike = None,
    embedding: nn.Module | None = None,
) -> None:
    """Initialize ``flow`` as masked autoregressive layers of ``map`` on a standard normal base.

    ``settings`` is the preset's ``config_of(locals())``, from which ``features``, ``context``,
    ``transforms``, ``hidden``, ``permutation``, ``residual`` and ``seed`` are read (the
    presets MAF, IAF, NAF and UMNN differ only in their map); it becomes ``flow.config``.
    ``bounds`` and ``embedding`` go to :class:`~exactflow.Flow` as they are.
    """
    features, transforms, permutation = (
        settings["features"], settings["transforms"], settings["permutation"]
    )  # fmt: skip
    check_preset(name, features, transforms, permutation)
    steps = autoregressive_layers(
        map,
        features,
        settings["context"],
        transforms,
        settings["hidden"],
        permutation,
        settings["residual"],
        settings["seed"],
        inverse=inverse,
    )
    Flow.__init__(
        flow,
        Compose(steps),
        StandardNormal(features),
        validate=validate,
        bounds=bounds,
        embedding=embedding,
    )
    flow.config = settings
