"""The trl backend on 2 DDP CPU workers survives a Ray Train worker killed from outside, bit-identically.

``train_sft`` runs in a thread; the test waits until Ray Train has registered a checkpoint of the
run (its checkpoint manager snapshot names it), SIGKILLs one ``RayTrainWorker`` process, and
checks that the worker group restarted from that checkpoint (``resumed_from_step`` in the
manifest) and ended with the adapter bytes of an uninterrupted run of the same config.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from provenir.core.config import DataConfig, DistributedConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.run import verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends import get_backend
from provenir.train.backends.trl import CHECKPOINT_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MAX_STEPS = 24
SAVE_STEPS = 2
# 193 records: 25 batches of 2 workers × 4, so max_steps ends the run inside the first epoch
RECORDS = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(0, 9999, 52)]
WEIGHTS = "adapter/adapter_model.safetensors"


def _config(model: Path) -> RunConfig:
    return RunConfig(
        name="ddp-restart", backend="trl", seed=5, model_name_or_path=str(model), max_steps=MAX_STEPS,
        batch_size=4,
        peft=PEFTConfig(rank=4, alpha=8, dropout=0.1, target_modules=["all-linear"]),
        data=DataConfig(template="chatml"),
        training=TrainingConfig(learning_rate=5e-3, logging_steps=2, save_steps=SAVE_STEPS),
        distributed=DistributedConfig(strategy="ddp", num_gpus=2, num_nodes=1, use_gpu=False, max_failures=1),
    )


def _train_workers(state: str = "ALIVE") -> dict[int, str]:
    """``{pid: actor id}`` of the Ray Train worker actors in ``state``.

    The session's Ray runs without a dashboard, which serves ``ray.util.state.list_actors``; the GCS
    actor table has the same class name, state and pid.
    """
    from ray._private import state as gcs

    return {
        actor["Pid"]: actor_id
        for actor_id, actor in gcs.actors().items()
        if actor["ActorClassName"] == "RayTrainWorker" and actor["State"] == state
    }


def _registered_step(ray_storage: Path) -> int | None:
    """The step of the latest checkpoint Ray Train has registered for the run, or ``None``."""
    try:
        snapshot = json.loads((ray_storage / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return None
    latest = snapshot.get("latest_checkpoint_result")
    if not latest:
        return None
    folder = ray_storage / latest["checkpoint_dir_name"]
    if not (folder / "trainer_state.json").is_file():
        return None
    return int(json.loads((folder / "trainer_state.json").read_text())["global_step"])


def _wait(condition, thread: threading.Thread, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert thread.is_alive(), f"train_sft ended before {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_restarts_from_checkpoint_and_ends_bit_identical(ray_local, tiny_model_dir, store_root):
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(RECORDS)
    backend = get_backend("trl")
    reference = backend.train_sft(_config(tiny_model_dir), data, store=store)
    assert reference.metrics["steps"] == MAX_STEPS
    assert "resumed_from_step" not in reference.manifest.metrics

    outcome: dict[str, object] = {}

    def train() -> None:
        try:
            outcome["result"] = backend.train_sft(_config(tiny_model_dir), data, store=store)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    before = set(_train_workers())
    thread = threading.Thread(target=train, name="train_sft", daemon=True)
    thread.start()
    run_id = _wait(lambda: next((r for r in store.list_runs() if r != reference.manifest.run_id), None),
                   thread, "the run to be recorded")
    ray_storage = Path(store.local_run_dir(run_id)) / CHECKPOINT_DIR / "ray"
    # kill right after a registration: the restart then resumes from exactly that checkpoint
    seen_step = _wait(lambda: _registered_step(ray_storage), thread, "a registered checkpoint")
    workers = {pid: actor for pid, actor in _train_workers().items() if pid not in before}
    assert len(workers) == 2, workers
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    assert thread.is_alive() and seen_step < MAX_STEPS, "the kill came after the run ended"

    thread.join(timeout=450)
    assert not thread.is_alive(), "train_sft did not finish after the restart"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert workers[victim] in _train_workers("DEAD").values()

    resumed = result.manifest.metrics["resumed_from_step"]
    assert isinstance(resumed, int) and 0 < resumed < MAX_STEPS
    assert resumed >= seen_step and resumed % SAVE_STEPS == 0
    assert result.manifest.status == "completed" and result.metrics["steps"] == MAX_STEPS
    for artifact in (WEIGHTS, "adapter/adapter_config.json"):
        assert result.manifest.artifacts[artifact] == reference.manifest.artifacts[artifact], artifact
    assert verify_run(store, result.manifest.run_id).ok
