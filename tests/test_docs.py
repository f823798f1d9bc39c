"""The user guide's code runs as written.

Every ```python block of a guide page is extracted and the page's blocks run in order, in one namespace (a page
is one session: later blocks use the names of earlier ones), against the current code. A block that must not run
here is preceded by the line ``<!-- docs-test: skip -->`` (none is, today). Shell blocks (```bash) are not run.

The snippets are derandomised (explicit seeds; Hypothesis with derandomize=True) and small; pages that compile
several models or train are marked slow. ``test_mkdocs_build_strict`` builds the site when MkDocs is installed.
"""
import os
import re
import subprocess
import sys
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SKIP_MARK = "<!-- docs-test: skip -->"

# page -> (modules it needs beyond symode's dependencies, slow)
PAGES = {
    "getting-started.md": ((), False),
    "models.md": ((), False),
    "solving.md": ((), False),
    "gradients-guide.md": (("scipy",), True),      # compiles four loss kernels and three auxiliary systems
    "training.md": ((), True),
    "networks.md": ((), True),
    "stiff.md": ((), True),
    "ensembles.md": (("distributed",), True),
    "testing.md": (("hypothesis",), True),
    "performance.md": ((), False),
    "bridges.md": (("torch", "jax"), True),
}
# pages without runnable snippets (prose, tables, the generated API reference)
NO_SNIPPETS = {"index.md", "gradients.md", "architecture.md", "api.md"}

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def python_blocks(path):
    """[(line number, source)] of the page's ```python blocks, leaving out those marked to skip."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    blocks = []
    for m in _FENCE.finditer(text):
        if m.group(1) != "python":
            continue
        before = text[: m.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        blocks.append((text.count("\n", 0, m.start()) + 2, m.group(2)))
    return blocks


def _cases():
    for page, (needs, slow) in sorted(PAGES.items()):
        yield pytest.param(page, needs, marks=[pytest.mark.slow] if slow else [], id=page)


@pytest.mark.parametrize("page, needs", list(_cases()))
def test_guide_page_snippets_run(page, needs, tmp_path, monkeypatch):
    for mod in needs:
        pytest.importorskip(mod)
    blocks = python_blocks(os.path.join(DOCS, page))
    assert blocks, f"{page} has no ```python block"
    monkeypatch.chdir(tmp_path)                    # a snippet that writes a file writes it here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"docs_{page[:-3].replace('-', '_')}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for line, src in blocks:
            code = compile(src, f"docs/{page}:{line}", "exec")
            try:
                exec(code, namespace)
            except Exception as e:  # pragma: no cover - the message names the block
                raise AssertionError(f"the block at docs/{page}, line {line}, failed: {type(e).__name__}: {e}") from e


def test_every_page_is_tested_and_in_the_nav():
    pages = {f for f in os.listdir(DOCS) if f.endswith(".md")}
    assert pages == set(PAGES) | NO_SNIPPETS, "a page is missing from PAGES or NO_SNIPPETS in tests/test_docs.py"
    for page in NO_SNIPPETS:
        assert not python_blocks(os.path.join(DOCS, page)), f"{page} has ```python blocks: add it to PAGES"
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as fh:
        nav = fh.read()
    for page in pages:
        assert re.search(rf":\s*{re.escape(page)}\s*$", nav, re.M), f"{page} is not in the nav of mkdocs.yml"


def test_no_private_module_in_guide_snippets():
    """The guide teaches the public API only."""
    for page in PAGES:
        for line, src in python_blocks(os.path.join(DOCS, page)):
            assert not re.search(r"symode\._|from symode import _", src), f"docs/{page}:{line} uses a private module"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
