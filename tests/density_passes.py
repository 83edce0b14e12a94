"""Counting a flow's density passes: what the distribution view's kept densities save."""

from __future__ import annotations

import exactflow as ef


class CountDensityPasses:
    """Counts calls of a flow's data -> base direction (``D`` sequential passes for an IAF)."""

    def __init__(self, flow: ef.Flow) -> None:
        self.calls = 0
        flow.transform.register_forward_hook(self._count)

    def _count(self, *_: object) -> None:
        self.calls += 1
