"""The test report of a run: printed on one line, kept in ``RUN/eval.json``.

The figures of a density run come from :func:`exactflow.metrics.evaluate` (a failed exactness
certificate is printed in capitals and makes the command fail), those of a variational-inference
run from :func:`exactflow.metrics.log_normalizer` (:func:`vi_report`); a VAE's from
:func:`exactflow.cli.vae.evaluate`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import metrics
from .runs import EVAL_FILE, write_json

__all__ = [
    "certificate_failure",
    "density_report",
    "format_report",
    "format_vi_report",
    "vi_report",
    "write_report",
]

if TYPE_CHECKING:
    from ..data import Dataset
    from ..flow import Flow
    from ..targets import Target

VI_SAMPLES = 100_000  # draws of q for the log Z estimate


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


def density_report(flow: Flow, ds: Dataset, split: str = "test") -> dict[str, Any]:
    """:func:`exactflow.metrics.evaluate` of a split; a class-conditional flow gets its labels.

    The contexts of a conditional flow (``flow.context > 0``) are the one-hot labels of the
    split (:meth:`exactflow.data.Dataset.contexts`); bits/dim come with quantized data.
    """
    context = ds.contexts(split) if flow.context else None
    if flow.context and context is None:
        raise ValueError(
            f"the flow is conditional on {flow.context_shape[0]} classes, but {ds.name} has no"
            " labels"
        )
    return metrics.evaluate(flow, ds, split, context=context)


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
    if isinstance(report.get("nfe"), int):
        parts.append(f"{report['nfe']} evaluations of the ODE's dynamics per batch")
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


def vi_report(flow: Flow, target: Target, n: int = VI_SAMPLES) -> dict[str, Any]:
    """``log Z`` by importance sampling from ``flow``, the ELBO and ``KL(q‖p)``, as JSON values.

    ``log_z``/``log_z_stderr``/``ess``/``elbo``/``elbo_stderr``/``kl`` are estimates from ``n``
    draws of ``q`` (:func:`exactflow.metrics.log_normalizer`); where the target knows its
    ``log Z``, ``true_log_z`` and ``true_kl = log Z - ELBO`` come with them.
    """
    result = metrics.log_normalizer(flow, target, n)
    report: dict[str, Any] = {
        "target": target.name,
        "samples": result.n,
        "log_z": result.log_z,
        "log_z_stderr": result.stderr,
        "ess": result.ess,
        "elbo": result.elbo,
        "elbo_stderr": result.elbo_stderr,
        "kl": result.kl,
        "estimate": f"log Z by importance sampling from q, {result.n} draws; KL = log Z - ELBO",
    }
    if target.log_normalizer is not None:
        report["true_log_z"] = float(target.log_normalizer)
        report["true_kl"] = result.kl_to(float(target.log_normalizer))
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in report.items()
    }


def format_vi_report(report: dict[str, Any]) -> str:
    """One line: log Z ± stderr (ESS), ELBO ± stderr, the KL estimate, and the true values."""
    parts = [
        f"target {report.get('target')}: log Z ≈ {_number(report.get('log_z'))}"
        f" ± {_number(report.get('log_z_stderr'))} (importance sampling,"
        f" ESS {_number(report.get('ess'), 0)} of {report.get('samples')})",
        f"ELBO {_number(report.get('elbo'))} ± {_number(report.get('elbo_stderr'))}",
        f"KL(q||p) ≈ {_number(report.get('kl'))} nats",
    ]
    if "true_log_z" in report:
        parts.append(
            f"true log Z {_number(report['true_log_z'])},"
            f" true KL {_number(report.get('true_kl'))} nats"
        )
    return ", ".join(parts)
