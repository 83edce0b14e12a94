"""The registry of every public transform and preset, run through the conformance suite.

Each family file under ``cases/`` lists its :class:`~casekit.Case` entries in ``CASES``. Adding a
public transform means adding at least one case there; ``test_registry_covers_public_api`` fails
otherwise. A case declares what its transform can do with capability flags (``out_shape`` for a
shape-changing step, ``inverse=False``, ``estimated=True``: see :class:`~casekit.Case`), and the
suite adapts its checks to them.
"""

from __future__ import annotations

import importlib

from casekit import Case, build, draw_context, draw_x, draw_y

__all__ = ["CASES", "Case", "build", "draw_context", "draw_x", "draw_y"]

FAMILIES = (
    "base",
    "elementwise",
    "linear",
    "normalization",
    "variational",
    "splines",
    "circular",
    "monotonic",
    "bnaf",
    "coupling",
    "autoregressive",
    "recompute",
    "presets",
    "image",
    "residual",
    "continuous",
    "bounds",
)


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for family in FAMILIES:
        cases += importlib.import_module(f"cases.{family}").CASES
    ids = [c.id for c in cases]
    duplicated = {i for i in ids if ids.count(i) > 1}
    if duplicated:
        raise ValueError(f"duplicate case ids in the registry: {sorted(duplicated)}")
    return cases


CASES = all_cases()
