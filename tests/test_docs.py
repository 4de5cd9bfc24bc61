"""Documented examples are tests: every ```python block of README.md and docs/*.md runs.

The blocks of one file run in order, in one namespace, in a fresh temporary working directory that
holds a copy of ``examples/`` (so a snippet can say ``examples/quickstart.yaml``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.mark.parametrize("doc", [d for d in DOCS if python_blocks(d)], ids=lambda p: p.name)
def test_doc_python_blocks_run(doc, tmp_path, monkeypatch):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    # the docs may read the repository's published test data by its repository path
    shutil.copytree(REPO / "tests" / "data" / "governance" / "formats", tmp_path / "tests/data/governance/formats")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROVENIR_STORE", str(tmp_path / "artifacts"))
    namespace: dict = {"__name__": f"doc_{doc.stem}"}
    for line, source in python_blocks(doc):
        code = compile(source, f"{doc.relative_to(REPO)}:{line}", "exec")
        exec(code, namespace)  # noqa: S102 - running our own documentation


def test_readme_has_python_examples():
    assert len(python_blocks(REPO / "README.md")) >= 2
    assert os.path.exists(REPO / "examples" / "quickstart.yaml")
