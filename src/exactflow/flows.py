"""Presets: ready-made flows assembled from the transforms.

Every preset takes the same keywords: ``features`` (data width), ``context`` (context width,
0 for none), ``transforms`` (number of steps) and ``hidden`` (conditioner hidden widths),
plus its own (``bins`` for splines, ...). Each returns an :class:`exactflow.Flow`.
"""

from __future__ import annotations

__all__: list[str] = []
