"""Shared CLI plumbing: consoles, the store option, JSON output.

With ``--json`` stdout carries the JSON document and nothing else. Libraries write to stdout
behind our back (DeepSpeed's logger keeps its own reference to the original ``sys.stdout``, C
extensions write to file descriptor 1), so while such a command runs under :func:`provenir.cli.main`
both ``sys.stdout`` and fd 1 point at stderr, :func:`print_json` holds its document back, and
:func:`json_stdout` writes it to the real stdout once the command has finished.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import typer
from rich.console import Console

DEFAULT_STORE = "artifacts"

StoreOption = typer.Option(
    None,
    "--store",
    envvar="PROVENIR_STORE",
    help="Artifact store root: a folder or an fsspec URI (default: artifacts, or $PROVENIR_STORE).",
)


class _JsonStdout:
    """stdout kept for the JSON document while the command's other output goes to stderr."""

    def __init__(self) -> None:
        self.engaged = False
        self.documents: list[str] = []
        self._stdout: IO[str] | None = None
        self._saved_fd: int | None = None

    def engage(self) -> None:
        if self.engaged:
            return
        self.engaged = True
        self._stdout = sys.stdout
        for stream in (sys.stdout, sys.__stdout__):
            _flush(stream)
        try:
            self._saved_fd = os.dup(1)
            os.dup2(2, 1)
        except OSError:  # no fd 1 or 2 (a GUI host, say): the Python-level redirect still holds
            self._saved_fd = None
        sys.stdout = sys.stderr

    def release(self) -> None:
        if not self.engaged:
            return
        for stream in (sys.stdout, self._stdout, sys.__stdout__, sys.stderr):
            _flush(stream)  # what libraries wrote while redirected goes to stderr, not after the JSON
        if self._saved_fd is not None:
            os.dup2(self._saved_fd, 1)
            os.close(self._saved_fd)
            self._saved_fd = None
        sys.stdout = self._stdout
        self.engaged = False
        for document in self.documents:
            typer.echo(document)
        _flush(sys.stdout)
        self.documents.clear()


def _flush(stream: IO[str] | None) -> None:
    try:
        if stream is not None:
            stream.flush()
    except (OSError, ValueError):  # closed or broken: nothing left to flush
        pass


_json_stdout: _JsonStdout | None = None


@contextmanager
def json_stdout() -> Iterator[None]:
    """Arms ``--json`` for one command (see the module docstring); used by ``provenir.cli.main``.

    Outside it (typer's test runner calling the app directly, say) ``--json`` prints at once.
    """
    global _json_stdout
    guard = _json_stdout = _JsonStdout()
    try:
        yield
    finally:
        _json_stdout = None
        guard.release()


def _json_flag(value: bool) -> bool:
    if value and _json_stdout is not None:
        _json_stdout.engage()  # before the command runs: everything it prints goes to stderr
    return value


JsonOption = typer.Option(
    False, "--json", callback=_json_flag, help="Print machine-readable JSON instead of tables."
)


def console() -> Console:
    return Console(highlight=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def store_root(value: str | None) -> str:
    return value or os.environ.get("PROVENIR_STORE") or DEFAULT_STORE


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (under ``--json``: once the command has finished)."""
    document = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if _json_stdout is not None and _json_stdout.engaged:
        _json_stdout.documents.append(document)
    else:
        typer.echo(document)


def stopped_exit(stop: Any, resume_command: str | None = None) -> typer.Exit:
    """Print a stopped run's one line (:class:`provenir.train.TrainingStopped`) to stderr;
    return the exit to raise: 130 after Ctrl-C, 143 after SIGTERM."""
    from rich.markup import escape

    err_console().print(f"[yellow]{escape(stop.describe(resume_command))}[/]", soft_wrap=True)
    return typer.Exit(stop.exit_code)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set key.path=value`` flags (values parsed as YAML) as a dict of dotted keys."""
    from provenir.core.errors import ConfigError
    from provenir.core.yaml_safe import load_yaml

    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set peft.rank=16")
        key, value = item.split("=", 1)
        overrides[key.strip()] = load_yaml(value, source=f"--set {key.strip()}")
    return overrides
