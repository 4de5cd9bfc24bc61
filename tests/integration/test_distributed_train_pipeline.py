"""End to end: ``run_job`` with the trl backend on 2 Ray Train DDP CPU workers, metrics to MLflow.

The real path a user takes: a ``RunConfig`` with ``distributed.strategy: ddp`` → the trl backend's
worker loop on a ``TorchTrainer`` (through :func:`provenir.distributed.train.launch`) → adapter,
manifest, verification; ``observability_backend: mlflow`` wired through to rank 0's trainer.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]


def test_run_job_trl_ddp_two_workers_with_mlflow(ray_local, tiny_model_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    from provenir.core.config import DataConfig, DistributedConfig, PEFTConfig, RunConfig, TrainingConfig
    from provenir.pipeline import run_job

    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(json.dumps({"instruction": f"Reverse {i:03d}", "output": f"{i:03d}"[::-1]}) + "\n" for i in range(32))
    )
    project = f"ddp-e2e-{uuid.uuid4().hex[:8]}"
    config = RunConfig(
        name="ddp-e2e",
        backend="trl",
        seed=7,
        model_name_or_path=str(tiny_model_dir),
        max_steps=6,
        batch_size=2,
        storage_root=str(tmp_path / "store"),
        data=DataConfig(train_path=str(data), template="chatml"),
        peft=PEFTConfig(rank=4, alpha=8),
        training=TrainingConfig(save_steps=3, logging_steps=2, max_seq_length=64, learning_rate=1e-3),
        distributed=DistributedConfig(strategy="ddp", num_gpus=2, use_gpu=False, max_failures=1),
        observability_backend="mlflow",
        observability_project=project,
    )
    result = run_job(config)

    assert result.verification.ok, [c.to_dict() if hasattr(c, "to_dict") else c for c in result.verification.failures]
    adapter = tmp_path / "store"
    assert result.training.adapter_path and str(result.training.adapter_path).startswith(str(adapter))
    assert os.path.getsize(os.path.join(result.training.adapter_path, "adapter_model.safetensors")) > 0
    assert result.training.manifest.seed == 7
    losses = {k: v for k, v in result.training.metrics.items() if "loss" in k}
    assert losses and all(v > 0 for v in losses.values()), result.training.metrics

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(project)
    assert experiment is not None, "rank 0 never reached MLflow"
    (run,) = client.search_runs([experiment.experiment_id])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps and all(step % 2 == 0 for step in steps), steps
