"""Bad data through the command line: ``exactflow fit`` answers with one line and exit 2.

Each case runs ``exactflow`` in a subprocess, as a user would; the loaders' own checks are
tested in ``test_data_reliability.py``.
"""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

T = ["--epochs", "1", "--hidden", "8", "--transforms", "2", "--no-progress", "--no-plots"]
SIZES = ["--n-train", "100", "--n-val", "10", "--n-test", "10"]


def _table(folder, case):
    rows = b"a,b\n" + b"".join(b"%d,%d\n" % (i, (i * 7) % 11) for i in range(200))
    if case == "five_rows":
        path = folder / "five.csv"
        path.write_bytes(rows[: rows.index(b"5,2\n")])
    elif case == "truncated_gzip":
        path = folder / "t.csv.gz"
        path.write_bytes(gzip.compress(rows)[:100])
    elif case == "not_utf8":
        path = folder / "t.csv"
        path.write_bytes(rows + "caf\xe9,1\n".encode("latin-1"))
    elif case == "gzip_named_csv":
        path = folder / "t.csv"
        path.write_bytes(gzip.compress(rows))
    elif case == "plain_named_gz":
        path = folder / "t.csv.gz"
        path.write_bytes(rows)
    elif case == "npz_named_npy":
        np.savez(folder / "z.npz", a=np.ones((30, 2)))
        path = folder / "z.npy"
        path.write_bytes((folder / "z.npz").read_bytes())
    else:  # "float32_overflow"
        path = folder / "t.csv"
        path.write_bytes(rows + b"1e300,1\n")
    return path


CASES = {
    "five_rows": "5 rows are too few for split",
    "truncated_gzip": "the gzip data is truncated",
    "not_utf8": r"line 202 (byte 0xe9 at column 4) is not UTF-8 text",
    "gzip_named_csv": "gzip-compressed data but its name does not end in .gz",
    "plain_named_gz": "the name ends in .gz but the file is not gzip-compressed",
    "npz_named_npy": "a zip archive (an .npz file?)",
    "float32_overflow": "line 202, column 1 ('a')",
}


def _fit(tmp_path, *args):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "exactflow", "fit", *args, "--out", str(out), *T],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    return done, out


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_table_is_one_line_naming_the_file(tmp_path, case):
    path = _table(tmp_path, case)
    done, out = _fit(tmp_path, "--data", str(path))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(path) in lines[0] and CASES[case] in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--n-train", "1", "n_train must be at least 2, got 1"),
        ("--n-val", "0", "n_val must be at least 1, got 0"),
        ("--n-test", "0", "the test split would be empty"),
    ],
)
def test_too_few_synthetic_rows_are_refused_at_load(tmp_path, option, value, message):
    sizes = list(SIZES)
    sizes[sizes.index(option) + 1] = value
    done, out = _fit(tmp_path, "--data", "moons", *sizes)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not out.exists()


def test_dtype_float64_keeps_what_float32_cannot_resolve(tmp_path):
    path = tmp_path / "fine.csv"
    path.write_text("a,b\n" + "".join(f"{1 + i * 1e-10!r},{i % 7 + 0.5}\n" for i in range(200)))
    done, out = _fit(tmp_path, "--data", str(path))
    assert done.returncode == 2 and "float32 cannot resolve" in done.stderr, done.stderr
    assert "--dtype float64" in done.stderr and str(path) in done.stderr
    done, out = _fit(tmp_path, "--data", str(path), "--dtype", "float64")
    assert done.returncode == 0, done.stderr
    evaluated = subprocess.run(
        [sys.executable, "-m", "exactflow", "eval", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0 and "test NLL" in evaluated.stdout, evaluated.stderr
