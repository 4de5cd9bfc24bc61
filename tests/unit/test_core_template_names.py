"""Config validation checks data.template against the names core holds, without the data layer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError
from provenir.core.template_names import BUILTIN_TEMPLATE_NAMES, template_names


def _write(tmp_path, template):
    path = tmp_path / "run.yaml"
    path.write_text(f"name: t\nbackend: stub\ndata:\n  train_path: x.jsonl\n  template: {template}\n")
    return path


def test_core_names_are_the_registry_names():
    from provenir.data.templates import TEMPLATE_REGISTRY

    assert template_names() == TEMPLATE_REGISTRY.list_names() == sorted(BUILTIN_TEMPLATE_NAMES)


def test_an_unknown_template_fails_at_load_naming_the_line_and_a_close_name(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.yaml:5: data\.template: unknown template 'chatm'; did you mean 'chatml'"):
        RunConfig.from_yaml(_write(tmp_path, "chatm"))


def test_a_registered_template_is_a_valid_name(tmp_path, monkeypatch):
    from provenir.data.templates import TEMPLATE_REGISTRY, ChatMLTemplate, TemplateRegistry

    monkeypatch.setattr(TEMPLATE_REGISTRY, "_templates", dict(TEMPLATE_REGISTRY._templates))  # restored after
    name = "chatml-for-core-names-test"
    TEMPLATE_REGISTRY.register(name, ChatMLTemplate())
    TemplateRegistry().register("only-in-a-private-registry", ChatMLTemplate())
    assert name in template_names() and "only-in-a-private-registry" not in template_names()
    assert RunConfig.from_yaml(_write(tmp_path, name)).data.template == name


def test_loading_a_config_imports_no_data_module(tmp_path):
    path = _write(tmp_path, "llama3")
    code = (
        "import sys; from provenir.core.config import RunConfig; "
        f"assert RunConfig.from_yaml({str(path)!r}).data.template == 'llama3'; "
        "print(sorted(m for m in sys.modules if m.startswith('provenir.data')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
