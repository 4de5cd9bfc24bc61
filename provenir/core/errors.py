"""The exception tree. Every message says what was wrong, where, and how to fix it.

The CLI turns a :class:`ProvenirError` into one red line and exit code 2; any other
exception escaping to the user is a bug in Provenir.
"""

from __future__ import annotations


class ProvenirError(Exception):
    """Base class of every error Provenir raises on purpose (bad input, missing extras, …)."""

    exit_code: int = 2


class ConfigError(ProvenirError):
    """A configuration file or value is invalid."""


class DataError(ProvenirError):
    """A dataset or record is malformed (the message names the file and line)."""


class ManifestError(ProvenirError):
    """A run manifest is missing, malformed, or fails verification."""


class StoreError(ProvenirError):
    """The artifact store cannot find or write what was asked (bad run id, missing run)."""


class NotFoundError(StoreError):
    """A run, manifest or stored file that was asked for does not exist."""


class DependencyError(ProvenirError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, *, feature: str, extra: str) -> object:
    """Import ``module`` or raise a :class:`DependencyError` naming the extra that provides it.

    Example:
        >>> require("json", feature="JSON output", extra="dev")  # doctest: +ELLIPSIS
        <module 'json' ...>
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - message path tested via a fake module
        raise DependencyError(
            f"{feature} needs {module.split('.')[0]}: pip install 'provenir[{extra}]'"
        ) from exc
