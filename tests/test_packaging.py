"""The wheel: `python -m build` makes one that installs into a fresh venv and runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import exactflow

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("build", reason="the wheel check needs `build` (in the test extra)")


def _run(*args: str | Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)  # the fresh venv must see only what it installed
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools, no download.
    done = _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = out.glob("exactflow-*.whl")
    return path


def test_the_wheel_carries_the_version_the_data_and_no_tests(wheel: Path) -> None:
    assert wheel.name == f"exactflow-{exactflow.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "exactflow/py.typed",
        "exactflow/data/digits.csv.gz",
        "exactflow/data/DIGITS_NOTICE.txt",
        "exactflow/integrations/pyro.py",
        "exactflow/integrations/sbi.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert f"Version: {exactflow.__version__}" in text
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", text, re.M))
    assert {"ode", "pyro", "sbi", "docs", "test"} <= extras


def test_the_changelog_describes_this_version() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject  # read from exactflow.__version__: one source
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {exactflow.__version__} " in changelog


def test_the_wheel_installs_into_a_fresh_venv_and_runs(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    pip = venv / "bin" / "pip"
    # As the README installs it: the CPU build of torch pinned first, then the package.
    for target in ("torch==2.13.0", wheel):
        done = _run(pip, "install", "--quiet", target)
        assert done.returncode == 0, done.stderr[-2000:]
    listing = _run(venv / "bin" / "exactflow", "list", timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^\s+maf\s", listing.stdout, re.M) and "nsf" in listing.stdout
    version = _run(venv / "bin" / "exactflow", "--version", timeout=120)
    assert version.stdout.strip() == f"exactflow {exactflow.__version__}"
    code = (
        "import exactflow as ef, torch;"
        "flow = ef.flows.NSF(features=2, transforms=2);"
        "x = ef.data.load('digits').train[:3];"
        "print(flow.log_prob(torch.randn(4, 2)).shape, tuple(x.shape), ef.__file__)"
    )
    done = _run(venv / "bin" / "python", "-c", code, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch.Size([4])" in done.stdout and "(3, 64)" in done.stdout
    assert str(venv) in done.stdout  # the installed copy, not this checkout
