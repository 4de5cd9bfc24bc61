"""Training backends by name (``RunConfig.backend``): a registry, imported lazily.

``stub`` needs nothing beyond the core; ``trl`` imports torch, transformers, TRL and PEFT only when
it is chosen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from provenir.core.config import BACKENDS
from provenir.core.errors import ConfigError

if TYPE_CHECKING:
    from provenir.core.abstractions import TrainingBackend

#: name -> "module:Class"; the names must equal ``provenir.core.config.BACKENDS``.
BACKEND_REGISTRY: dict[str, str] = {
    "stub": "provenir.train.backends.stub:StubBackend",
    "trl": "provenir.train.backends.trl:TRLBackend",
}


def get_backend(name: str) -> TrainingBackend:
    """An instance of the backend called ``name``."""
    if name not in BACKEND_REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKEND_REGISTRY))}")
    module_name, class_name = BACKEND_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


assert set(BACKEND_REGISTRY) == set(BACKENDS), "backend registry and config disagree"

__all__ = ["BACKEND_REGISTRY", "get_backend"]
