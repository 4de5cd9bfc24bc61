"""The names of the prompt templates, so that config validation can check ``data.template``.

The templates themselves live a floor up, in :mod:`provenir.data.templates`; core holds only their
names. Until that module is imported (and nothing can have registered a template before it is),
the names are the built-in ones; once imported, it hands core its registry's ``list_names``, so a
template registered later is a valid ``data.template`` too. A config naming an unknown template
thus fails where it is loaded, and core imports nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

#: the templates :mod:`provenir.data.templates` ships (it checks that its registry starts with them)
BUILTIN_TEMPLATE_NAMES = ("alpaca", "chatml", "llama3", "mistral", "phi3", "raw_completion")

_provider: Callable[[], Iterable[str]] | None = None


def provide_template_names(provider: Callable[[], Iterable[str]]) -> None:
    """Make ``provider`` (the template registry's ``list_names``) the source of the names."""
    global _provider
    _provider = provider


def template_names() -> list[str]:
    """Every registered template name, sorted."""
    return sorted(_provider() if _provider is not None else BUILTIN_TEMPLATE_NAMES)


__all__ = ["BUILTIN_TEMPLATE_NAMES", "provide_template_names", "template_names"]
