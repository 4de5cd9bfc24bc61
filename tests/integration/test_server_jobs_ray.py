"""REST jobs on a real Ray cluster: submitted through one app, followed and stopped through another,
surviving a server killed mid-job, and a stopped training run resumed to the same adapter.

A Ray head is started for this module on 127.0.0.1 only (its own ports and temp dir, token auth
off) and stopped with its process group at the end; the session's embedded Ray is untouched. The
apps are ``create_app`` instances on one store, as two Serve replicas or a restarted server are.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from provenir.server.app import create_app  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **extra})
    return {k: v for k, v in env.items() if v is not None}  # None: leave the variable unset


@contextmanager
def _ray_head(folder: Path, **env: str):
    """A Ray head on 127.0.0.1 (its own ports and temp dir) until the block ends."""
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env = _free_ports(7)
    temp = Path("/tmp") / f"provenir-jobs-{os.getpid()}-{gcs}"  # Ray's socket paths must stay short
    log = folder / "head.log"
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
    ]
    url = f"http://127.0.0.1:{dashboard}"
    with open(log, "wb") as out:
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(**env),
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # the job server answers (401 when it wants a token): the head is up
            try:
                if httpx.get(f"{url}/api/jobs/", timeout=5).status_code in (200, 401, 403):
                    break
            except httpx.HTTPError:
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield {"dashboard": url, "gcs": f"127.0.0.1:{gcs}"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process's job client speaks to the head as it is
    try:
        with _ray_head(tmp_path_factory.mktemp("ray-head")) as head:
            yield head
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _app(store: Path, ray_head: dict):
    return TestClient(create_app(str(store), api_token="tok", audit_dir=str(store.parent / "audit"),
                                 ray_address=ray_head["dashboard"]))


AUTH = {"Authorization": "Bearer tok"}


def _follow(client, job_id: str, until=FINISHED, timeout: float = 300, headers=AUTH, check=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in until or (check is not None and check(job)):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
        time.sleep(0.3)


def _stub_body(tmp_path: Path, name: str = "rest-stub") -> dict:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}+{i}?", "output": str(2 * i)}) + "\n"
                            for i in range(10)))
    return {"config": {"name": name, "backend": "stub", "max_steps": 2,
                       "data": {"train_path": str(data), "template": "chatml"}}}


def test_a_job_submitted_through_one_app_is_followed_through_another(ray_head, tmp_path):
    from ray.job_submission import JobSubmissionClient

    store = tmp_path / "store"
    with _app(store, ray_head) as first, _app(store, ray_head) as second:
        submitted = first.post("/jobs/train", json=_stub_body(tmp_path), headers=AUTH)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert job["status"] == "PENDING" and job["submitter"] == "api-token"
        assert job["ray_address"] == ray_head["dashboard"]
        assert [j["job_id"] for j in second.get("/jobs", headers=AUTH).json()] == [job["job_id"]]
        done = _follow(second, job["job_id"])
        assert done["status"] == "SUCCEEDED", done
        assert done["verified"] is True and done["run_ids"] == [done["run_id"]]
        assert first.get(f"/manifests/{done['run_id']}", headers=AUTH).json()["status"] == "completed"
        log = second.get(f"/jobs/{job['job_id']}/logs", headers=AUTH).text
        assert f'"run_id": "{done["run_id"]}"' in log
        assert first.get(f"/jobs/{job['job_id']}", headers=AUTH).json() == done
        eval_records = tmp_path / "eval.jsonl"
        eval_records.write_text("".join(json.dumps({"instruction": f"{i}?", "output": str(i)}) + "\n"
                                        for i in range(4)))
        (tmp_path / "preds.txt").write_text("0\n1\nx\ny\n")
        scored = first.post("/jobs/eval", headers=AUTH, json={"config": {
            "dataset": str(eval_records), "predictions": str(tmp_path / "preds.txt"), "metrics": ["exact_match"]}})
        assert scored.status_code == 202, scored.text
        followed = second.get(f"/jobs/{scored.json()['job_id']}/logs?follow=true", headers=AUTH)
        assert followed.status_code == 200 and '"exact_match"' in followed.text
        assert _follow(second, scored.json()["job_id"])["status"] == "SUCCEEDED"
    # the Ray dashboard lists the jobs under readable names, with the job ids
    ray_jobs = JobSubmissionClient(ray_head["dashboard"])
    info = ray_jobs.get_job_info(job["submission_id"])
    assert re.fullmatch(r"provenir-train-[0-9a-f]{8}", job["submission_id"])
    assert info.metadata["job_id"] == job["job_id"] and info.metadata["kind"] == "train"
    assert info.entrypoint == job["entrypoint"] and info.entrypoint.startswith("provenir train ")


def test_a_server_killed_mid_job_is_restarted_and_the_job_finishes(ray_head, tmp_path):
    store = tmp_path / "store"
    port = _free_ports(1)[0]
    env = _env(RAY_ADDRESS=ray_head["gcs"], PROVENIR_API_TOKEN="tok")  # the GCS address works as well
    command = [str(BIN / "provenir"), "serve", "--port", str(port), "--store", str(store)]
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                return server
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, "provenir serve did not start"
                time.sleep(0.2)

    server = start()
    try:
        job = httpx.post(f"{url}/jobs/train", json=_stub_body(tmp_path, "restarted"), headers=AUTH, timeout=60)
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        os.killpg(server.pid, signal.SIGKILL)  # no clean shutdown: the job's state is all in the store
        server.wait(timeout=30)
        server = start()
        listed = httpx.get(f"{url}/jobs", headers=AUTH, timeout=30).json()
        assert [j["job_id"] for j in listed] == [job_id]
        done = _follow(httpx.Client(base_url=url, timeout=30), job_id)
        assert done["status"] == "SUCCEEDED" and done["run_id"], done
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _trl_config(tmp_path: Path, model: Path) -> dict:
    data = tmp_path / "copy.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Copy {i:04d}", "output": f"{i:04d}"}) + "\n"
                            for i in range(0, 9999, 611)))
    # 17 records, batch 4: 5 steps an epoch; a checkpoint every 5 steps, stopped long before step 60
    return {"name": "rest-trl", "backend": "trl", "seed": 7, "model_name_or_path": str(model),
            "max_steps": 60, "batch_size": 4, "data": {"train_path": str(data), "template": "chatml"},
            "peft": {"rank": 2, "alpha": 4},
            "training": {"num_epochs": 12, "save_steps": 5, "logging_steps": 5}}


def test_delete_stops_a_training_run_that_resume_completes_bit_identically(ray_head, tmp_path, tiny_model_dir):
    from provenir.core.hashing import sha256_file

    store = tmp_path / "store"
    config = _trl_config(tmp_path, tiny_model_dir)
    with _app(store, ray_head) as first, _app(store, ray_head) as second:
        job = first.post("/jobs/train", json={"config": config}, headers=AUTH).json()
        assert job["status"] == "PENDING", job
        # followed through the other app until the run has a complete checkpoint, then stopped there
        deadline = time.monotonic() + 300
        while not list(store.glob("runs/*/checkpoints/hf/checkpoint-*/trainer_state.json")):
            state = second.get(f"/jobs/{job['job_id']}", headers=AUTH).json()
            assert state["status"] in ("PENDING", "RUNNING"), state
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        stopping = second.delete(f"/jobs/{job['job_id']}", headers=AUTH)
        assert stopping.status_code == 202 and stopping.json()["stop_requested"] is True, stopping.text
        stopped = _follow(first, job["job_id"])
        log = first.get(f"/jobs/{job['job_id']}/logs", headers=AUTH).text
    assert stopped["status"] == "STOPPED", (stopped, log[-3000:])
    [run_dir] = (store / "runs").iterdir()
    assert stopped["run_ids"] == [run_dir.name]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and manifest["metrics"]["error"] == "stopped by SIGTERM", log[-3000:]
    assert manifest["metrics"]["stopped_at_step"] < 60

    # the run says how to continue it; that command completes it under its own id
    [line] = [ln for ln in log.splitlines() if ln.startswith("stopped by SIGTERM")]
    resume = line.split(" with: ", 1)[1]
    assert resume.startswith("provenir train ") and resume.endswith(f"--resume {run_dir.name}")
    resumed = subprocess.run([str(BIN / "provenir"), *shlex.split(resume)[1:], "--json"], capture_output=True,
                             text=True, env=_env(), timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads(resumed.stdout)["manifest"]
    assert manifest["run_id"] == run_dir.name and manifest["status"] == "completed"
    assert manifest["metrics"]["steps"] == 60 and manifest["metrics"]["resumed_from_step"] >= 5

    straight_config = tmp_path / "straight.yaml"
    straight_config.write_text(json.dumps(config))
    straight = subprocess.run([str(BIN / "provenir"), "train", str(straight_config), "--store",
                               str(tmp_path / "straight"), "--json", "--quiet"],
                              capture_output=True, text=True, env=_env(), timeout=400)
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = json.loads(straight.stdout)["manifest"]
    weights = "adapter/adapter_model.safetensors"
    assert manifest["artifacts"][weights] == reference["artifacts"][weights]
    assert manifest["artifacts"][weights] == sha256_file(run_dir / weights)
    assert manifest["config_hash"] == reference["config_hash"]


def test_two_serve_replicas_answer_for_the_same_jobs(ray_head, tmp_path):
    """``provenir serve --ray-serve --replicas 2``: the replicas submit through the cluster they run
    on; every request, whichever replica takes it, sees the job, and a stop through any of them works."""
    store = tmp_path / "store"
    port = _free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / "provenir"), "serve", "--ray-serve", "--address", ray_head["gcs"], "--replicas", "2",
         "--port", str(port), "--store", str(store)],
        env=_env(PROVENIR_API_TOKEN="tok"), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        http = httpx.Client(base_url=url, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "Ray Serve did not start"
            time.sleep(0.5)
        jobs = [http.post("/jobs/train", json=_stub_body(tmp_path, f"served-{i}"), headers=AUTH) for i in range(2)]
        assert [j.status_code for j in jobs] == [202, 202], [j.text for j in jobs]
        ids = [j.json()["job_id"] for j in jobs]
        http.delete(f"/jobs/{ids[1]}", headers=AUTH).raise_for_status()
        answers = [http.get(f"/jobs/{ids[0]}", headers=AUTH) for _ in range(20)]  # spread over both replicas
        assert {a.status_code for a in answers} == {200}
        assert sorted(j["job_id"] for j in http.get("/jobs", headers=AUTH).json()) == sorted(ids)
        done = _follow(http, ids[0])
        assert done["status"] == "SUCCEEDED" and done["run_id"], done
        assert _follow(http, ids[1])["status"] == "STOPPED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        subprocess.run([str(BIN / "serve"), "shutdown", "-y", "--address", ray_head["dashboard"]],
                       env=_env(), capture_output=True, timeout=120)


def _uvicorn(store: Path, **env: str | None) -> tuple[subprocess.Popen, str]:
    port = _free_ports(1)[0]
    server = subprocess.Popen([str(BIN / "provenir"), "serve", "--port", str(port), "--store", str(store)],
                              env=_env(PROVENIR_API_TOKEN="tok", **env), stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return server, url
        except httpx.HTTPError:
            assert server.poll() is None and time.monotonic() < deadline, "provenir serve did not start"
            time.sleep(0.2)


def test_jobs_on_a_cluster_with_token_authentication(tmp_path):
    """RAY_AUTH_MODE=token on the head: the server's job client needs the cluster's token
    (RAY_AUTH_TOKEN here; ~/.ray/auth_token or RAY_AUTH_TOKEN_PATH work too); without it a job is
    a 503 that says what is missing, and nothing is left running."""
    import secrets

    token = secrets.token_hex(16)
    store = tmp_path / "store"
    with _ray_head(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token) as head:
        assert httpx.get(f"{head['dashboard']}/api/jobs/", timeout=10).status_code in (401, 403)
        server, url = _uvicorn(store, RAY_ADDRESS=head["dashboard"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        try:
            job = httpx.post(f"{url}/jobs/train", json=_stub_body(tmp_path, "token"), headers=AUTH, timeout=60)
            assert job.status_code == 202, job.text
            done = _follow(httpx.Client(base_url=url, timeout=30), job.json()["job_id"])
            assert done["status"] == "SUCCEEDED" and done["run_id"], done
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        server, url = _uvicorn(store, RAY_ADDRESS=head["dashboard"], RAY_AUTH_MODE="token",
                               RAY_AUTH_TOKEN_PATH=str(tmp_path / "no-token-here"))
        try:
            refused = httpx.post(f"{url}/jobs/train", json=_stub_body(tmp_path, "no-token"), headers=AUTH, timeout=60)
            assert refused.status_code == 503, refused.text
            assert "RAY_AUTH_TOKEN" in refused.json()["detail"], refused.text
            finished = httpx.get(f"{url}/jobs", headers=AUTH, timeout=30).json()
            assert [j["status"] for j in finished] == ["SUCCEEDED", "FAILED"], finished
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@pytest.mark.before_any_ray
def test_without_an_address_the_server_starts_the_embedded_ray_with_token_auth(tmp_path):
    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT as agent_port

    from provenir.distributed.jobs import _port_free

    if not _port_free(agent_port):
        # ray.init has no option to move the agent; the server says so (a 503), see the next test
        pytest.skip(f"another Ray instance on this machine holds the dashboard agent's port {agent_port}")
    records = tmp_path / "eval.jsonl"
    records.write_text("".join(json.dumps({"instruction": f"{i}?", "output": str(i)}) + "\n" for i in range(3)))
    (tmp_path / "preds.txt").write_text("0\n1\n2\n")
    ray_tmp = Path("/tmp") / f"provenir-embedded-{os.getpid()}"  # Ray's socket paths must stay short
    # Ray's own default: a local cluster turns token authentication on and writes its token to
    # ~/.ray/auth_token (a home of the test's here); the server's job client and the job use it
    home = tmp_path / "home"
    server, url = _uvicorn(tmp_path / "store", RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE=None, HOME=str(home))
    try:
        job = httpx.post(f"{url}/jobs/eval", headers=AUTH, timeout=120, json={"config": {
            "dataset": str(records), "predictions": str(tmp_path / "preds.txt"), "metrics": ["exact_match"]}})
        assert job.status_code == 202, job.text
        assert job.json()["ray_address"].startswith("http://127.0.0.1:"), job.json()
        done = _follow(httpx.Client(base_url=url, timeout=30), job.json()["job_id"])
        assert done["status"] == "SUCCEEDED", done
        result = json.loads((tmp_path / "store" / "jobs" / done["job_id"] / "result.json").read_text())
        assert result["metrics"]["exact_match"]["mean"] == 1.0
        assert (home / ".ray" / "auth_token").is_file()  # the embedded Ray ran with token authentication
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)
