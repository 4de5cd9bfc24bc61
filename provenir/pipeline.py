"""The main job: config → data → (governance, curation) → training → manifest → verification.

This is the library call behind ``provenir run``; the CLI only parses and prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provenir.core.abstractions import TrainingResult
from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError
from provenir.core.run import VerificationReport, describe_input, verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.data.templates import TEMPLATE_REGISTRY


@dataclass
class JobResult:
    training: TrainingResult
    verification: VerificationReport

    @property
    def run_id(self) -> str:
        return self.training.manifest.run_id


def run_job(
    config: RunConfig,
    *,
    provenance: list[str] | tuple[str, ...] = (),
    command: list[str] | None = None,
    store: ArtifactStore | None = None,
    extra: dict[str, Any] | None = None,
) -> JobResult:
    """Run the configured job end to end and verify the manifest it wrote.

    Raises:
        ConfigError: the config names no training data or an unknown template.
        DataError: the data is missing, malformed, or cannot be formatted (file and line named).
    """
    from provenir.train.backends import get_backend

    if not config.data.train_path:
        raise ConfigError("data.train_path: required to run a job (a JSONL file of records)")
    TEMPLATE_REGISTRY.get(config.data.template)  # unknown template: fail before any work
    inputs = {"train": describe_input(config.data.train_path)}
    train = JsonlDataset.from_jsonl(config.data.train_path)
    evaluation = None
    if config.data.eval_path:
        inputs["eval"] = describe_input(config.data.eval_path)
        evaluation = JsonlDataset.from_jsonl(config.data.eval_path)
    store = store or ArtifactStore(config.store_root)
    backend = get_backend(config.backend)
    train_fn = backend.train_dpo if config.training.method == "dpo" else backend.train_sft
    result = train_fn(
        config, train, evaluation, inputs=inputs, provenance=provenance, store=store,
        command=command, **(extra or {}),
    )
    return JobResult(result, verify_run(store, result.manifest.run_id))
