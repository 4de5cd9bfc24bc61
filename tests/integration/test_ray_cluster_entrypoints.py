"""`provenir train` against a separate Ray cluster: as a Ray job, and through Ray Client.

A Ray head is started for this module on 127.0.0.1 only (its own ports, token auth off, a temp dir
of its own) and stopped with its process group at the end; the session's embedded Ray is untouched.
The training is real: the trl backend with LoRA on the tiny local model, one DDP worker on Ray Train.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env = _free_ports(7)
    temp = Path("/tmp") / f"provenir-head-{os.getpid()}"  # Ray's socket paths must stay short
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
    ]
    with open(log, "wb") as out:
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", f"http://127.0.0.1:{dashboard}"],
                                   capture_output=True, text=True, env=_env(), timeout=60)
            if probe.returncode == 0:
                break
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not come up:\n{log.read_text()[-3000:]}\n{probe.stderr[-2000:]}")
            time.sleep(2)
        yield {"dashboard": f"http://127.0.0.1:{dashboard}", "client": f"ray://127.0.0.1:{client}",
               "logs": temp / "session_latest" / "logs"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def _config(tmp_path: Path, tiny_model_dir: Path) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Reverse {i:03d}", "output": f"{i:03d}"[::-1]}) + "\n"
                            for i in range(24)))
    config = tmp_path / "ddp.yaml"
    config.write_text(f"""\
name: cluster-ddp
backend: trl
seed: 3
model_name_or_path: {tiny_model_dir}
max_steps: 4
batch_size: 2
data:
  train_path: {data}
  template: alpaca
peft:
  rank: 4
  alpha: 8
training:
  learning_rate: 0.001
  max_seq_length: 64
  save_steps: 2
  logging_steps: 2
distributed:
  strategy: ddp
  num_gpus: 1
  use_gpu: false
""")
    return config


def _client_server_logs(logs: Path) -> str:
    """The head's Ray Client proxy and per-driver server logs, for a failure message."""
    parts = []
    for path in sorted(logs.glob("ray_client_server*")):
        parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
    return "\n".join(parts)


def _manifest(store: Path) -> dict:
    from provenir.core.store import ArtifactStore

    (run_id,) = ArtifactStore(str(store)).list_runs()
    return ArtifactStore(str(store)).load_manifest(run_id).to_dict()


def test_train_as_a_ray_job(ray_head, tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"], "--",
         str(BIN / "provenir"), "train", str(_config(tmp_path, tiny_model_dir)), "--store", str(store)],
        capture_output=True, text=True, env=_env(), timeout=480,
    )
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    assert "succeeded" in job.stdout.lower(), job.stdout[-4000:]
    # rank 0's progress lines reach the job's driver (and so `ray job submit`'s log stream)
    assert re.findall(r"step (\d+)/4 ", job.stdout) == ["2", "4"], job.stdout[-4000:]
    manifest = _manifest(store)
    assert manifest["status"] == "completed" and manifest["config"]["distributed"]["strategy"] == "ddp"
    assert any(name.endswith("adapter_model.safetensors") for name in manifest["artifacts"])


def test_train_through_ray_client(ray_head, tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    run = subprocess.run(
        [str(BIN / "provenir"), "train", str(_config(tmp_path, tiny_model_dir)), "--store", str(store),
         "--address", ray_head["client"]],
        capture_output=True, text=True, env=_env(), timeout=480,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + _client_server_logs(ray_head["logs"])
    assert re.findall(r"^step (\d+)/4 ", run.stderr, re.MULTILINE) == ["2", "4"], run.stderr[-4000:]
    manifest = _manifest(store)
    assert manifest["status"] == "completed"
    assert any(name.endswith("adapter_model.safetensors") for name in manifest["artifacts"])
