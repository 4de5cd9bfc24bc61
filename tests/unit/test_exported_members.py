"""Every public name of the API reference is importable, and each package's __all__ is honest."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

CONTRACT = {
    "provenir.core.config": ["RunConfig", "PEFTConfig", "DistributedConfig"],
    "provenir.core.abstractions": ["RunManifest", "TrainingBackend"],
    "provenir.data.dataset": ["JsonlDataset"],
    "provenir.data.templates": ["TemplateRegistry", "TEMPLATE_REGISTRY", "PromptTemplate"],
}


@pytest.mark.parametrize(("module", "names"), sorted(CONTRACT.items()))
def test_contract_names_importable(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing


@pytest.mark.parametrize("package", ["provenir", "provenir.core"])
def test_dunder_all_resolves(package):
    mod = importlib.import_module(package)
    assert all(hasattr(mod, name) for name in mod.__all__)


def test_seed_api_checker_core_items_pass():
    """The shared contract checker agrees for the foundation's modules."""
    checker = Path(__file__).resolve().parents[3] / "shared" / "tools" / "check_seed_api.py"
    if not checker.exists():
        pytest.skip("shared/tools/check_seed_api.py is not beside this checkout")
    proc = subprocess.run([sys.executable, str(checker)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    core_lines = [
        line for line in proc.stdout.splitlines()
        if line.startswith(("provenir.core", "provenir.data.dataset", "provenir.data.templates", "templates"))
    ]
    assert core_lines == [], core_lines
    summary = re.search(r"seed API: (\d+)/(\d+) items conform", proc.stdout)
    assert summary, proc.stdout[-2000:] + proc.stderr[-2000:]  # the checker ran to its summary
    assert summary.group(1) == summary.group(2) and proc.returncode == 0, proc.stdout[-2000:]
