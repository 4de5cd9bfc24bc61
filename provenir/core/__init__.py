"""Config, manifest, hashing, the artifact store and errors. Imports nothing else of Provenir."""

from provenir.core.abstractions import RunManifest, TrainingBackend, TrainingResult
from provenir.core.config import DataConfig, DistributedConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.errors import (
    ConfigError,
    DataError,
    DependencyError,
    ManifestError,
    NotFoundError,
    ProvenirError,
    StoreError,
)
from provenir.core.store import ArtifactStore, validate_run_id

__all__ = [
    "ArtifactStore",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DependencyError",
    "DistributedConfig",
    "ManifestError",
    "NotFoundError",
    "PEFTConfig",
    "ProvenirError",
    "RunConfig",
    "RunManifest",
    "StoreError",
    "TrainingBackend",
    "TrainingConfig",
    "TrainingResult",
    "validate_run_id",
]
