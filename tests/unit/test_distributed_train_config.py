"""Ray Train hosting without Ray: strategy kwargs, generated ZeRO configs, per-rank uploads, checks."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from provenir.core.config import DistributedConfig
from provenir.core.errors import ConfigError
from provenir.distributed.train import (
    LAUNCH_STRATEGIES,
    checkpoint_rank,
    deepspeed_config,
    files_for_rank,
    fsdp_config,
    in_ray_worker,
    launch,
    resume_checkpoint_dir,
    strategy_training_args,
)

pytestmark = pytest.mark.timeout(180)


def test_strategy_args_per_strategy():
    assert strategy_training_args("none", 2, use_gpu=False) == {}
    assert strategy_training_args("ddp", 2, use_gpu=False) == {
        "ddp_backend": "gloo", "ddp_find_unused_parameters": False,
    }
    assert strategy_training_args("ddp", 2, use_gpu=True)["ddp_backend"] == "nccl"
    fsdp = strategy_training_args("fsdp", 2, use_gpu=True)
    assert fsdp["fsdp"] is True and fsdp["ddp_backend"] == "nccl"
    assert fsdp["fsdp_config"] == fsdp_config()
    assert fsdp["fsdp_config"]["version"] == 2 and fsdp["fsdp_config"]["reshard_after_forward"] is True
    assert fsdp["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    for stage in (1, 2, 3):
        ds = strategy_training_args("deepspeed", stage, use_gpu=True)
        assert ds["deepspeed"] == deepspeed_config(stage)
        assert ds["deepspeed"]["zero_optimization"]["stage"] == stage
    with pytest.raises(ConfigError, match="unknown 'horovod'"):
        strategy_training_args("horovod", 2, use_gpu=False)
    assert LAUNCH_STRATEGIES == ("ddp", "fsdp", "deepspeed")


def test_deepspeed_config_shape_per_stage():
    one, two, three = (deepspeed_config(s) for s in (1, 2, 3))
    for cfg in (one, two, three):
        assert cfg["train_micro_batch_size_per_gpu"] == "auto"
        assert cfg["gradient_accumulation_steps"] == "auto"
        assert cfg["bf16"] == {"enabled": "auto"} and cfg["fp16"] == {"enabled": "auto"}
        assert "offload_optimizer" not in cfg["zero_optimization"]
    assert "reduce_scatter" not in one["zero_optimization"]
    assert two["zero_optimization"]["reduce_scatter"] is True
    assert "stage3_prefetch_bucket_size" not in two["zero_optimization"]
    assert three["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    off3 = deepspeed_config(3, offload=True)["zero_optimization"]
    assert off3["offload_optimizer"]["device"] == "cpu" and off3["offload_param"]["device"] == "cpu"
    off2 = deepspeed_config(2, offload=True)["zero_optimization"]
    assert "offload_param" not in off2 and off2["offload_optimizer"]["device"] == "cpu"
    with pytest.raises(ConfigError, match="must be 1, 2 or 3"):
        deepspeed_config(4)


@pytest.mark.slow
@pytest.mark.parametrize("offload", [False, True])
def test_deepspeed_configs_pass_hf_fill_and_deepspeed_validation(offload):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    args = TrainingArguments(
        output_dir="unused", use_cpu=True, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, max_grad_norm=0.5, report_to=[],
    )
    hidden = 64
    for stage in (1, 2, 3):
        hf = HfTrainerDeepSpeedConfig(copy.deepcopy(deepspeed_config(stage, offload=offload)))
        hf.trainer_config_process(args)
        hf.fill_match("zero_optimization.reduce_bucket_size", hidden * hidden)
        hf.fill_match("zero_optimization.stage3_prefetch_bucket_size", int(0.9 * hidden * hidden))
        hf.fill_match("zero_optimization.stage3_param_persistence_threshold", 10 * hidden)
        filled = hf.config
        assert filled["train_batch_size"] == 8 and filled["train_micro_batch_size_per_gpu"] == 4
        assert filled["gradient_clipping"] == 0.5
        assert hf.get_value("zero_optimization.stage") == stage
        assert hf.is_zero3() is (stage == 3)
        zero = DeepSpeedZeroConfig(**filled["zero_optimization"])
        assert int(zero.stage) == stage
        assert zero.reduce_bucket_size == hidden * hidden
        assert (zero.offload_optimizer is not None) is offload
        assert (zero.offload_param is not None) is (offload and stage == 3)


@pytest.mark.slow
def test_fsdp_args_are_accepted_by_training_arguments():
    from transformers import TrainingArguments

    kwargs = strategy_training_args("fsdp", 2, use_gpu=False)
    kwargs.pop("ddp_backend")  # a process group exists only inside Ray Train workers
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[], **kwargs)
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2
    assert plugin["reshard_after_forward"] is True
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"


def test_checkpoint_files_are_split_by_owning_rank(tmp_path):
    folder = tmp_path / "checkpoint-8"
    names = [
        "adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt",
        "trainer_state.json", "rng_state_0.pth", "rng_state_1.pth", "rng_state_12.pth",
        "global_step8/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "global_step8/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "global_step8/mp_rank_00_model_states.pt",
        "pytorch_model_fsdp_0/__1_0.distcp", "pytorch_model_fsdp_0/.metadata",
    ]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    assert checkpoint_rank("rng_state_12.pth") == 12
    assert checkpoint_rank("rng_state.pth") is None
    assert checkpoint_rank("global_step8/mp_rank_00_model_states.pt") is None  # model-parallel rank
    assert files_for_rank(folder, 0) == sorted([
        "adapter_config.json", "adapter_model.safetensors", "global_step8/mp_rank_00_model_states.pt",
        "global_step8/zero_pp_rank_0_mp_rank_00_optim_states.pt", "optimizer.pt",
        "pytorch_model_fsdp_0/.metadata", "rng_state_0.pth", "scheduler.pt", "trainer_state.json",
    ])
    assert files_for_rank(folder, 1) == [
        "global_step8/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "pytorch_model_fsdp_0/__1_0.distcp",
        "rng_state_1.pth",
    ]
    assert files_for_rank(folder, 12) == ["rng_state_12.pth"]
    every = set().union(*(files_for_rank(folder, r) for r in (0, 1, 12)))
    assert every == set(names)  # nothing lost, and (by construction) nothing uploaded twice


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "none"}, "'none' cannot be launched"),
        ({"strategy": "mpi"}, "'mpi' cannot be launched"),
        ({"num_workers": 0}, "num_workers: must be >= 1"),
        ({"max_failures": -2}, "max_failures: must be >= -1"),
        ({"strategy": "deepspeed"}, "'deepspeed' needs GPUs"),
        ({"strategy": "fsdp"}, "'fsdp' needs GPUs .*quietly fall back to DDP"),
    ],
)
def test_launch_rejects_bad_settings_before_touching_ray(kwargs, message, tmp_path):
    settings = {"num_workers": 2, "use_gpu": False, "storage_path": str(tmp_path), "name": "x"} | kwargs
    with pytest.raises(ConfigError, match=message):
        launch(print, {}, **settings)


def test_outside_a_worker(tmp_path):
    assert in_ray_worker() is False
    assert resume_checkpoint_dir() is None


def test_distributed_train_never_imports_train_server_cli_or_heavy_libs():
    code = (
        "import sys, provenir.distributed.train as t; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'transformers') "
        "or m.startswith(('provenir.train', 'provenir.server', 'provenir.cli'))]; "
        "assert not bad, bad; assert t.in_ray_worker() is False; assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_num_workers_follows_distributed_config():
    assert DistributedConfig(strategy="ddp", num_gpus=4, num_nodes=2).num_workers == 8


def test_sweep_rejects_bad_settings_before_touching_ray(tmp_path):
    from provenir.distributed.tune import SweepResult, param_space, sweep

    base = {"metric": "loss", "storage_path": str(tmp_path), "name": "s"}
    with pytest.raises(ConfigError, match="mode: must be 'min' or 'max'"):
        sweep(print, {}, {"lr": [1]}, mode="best", **base)
    with pytest.raises(ConfigError, match="name at least one parameter"):
        sweep(print, {}, {}, **base)
    with pytest.raises(ConfigError, match="'deepspeed' needs GPUs"):
        sweep(print, {}, {"lr": [1]}, strategy="deepspeed", **base)
    space = param_space({"lr": [1e-4, 1e-3], "rank": 8})
    assert space["lr"] == {"grid_search": [1e-4, 1e-3]} and space["rank"] == 8
    result = SweepResult("loss", "max", [
        {"config": {"lr": 1}, "metrics": {"loss": 2.0}, "checkpoint_path": None, "error": None},
        {"config": {"lr": 2}, "metrics": {"loss": 9.0}, "checkpoint_path": None, "error": "boom"},
        {"config": {"lr": 3}, "metrics": {"loss": 3.0}, "checkpoint_path": None, "error": None},
    ])
    assert result.best_config == {"lr": 3} and len(result.ok_trials) == 2
    assert SweepResult("loss", "min").best is None


def test_final_checkpoint_location_local_and_remote(tmp_path):
    import pyarrow.fs

    from provenir.distributed.train import _flat_metrics, _local_copy
    from provenir.distributed.tune import _checkpoint_uri

    class FakeCheckpoint:  # the two attributes and the method launch uses
        def __init__(self, path, filesystem):
            self.path, self.filesystem = path, filesystem

        def to_directory(self, target):
            Path(target).mkdir(parents=True, exist_ok=True)
            (Path(target) / "adapter_model.safetensors").write_bytes(b"w")
            return target

    local = FakeCheckpoint(str(tmp_path / "ckpt"), pyarrow.fs.LocalFileSystem())
    assert _local_copy(local, None) == str(tmp_path / "ckpt")  # read in place, never copied
    assert _local_copy(None, None) is None
    remote = FakeCheckpoint("bucket/runs/x/checkpoint-000010", pyarrow.fs.SubTreeFileSystem("/", pyarrow.fs.LocalFileSystem()))
    fetched = _local_copy(remote, str(tmp_path / "down"))
    assert fetched == str(tmp_path / "down") and (tmp_path / "down" / "adapter_model.safetensors").is_file()
    assert _checkpoint_uri(local) == str(tmp_path / "ckpt") and _checkpoint_uri(None) == ""
    assert _flat_metrics([{"loss": 2.0, "step": 1}, {"loss": 1.5, "grad_norm": float("nan"), "tag": "x"}]) == {
        "loss": 1.5, "step": 1,
    }


def test_storage_filesystem_from_env(monkeypatch):
    """An s3:// storage path with AWS_ENDPOINT_URL set gets an S3FileSystem for that endpoint;
    local paths, other schemes and an unset endpoint get None (Ray resolves those itself)."""
    import pyarrow.fs

    from provenir.distributed.train import storage_filesystem_from_env

    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    assert storage_filesystem_from_env("s3://bucket/runs") is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert storage_filesystem_from_env("/data/runs") is None
    assert storage_filesystem_from_env("gs://bucket/runs") is None
    fs = storage_filesystem_from_env("s3://bucket/runs")
    assert isinstance(fs, pyarrow.fs.S3FileSystem)
    assert fs.region == "eu-west-1"


def test_launch_with_a_filesystem_never_creates_a_local_folder(tmp_path, monkeypatch):
    """A bare path inside an explicit filesystem is not a local folder: nothing appears in cwd."""
    import pyarrow.fs

    import provenir.distributed.train as dt

    seen = {}

    def fake_fit(train_loop, loop_config, **kwargs):
        seen.update(kwargs)
        return dt.LaunchResult(None, {}, None, None, None)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dt, "connect", lambda address=None: None)
    monkeypatch.setattr(dt, "_fit", fake_fit)
    fs = pyarrow.fs.SubTreeFileSystem(str(tmp_path / "remote"), pyarrow.fs.LocalFileSystem())
    result = dt.launch(lambda config: None, {}, num_workers=1, use_gpu=False,
                       storage_path="bucket/prefix", name="run-1", storage_filesystem=fs)
    assert seen["storage_path"] == "bucket/prefix" and seen["storage_filesystem"] is fs
    assert result.storage_uri == "bucket/prefix/run-1"
    assert not (tmp_path / "bucket").exists()
