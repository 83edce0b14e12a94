"""A stand-in preset for trainer and checkpoint tests: fast, and rebuilt by name like a preset."""

from __future__ import annotations

import pytest

import exactflow as ef


def tiny(features: int, context: int = 0, transforms: int = 2, hidden: tuple = (8,)) -> ef.Flow:
    """Stacked elementwise affines, registered in ef.flows as ``Tiny`` by :func:`register`."""
    steps = [ef.transforms.Affine(features) for _ in range(transforms)]
    return ef.Flow(ef.transforms.Compose(steps), ef.distributions.StandardNormal(features))


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``Tiny`` a preset name for the duration of one test."""
    monkeypatch.setattr(ef.flows, "Tiny", tiny, raising=False)
    monkeypatch.setattr(ef.flows, "__all__", [*ef.flows.__all__, "Tiny"])
