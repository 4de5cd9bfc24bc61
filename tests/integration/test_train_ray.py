"""The trl backend on a Ray Train worker group (2 CPU workers, DDP over gloo): bit-identical reruns."""

from __future__ import annotations

import pytest

from provenir.core.config import DataConfig, DistributedConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.run import verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends import get_backend

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

RECORDS = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(0, 9999, 313)]


def _config(model, seed):
    return RunConfig(
        name="ddp", backend="trl", seed=seed, model_name_or_path=str(model), max_steps=4, batch_size=4,
        peft=PEFTConfig(rank=4, alpha=8, dropout=0.1, target_modules=["all-linear"]),
        data=DataConfig(template="chatml"),
        training=TrainingConfig(learning_rate=5e-3, logging_steps=2, save_steps=2),
        distributed=DistributedConfig(strategy="ddp", num_gpus=2, use_gpu=False),
    )


def test_ddp_two_workers_is_bit_identical_across_runs(ray_local, tiny_model_dir, store_root):
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(RECORDS)
    backend = get_backend("trl")
    first = backend.train_sft(_config(tiny_model_dir, 11), data, store=store)
    second = backend.train_sft(_config(tiny_model_dir, 11), data, store=store)
    weights = "adapter/adapter_model.safetensors"
    assert first.manifest.artifacts[weights] == second.manifest.artifacts[weights]
    assert first.manifest.artifacts["adapter/adapter_config.json"] == second.manifest.artifacts["adapter/adapter_config.json"]
    assert first.metrics["steps"] == 4
    assert verify_run(store, first.manifest.run_id).ok
