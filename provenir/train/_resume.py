"""``--resume RUN_ID``: which runs may be continued, the same rule for every backend.

A run can be continued when its manifest exists, it did not complete, and the config and the
training data are the ones it started with. The continued run keeps its run id and its
provenance (the parents recorded when it started, plus any given now).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provenir.core.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from provenir.core.abstractions import RunManifest
    from provenir.core.config import RunConfig
    from provenir.core.store import ArtifactStore


def check_resumable(store: ArtifactStore, run_id: str, config: RunConfig, dataset_hash: str) -> RunManifest:
    """The manifest of the run to continue, after checking it may be continued.

    Raises:
        ConfigError: the run does not exist in ``store``, already completed, or was started with
            another config or other training data.
    """
    from provenir.core.config import config_hash
    from provenir.core.store import validate_run_id

    validate_run_id(run_id)
    try:
        manifest = store.load_manifest(run_id)
    except NotFoundError as exc:
        raise ConfigError(f"--resume {run_id}: {exc}; `provenir runs list` shows the runs in a store") from None
    if manifest.status == "completed":
        raise ConfigError(f"--resume {run_id}: the run already completed; nothing to resume")
    if manifest.config_hash != config_hash(config):
        raise ConfigError(
            f"--resume {run_id}: the config differs from the run's (config_hash "
            f"{manifest.config_hash[:12]} vs {config_hash(config)[:12]}); resume with the same config"
        )
    if manifest.dataset_hash != dataset_hash:
        raise ConfigError(
            f"--resume {run_id}: the training data changed since the run started "
            f"(dataset_hash {manifest.dataset_hash[:12]} vs {dataset_hash[:12]})"
        )
    return manifest


def resumed_provenance(manifest: RunManifest, provenance: list[str] | tuple[str, ...]) -> list[str]:
    """The run's recorded parents followed by any new ones, each once."""
    return list(dict.fromkeys([*manifest.provenance, *provenance]))


__all__ = ["check_resumable", "resumed_provenance"]
