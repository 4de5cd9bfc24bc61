"""`provenir sweep` for real: the tiny model on CPU, 4 trials over learning rate × rank on Ray Tune,
each a trl run on Ray Train; ASHA stops trials early; the same sweep as a Ray job gives the same
table and the same best adapter; a sweep whose driver is killed resumes without rerunning the
trials that had ended.

The sweeps run against one Ray head started for this module (127.0.0.1 only, token auth off, its
own temp dir), as the train entry point's tests do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    import socket

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
    temp = Path("/tmp") / f"provenir-sweep-head-{os.getpid()}"  # Ray's socket paths must stay short
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
        yield {"dashboard": f"http://127.0.0.1:{dashboard}", "gcs": f"127.0.0.1:{gcs}"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


COPY = Path(__file__).resolve().parents[2] / "examples" / "data"


def _sweep_config(tmp_path: Path, model: Path) -> Path:
    (tmp_path / "train.jsonl").write_text("".join((COPY / "copy_train.jsonl").read_text().splitlines(True)[:64]))
    (tmp_path / "eval.jsonl").write_text("".join((COPY / "copy_eval.jsonl").read_text().splitlines(True)[:16]))
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""\
name: copy-sweep
backend: trl
seed: 0
model_name_or_path: {model}
max_steps: 8
batch_size: 8
data: {{train_path: train.jsonl, eval_path: eval.jsonl, template: chatml}}
peft: {{rank: 4, alpha: 8, dropout: 0.0, target_modules: [all-linear]}}
training: {{learning_rate: 0.003, num_epochs: 100, max_seq_length: 32, logging_steps: 2}}
governance: {{pii: "off", secrets: "off", audit: false}}
curation: {{decontamination: "off"}}
sweep:
  metric: eval_loss
  mode: min
  search: grid
  eval_steps: 2
  max_concurrent_trials: 2
  scheduler: {{type: asha, grace_period: 1, reduction_factor: 2}}
  resources: {{workers: 1, cpus_per_worker: 0.9, trainable_cpus: 0.1}}
  search_space:
    training.learning_rate: [0.003, 0.00001]
    peft.rank: [4, 8]
""")
    return path


def _table(record: dict) -> list[tuple]:
    return [(t["index"], json.dumps(t["params"], sort_keys=True), t["status"], t["steps"],
             [(h["step"], h["value"]) for h in t["history"]]) for t in record["trials"]]


def _sweep_ids(store: Path) -> list[str]:
    runs = store / "runs"
    return sorted(p.name for p in runs.iterdir() if (p / "sweep.json").is_file()) if runs.is_dir() else []


@pytest.fixture(scope="module")
def first_sweep(ray_head, tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep-a")
    store = tmp / "store"
    run = subprocess.run(
        [str(BIN / "provenir"), "sweep", str(_sweep_config(tmp, tiny_model_dir)), "--store", str(store),
         "--json", "--address", ray_head["gcs"]],
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return json.loads(run.stdout), store


def test_asha_stops_trials_early_and_the_best_trial_improved(first_sweep):
    from provenir.core.run import verify_run
    from provenir.core.store import ArtifactStore

    record, root = first_sweep
    store = ArtifactStore(str(root))
    assert len(record["trials"]) == 4 and record["status"] == "completed"
    stopped = [t for t in record["trials"] if t["status"] == "stopped"]
    assert stopped and all(t["steps_run"] < record["max_steps"] for t in stopped)
    best = record["best"]
    history = [h["value"] for h in record["trials"][best["index"]]["history"]]
    assert len(history) == record["evaluations"] and history[-1] < history[0]  # eval loss fell
    assert best["params"]["training.learning_rate"] == 0.003
    manifest = store.load_manifest(best["run_id"])
    assert manifest.status == "completed" and manifest.provenance == [record["sweep_id"]]
    assert manifest.artifacts["adapter/adapter_model.safetensors"] == best["adapter_sha256"]
    assert verify_run(store, best["run_id"]).ok
    assert record["sweep_id"] in store.ancestors(stopped[0]["run_id"])  # lineage reaches the sweep
    assert store.load_manifest(stopped[0]["run_id"]).status == "stopped"
    assert store.load_manifest(record["sweep_id"]).status == "completed"
    best_config = (root / "runs" / record["sweep_id"] / "best_config.yaml").read_text()
    assert "learning_rate: 0.003" in best_config and f"rank: {best['params']['peft.rank']}" in best_config
    show = subprocess.run([str(BIN / "provenir"), "sweep", "show", record["sweep_id"], "--store", str(root), "--json"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert show.returncode == 0, show.stderr[-2000:]
    assert [r["status"] for r in json.loads(show.stdout)["table"]] == [t["status"] for t in record["trials"]]


def test_the_same_sweep_as_a_ray_job_gives_the_same_table_and_best_adapter(first_sweep, ray_head, tiny_model_dir, tmp_path):
    record, _ = first_sweep
    store = tmp_path / "store"
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"], "--",
         str(BIN / "provenir"), "sweep", str(_sweep_config(tmp_path, tiny_model_dir)), "--store", str(store), "--quiet"],
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert job.returncode == 0 and "succeeded" in job.stdout.lower(), job.stdout[-4000:] + job.stderr[-3000:]
    (sweep_id,) = _sweep_ids(store)
    again = json.loads((store / "runs" / sweep_id / "sweep.json").read_text())
    assert _table(again) == _table(record)
    assert again["best"]["index"] == record["best"]["index"]
    assert again["best"]["adapter_sha256"] == record["best"]["adapter_sha256"]


def test_a_killed_driver_resumes_without_rerunning_ended_trials(first_sweep, ray_head, tiny_model_dir, tmp_path):
    record, _ = first_sweep
    store = tmp_path / "store"
    config = _sweep_config(tmp_path, tiny_model_dir)
    command = [str(BIN / "provenir"), "sweep", str(config), "--store", str(store), "--quiet",
               "--address", ray_head["gcs"]]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                              start_new_session=True)
    deadline = time.monotonic() + 400
    ended: list[dict] = []
    while time.monotonic() < deadline and driver.poll() is None:
        ids = _sweep_ids(store)
        if ids:
            try:
                partial = json.loads((store / "runs" / ids[0] / "sweep.json").read_text())
            except ValueError:
                partial = {"trials": []}
            ended = [t for t in partial["trials"] if t["status"] in ("completed", "stopped")]
            if ended:
                break
        time.sleep(0.5)
    assert driver.poll() is None and ended, "the sweep finished (or failed) before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    (sweep_id,) = _sweep_ids(store)
    before = {t["index"]: (store / "runs" / t["run_id"] / "manifest.json").read_bytes() for t in ended}
    resumed = subprocess.run([*command[:2], "--resume", sweep_id, *command[3:], "--json"],
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    final = json.loads(resumed.stdout)
    attempts = {t["index"]: t["attempts"] for t in final["trials"]}
    for index, manifest in before.items():
        assert attempts[index] == 1  # not started again
        assert (store / "runs" / final["trials"][index]["run_id"] / "manifest.json").read_bytes() == manifest
    assert _table(final) == _table(record)
    assert final["best"]["adapter_sha256"] == record["best"]["adapter_sha256"]
