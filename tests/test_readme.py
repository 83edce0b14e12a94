"""The README's Python snippets run as written (the trainer's with one epoch)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3, "the README lost its Python examples"
    monkeypatch.chdir(tmp_path)  # the trainer's snippet writes runs/ where it runs
    code = "\n".join(blocks).replace("epochs=50", "epochs=1")
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "runs" / "gmm" / "best.safetensors").is_file()
