"""``exactflow compare``: runs on the same data, their bounds and exact likelihoods side by side.

Each run's ``eval.json`` gives, in nats per test point (higher is better):

* a flow fitted to data: its **exact** ``log p(x)``, the test NLL negated;
* a VAE: its ELBO, a lower bound, and the IWAE estimate of ``log p(x)`` (importance sampling, a
  lower bound in expectation) with the importance sampling's standard error: the runs are
  evaluated on the same test points, so that error, not the spread across the points, is what
  separates two runs;
* a variational-inference run: its ELBO, the estimate of ``log Z`` and the true ``log Z`` when
  the target knows it.

Runs on different data (another data set, other options, another ``--seed`` and so another
split or binarization, or another target) are refused: their numbers do not compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import plot
from .errors import CommandError
from .runs import EVAL_FILE, kind, owned_by_a_run, read_record

__all__ = ["add_parser", "row_of", "run"]

MAX_EVAL_BYTES = 1 << 20


def add_parser(sub: Any) -> None:
    """The ``compare`` subcommand and its options."""
    p = sub.add_parser("compare", help="chart the ELBO, IWAE estimate and exact log p of runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (evaluated: eval.json)")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")


def _number(report: dict, key: str, path: Path) -> float | None:
    value = report.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError(f"{path}: {key} must be a number or null, got {value!r}")
    return float(value)


def _read_eval(folder: Path) -> dict:
    path = folder / EVAL_FILE
    if not path.is_file():
        raise CommandError(f"{path}: missing; evaluate the run first ('exactflow eval {folder}')")
    if path.stat().st_size > MAX_EVAL_BYTES:
        raise CommandError(f"{path}: more than {MAX_EVAL_BYTES} bytes; not an eval report")
    try:
        report = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise CommandError(f"{path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(report, dict):
        raise CommandError(f"{path}: expected an object, got {type(report).__name__}")
    return report


def _source(record: dict) -> tuple[str, str]:
    """What a run was evaluated on: a name to print and a key to compare."""
    if kind(record) == "vi":
        target = record["target"]
        return f"target {target['name']}", json.dumps(target, sort_keys=True)
    data = record["data"]
    key = {"name": data["name"], "options": data["options"], "seed": data["seed"]}
    return data["name"], json.dumps(key, sort_keys=True)


def row_of(folder: Path, record: dict, report: dict) -> dict[str, Any]:
    """The chart's row of one run: model, elbo, iwae, iwae_stderr, exact (nats, or None)."""
    path = folder / EVAL_FILE
    model = kind(record)
    row: dict[str, Any] = {
        "model": folder.name,
        "elbo": None,
        "iwae": None,
        "iwae_stderr": None,
        "exact": None,
    }
    if model == "vae":
        spec = record["model"]
        posterior = spec["kwargs"].get("posterior", "gaussian")
        row["model"] = f"{folder.name} (VAE, {posterior} q)"
        row.update(
            elbo=_number(report, "elbo", path),
            iwae=_number(report, "iwae", path),
            iwae_stderr=_number(report, "iwae_mc_stderr", path),
        )
    elif model == "vi":
        row["model"] = f"{folder.name} ({record['flow']['name']} q)"
        row.update(
            elbo=_number(report, "elbo", path),
            iwae=_number(report, "log_z", path),
            iwae_stderr=_number(report, "log_z_stderr", path),
            exact=_number(report, "true_log_z", path),
        )
    else:
        nll = _number(report, "nll", path)
        if report.get("split", "test") != "test":
            raise CommandError(f"{path}: holds the {report.get('split')} split, not the test split")
        row["model"] = f"{folder.name} ({record['flow']['name']}, exact)"
        row["exact"] = None if nll is None else -nll
    return row


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> None:
    """Print the table and draw the chart of the runs' numbers."""
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise CommandError(f"{out}: the chart is a PNG; give a file ending in .png")
    if owned_by_a_run(out):
        raise CommandError(f"{out}: a file of a run folder; write the chart elsewhere")
    rows, first = [], None
    for name in args.runs:
        folder = Path(name)
        record = read_record(folder)
        source, key = _source(record)
        if first is None:
            first = (folder, source, key)
        elif key != first[2]:
            raise CommandError(
                f"{folder} is on {source} but {first[0]} is on {first[1]} (or with other options"
                " or --seed): compare runs on the same data"
            )
        rows.append(row_of(folder, record, _read_eval(folder)))
    what = "log Z" if first[1].startswith("target ") else "log p(x) per test point"
    print(
        f"{first[1]}: {what} in nats, higher is better (ELBO: a lower bound; IS est.: importance"
        " sampling's estimate and its standard error; exact: a flow's likelihood or the known"
        " log Z)"
    )
    print(f"{'run':<40} {'ELBO':>10} {'IS est.':>10} {'± s.e.':>8} {'exact':>10}")
    for row in rows:
        print(
            f"{row['model']:<40} {_cell(row['elbo']):>10} {_cell(row['iwae']):>10}"
            f" {_cell(row['iwae_stderr']):>8} {_cell(row['exact']):>10}"
        )
    plot.bounds_chart(rows, out, title=f"{first[1]}: {what}, nats")
    print(f"wrote {out}")
