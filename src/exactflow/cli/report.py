"""The test report of a run: printed on one line, kept in ``RUN/eval.json``.

The figures come from :func:`exactflow.metrics.evaluate`; a failed exactness certificate is
printed in capitals and makes the command fail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .runs import EVAL_FILE, write_json

__all__ = ["certificate_failure", "format_report", "write_report"]


def _number(value: Any, digits: int = 4) -> str:
    return (
        f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"
    )


def _error(value: Any) -> str:
    return f"{value:.1e}" if isinstance(value, (int, float)) else "skipped"


def _figures(certificate: dict[str, Any]) -> str:
    return (
        f"round trip {_error(certificate.get('round_trip_error'))},"
        f" ladj vs autograd {_error(certificate.get('ladj_error'))}"
        f" on {certificate.get('points')} points"
    )


def certificate_failure(report: dict[str, Any]) -> str | None:
    """What the exactness certificate found wrong, or ``None`` if it passed (or was skipped)."""
    certificate = report.get("certificate")
    if not isinstance(certificate, dict) or certificate.get("passed") is not False:
        return None
    return (
        f"{_figures(certificate)}, above the tolerances"
        f" {certificate.get('round_trip_tolerance')} and {certificate.get('ladj_tolerance')}:"
        " the NLL above is not the exact likelihood it claims to be"
    )


def format_report(name: str, report: dict[str, Any]) -> str:
    """One line: NLL ± standard error, bits/dim, KL gap, and the exactness certificate."""
    split = report.get("split", "test")
    parts = [f"{name}: {split} NLL {_number(report['nll'])} ± {_number(report['nll_stderr'])} nats"]
    if "bits_per_dim" in report:
        parts.append(f"{_number(report['bits_per_dim'])} bits/dim")
    if "kl_gap" in report:
        parts.append(
            f"true entropy {_number(report['entropy'])} ({report['entropy_method']}),"
            f" KL gap {_number(report['kl_gap'])} nats"
        )
    certificate = report.get("certificate")
    if isinstance(certificate, dict):
        parts.append(_format_certificate(certificate))
    return ", ".join(parts)


def _format_certificate(certificate: dict[str, Any]) -> str:
    passed = certificate.get("passed")
    if passed is None:
        return f"exactness not certified ({certificate.get('note') or 'skipped'})"
    if passed:
        return f"exact ({_figures(certificate)})"
    return f"EXACTNESS CERTIFICATE FAILED ({_figures(certificate)})"


def write_report(run: Path, report: dict[str, Any]) -> None:
    """Write ``run/eval.json``, keeping what ``fit`` recorded there (best validation NLL)."""
    path = run / EVAL_FILE
    try:
        kept = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):  # unreadable or not JSON: replaced
        kept = {}
    write_json(path, {**(kept if isinstance(kept, dict) else {}), **report})
