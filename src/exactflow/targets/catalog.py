"""The built-in targets by name: :func:`names` and :func:`get`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .base import Target
from .densities import Banana, Funnel, Mixture
from .energies import Energy
from .logistic import LogisticRegression

__all__ = ["get", "names"]

# name -> (constructor, the keyword options it takes)
_TARGETS: dict[str, tuple[Callable[..., Target], tuple[str, ...]]] = {
    "u1": (partial(Energy, "u1"), ()),
    "u2": (partial(Energy, "u2"), ()),
    "u3": (partial(Energy, "u3"), ()),
    "u4": (partial(Energy, "u4"), ()),
    "banana": (Banana, ("a", "b")),
    "funnel": (Funnel, ("dim", "scale")),
    "mixture": (Mixture, ("components", "radius", "scale")),
    "logistic": (LogisticRegression, ("prior_scale",)),
}


def names() -> list[str]:
    """The built-in targets' names, sorted.

    Example:
        >>> from exactflow import targets
        >>> targets.names()
        ['banana', 'funnel', 'logistic', 'mixture', 'u1', 'u2', 'u3', 'u4']

    """
    return sorted(_TARGETS)


def get(name: str, **options: Any) -> Target:
    """Build the built-in target ``name`` with its keyword ``options``.

    Args:
        name: One of :func:`names`.
        **options: The target's own options (e.g. ``funnel``: ``dim``, ``scale``); a target's
            ``options`` attribute lists them with their values.

    Raises:
        ValueError: An unknown name or option (the message lists the known ones), or a bad value.
        TypeError: An option of the wrong type.

    Example:
        >>> from exactflow import targets
        >>> funnel = targets.get("funnel", dim=4)
        >>> funnel.dim, funnel.log_normalizer
        (4, 0.0)
        >>> targets.get("banana", a=1.0).options
        {'a': 1.0, 'b': 0.5}

    """
    if name not in _TARGETS:
        raise ValueError(f"unknown target {name!r}: expected one of {', '.join(names())}")
    build, known = _TARGETS[name]
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "no options"
        raise ValueError(
            f"target {name!r} takes {takes}; got unknown option(s) {', '.join(unknown)}"
        )
    return build(**options)
