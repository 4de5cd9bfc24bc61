"""Bad input to the trl backend fails with a clear error before any work starts (no run written)."""

from __future__ import annotations

import pytest

from provenir.core.config import DistributedConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.errors import ConfigError, DataError, DependencyError
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends import get_backend
from provenir.train.backends.trl import build_loop_config, planned_steps, resolve_model_path

pytestmark = pytest.mark.timeout(120)

RECORDS = [{"instruction": f"Reverse {i:03d}", "output": f"{i:03d}"[::-1]} for i in range(12)]


def _config(model: str | None, **kw):
    kw.setdefault("data", {"template": "chatml"})
    return RunConfig(name="bad", backend="trl", model_name_or_path=model, max_steps=2, batch_size=2, **kw)


def _train(config, store_root, records=RECORDS):
    store = ArtifactStore(store_root)
    with pytest.raises(Exception) as info:
        get_backend("trl").train_sft(config, JsonlDataset.from_records(records), store=store)
    assert store.list_runs() == [], "a run was recorded although training could not start"
    return info.value


def test_missing_model_path(store_root, tmp_path):
    err = _train(_config(str(tmp_path / "nope")), store_root)
    assert isinstance(err, ConfigError) and "does not exist" in str(err)
    err = _train(_config(None), store_root)
    assert isinstance(err, ConfigError) and "model_name_or_path: required" in str(err)
    (tmp_path / "empty").mkdir()
    err = _train(_config(str(tmp_path / "empty")), store_root)
    assert isinstance(err, ConfigError) and "no config.json" in str(err)


def test_hub_ids_are_passed_through_and_paths_resolved(tiny_model_dir):
    assert resolve_model_path("meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir.resolve())


def test_four_bit_without_bitsandbytes_support(store_root, tiny_model_dir, monkeypatch):
    import provenir.train.backends.trl as trl_backend

    monkeypatch.setattr(trl_backend, "bitsandbytes_unsupported_reason", lambda: "bitsandbytes is not installed")
    config = _config(str(tiny_model_dir), peft=PEFTConfig(load_in_4bit=True))
    err = _train(config, store_root)
    assert isinstance(err, DependencyError)
    assert "peft.load_in_4bit" in str(err) and "bitsandbytes is not installed" in str(err)


def test_template_the_tokenizer_cannot_serve(store_root, tmp_path):
    from provenir.train.tiny import build_tiny_model

    plain = build_tiny_model(tmp_path / "plain", seed=0, hidden_size=32, intermediate_size=64, markup_tokens=())
    err = _train(_config(str(plain), data={"template": "chatml"}), store_root)
    assert isinstance(err, ConfigError) and "cannot serve" in str(err) and "<|im_start|>" in str(err)
    err = _train(_config(str(plain), data={"template": "no-such"}), store_root)
    assert isinstance(err, ConfigError) and "unknown template 'no-such'" in str(err)


def test_empty_dataset_and_bad_records(store_root, tiny_model_dir):
    err = _train(_config(str(tiny_model_dir)), store_root, records=[])
    assert isinstance(err, DataError) and "empty dataset" in str(err)
    err = _train(_config(str(tiny_model_dir)), store_root, records=[*RECORDS, {"question": "?"}])
    assert isinstance(err, DataError) and "record 13" in str(err)


def test_dpo_needs_pairs(store_root, tiny_model_dir):
    store = ArtifactStore(store_root)
    with pytest.raises(DataError, match="record 1: preference pairs need a string 'prompt'"):
        get_backend("trl").train_dpo(_config(str(tiny_model_dir)), JsonlDataset.from_records(RECORDS), store=store)
    assert store.list_runs() == []


def test_planned_steps_follow_epochs_and_cap():
    config = RunConfig(name="s", max_steps=1000, batch_size=4, training=TrainingConfig(num_epochs=2))
    assert planned_steps(10, config, world_size=1) == 6  # ceil(10/4)=3 per epoch
    assert planned_steps(10, config, world_size=2) == 4  # ceil(10/8)=2 per epoch
    capped = config.model_copy(update={"max_steps": 5})
    assert planned_steps(10, capped, world_size=1) == 5
    accum = config.model_copy(update={"training": TrainingConfig(num_epochs=1, gradient_accumulation_steps=2)})
    assert planned_steps(16, accum, world_size=1) == 2


def test_loop_config_is_plain_and_carries_the_strategy(tiny_model_dir):
    import pickle

    config = _config(str(tiny_model_dir), peft=PEFTConfig(rank=4, use_rslora=True),
                     distributed=DistributedConfig(strategy="ddp", num_gpus=2, use_gpu=False))
    prepared = {"model": str(tiny_model_dir), "train": [{"input_ids": [1, 2], "labels": [1, 2]}] * 8,
                "eval": None, "dataset_hash": "0" * 64}
    loop = build_loop_config("sft", config, prepared, output_dir="/o", adapter_dir="/a", metrics_path="/m")
    assert pickle.loads(pickle.dumps(loop)) == loop
    assert loop["strategy"] == "ddp" and loop["use_gpu"] is False
    assert loop["max_steps"] == 2 and loop["peft"]["use_rslora"] is True and loop["peft"]["rank"] == 4
    assert loop["deterministic"] is True and loop["seed"] == 42


@pytest.mark.parametrize("strategy", ["deepspeed", "fsdp"])
def test_gpu_only_strategies_without_gpus_fail_before_a_run_is_recorded(store_root, tiny_model_dir, strategy):
    config = _config(str(tiny_model_dir), distributed=DistributedConfig(strategy=strategy, use_gpu=False))
    err = _train(config, store_root)
    assert isinstance(err, ConfigError) and f"'{strategy}' needs GPUs" in str(err)
    assert not (store_root / "runs").exists() or not any((store_root / "runs").iterdir())


def test_callbacks_with_a_distributed_strategy_fail_before_any_work(store_root, tiny_model_dir, monkeypatch):
    import provenir.train.backends.trl as trl_backend

    def launched(*args, **kwargs):
        raise AssertionError("the worker group was launched; the callbacks would have been dropped")

    monkeypatch.setattr(trl_backend, "_launch_distributed", launched)
    config = _config(str(tiny_model_dir), distributed=DistributedConfig(strategy="ddp", use_gpu=False))
    store = ArtifactStore(store_root)
    with pytest.raises(ConfigError, match="callbacks: trainer callbacks run only when training in process"):
        get_backend("trl").train_sft(config, JsonlDataset.from_records(RECORDS), store=store, callbacks=[object()])
    assert store.list_runs() == []
