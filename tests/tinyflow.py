"""A stand-in model for trainer and checkpoint tests: fast, and rebuilt by name like a preset."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

import exactflow as ef


class Tiny(ef.Flow):
    """Stacked elementwise affines; registered as ``Tiny`` by the :func:`registered` fixture."""

    def __init__(
        self, features: int, context: int = 0, transforms: int = 2, hidden: tuple = (8,)
    ) -> None:
        steps = [ef.transforms.Affine(features) for _ in range(transforms)]
        super().__init__(ef.transforms.Compose(steps), ef.distributions.StandardNormal(features))
        self.config = {
            "features": features,
            "context": context,
            "transforms": transforms,
            "hidden": list(hidden),
        }


def tiny(features: int, context: int = 0, transforms: int = 2, hidden: tuple = (8,)) -> Tiny:
    return Tiny(features, context, transforms, hidden)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """``Tiny`` is a registered model name inside this context (through the public registry)."""
    ef.registry.register("Tiny", Tiny)
    try:
        yield
    finally:
        ef.registry.unregister("Tiny")


class Interrupt(Exception):
    """Raised by :func:`interrupt_at` to stop a run the way a crash would."""


def interrupt_at(module: torch.nn.Module, call: int) -> torch.utils.hooks.RemovableHandle:
    """Raise :class:`Interrupt` on the ``call``-th training-mode forward call of ``module``."""
    count = 0

    def hook(module: torch.nn.Module, args: tuple, output: object) -> None:
        nonlocal count
        if module.training:
            count += 1
            if count == call:
                raise Interrupt

    return module.register_forward_hook(hook)
