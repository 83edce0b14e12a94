"""Conformance cases: planar, radial and Sylvester transforms and presets, with context too."""

import torch

import exactflow as ef
from exactflow import transforms as T

from casekit import Case


def _planar_near_singular(features: int) -> T.Planar:
    """A planar step whose raw ``u`` points against ``w``: ``wᵀû`` close to -1."""
    t = T.Planar(features)
    with torch.no_grad():
        t.u.copy_(-10 * t.w)
    return t


def _planar_expanding(activation: str) -> T.Planar:
    """A planar step with ``u`` along ``w``: ``wᵀû > 0``, the map expands along ``w``.

    (Contracting leaky-ReLU steps push data mass far out, beyond the box test_flow integrates.)
    """
    t = T.Planar(2, activation=activation)
    with torch.no_grad():
        t.u.copy_(t.w)
    return t


def _far(n: int, shape: tuple[int, ...] = (2,)) -> torch.Tensor:
    """Points far from the origin, where the numerical inverses must still be exact."""
    return 30 * torch.randn((n, *shape), dtype=torch.float64)


CASES = [
    Case("planar", lambda: T.Planar(2)),
    Case("planar-5d", lambda: T.Planar(5), event_shape=(5,), perturb=0.5),
    Case(
        "planar-far",
        lambda: T.Planar(3),
        event_shape=(3,),
        sample_x=lambda n: _far(n, (3,)),
        sample_y=lambda n: _far(n, (3,)),
    ),
    Case("planar-near-singular", lambda: _planar_near_singular(3), event_shape=(3,), perturb=0.05),
    Case("planar-leaky-relu", lambda: _planar_expanding("leaky_relu")),
    Case("planar-expanding", lambda: _planar_expanding("tanh")),
    Case(
        "planar-leaky-relu-5d",
        lambda: T.Planar(5, activation="leaky_relu", negative_slope=0.3),
        event_shape=(5,),
    ),
    Case("radial", lambda: T.Radial(2), perturb=0.5),
    # Several steps with stacked parameters (what the presets use).
    Case("planar-steps", lambda: T.Planar(3, steps=4), event_shape=(3,), perturb=0.5),
    Case(
        "planar-leaky-relu-steps",
        lambda: T.Planar(2, activation="leaky_relu", negative_slope=0.3, steps=3),
    ),
    Case("radial-steps", lambda: T.Radial(3, steps=4), event_shape=(3,), perturb=0.5),
    Case(
        "planar-steps-context",
        lambda: T.Planar(3, context=2, hidden=(8,), steps=3),
        event_shape=(3,),
        context=2,
    ),
    Case(
        "radial-steps-context",
        lambda: T.Radial(3, context=2, hidden=(8,), steps=3),
        event_shape=(3,),
        context=2,
    ),
    Case("radial-5d", lambda: T.Radial(5), event_shape=(5,), perturb=0.5),
    Case(
        "radial-far",
        lambda: T.Radial(3),
        event_shape=(3,),
        sample_x=lambda n: _far(n, (3,)),
        sample_y=lambda n: _far(n, (3,)),
    ),
    Case("sylvester-orthogonal", lambda: T.Sylvester(2), perturb=0.5),
    Case(
        "sylvester-orthogonal-5d-m3",
        lambda: T.Sylvester(5, columns=3),
        event_shape=(5,),
        perturb=0.5,
    ),
    Case(
        "sylvester-orthogonal-far",
        lambda: T.Sylvester(4, columns=2),
        event_shape=(4,),
        sample_x=lambda n: _far(n, (4,)),
        sample_y=lambda n: _far(n, (4,)),
    ),
    Case(
        "sylvester-householder-5d-m2",
        lambda: T.Sylvester(5, columns=2, kind="householder"),
        event_shape=(5,),
        perturb=0.5,
    ),
    Case(
        "sylvester-householder-4d-k2",
        lambda: T.Sylvester(4, kind="householder", reflections=2),
        event_shape=(4,),
        perturb=0.5,
    ),
    Case("sylvester-triangular", lambda: T.Sylvester(2, kind="triangular"), perturb=0.5),
    Case(
        "sylvester-triangular-flip-5d-m3",
        lambda: T.Sylvester(5, columns=3, kind="triangular", flip=True),
        event_shape=(5,),
        perturb=0.5,
    ),
    # Amortized: the parameters come from a context network (moved off its zero start).
    Case(
        "planar-context", lambda: T.Planar(3, context=2, hidden=(8,)), event_shape=(3,), context=2
    ),
    Case(
        "planar-leaky-relu-context",
        lambda: T.Planar(2, activation="leaky_relu", context=3, hidden=(8,)),
        context=3,
    ),
    Case(
        "radial-context", lambda: T.Radial(3, context=2, hidden=(8,)), event_shape=(3,), context=2
    ),
    Case(
        "sylvester-orthogonal-context",
        lambda: T.Sylvester(4, columns=3, context=2, hidden=(8,)),
        event_shape=(4,),
        context=2,
    ),
    Case(
        "sylvester-householder-context",
        lambda: T.Sylvester(3, kind="householder", reflections=2, context=2, hidden=(8,)),
        event_shape=(3,),
        context=2,
    ),
    Case(
        "sylvester-triangular-context",
        lambda: T.Sylvester(3, kind="triangular", flip=True, context=1, hidden=(8,)),
        event_shape=(3,),
        context=1,
    ),
    # Presets: their transforms run the numerical inverses in the forward (data -> base) pass.
    Case("preset-planar", lambda: ef.flows.Planar(2, transforms=3).transform, covers=("Planar",)),
    Case(
        "preset-planar-5d",
        lambda: ef.flows.Planar(5, transforms=4, activation="leaky_relu").transform,
        event_shape=(5,),
        covers=("Planar",),
    ),
    Case("preset-radial", lambda: ef.flows.Radial(2, transforms=3).transform, covers=("Radial",)),
    Case(
        "preset-radial-5d",
        lambda: ef.flows.Radial(5, transforms=3).transform,
        event_shape=(5,),
        covers=("Radial",),
    ),
    Case(
        "preset-sylvester",
        lambda: ef.flows.Sylvester(2, transforms=2).transform,
        covers=("Sylvester",),
    ),
    Case(
        "preset-sylvester-5d-m3",
        lambda: ef.flows.Sylvester(5, transforms=2, hidden=3, kind="householder").transform,
        event_shape=(5,),
        covers=("Sylvester",),
    ),
    Case(
        "preset-sylvester-triangular",
        lambda: ef.flows.Sylvester(3, transforms=3, kind="triangular").transform,
        event_shape=(3,),
        covers=("Sylvester",),
    ),
    Case(
        "preset-planar-context",
        lambda: ef.flows.Planar(3, context=2, transforms=2, hidden=(8,)).transform,
        event_shape=(3,),
        context=2,
        covers=("Planar",),
    ),
    Case(
        "preset-radial-context",
        lambda: ef.flows.Radial(3, context=2, transforms=2, hidden=(8,)).transform,
        event_shape=(3,),
        context=2,
        covers=("Radial",),
    ),
    Case(
        "preset-sylvester-context",
        lambda: (
            ef.flows.Sylvester(
                4, context=3, transforms=2, hidden=2, kind="householder", context_hidden=(8,)
            ).transform
        ),
        event_shape=(4,),
        context=3,
        covers=("Sylvester",),
    ),
]
