"""The ELBO, the IWAE estimate of ``log p(x)`` and a flow's exact ``log p(x)``, model by model."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from .figure import save

__all__ = ["bounds_chart"]

# (key, legend, marker, colour), top to bottom within a model's row
SERIES = (
    ("elbo", "ELBO (a lower bound)", ">", "tab:blue"),
    ("iwae", "IWAE-k estimate of log p(x), ± 2 s.e.", "o", "tab:orange"),
    ("exact", "exact log p(x) (a flow)", "D", "tab:green"),
)
STEP = 0.24  # vertical distance between a row's points


def _number(row: Mapping[str, object], key: str, i: int) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"bounds_chart: rows[{i}][{key!r}] must be a number or None, got {value!r}"
        )
    if not math.isfinite(value):
        raise ValueError(f"bounds_chart: rows[{i}][{key!r}] must be finite, got {value!r}")
    return float(value)


def bounds_chart(
    rows: Sequence[Mapping[str, object]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """One row per model: its ELBO, its IWAE estimate of ``log p(x)`` and an exact ``log p(x)``.

    All three are in nats per data point, higher is better. ``ELBO ≤ log p(x)`` is a bound; the
    IWAE-k estimate ``log (1/k) Σ w_j`` is an importance-sampling estimate of ``log p(x)`` (a
    bound in expectation), drawn with an error bar of ± 2 standard errors; a flow's ``log p(x)``
    is exact. A missing value (``None`` or an absent key) is not drawn. Each point carries its
    value.

    Args:
        rows: One dict per model: ``{"model": str, "elbo": float | None, "iwae": float | None,
            "iwae_stderr": float | None, "exact": float | None}``; other keys are ignored.
        path: PNG file to write.
        title: Figure title (default: what the numbers are).

    Returns:
        The path written.

    Example:
        >>> import os, tempfile
        >>> rows = [
        ...     {"model": "VAE, Gaussian q", "elbo": -31.2, "iwae": -29.8, "iwae_stderr": 0.05},
        ...     {"model": "MAF", "exact": -27.4},
        ... ]
        >>> bounds_chart(rows, os.path.join(tempfile.mkdtemp(), "bounds.png")).name
        'bounds.png'

    """
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence) or not rows:
        raise ValueError(f"bounds_chart: rows must be a non-empty list of dicts, got {rows!r}")
    models, table = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("model"), str):
            raise ValueError(
                f"bounds_chart: rows[{i}] must be a dict with a str 'model', got {row!r}"
            )
        models.append(row["model"])
        values = {key: _number(row, key, i) for key in ("elbo", "iwae", "iwae_stderr", "exact")}
        if values["iwae_stderr"] is not None and values["iwae_stderr"] < 0:
            raise ValueError(
                f"bounds_chart: rows[{i}]['iwae_stderr'] must be >= 0, got {values['iwae_stderr']}"
            )
        table.append(values)
    drawn = [
        values[key]
        for values in table
        for key in ("elbo", "iwae", "exact")
        if values[key] is not None
    ]
    if not drawn:
        raise ValueError("bounds_chart: no row has an elbo, iwae or exact value to draw")

    spread = [2 * (values["iwae_stderr"] or 0.0) for values in table if values["iwae"] is not None]
    lo, hi = min(drawn) - max(spread, default=0.0), max(drawn) + max(spread, default=0.0)
    span = (hi - lo) or max(1.0, abs(lo) * 0.01)
    # the points a row has sit one STEP apart, centred on the row's line (the first row on top)
    heights = {}
    for i, values in enumerate(table):
        present = [key for key, *_ in SERIES if values[key] is not None]
        for j, key in enumerate(present):
            heights[i, key] = len(table) - 1 - i + STEP * ((len(present) - 1) / 2 - j)

    fig = Figure(figsize=(7.5, 1.3 + 0.7 * len(table)), layout="constrained")
    ax = fig.subplots()
    for key, legend, marker, colour in SERIES:
        rows_drawn = [i for i, values in enumerate(table) if values[key] is not None]
        if not rows_drawn:
            continue
        xs = [table[i][key] for i in rows_drawn]
        ys = [heights[i, key] for i in rows_drawn]
        errors = [
            2 * (table[i]["iwae_stderr"] or 0.0) if key == "iwae" else 0.0 for i in rows_drawn
        ]
        ax.errorbar(xs, ys, xerr=errors if key == "iwae" else None, fmt=marker, color=colour,
                    markersize=7, capsize=3, label=legend)  # fmt: skip
        for x, y, error in zip(xs, ys, errors, strict=True):
            ax.annotate(f"{x:.2f}", (x + error, y), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=8, color=colour)  # fmt: skip
    ax.set_yticks(range(len(table)), models[::-1])
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.set_xlim(lo - 0.08 * span, hi + 0.2 * span)  # room for the value labels
    for boundary in range(len(table) - 1):
        ax.axhline(boundary + 0.5, color="0.85", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("log p(x) per data point (nats; higher is better)")
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    ax.set_title(title or "ELBO ≤ IWAE-k estimate of log p(x), and exact log p(x)")
    return save(fig, path)
