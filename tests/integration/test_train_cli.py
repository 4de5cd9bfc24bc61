"""`provenir train`: trains from a YAML config, prints the manifest; resume errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
    payload = json.loads(out.stdout[out.stdout.index("{"):])
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
