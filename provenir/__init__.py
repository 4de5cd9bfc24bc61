"""Provenir: reproducible, provenance-tracked LLM post-training on Ray.

`import provenir` stays light: nothing here imports torch, ray or transformers.
"""

from provenir.core.errors import (
    ConfigError,
    DataError,
    DependencyError,
    ManifestError,
    NotFoundError,
    ProvenirError,
    StoreError,
)

__version__ = "0.2.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DependencyError",
    "ManifestError",
    "NotFoundError",
    "ProvenirError",
    "StoreError",
    "__version__",
]
