"""Ray Train DDP on 2 CPU workers, for real: determinism, a killed worker, a stopped run resumed.

A tiny Llama with a LoRA adapter (dropout on, so the RNG state matters) trains with the HF
``Trainer`` under ``launch``. The loop saves every 4 steps through ``ray_report_callback`` and, when
told, kills the last rank (rank 1 of 2) with ``os._exit`` at a given step on its first attempt
only (a marker file in storage records that the kill happened).

Three launches (~20-40 s each here):

* A: seed 0, uninterrupted — the reference adapter;
* B: seed 0, rank 1 killed at step 7 with ``max_failures=0`` — the run stops with an error. Launched
  again under the same name (what ``provenir train --resume`` does) with ``max_failures=2``, it
  continues from its checkpoint; rank 1 is killed once more at step 11, the worker group restarts
  from the latest checkpoint, and the run must end byte-identical to A;
* C: seed 1 — must differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

# ~2-4 min on an idle 2-core machine (4 worker-group start-ups); generous for a shared one
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

MAX_STEPS = 12
SAVE_STEPS = 4


def _tiny_lora_loop(config: dict) -> None:
    """The per-worker training loop (top level so Ray can pickle it)."""
    import tempfile
    import time

    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from provenir.distributed.train import (
        ray_report_callback,
        resume_checkpoint_dir,
        strategy_training_args,
    )

    seed = config["seed"]
    transformers.enable_full_determinism(seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        )
    )
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(1234)  # the same data whatever the seed
    tokens = torch.randint(3, 96, (48, 16), generator=generator)
    dataset = [{"input_ids": row, "labels": row.clone()} for row in tokens]

    kills = {int(step): Path(marker) for step, marker in config.get("kills", {}).items()}

    class _KillLastRank(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marker = kills.get(state.global_step)
            last_rank = args.world_size - 1  # rank 1 of 2; rank 0 of a one-worker group
            if args.process_index == last_rank and marker is not None and not marker.exists():
                marker.write_text("killed")
                time.sleep(3)  # past Ray's 2 s poll, so the previous checkpoint is registered
                os._exit(1)

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="ddp-test-"),  # per worker and attempt: nothing shared
        max_steps=MAX_STEPS,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        logging_steps=1,
        seed=seed,
        data_seed=seed,
        full_determinism=True,
        dataloader_num_workers=0,
        use_cpu=not config.get("use_gpu", False),
        report_to=[],
        disable_tqdm=True,
        **strategy_training_args(
            config.get("strategy", "ddp"), config.get("deepspeed_stage", 2), use_gpu=config.get("use_gpu", False)
        ),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        callbacks=[ray_report_callback(), _KillLastRank()],
    )
    resume = resume_checkpoint_dir()
    if args.process_index == 0 and config.get("resume_log"):
        with open(config["resume_log"], "a") as log:
            log.write(f"{Path(resume).name if resume else None}\n")
    trainer.train(resume_from_checkpoint=resume)


def _adapter_sha(checkpoint_path: str | None) -> str:
    assert checkpoint_path is not None
    return hashlib.sha256((Path(checkpoint_path) / "adapter_model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def picklable_loop():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield _tiny_lora_loop
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_ddp_two_workers_deterministic_restart_and_resume(ray_local, picklable_loop, tmp_path):
    from provenir.distributed.train import launch

    storage = tmp_path / "runs"
    kills = {7: str(tmp_path / "kill-7"), 11: str(tmp_path / "kill-11")}

    def run(name: str, seed: int, **kwargs):
        loop_config = {
            "seed": seed, "kills": kwargs.pop("kills", {}), "resume_log": str(tmp_path / f"{name}.resumes"),
        }
        return launch(
            picklable_loop, loop_config, num_workers=2, use_gpu=False,
            storage_path=str(storage), name=name, **kwargs,
        )

    reference = run("a", 0)
    assert reference.error is None, reference.error
    final = Path(reference.checkpoint_path)
    assert final.name == f"checkpoint-{MAX_STEPS:06d}"
    assert final.parent == storage / "a"
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    # every rank's RNG state reached storage, each uploaded by its own worker
    assert {p.name for p in final.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (final / "optimizer.pt").is_file() and (final / "scheduler.pt").is_file()
    saved = sorted(p.name for p in (storage / "a").glob("checkpoint-*"))
    assert saved == [f"checkpoint-{s:06d}" for s in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS)]
    assert reference.metrics["step"] == MAX_STEPS
    assert reference.metrics["loss"] > 0
    reference_sha = _adapter_sha(reference.checkpoint_path)

    stopped = run("b", 0, kills={7: kills[7]}, max_failures=0)
    assert Path(kills[7]).exists(), "the first kill never happened; the test proves nothing"
    assert stopped.error is not None
    assert stopped.checkpoint_path is None
    assert sorted(p.name for p in (storage / "b").glob("checkpoint-*")) == ["checkpoint-000004"]

    resumed = run("b", 0, kills=kills, max_failures=2)  # kill-7 is spent; kill-11 fires once
    assert Path(kills[11]).exists(), "the second kill never happened; the test proves nothing"
    assert resumed.error is None, resumed.error
    # attempts: fresh start, stopped at 7 · relaunch from 4, killed at 11 · restart from 8
    assert (tmp_path / "b.resumes").read_text().split() == ["None", "checkpoint-000004", "checkpoint-000008"]
    assert (tmp_path / "a.resumes").read_text().split() == ["None"]
    assert Path(resumed.checkpoint_path).name == f"checkpoint-{MAX_STEPS:06d}"
    assert _adapter_sha(resumed.checkpoint_path) == reference_sha

    other_seed = run("c", 1)
    assert other_seed.error is None, other_seed.error
    assert _adapter_sha(other_seed.checkpoint_path) != reference_sha


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("strategy", "stage"), [("ddp", 2), ("fsdp", 2), ("deepspeed", 1), ("deepspeed", 2), ("deepspeed", 3)]
)
def test_gpu_strategies_train_checkpoint_and_restart(ray_local, picklable_loop, tmp_path, strategy, stage):
    """Where GPUs exist: every strategy trains, checkpoints and survives a killed worker."""
    import torch

    from provenir.distributed.train import launch

    workers = min(2, torch.cuda.device_count())  # one GPU: a one-worker group, killed and restarted
    if workers < 1:
        pytest.skip("needs a GPU")
    kill = str(tmp_path / "kill-7")
    result = launch(
        picklable_loop,
        {"seed": 0, "strategy": strategy, "deepspeed_stage": stage, "use_gpu": True, "kills": {7: kill}},
        num_workers=workers, use_gpu=True, storage_path=str(tmp_path / "runs"),
        name=f"{strategy}-{stage}",
        max_failures=1, strategy=strategy,
    )
    assert Path(kill).exists()
    assert result.error is None, result.error
    assert Path(result.checkpoint_path).name == f"checkpoint-{MAX_STEPS:06d}"
    assert json.loads((Path(result.checkpoint_path) / "trainer_state.json").read_text())["global_step"] == MAX_STEPS


@pytest.fixture()
def s3_server(monkeypatch):
    """A local S3-compatible server (moto) on 127.0.0.1, and the AWS_* settings that point at it."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    import socket
    import subprocess
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3").create_bucket(Bucket="provenir-runs")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        yield boto3.client("s3")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_checkpoints_in_object_storage_restart_bit_identical(ray_local, picklable_loop, tmp_path, s3_server):
    """s3:// storage: checkpoints go to the bucket, a killed worker group restarts from the one in the
    bucket, and the final adapter equals an uninterrupted run's on local storage."""
    from provenir.distributed.train import launch

    def run(name: str, storage: str, **kwargs):
        return launch(picklable_loop, {"seed": 0, "kills": kwargs.pop("kills", {}),
                                       "resume_log": str(tmp_path / f"{name}.resumes")},
                      num_workers=2, use_gpu=False, storage_path=storage, name=name, **kwargs)

    reference = run("local", str(tmp_path / "runs"))
    assert reference.error is None, reference.error
    remote = run("remote", "s3://provenir-runs/ckpt", kills={7: str(tmp_path / "kill-7")}, max_failures=1,
                 download_to=str(tmp_path / "downloaded"))
    assert (tmp_path / "kill-7").exists(), "the kill never happened; the test proves nothing"
    assert remote.error is None, remote.error
    assert remote.storage_uri == "s3://provenir-runs/ckpt/remote"
    assert (tmp_path / "remote.resumes").read_text().split() == ["None", "checkpoint-000004"]
    keys = {o["Key"] for o in s3_server.list_objects_v2(Bucket="provenir-runs", Prefix="ckpt/remote/")["Contents"]}
    for step in (4, 8, 12):
        assert f"ckpt/remote/checkpoint-{step:06d}/adapter_model.safetensors" in keys
        assert {f"ckpt/remote/checkpoint-{step:06d}/rng_state_{rank}.pth" for rank in (0, 1)} <= keys
    assert Path(remote.checkpoint_path).is_relative_to(tmp_path / "downloaded")
    assert _adapter_sha(remote.checkpoint_path) == _adapter_sha(reference.checkpoint_path)
