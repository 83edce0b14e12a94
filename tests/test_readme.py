"""The README's Python snippets run as written (the trainers' with short budgets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3, "the README lost its Python examples"
    monkeypatch.chdir(tmp_path)  # the trainer's snippet writes runs/ where it runs
    code = "\n".join(blocks)
    budgets = {"epochs=50": "epochs=1", "epochs=100": "epochs=1", "steps=3000": "steps=20"}
    budgets.update({"k=1000": "k=10", "n=100_000": "n=1000", "steps=1000": "steps=5"})
    budgets.update({"k=256": "k=4"})
    for long, short in budgets.items():
        assert long in code, f"the README's {long} changed: update this test"
        code = code.replace(long, short)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "runs" / "gmm" / "best.safetensors").is_file()
