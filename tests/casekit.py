"""Conformance cases: the :class:`Case` record and the helpers that build and feed a case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from exactflow.transforms import Transform


@dataclass(frozen=True)
class Case:
    """One configuration of one transform for the conformance suite.

    Attributes:
        id: Test id, unique over the registry.
        make: Builds the transform (in float32; the suite converts it to float64).
        event_shape: Shape of one event.
        context: Context width the transform takes (0 for none).
        sample_x: Draws forward-direction inputs ``(batch, *event)`` in float64; ``randn`` if None.
        sample_y: Draws inverse-direction inputs; ``randn`` if None.
        warmup: Run one forward pass in training mode on a batch before testing (data-dependent
            initialization, running statistics).
        perturb: Scale of the random noise added to every parameter before testing, so that no
            test runs at an identity initialization.
        atol: Tolerance of the round trips (loosen only for numerical inverses).
        density: The flow ``Flow(make(), StandardNormal)`` is a proper density (the transform's
            codomain is the base's support), so it must integrate to one.
        covers: Other public names (elementwise maps, presets) this case exercises.
        out_shape: Shape of one output event, for a shape-changing transform (``None``: the
            same as ``event_shape``).
        inverse: The transform has an inverse. ``False``: ``inverse`` must raise
            ``NotImplementedError`` saying what to use instead, and the inverse checks are
            skipped.
        estimated: The transform's train-mode ``ladj`` is a stochastic estimate
            (``exact_ladj=False``): it is checked for unbiasedness against the eval-mode value.
    """

    id: str
    make: Callable[[], Transform]
    event_shape: tuple[int, ...] = (2,)
    context: int = 0
    sample_x: Callable[[int], Tensor] | None = None
    sample_y: Callable[[int], Tensor] | None = None
    warmup: bool = False
    perturb: float = 0.2
    atol: float = 1e-8
    density: bool = True
    covers: tuple[str, ...] = ()
    out_shape: tuple[int, ...] | None = None
    inverse: bool = True
    estimated: bool = False

    @property
    def y_shape(self) -> tuple[int, ...]:
        """Shape of one output event (the inverse direction's input)."""
        return self.event_shape if self.out_shape is None else self.out_shape

    @property
    def shape_changing(self) -> bool:
        return self.y_shape != self.event_shape


def build(case: Case, seed: int = 0) -> Transform:
    """The case's transform in float64, with perturbed parameters, warmed up, in eval mode."""
    torch.manual_seed(seed)
    t = case.make().double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(case.perturb * torch.randn_like(p))
    if case.warmup:
        t.train()
        x = draw_x(case, 64, seed + 1)
        t(x, draw_context(case, 64, seed + 1))
    return t.eval()


def draw_x(case: Case, n: int, seed: int = 0) -> Tensor:
    torch.manual_seed(seed)
    if case.sample_x is not None:
        return case.sample_x(n).double()
    return torch.randn((n, *case.event_shape), dtype=torch.float64)


def draw_y(case: Case, n: int, seed: int = 0) -> Tensor:
    torch.manual_seed(seed)
    if case.sample_y is not None:
        return case.sample_y(n).double()
    return torch.randn((n, *case.y_shape), dtype=torch.float64)


def draw_context(case: Case, n: int, seed: int = 0) -> Tensor | None:
    if case.context == 0:
        return None
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randn(n, case.context, dtype=torch.float64, generator=g)


def unit_interval(n: int, shape: tuple[int, ...] = (2,)) -> Tensor:
    """Points well inside ``(0, 1)``."""
    return 0.05 + 0.9 * torch.rand((n, *shape), dtype=torch.float64)
