"""Real TRL + PEFT training on the tiny model: determinism, seeds, resume, DPO, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenir.core.config import DataConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.hashing import sha256_file
from provenir.core.run import verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends import get_backend
from provenir.train.backends.trl import CHECKPOINT_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RECORDS = [{"instruction": f"Reverse {i:03d}", "output": f"{i:03d}"[::-1]} for i in range(0, 999, 37)]
PAIRS = [{"prompt": f"Reverse {i:03d}", "chosen": f"{i:03d}"[::-1], "rejected": f"{i:03d}"} for i in range(0, 999, 83)]


def _config(model: Path, seed: int = 1, **kw) -> RunConfig:
    kw.setdefault("peft", PEFTConfig(rank=4, alpha=8, dropout=0.1, target_modules=["all-linear"]))
    kw.setdefault("training", TrainingConfig(learning_rate=5e-3, logging_steps=2))
    return RunConfig(name="tiny-sft", backend="trl", seed=seed, model_name_or_path=str(model),
                     max_steps=4, batch_size=4, data=DataConfig(template="chatml"), **kw)


def _adapter_hashes(result) -> dict[str, str]:
    return {k: v for k, v in result.manifest.artifacts.items() if k.startswith("adapter/")}


def test_sft_is_bit_identical_for_a_seed_and_differs_across_seeds(tiny_model_dir, store_root):
    backend = get_backend("trl")
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(RECORDS)
    first = backend.train_sft(_config(tiny_model_dir, seed=1), data, store=store)
    second = backend.train_sft(_config(tiny_model_dir, seed=1), data, store=store)
    other = backend.train_sft(_config(tiny_model_dir, seed=2), data, store=store)

    weights = "adapter/adapter_model.safetensors"
    assert first.manifest.run_id != second.manifest.run_id
    assert _adapter_hashes(first) == _adapter_hashes(second)
    assert _adapter_hashes(first)[weights] != _adapter_hashes(other)[weights]
    # the manifest's hashes are the files' hashes, the run verifies, nothing else is left behind
    adapter = Path(first.adapter_path)
    assert first.manifest.artifacts[weights] == sha256_file(adapter / "adapter_model.safetensors")
    assert verify_run(store, first.manifest.run_id).ok
    assert not (Path(store.local_run_dir(first.manifest.run_id)) / CHECKPOINT_DIR).exists()
    assert first.manifest.status == "completed" and first.manifest.environment["packages"]["trl"]
    assert first.metrics["steps"] == 4 and first.metrics["train_tokens"] > 0
    assert first.manifest.metrics["train_loss"] == pytest.approx(first.metrics["train_loss"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])
    assert {m.rsplit(".", 1)[-1] for m in config["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_resume_after_a_stop_ends_bit_identical(tiny_model_dir, store_root):
    from transformers import TrainerCallback

    class CountSteps(TrainerCallback):
        def __init__(self):
            self.steps: list[int] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    class StopAfterSave(CountSteps):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    backend = get_backend("trl")
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(RECORDS)
    config = _config(tiny_model_dir, seed=3, training=TrainingConfig(learning_rate=5e-3, save_steps=2))
    straight = backend.train_sft(config, data, store=store)

    stop = StopAfterSave()
    with pytest.raises(KeyboardInterrupt):
        backend.train_sft(config, data, store=store, callbacks=[stop])
    assert stop.steps == [1, 2]
    [stopped_id] = [r for r in store.list_runs() if r != straight.manifest.run_id]
    stopped = store.load_manifest(stopped_id)
    assert stopped.status == "stopped"
    assert (Path(store.local_run_dir(stopped_id)) / CHECKPOINT_DIR / "hf" / "checkpoint-2").is_dir()

    # the resumed call continues from checkpoint-2: it runs steps 3 and 4 only (a retrain from
    # scratch would run 1..4 and could end with the same bytes), and ends with the straight run's
    counter = CountSteps()
    resumed = backend.train_sft(config, data, store=store, resume_run_id=stopped_id, callbacks=[counter])
    assert counter.steps == [3, 4]
    assert resumed.manifest.run_id == stopped_id and resumed.manifest.status == "completed"
    assert resumed.metrics["steps"] == 4
    weights = "adapter/adapter_model.safetensors"
    assert sha256_file(Path(resumed.adapter_path) / "adapter_model.safetensors") == straight.manifest.artifacts[weights]
    assert _adapter_hashes(resumed) == _adapter_hashes(straight)
    assert verify_run(store, stopped_id).ok

    from provenir.core.errors import ConfigError

    with pytest.raises(ConfigError, match="already completed"):
        backend.train_sft(config, data, store=store, resume_run_id=stopped_id)


def test_dpo_with_rslora_trains_the_adapter(tiny_model_dir, store_root):
    from safetensors.torch import load_file

    config = _config(
        tiny_model_dir, seed=5,
        peft=PEFTConfig(rank=4, alpha=8, dropout=0.0, use_rslora=True, target_modules=["q_proj", "v_proj"]),
        training=TrainingConfig(method="dpo", learning_rate=5e-3, dpo_beta=0.2, logging_steps=1),
    )
    result = get_backend("trl").train_dpo(config, JsonlDataset.from_records(PAIRS), store=ArtifactStore(store_root))
    adapter = Path(result.adapter_path)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["use_rslora"] is True and adapter_config["r"] == 4
    assert adapter_config["target_modules"] == ["q_proj", "v_proj"]
    tensors = load_file(adapter / "adapter_model.safetensors")
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert len(lora_b) == 4 and all(float(t.abs().sum()) > 0 for t in lora_b)  # B starts at zero
    assert result.metrics["steps"] == 4 and result.manifest.config["training"]["method"] == "dpo"


def test_run_job_with_eval_reports_eval_loss(tiny_model_dir, store_root, tmp_path):
    from provenir.pipeline import run_job

    train = tmp_path / "train.jsonl"
    evaluation = tmp_path / "eval.jsonl"
    JsonlDataset.from_records(RECORDS).save(train)
    JsonlDataset.from_records(RECORDS[:5]).save(evaluation)
    config = _config(tiny_model_dir, seed=1).model_copy(
        update={"data": DataConfig(template="chatml", train_path=str(train), eval_path=str(evaluation)),
                "observability_backend": "tensorboard"}
    )
    job = run_job(config, store=ArtifactStore(store_root))
    assert job.verification.ok
    assert job.training.metrics["eval_loss"] > 0
    assert set(job.training.manifest.inputs) == {"train", "eval", "model"}
    # the observer's TensorBoard events went into the run folder and are hashed in the manifest
    events = [k for k in job.training.manifest.artifacts if k.startswith("logs/tensorboard/") and "events" in k]
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(job.training.run_dir)
    accumulator = EventAccumulator(str((run_dir / events[0]).parent))
    accumulator.Reload()
    assert "loss" in accumulator.Tags()["scalars"]


def test_a_failing_observability_sink_warns_and_training_completes(tiny_model_dir, store_root, monkeypatch):
    """MLflow pointed at a port where nothing listens: every sink call fails, the run still trains,
    records and verifies; the failure surfaces as a RuntimeWarning."""
    import socket

    with socket.socket() as sock:  # a free loopback port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    store = ArtifactStore(store_root)
    config = _config(tiny_model_dir).model_copy(update={"observability_backend": "mlflow",
                                                        "observability_project": "dead-sink"})
    with pytest.warns(RuntimeWarning, match="observability"):
        result = get_backend("trl").train_sft(config, JsonlDataset.from_records(RECORDS), store=store)
    assert result.manifest.status == "completed" and result.metrics["steps"] == 4
    assert verify_run(store, result.manifest.run_id).ok
