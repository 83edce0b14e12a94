"""Names of the models a checkpoint or the command line can rebuild, and their constructors.

A model's **spec** is ``{"name": <registered name>, "kwargs": model.config}``: the registered
constructor called with those keyword arguments rebuilds it (freshly initialized; a checkpoint
then loads its weights). Every preset of :mod:`exactflow.flows` is registered under its class
name, and so are :class:`~exactflow.models.DenseVAE` and
:class:`~exactflow.models.Dequantized`; users add their own classes with
:func:`register`. An optional ``"standardize": true`` prepends a frozen standardization
(:meth:`exactflow.data.Standardize.prepend`) whose statistics come with the checkpoint's
weights. Specs of exactflow 0.1 (``"preset"`` instead of ``"name"``) still build.

A keyword value may itself be the spec of a registered module, one level deep: a conditional
preset's ``embedding`` (:class:`~exactflow.nn.MLPEmbedding`, :class:`~exactflow.nn.ConvEmbedding`,
:class:`~exactflow.nn.SetEmbedding`, or a user's registered class) is saved as
``{"name": ..., "kwargs": ...}`` inside the preset's kwargs, and :func:`build` builds it first
and passes the module to the preset.

Specs may come from untrusted files, so :func:`build` checks them before allocating anything:
the keyword values must be JSON scalars, flat lists or (one level deep) a nested spec, the
shared size keywords (``features``, ``context``, ``transforms``, ``hidden``, ``bins``,
``latent``) must be non-negative integers, and the model may have at most
``EXACTFLOW_MAX_PARAMETERS`` parameters (estimated from the keywords, plus the exact count of a
nested module's, built first on the ``meta`` device, which allocates no memory; default
:data:`MAX_PARAMETERS`) and ``EXACTFLOW_MAX_LAYERS`` layers (default :data:`MAX_LAYERS`). Set
those environment variables to raise the limits.

Example:
    >>> import exactflow as ef
    >>> flow = ef.flows.MAF(features=3, transforms=2, hidden=[8])
    >>> spec = ef.registry.spec_of(flow)
    >>> spec["name"], spec["kwargs"]["transforms"]
    ('MAF', 2)
    >>> rebuilt = ef.registry.build(spec)
    >>> "NSF" in ef.registry.names()
    True
    >>> embedding = ef.nn.MLPEmbedding(10, 4, hidden=[16])
    >>> flow = ef.flows.NSF(features=2, context=4, transforms=1, embedding=embedding)
    >>> ef.registry.spec_of(flow)["kwargs"]["embedding"]
    {'name': 'MLPEmbedding', 'kwargs': {'in_features': 10, 'features': 4, 'hidden': [16]}}
    >>> ef.registry.build(ef.registry.spec_of(flow)).embedding.in_shape
    (10,)

"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from . import flows
from .data import Standardize
from .flow import Flow
from .models import DenseVAE, Dequantized
from .nn import ConvEmbedding, MLPEmbedding, SetEmbedding

__all__ = [
    "MAX_LAYERS",
    "MAX_PARAMETERS",
    "build",
    "check_size",
    "limit",
    "names",
    "register",
    "spec_of",
    "unregister",
]

MAX_PARAMETERS = 100_000_000
"""Default largest number of parameters a spec may ask for (``EXACTFLOW_MAX_PARAMETERS``)."""

MAX_LAYERS = 10_000
"""Default largest number of layers (``transforms``) in a spec (``EXACTFLOW_MAX_LAYERS``)."""

_SPEC_KEYS = {"name", "preset", "kwargs", "standardize"}
_NESTED_KEYS = {"name", "kwargs"}
_SIZES = ("features", "context", "transforms", "bins", "latent", "levels", "steps")

_constructors: dict[str, Callable[..., nn.Module]] = {}
_MISSING = object()


def register(name: str, constructor: Callable[..., nn.Module], *, replace: bool = False) -> None:
    """Make ``constructor`` rebuildable by ``name``: ``build({"name": name, "kwargs": {...}})``.

    A class registered here gets its spec from :func:`spec_of`: its instances must keep their
    constructor's keyword arguments, as JSON values, in a ``config`` dict.

    Args:
        name: The name saved in specs (a non-empty string).
        constructor: A class (or function) returning an ``nn.Module`` from keyword arguments.
        replace: Allow replacing an existing registration of ``name``.

    Example:
        >>> import exactflow as ef
        >>> class Tiny(ef.Flow):
        ...     def __init__(self, features: int) -> None:
        ...         T = ef.transforms
        ...         super().__init__(T.Compose([T.Affine(features)]),
        ...                          ef.distributions.StandardNormal(features))
        ...         self.config = {"features": features}
        >>> ef.registry.register("Tiny", Tiny)
        >>> ef.registry.spec_of(Tiny(2))
        {'name': 'Tiny', 'kwargs': {'features': 2}}
        >>> ef.registry.unregister("Tiny")

    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a non-empty string, got {name!r}")
    if not callable(constructor):
        raise TypeError(f"register: constructor must be callable, got {type(constructor).__name__}")
    if name in _constructors and not replace and _constructors[name] is not constructor:
        raise ValueError(
            f"register: {name!r} is already registered to {_constructors[name]!r};"
            " pass replace=True to replace it"
        )
    _constructors[name] = constructor


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (``ValueError`` if it is not registered)."""
    if name not in _constructors:
        raise ValueError(f"unregister: {name!r} is not registered; known: {names()}")
    del _constructors[name]


def names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_constructors)


def spec_of(model: nn.Module) -> dict[str, Any] | None:
    """``{"name": ..., "kwargs": model.config}`` for a model of a registered class, else None.

    ``None`` means the model cannot be rebuilt by name (a hand-built :class:`~exactflow.Flow`,
    or an instance of a registered class whose ``config`` is ``None`` because it holds a
    hand-built part): its checkpoints load only into a model passed to
    :func:`exactflow.checkpoint.load`.
    """
    for name, constructor in _constructors.items():
        if type(model) is constructor:
            config = getattr(model, "config", _MISSING)
            if config is None:
                return None
            if not isinstance(config, Mapping):
                raise ValueError(
                    f"{type(model).__name__} is registered as {name!r} but its instance has no"
                    " config dict of constructor keywords"
                )
            return {"name": name, "kwargs": dict(config)}
    return None


def limit(variable: str, default: int) -> int:
    """A size limit: the environment variable ``variable`` if set (a number), else ``default``."""
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"{variable} must be a number, got {text!r}") from None


def _check_value(key: str, value: object) -> None:
    scalar = (type(None), bool, int, float, str)

    def pair(v: object) -> bool:  # bounds' [low, high], periodic's [column, low, high]
        lists = (list, tuple)
        return isinstance(v, lists) and len(v) in (2, 3) and all(isinstance(e, scalar) for e in v)

    flat = isinstance(value, (list, tuple)) and all(isinstance(v, scalar) or pair(v) for v in value)
    if not (isinstance(value, scalar) or flat):
        raise ValueError(
            f"spec kwargs[{key!r}] must be a number, string, boolean, null or a flat list of"
            f" them (or of [low, high] pairs), got {type(value).__name__}"
        )
    if isinstance(value, (list, tuple)) and len(value) > MAX_LAYERS:
        raise ValueError(f"spec kwargs[{key!r}] has {len(value)} entries (limit {MAX_LAYERS})")


def _size(key: str, value: object) -> int:
    """A size keyword as a non-negative int (``ValueError`` naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"spec kwargs[{key!r}] must be a non-negative integer, got {value!r}")
    if value < 0 or value != int(value):
        raise ValueError(f"spec kwargs[{key!r}] must be a non-negative integer, got {value!r}")
    return int(value)


def _image_estimate(shape: object, sizes: Mapping[str, int], widths: list[int]) -> int:
    """Parameters of a multi-scale image preset, roughly: ``levels · steps`` conv nets.

    Each net is taken at the widest level (``4C · 2^(levels-1)`` channels after the squeezes)
    with 3x3 convolutions in and out and a 1x1 layer per hidden width in between (a lower
    bound for residual blocks: a guard against specs far beyond the limit, not a count).
    """
    if not isinstance(shape, (list, tuple)) or not shape:
        raise ValueError(f"spec kwargs['shape'] must be a list of sizes, got {shape!r}")
    channels = _size("shape", shape[0])
    for side in shape[1:]:
        _size("shape", side)
    levels, steps = sizes.get("levels", 1), sizes.get("steps", 1)
    widest = 4 * channels * 2 ** max(min(levels, 64) - 1, 0)
    hidden = max(widths, default=1)
    net = 2 * 9 * widest * hidden + len(widths) * hidden * hidden
    return levels * steps * net


def _estimate(kwargs: Mapping[str, Any]) -> int:
    """Parameters the flat keywords ask for, roughly (see :func:`check_size`); layers checked."""
    sizes = {key: _size(key, kwargs[key]) for key in _SIZES if key in kwargs}
    hidden = kwargs.get("hidden")
    widths = [] if hidden is None else hidden if isinstance(hidden, (list, tuple)) else [hidden]
    widths = [_size("hidden", w) for w in widths]
    layers = max(sizes.get("transforms", 1), sizes.get("levels", 1) * sizes.get("steps", 1))
    most = limit("EXACTFLOW_MAX_LAYERS", MAX_LAYERS)
    if layers > most:
        raise ValueError(
            f"the spec asks for {layers} transforms, over the limit of {most}; set"
            " EXACTFLOW_MAX_LAYERS to raise it"
        )
    features = max(sizes.get("features", 1), sizes.get("latent", 0), 1)
    net = [features + sizes.get("context", 0), *widths, features * (3 * sizes.get("bins", 0) + 2)]
    estimate = layers * sum(a * b + b for a, b in itertools.pairwise(net))
    if "shape" in kwargs:
        estimate = max(estimate, _image_estimate(kwargs["shape"], sizes, widths))
    return estimate


def _nested(key: str, spec: Mapping[str, Any]) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """The constructor and the checked keywords of the nested spec ``kwargs[key]``."""
    where = f"spec kwargs[{key!r}]"
    unknown = sorted(set(map(str, spec)) - _NESTED_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known: {sorted(_NESTED_KEYS)}")
    name, kwargs = spec.get("name"), spec.get("kwargs", {})
    if not isinstance(name, str) or name not in _constructors:
        raise ValueError(f"unknown module {name!r} in {where}; registered: {names()}")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"{where}['kwargs'] must be a mapping of names, got {kwargs!r}")
    for inner, value in kwargs.items():  # flat values only: one level of nesting
        _check_value(f"{key}.{inner}", value)
    return _constructors[name], dict(kwargs)


def _construct(
    name: str, constructor: Callable[..., nn.Module], kwargs: dict, shown: Mapping | None = None
) -> nn.Module:
    """``constructor(**kwargs)``, its refusals as one-line ``ValueError``s naming ``name``.

    ``shown``: the keywords as the spec gives them (nested specs rather than their modules).
    """
    try:
        model = constructor(**kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        shown = dict(kwargs if shown is None else shown)
        raise ValueError(f"{name} rejected the spec's kwargs {shown}: {message}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name} built {type(model).__name__}, not a torch.nn.Module")
    return model


def _nested_size(key: str, spec: Mapping[str, Any]) -> int:
    """Parameters and buffer entries of the nested module, counted on the ``meta`` device.

    A meta tensor has a shape and no storage, so the count costs no memory whatever the spec
    asks for. A constructor that cannot run on the meta device is estimated from its keywords.
    """
    constructor, kwargs = _nested(key, spec)
    estimate = _estimate(kwargs)
    try:
        with torch.device("meta"):
            module = constructor(**kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError, NotImplementedError):
        return estimate  # the real build reports the constructor's refusal
    if not isinstance(module, nn.Module):
        return estimate
    tensors = itertools.chain(module.parameters(), module.buffers())
    return max(estimate, sum(t.numel() for t in tensors))


def check_size(kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords that would build a model beyond the limits, before building it.

    The parameter count is estimated as ``transforms`` conditioners, each a fully connected
    network ``features + context -> hidden... -> features · (3 · bins + 1)``, with ``features``
    the larger of ``features`` and ``latent`` (a VAE's latent width); a nested module's spec
    (an ``embedding``) adds its own count.
    """
    nested = 0
    for key, value in kwargs.items():
        if isinstance(value, Mapping):
            nested += _nested_size(key, value)
        else:
            _check_value(key, value)
    estimate = _estimate(kwargs) + nested
    most = limit("EXACTFLOW_MAX_PARAMETERS", MAX_PARAMETERS)
    if estimate > most:
        raise ValueError(
            f"the spec asks for about {estimate:.3g} parameters, over the limit of {most:.3g};"
            " set EXACTFLOW_MAX_PARAMETERS to raise it"
        )


def build(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from its spec: ``constructor(**spec["kwargs"])``, checked first.

    A keyword whose value is a nested spec ``{"name", "kwargs"}`` (a preset's ``embedding``)
    is built first, and the constructor receives the module.

    Args:
        spec: ``{"name": name, "kwargs": {...}}``, optionally with ``"standardize": True``
            (prepend a standardization whose placeholder statistics a checkpoint overwrites).

    Returns:
        The freshly initialized model.

    Raises:
        ValueError: Not a spec, an unknown name, keywords the constructor rejects, or a model
            beyond the size limits (see the module docstring).

    """
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"a model spec is a mapping with 'name' and 'kwargs', got {type(spec).__name__}"
        )
    unknown = sorted(set(map(str, spec)) - _SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the model spec; known: {sorted(_SPEC_KEYS)}")
    name = spec.get("name", spec.get("preset"))
    if not isinstance(name, str) or name not in _constructors:
        raise ValueError(f"unknown model {name!r} in the spec; registered: {names()}")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"spec['kwargs'] must be a mapping of names, got {type(kwargs).__name__}")
    standardize = spec.get("standardize", False)
    if not isinstance(standardize, bool):
        raise ValueError(f"spec['standardize'] must be true or false, got {standardize!r}")
    check_size(kwargs)
    built = dict(kwargs)
    for key, value in kwargs.items():
        if isinstance(value, Mapping):  # a nested spec (checked by check_size): its module
            built[key] = _construct(value["name"], *_nested(key, value))
    model = _construct(name, _constructors[name], built, kwargs)
    if standardize:
        if not isinstance(model, Flow):
            raise ValueError(f"spec['standardize'] applies to flows, not to {name}")
        shape = model.event_shape
        model = Standardize(torch.zeros(shape), torch.ones(shape)).prepend(model)
    return model


for _preset in (
    flows.NICE,
    flows.RealNVP,
    flows.MAF,
    flows.IAF,
    flows.NSF,
    flows.Planar,
    flows.Radial,
    flows.Sylvester,
    flows.Glow,
    flows.ResidualFlow,
    flows.NAF,
    flows.UMNN,
    flows.BNAF,
    flows.FFJORD,
    DenseVAE,
    Dequantized,
    MLPEmbedding,
    ConvEmbedding,
    SetEmbedding,
):
    register(_preset.__name__, _preset)
