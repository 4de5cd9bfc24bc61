"""`provenir train`: trains from a YAML config, prints the manifest; resume errors are one line."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from provenir.core.hashing import sha256_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _write_config(tmp_path, model, **extra):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(
        json.dumps({"instruction": f"Copy {i:04d}", "output": f"{i:04d}"}) + "\n" for i in range(0, 9999, 611)
    ))
    lines = [
        "name: cli-train", "backend: trl", "seed: 7", f"model_name_or_path: {model}", "max_steps: 2",
        "batch_size: 4", "data:", "  train_path: train.jsonl", "  template: chatml",
        "peft:", "  rank: 2", "  alpha: 4",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _provenir(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "provenir.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=500
    )


def test_train_command_trains_and_verifies(tmp_path, tiny_model_dir):
    config = _write_config(tmp_path, tiny_model_dir)
    store = tmp_path / "store"
    out = _provenir("train", str(config), "--store", str(store), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    # stdout is the JSON document alone: what the training libraries print (DeepSpeed's
    # accelerator warning goes through a logger bound to the original stdout) went to stderr
    payload = json.loads(out.stdout)
    assert "real_accelerator" not in out.stdout
    manifest = payload["manifest"]
    assert payload["verification"]["ok"] is True
    assert manifest["status"] == "completed" and manifest["metrics"]["steps"] == 2
    assert "adapter/adapter_model.safetensors" in manifest["artifacts"]

    again = _provenir("train", str(config), "--store", str(store), "--resume", manifest["run_id"], cwd=tmp_path)
    assert again.returncode == 2
    assert "already completed" in again.stderr and "Traceback" not in again.stderr


def test_train_command_rejects_a_missing_model_before_work(tmp_path):
    config = _write_config(tmp_path, tmp_path / "missing-model")
    out = _provenir("train", str(config), "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())


def test_train_command_resumes_a_stopped_run_to_the_same_adapter(tmp_path, tiny_model_dir):
    config = _write_config(tmp_path, tiny_model_dir)
    # 17 records, batch 4: 5 steps an epoch, so 40 epochs reach the 200-step cap
    config.write_text(config.read_text().replace("max_steps: 2\n", "max_steps: 200\n")
                      + "training:\n  num_epochs: 40\n  save_steps: 10\n  logging_steps: 10\n")
    store = tmp_path / "store"
    log = (tmp_path / "stopped.log").open("w")
    # Ctrl-C once the first checkpoint is complete (the trainer state is written last), long
    # before the last of the 200 steps
    child = subprocess.Popen(
        [sys.executable, "-m", "provenir.cli", "train", str(config), "--store", str(store)],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(store.glob("runs/*/checkpoints/hf/checkpoint-*/trainer_state.json")):
            assert child.poll() is None, (tmp_path / "stopped.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=120) == 130
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    [run_dir] = (store / "runs").iterdir()
    stopped = json.loads((run_dir / "manifest.json").read_text())
    assert stopped["status"] == "stopped", (tmp_path / "stopped.log").read_text()[-2000:]
    saved = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints" / "hf").glob("checkpoint-*"))
    assert saved and max(saved) < 200
    assert not (run_dir / "adapter").exists()

    resumed = _provenir("train", str(config), "--store", str(store), "--resume", run_dir.name, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # it continued from the latest checkpoint: its progress lines start one logging step after it
    logged = [int(m) for m in re.findall(r"^step (\d+)/200 ", resumed.stderr, re.MULTILINE)]
    assert logged == list(range(max(saved) + 10, 201, 10))
    assert [p.name for p in (store / "runs").iterdir()] == [run_dir.name]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["steps"] == 200

    straight = _provenir("train", str(config), "--store", str(tmp_path / "straight"), "--json", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    reference = json.loads(straight.stdout)["manifest"]
    weights = "adapter/adapter_model.safetensors"
    assert manifest["artifacts"][weights] == reference["artifacts"][weights]
    assert manifest["artifacts"][weights] == sha256_file(run_dir / weights)
    assert manifest["config_hash"] == reference["config_hash"]


def test_sigterm_stops_the_run_like_ctrl_c_and_resume_completes_it(tmp_path, tiny_model_dir):
    """SIGTERM (schedulers, `ray job stop`): status `stopped`, exit 143, checkpoints kept (only the
    latest few), one line naming the step and the exact resume command, which then completes it."""
    from provenir.core.run import verify_run
    from provenir.core.store import ArtifactStore
    from provenir.train.backends.trl import CHECKPOINTS_KEPT

    config = _write_config(tmp_path, tiny_model_dir)
    config.write_text(config.read_text().replace("max_steps: 2\n", "max_steps: 200\n")
                      + "training:\n  num_epochs: 40\n  save_steps: 10\n  logging_steps: 10\n")
    store = tmp_path / "store"
    log_path = tmp_path / "terminated.log"
    log = log_path.open("w")
    child = subprocess.Popen(
        [sys.executable, "-m", "provenir.cli", "train", str(config), "--store", str(store)],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        # the fourth checkpoint is complete: by then the first has been rotated out
        deadline = time.monotonic() + 300
        while not list(store.glob("runs/*/checkpoints/hf/checkpoint-40/trainer_state.json")):
            assert child.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "no fourth checkpoint within 300 s"
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 143, log_path.read_text()[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    [run_dir] = (store / "runs").iterdir()
    run_id = run_dir.name
    stopped = json.loads((run_dir / "manifest.json").read_text())
    assert stopped["status"] == "stopped", log_path.read_text()[-2000:]
    assert stopped["metrics"]["error"] == "stopped by SIGTERM"
    saved = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints" / "hf").glob("checkpoint-*"))
    assert 40 <= max(saved) < 200 and 10 not in saved and len(saved) <= CHECKPOINTS_KEPT + 1
    assert stopped["metrics"]["resumable_from_step"] == max(saved)
    assert verify_run(ArtifactStore(str(store)), run_id).ok  # checkpoints hashed, nothing unrecorded

    resume_command = shlex.join(["provenir", "train", str(config), "--store", str(store), "--resume", run_id])
    [line] = [ln for ln in log_path.read_text().splitlines() if ln.startswith("stopped by SIGTERM")]
    step = stopped["metrics"]["stopped_at_step"]
    assert step >= max(saved)
    assert line == (f"stopped by SIGTERM at step {step}/200: run {run_id} is marked stopped; "
                    f"continue from its checkpoint at step {max(saved)} with: {resume_command}")

    resumed = _provenir(*shlex.split(resume_command)[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"continuing after step {max(saved)}/200" in resumed.stderr
    logged = [int(m) for m in re.findall(r"^step (\d+)/200 ", resumed.stderr, re.MULTILINE)]
    assert logged == list(range(max(saved) + 10, 201, 10))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["steps"] == 200
    assert manifest["metrics"]["resumed_from_step"] == max(saved)
    assert not (run_dir / "checkpoints").exists()
