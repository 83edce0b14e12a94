"""MkDocs hooks of exactflow's documentation build.

The tutorials run while the site builds (markdown-exec), inside the ``mkdocs`` process. Their
flows are small, and at that size one thread is fastest and, above all, predictable: several
threads on a busy machine wait for each other and can make a tutorial many times slower. The
build therefore runs torch single-threaded. The folder of this file goes on ``sys.path`` so the
pages can import :mod:`docs_pages`, the helper that puts a tutorial's pictures on its page. At
the end the build logs how long each of the slowest pages took to render, its code included
(wall-clock time, and the process's CPU time, which a busy machine inflates less).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
_log = logging.getLogger("mkdocs.hooks.exactflow")
_started: dict[str, tuple[float, float]] = {}
_seconds: dict[str, tuple[float, float]] = {}


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def on_config(config: Any, **kwargs: Any) -> Any:
    """Run torch on one thread and make :mod:`docs_pages` importable."""
    import torch

    torch.set_num_threads(1)
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)
    return config


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Forget the timings of an earlier build (``mkdocs serve`` rebuilds in one process)."""
    _started.clear()
    _seconds.clear()


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Note when a page starts rendering (its executed blocks run during rendering)."""
    _started[page.file.src_uri] = _clocks()
    return markdown


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    """Note how long the page took to render."""
    uri = page.file.src_uri
    now = _clocks()
    start = _started.pop(uri, now)
    _seconds[uri] = (now[0] - start[0], now[1] - start[1])
    return html


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Log the slowest pages and the total rendering time."""
    if not _seconds:
        return
    slowest = sorted(_seconds.items(), key=lambda item: -item[1][0])[:12]
    pages = ", ".join(f"{uri} {wall:.1f} s ({cpu:.1f} s CPU)" for uri, (wall, cpu) in slowest)
    wall, cpu = (sum(column) for column in zip(*_seconds.values(), strict=True))
    _log.info("page rendering: %.1f s (%.1f s CPU) in all; slowest: %s", wall, cpu, pages)
