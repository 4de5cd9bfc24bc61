"""Shared CLI plumbing: consoles, the store option, JSON output."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.console import Console

DEFAULT_STORE = "artifacts"

StoreOption = typer.Option(
    None,
    "--store",
    envvar="PROVENIR_STORE",
    help="Artifact store root: a folder or an fsspec URI (default: artifacts, or $PROVENIR_STORE).",
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def console() -> Console:
    return Console(highlight=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def store_root(value: str | None) -> str:
    return value or os.environ.get("PROVENIR_STORE") or DEFAULT_STORE


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set key.path=value`` flags (values parsed as YAML) as a dict of dotted keys."""
    import yaml

    from provenir.core.errors import ConfigError

    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set peft.rank=16")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides
