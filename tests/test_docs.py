"""The documentation site: `mkdocs build --strict` passes, and its pages hold what they should.

The build runs once per session, in a subprocess, into a temporary folder: it renders the API
pages from the docstrings and executes every tutorial. It needs the docs extra (mkdocs,
mkdocs-material, mkdocstrings-python, markdown-exec), which the test extra installs.
"""

import html
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("mkdocs", "material", "mkdocstrings_handlers.python", "markdown_exec")
MISSING = [name for name in NEEDED if importlib.util.find_spec(name.split(".")[0]) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"the docs extra is not installed (missing: {', '.join(MISSING)})"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    log = re.sub(r'src="data:image/png;base64,[^"]*"', 'src="…"', build.stderr + build.stdout)
    assert build.returncode == 0, (
        f"mkdocs build --strict failed after {seconds:.0f} s:\n{log[-6000:]}"
    )
    print(f"mkdocs build --strict: {seconds:.1f} s")
    return out


def page(site: Path, name: str) -> str:
    path = site / name / "index.html"
    assert path.is_file(), f"{name} was not built"
    return path.read_text(encoding="utf-8")


def text(markup: str) -> str:
    """The page's visible text, tags removed, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def nav_pages() -> list[str]:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return re.findall(r"^\s*- (?:[^:\n]+: )?([\w/.-]+\.md)\s*$", config, flags=re.MULTILINE)


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    pages = nav_pages()
    assert "tutorials/density.md" in pages and "api/flows.md" in pages
    for source in pages:
        name = source.removesuffix(".md")
        name = "" if name == "index" else name.removesuffix("/index")
        page(site, name)


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("flows", ["MAF", "NSF", "IAF", "Glow", "ResidualFlow", "FFJORD", "Planar"]),
        ("transforms", ["Compose", "Coupling", "MaskedAutoregressive", "ActNorm", "Squeeze"]),
        ("distributions", ["StandardNormal", "DiagNormal"]),
        ("flow", ["Flow", "placement"]),
        ("objectives", ["NLL", "ReverseKL", "ELBO", "IWAE"]),
        ("train", ["TrainConfig", "fit"]),
        ("metrics", ["nll", "kl_gap", "evaluate", "log_normalizer"]),
        ("data", ["load", "Batches", "UniformDequantization"]),
        ("models", ["VAE", "DenseVAE", "Dequantized"]),
        ("targets", ["get", "Energy"]),
        ("registry", ["register", "build", "spec_of"]),
        ("checkpoint", ["save", "load"]),
        ("nn", ["MLP", "zero_output"]),
        ("integrations.pyro", ["PyroFlowDistribution"]),
        ("integrations.sbi", ["posterior_nn", "likelihood_nn", "FlowEstimator"]),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_api_page_lists_the_public_names(site: Path, module: str, names: list[str]) -> None:
    markup = page(site, f"api/{module.replace('.', '-')}")
    for name in names:
        assert f'id="exactflow.{module}.{name}"' in markup, f"exactflow.{module}.{name}"


def test_api_examples_render_as_code(site: Path) -> None:
    # Docstrings head their doctests "Example:"; the site shows them as highlighted sessions,
    # not as Markdown quotes, and Sphinx roles become links.
    markup = page(site, "api/flows")
    assert "language-pycon" in markup or 'class="gp"' in markup
    assert "<blockquote>" not in markup
    assert ":class:`" not in markup and ":func:`" not in markup
    assert 'class="autorefs autorefs-internal"' in page(site, "api/transforms")


def test_density_tutorial_shows_what_it_measured(site: Path) -> None:
    markup = page(site, "tutorials/density")
    shown = text(markup)
    gap = re.search(r"KL gap\s+(-?\d+\.\d+) ± (\d+\.\d+) nats", shown)
    assert gap, "the KL gap the tutorial printed is not on the page"
    assert float(gap[1]) < 0.5
    assert "certificate passed: True" in shown
    assert 'src="data:image/png;base64,' in markup


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        ("getting-started", r"certificate: True"),
        ("tutorials/conditional", r"conditional KL gap -?\d+\.\d+ nats"),
        ("tutorials/vi", r"log Z estimate \d+\.\d+ ± \d+\.\d+ +\(true 2\.1571\)"),
        ("tutorials/vae", r"flow, exact log p\(x\) +-?\d+\.\d+ ± \d+\.\d+ nats"),
        ("tutorials/images", r"test bits/dim \d+\.\d+"),
        ("tutorials/freeform", r"FFJORD: KL gap -?\d+\.\d+ ± \d+\.\d+ nats"),
        ("tutorials/cli", r"\$ exactflow eval runs/moons\s+moons: test NLL \d+\.\d+"),
    ],
)
def test_tutorial_shows_its_printed_output(site: Path, name: str, printed: str) -> None:
    assert re.search(printed, text(page(site, name))), f"{name}: no {printed!r}"
