"""The ``stub`` backend: deterministic, dependency-free, for dry runs and fast pipeline tests.

It does what a backend does around training — validates and formats every record, records the run,
writes an artifact and a manifest — and replaces the optimisation with a seeded computation: the
"adapter" is ``adapter/stub_adapter.json``, numbers derived from the config hash, the dataset hash
and the seed, and the reported loss curve is a function of the same. Same inputs, same bytes.
It never stands in where real training is asked for: use ``backend: trl`` for that.

``resume_run_id`` follows the ``trl`` backend's rules (:mod:`provenir.train._resume`): an unknown
run, a completed one, or one started with another config or other data is refused before anything
is written; a stopped or failed run is continued under its own run id with its provenance kept.
The stub keeps no checkpoints, so continuing starts over from step 0 (``resumed_from_step: 0`` in
the metrics) and writes the same bytes an uninterrupted run writes.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from provenir.core.abstractions import TrainingResult
from provenir.core.config import RunConfig
from provenir.core.errors import DataError
from provenir.core.io import atomic_write_text
from provenir.core.run import RunRecorder
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.data.templates import TEMPLATE_REGISTRY
from provenir.train._resume import check_resumable, resumed_provenance

ADAPTER_FILE = "adapter/stub_adapter.json"


class StubBackend:
    name = "stub"

    def _train(
        self,
        config: RunConfig,
        dataset: JsonlDataset,
        texts: list[str],
        *,
        inputs: dict[str, Any] | None,
        provenance: list[str] | tuple[str, ...],
        store: ArtifactStore | None,
        command: list[str] | None,
        method: str,
        resume_run_id: str | None,
    ) -> TrainingResult:
        if len(dataset) == 0:
            raise DataError(f"{dataset.source or 'dataset'}: no records to train on")
        store = store or ArtifactStore(config.store_root)
        dataset_hash = (inputs or {}).get("train", {}).get("sha256") or dataset.hash()
        if resume_run_id:
            previous = check_resumable(store, resume_run_id, config, dataset_hash)
            provenance = resumed_provenance(previous, provenance)
        recorder = RunRecorder(
            store,
            config,
            dataset_hash=dataset_hash,
            inputs=inputs,
            provenance=provenance,
            command=command,
            run_id=resume_run_id,
        )
        try:
            rng = random.Random(f"{recorder.manifest.config_hash}:{recorder.manifest.dataset_hash}:{config.seed}")
            rank = config.peft.rank if config.peft else 8
            weights = [round(rng.gauss(0.0, 0.02), 8) for _ in range(rank * 4)]
            steps = min(config.max_steps, max(1, math.ceil(len(texts) / config.batch_size)))
            start = 2.0 + rng.random()
            losses = [round(start * math.exp(-0.3 * step), 6) for step in range(1, steps + 1)]
            adapter = {"method": method, "rank": rank, "weights": weights, "records": len(texts)}
            atomic_write_text(recorder.workdir / ADAPTER_FILE, json.dumps(adapter, sort_keys=True))
            metrics = {
                "train_loss": losses[-1],
                "steps": steps,
                "records": len(texts),
                "tokens_estimate": sum(len(t.split()) for t in texts),
            }
            if resume_run_id:
                metrics["resumed_from_step"] = 0  # no checkpoints: a continued stub run starts over
            atomic_write_text(recorder.workdir / "metrics.json", json.dumps({"loss": losses}, indent=1))
            manifest = recorder.finish(metrics)
        except BaseException as exc:
            recorder.fail(exc)
            raise
        return TrainingResult(
            manifest=manifest,
            adapter_path=str(recorder.workdir / "adapter") if store.is_local else store.path(manifest.run_id, "adapter"),
            metrics=metrics,
            run_dir=store.run_dir(manifest.run_id),
        )

    def train_sft(
        self,
        config: RunConfig,
        train_dataset: JsonlDataset,
        eval_dataset: JsonlDataset | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        provenance: list[str] | tuple[str, ...] = (),
        store: ArtifactStore | None = None,
        command: list[str] | None = None,
        resume_run_id: str | None = None,
        **_: Any,
    ) -> TrainingResult:
        """Format every record with the configured template, then "train" (see module doc).

        ``resume_run_id`` continues a stopped or failed run under its own id (see module doc).
        """
        template = TEMPLATE_REGISTRY.get(config.data.template)
        dataset = train_dataset.map_fields(config.data.fields)
        grpo = config.training.method == "grpo"  # a GRPO config "trains" on its prompts
        if grpo:
            from provenir.train._data import prompt_text
        texts = []
        for index, record in enumerate(dataset):
            try:
                texts.append(prompt_text(template, record) if grpo else template.format(record))
            except DataError as exc:
                raise DataError(f"{dataset.source or 'dataset'}: record {index + 1}: {str(exc).removeprefix('record: ')}") from None
        return self._train(
            config, dataset, texts, inputs=inputs, provenance=provenance, store=store,
            command=command, method="grpo" if grpo else "sft", resume_run_id=resume_run_id,
        )

    def train_dpo(
        self,
        config: RunConfig,
        preference_dataset: JsonlDataset,
        eval_dataset: JsonlDataset | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        provenance: list[str] | tuple[str, ...] = (),
        store: ArtifactStore | None = None,
        command: list[str] | None = None,
        resume_run_id: str | None = None,
        **_: Any,
    ) -> TrainingResult:
        """Check every pair has ``prompt``, ``chosen`` and ``rejected`` strings, then "train"."""
        texts = []
        for index, record in enumerate(preference_dataset):
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(record.get(key), str):
                    raise DataError(
                        f"{preference_dataset.source or 'preferences'}: record {index + 1}: "
                        f"preference pairs need a string {key!r}"
                    )
            texts.append(record["prompt"] + record["chosen"])
        return self._train(
            config, preference_dataset, texts, inputs=inputs, provenance=provenance, store=store,
            command=command, method="dpo", resume_run_id=resume_run_id,
        )
