"""The REST API through FastAPI's test client: auth, manifests, jobs, eval, adapters, audit.

Jobs here run their real ``provenir …`` command line as a local process through a stand-in for
Ray's ``JobSubmissionClient`` (same methods, same statuses); on a real Ray cluster they are
tested in ``tests/integration/test_server_jobs_ray.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from provenir.server.app import create_app  # noqa: E402


class ProcessJobClient:
    """``JobSubmissionClient``'s methods over local processes: what the API needs of Ray's."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.jobs: dict[str, dict] = {}

    def get_address(self) -> str:
        return "local-processes"

    def submit_job(self, *, entrypoint, submission_id, metadata, runtime_env, entrypoint_num_cpus=None):
        env = dict(os.environ)
        for key, value in runtime_env.get("env_vars", {}).items():
            env[key] = os.path.expandvars(value)  # Ray expands ${VAR} from the node's environment
        log = self.log_dir / f"{submission_id}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(entrypoint, shell=True, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        self.jobs[submission_id] = {"proc": proc, "log": log, "metadata": metadata, "stopped": False,
                                    "entrypoint": entrypoint}
        return submission_id

    def get_job_info(self, submission_id):
        if submission_id not in self.jobs:
            raise RuntimeError(f"Job {submission_id} does not exist")
        job = self.jobs[submission_id]
        code = job["proc"].poll()
        status = ("RUNNING" if code is None else "STOPPED" if job["stopped"]
                  else "SUCCEEDED" if code == 0 else "FAILED")
        return SimpleNamespace(status=status, message=f"exit {code}", driver_exit_code=code)

    def get_job_logs(self, submission_id):
        return self.jobs[submission_id]["log"].read_text(errors="replace")

    async def tail_job_logs(self, submission_id):
        import asyncio

        job, offset = self.jobs[submission_id], 0
        while True:
            done = job["proc"].poll() is not None
            text = job["log"].read_text(errors="replace")
            if len(text) > offset:
                yield text[offset:]
                offset = len(text)
            if done:
                return
            await asyncio.sleep(0.05)

    def stop_job(self, submission_id):
        job = self.jobs[submission_id]
        job["stopped"] = True
        os.killpg(job["proc"].pid, signal.SIGTERM)
        return True

    def close(self) -> None:
        for job in self.jobs.values():
            if job["proc"].poll() is None:
                os.killpg(job["proc"].pid, signal.SIGKILL)
            job["proc"].wait(timeout=30)


def _train_body(tmp_path: Path, name: str = "api") -> dict:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}+{i}?", "output": str(2 * i)}) + "\n"
                            for i in range(10)))
    return {"config": {"name": name, "backend": "stub", "max_steps": 2,
                       "data": {"train_path": str(data), "template": "chatml"}}}


def _wait(client: TestClient, job_id: str, headers=None) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture()
def jobs_client(tmp_path):
    client = ProcessJobClient(tmp_path)
    yield client
    client.close()


@pytest.fixture()
def client(tmp_path, jobs_client):
    app = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(tmp_path / "audit"),
                     job_client=jobs_client)
    with TestClient(app) as test_client:
        yield test_client


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_train_job_then_manifests_and_adapters(client, tmp_path, jobs_client):
    response = client.post("/jobs/train", json=_train_body(tmp_path))
    assert response.status_code == 202
    submitted = response.json()
    assert submitted["status"] == "PENDING" and submitted["kind"] == "train" and submitted["name"] == "api"
    assert submitted["submitter"] == "anonymous"
    job_id = submitted["job_id"]
    # the command a user would type, reading the config the server wrote into the store
    config_path = tmp_path / "store" / "jobs" / job_id / "config.yaml"
    assert submitted["entrypoint"].startswith(f"provenir train {config_path} --store {tmp_path / 'store'} --json")
    from provenir.core.hashing import sha256_bytes

    assert submitted["config_hash"] == sha256_bytes(config_path.read_bytes())
    ray_side = jobs_client.jobs[submitted["submission_id"]]
    assert submitted["submission_id"] == f"provenir-train-{job_id.rsplit('-', 1)[1]}"
    assert ray_side["metadata"]["job_id"] == job_id and ray_side["metadata"]["kind"] == "train"

    job = _wait(client, job_id)
    assert job["status"] == "SUCCEEDED" and job["verified"] is True, job
    run_id = job["run_id"]
    assert job["run_ids"] == [run_id] and job["exit_code"] == 0
    record = json.loads((tmp_path / "store" / "jobs" / job_id / "job.json").read_text())
    assert record["status"] == "SUCCEEDED" and record["run_id"] == run_id
    assert job["log"] == str(tmp_path / "store" / "jobs" / job_id / "log.txt")
    assert client.get(f"/jobs/{job_id}/logs").text == Path(job["log"]).read_text()
    assert '"run_id": "' + run_id in client.get(f"/jobs/{job_id}/logs?follow=true").text
    assert client.get("/manifests").json() == [run_id]
    manifest = client.get(f"/manifests/{run_id}").json()
    assert manifest["run_id"] == run_id and manifest["status"] == "completed"
    assert client.get(f"/manifests/{run_id}/verify").json()["ok"] is True
    adapters = client.get("/adapters").json()
    assert [a["run_id"] for a in adapters] == [run_id]
    assert set(adapters[0]["files"]) == {"adapter/stub_adapter.json"}
    assert adapters[0]["files"]["adapter/stub_adapter.json"] == manifest["artifacts"]["adapter/stub_adapter.json"]
    audit = [json.loads(line) for line in client.get("/audit").text.splitlines()]
    assert any(e.get("event") == "server.train" and e.get("details", e).get("run_id") == run_id
               for e in audit), audit
    assert [e.get("event") for e in audit].count("server.job.finish") == 1  # once, however often it is read
    assert client.delete(f"/jobs/{job_id}").status_code == 409


def test_failed_job_reports_error(client, tmp_path):
    body = _train_body(tmp_path)
    Path(body["config"]["data"]["train_path"]).write_text('{"broken\n')
    job = _wait(client, client.post("/jobs/train", json=body).json()["job_id"])
    assert job["status"] == "FAILED" and "invalid JSON" in job["error"], job
    assert job["exit_code"] != 0


def test_a_new_app_on_the_same_store_answers_for_the_job(client, tmp_path, jobs_client):
    job_id = client.post("/jobs/train", json=_train_body(tmp_path)).json()["job_id"]
    other = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(tmp_path / "audit"),
                       job_client=jobs_client)
    with TestClient(other) as second:
        assert [j["job_id"] for j in second.get("/jobs").json()] == [job_id]
        job = _wait(second, job_id)
    assert job["status"] == "SUCCEEDED" and job["run_id"]
    assert client.get(f"/jobs/{job_id}").json() == job  # the finished record, as the other app wrote it


def test_resume_through_the_api_and_relative_paths(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in a body are the server's, as the job reads them
    body = _train_body(tmp_path)
    body["config"]["data"]["train_path"] = "train.jsonl"
    first = _wait(client, client.post("/jobs/train", json=body).json()["job_id"])
    assert first["status"] == "SUCCEEDED", first
    again = client.post("/jobs/train", json={**body, "resume": first["run_id"]})
    assert again.status_code == 202 and again.json()["entrypoint"].endswith(f"--resume {first['run_id']}")
    refused = _wait(client, again.json()["job_id"])
    assert refused["status"] == "FAILED" and "already completed" in refused["error"], refused


@pytest.mark.before_any_ray
def test_no_cluster_for_the_job_is_a_503_saying_why(tmp_path, monkeypatch):
    import ray

    from provenir.distributed import jobs

    if ray.is_initialized():
        pytest.skip("this process is attached to a Ray already")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(jobs, "_port_free", lambda port: False)  # another Ray holds the agent's port
    app = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(tmp_path / "audit"))
    with TestClient(app) as client:
        refused = client.post("/jobs/train", json=_train_body(tmp_path))
        assert refused.status_code == 503 and "holds port 52365" in refused.json()["detail"], refused.text
        [job] = client.get("/jobs").json()
        assert job["status"] == "FAILED" and job["error"] == refused.json()["detail"]
    assert not ray.is_initialized()


def test_a_job_its_cluster_no_longer_knows_is_failed_saying_so(client, tmp_path, jobs_client):
    job_id = client.post("/jobs/train", json=_train_body(tmp_path)).json()["job_id"]
    restarted_cluster = ProcessJobClient(tmp_path)  # knows none of the jobs submitted before
    app = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(tmp_path / "audit"),
                     job_client=restarted_cluster)
    with TestClient(app) as other:
        lost = other.get(f"/jobs/{job_id}").json()
    assert lost["status"] == "FAILED" and "has no job provenir-train-" in lost["error"], lost
    assert client.get(f"/jobs/{job_id}").json() == lost  # the record is final, for every app


def test_eval_and_scan_jobs(client, tmp_path):
    records = tmp_path / "eval.jsonl"
    records.write_text("".join(json.dumps({"instruction": f"{i}?", "output": str(i),
                                           "note": "mail ana@example.org"}) + "\n" for i in range(4)))
    predictions = tmp_path / "predictions.txt"
    predictions.write_text("0\n1\n2\nx\n")
    eval_job = client.post("/jobs/eval", json={"config": {"dataset": str(records), "predictions": str(predictions),
                                                          "metrics": ["exact_match"], "n_resamples": 50}})
    assert eval_job.status_code == 202, eval_job.text
    scan_job = client.post("/jobs/scan", json={"data": [str(records)], "ner": "none", "mask": True})
    assert scan_job.status_code == 202, scan_job.text
    done = _wait(client, eval_job.json()["job_id"])
    assert done["status"] == "SUCCEEDED", done
    result = json.loads((tmp_path / "store" / "jobs" / done["job_id"] / "result.json").read_text())
    assert result["metrics"]["exact_match"]["mean"] == 0.75
    scanned = _wait(client, scan_job.json()["job_id"])
    assert scanned["status"] == "SUCCEEDED", scanned
    job_dir = tmp_path / "store" / "jobs" / scanned["job_id"]
    assert json.loads((job_dir / "report.json").read_text())["records"] == 4
    assert "ana@example.org" not in "".join(p.read_text() for p in (job_dir / "masked").rglob("*.jsonl"))


def test_stop_a_running_job(client, tmp_path, jobs_client):
    body = _train_body(tmp_path)
    job_id = client.post("/jobs/train", json=body).json()["job_id"]
    stopped = client.delete(f"/jobs/{job_id}")
    assert stopped.status_code == 202 and stopped.json()["stop_requested"] is True
    job = _wait(client, job_id)
    assert job["status"] == "STOPPED" and job["error"] is None


def test_bad_requests(client):
    assert client.post("/jobs/train", json={"config": {"name": "x", "backend": "nope"}}).status_code == 422
    assert client.post("/jobs/train", json={"config": {"name": "x"}, "provenance": ["../x"]}).status_code == 400
    queued = len(client.get("/jobs").json())
    missing = client.post("/jobs/train", json={"config": {"name": "x"}, "provenance": ["20260101-000000-gone-abcd1234"]})
    assert missing.status_code == 400 and "parent run(s) not found" in missing.json()["detail"]
    assert len(client.get("/jobs").json()) == queued  # refused before a job was queued
    assert client.post("/jobs/train", json={"cfg": {}}).status_code == 422
    assert client.get("/manifests/..%2Fetc").status_code in (400, 404)
    missing = client.get("/manifests/20260101T000000Z-none-00000000")
    assert missing.status_code == 404 and "has no manifest" in missing.json()["detail"]
    assert client.get("/manifests/bad..id").status_code == 400
    assert client.get("/jobs/nope").status_code == 404


def test_bad_job_requests(client, tmp_path):
    assert client.post("/jobs/train", json={"config": {"name": "x", "backend": "nope"}}).status_code == 422
    assert client.post("/jobs/train", json={"config": {"name": "x"}, "provenance": ["../x"]}).status_code == 400
    assert client.post("/jobs/train", json={"config": {"name": "x"}, "resume": "../x"}).status_code == 400
    gone = "20260101-000000-gone-abcd1234"
    assert client.post("/jobs/train", json={"config": {"name": "x"}, "resume": gone}).status_code == 400
    sweep = client.post("/jobs/sweep", json={})
    assert sweep.status_code == 422 and sweep.json()["detail"][0]["loc"] == ["body", "config"]
    no_section = client.post("/jobs/sweep", json={"config": {"name": "x"}})
    assert no_section.status_code == 422 and "sweep:" in no_section.json()["detail"][0]["msg"]
    bad_eval = client.post("/jobs/eval", json={"config": {"dataset": "d.jsonl"}})
    assert bad_eval.status_code == 422 and bad_eval.json()["detail"][0]["loc"] == ["body", "config", "predictions"]
    assert client.post("/jobs/scan", json={"data": []}).status_code == 422
    assert client.post("/jobs/scan", json={"data": ["x"], "pii": False, "secrets": False}).status_code == 422
    assert client.get("/jobs").json() == []  # nothing was submitted
    assert client.get("/jobs/20260101T000000000000Z-train-0123abcd").status_code == 404
    assert client.delete("/jobs/nope").status_code == 404
    assert client.get("/jobs/nope/logs").status_code == 404
    assert client.get(f"/jobs/{'x' * 5000}/logs?max_bytes=0").status_code == 422


def test_a_job_on_a_store_nodes_cannot_share_is_refused(tmp_path, jobs_client):
    app = create_app("memory://provenir-jobs", api_token="", audit_dir=str(tmp_path / "audit"),
                     job_client=jobs_client)
    with TestClient(app) as client:
        refused = client.post("/jobs/train", json=_train_body(tmp_path))
        assert refused.status_code == 400 and "filesystem the nodes share" in refused.json()["detail"]
        assert client.get("/jobs").json() == []


def test_eval_endpoint(client):
    records = [{"instruction": "2+2?", "output": "4"}, {"instruction": "3+3?", "output": "6"}]
    response = client.post("/eval", json={"records": records, "predictions": ["4", "7"]})
    assert response.status_code == 200, response.text
    metrics = response.json()["metrics"]
    assert metrics["exact_match"]["mean"] == 0.5 and metrics["exact_match"]["n"] == 2
    mismatch = client.post("/eval", json={"records": records, "predictions": ["4"]})
    assert mismatch.status_code == 422
    assert mismatch.json()["detail"][0]["loc"] == ["body", "predictions"]
    assert "2 records but 1 predictions" in mismatch.json()["detail"][0]["msg"]


def test_token_required_everywhere_but_health(tmp_path):
    app = create_app(str(tmp_path / "store"), api_token="s3cret", audit_dir=str(tmp_path / "audit"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        for path in ("/manifests", "/adapters", "/audit", "/jobs"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/eval", json={"records": [], "predictions": []}).status_code == 401


def test_token_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVENIR_API_TOKEN", "envtoken")
    with TestClient(create_app(str(tmp_path / "s"))) as client:
        assert client.get("/manifests").status_code == 401
        assert client.get("/manifests", headers={"Authorization": "Bearer envtoken"}).json() == []


def test_serve_refuses_public_host_without_token(capsys, monkeypatch):
    from provenir._cli.server import is_loopback
    from provenir.cli import main

    monkeypatch.delenv("PROVENIR_API_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(SystemExit) as info:
        main(["serve", "--host", "0.0.0.0"])
    assert info.value.code == 2
    assert "set an API token" in capsys.readouterr().err


def _sweep_body(tmp_path: Path, **section) -> dict:
    body = _train_body(tmp_path, name="sw")
    body["config"].update({"backend": "trl", "model_name_or_path": str(tmp_path / "no-model-here")})
    body["config"]["data"]["eval_path"] = body["config"]["data"]["train_path"]
    body["config"]["sweep"] = {"metric": "eval_loss", "mode": "min", "eval_steps": 1,
                               "search_space": {"peft.rank": [4, 8]}, **section}
    return body


def test_sweep_jobs_are_validated_then_run_provenir_sweep(client, tmp_path):
    bad = client.post("/jobs/sweep", json=_sweep_body(tmp_path, search_space={"peft.rank": [0]}))
    assert bad.status_code == 422, bad.text
    detail = bad.json()["detail"][0]
    assert detail["loc"] == ["body", "config", "sweep"] and "peft.rank" in detail["msg"] and ">= 1" in detail["msg"]
    unknown = client.post("/jobs/sweep", json=_sweep_body(tmp_path, search="bayes"))
    assert unknown.status_code == 422 and "search" in unknown.json()["detail"][0]["msg"]
    assert client.get("/jobs").json() == []  # nothing submitted

    submitted = client.post("/jobs/sweep", json=_sweep_body(tmp_path))
    assert submitted.status_code == 202, submitted.text
    record = submitted.json()
    assert record["kind"] == "sweep" and " sweep " in record["entrypoint"] and record["entrypoint"].endswith("--quiet")
    from provenir.core.sweep_config import load_sweep

    spec = load_sweep(tmp_path / "store" / "jobs" / record["job_id"] / "sweep.yaml", check_inputs=False)
    assert spec.base.backend == "trl" and set(spec.sweep.search_space) == {"peft.rank"}
    done = _wait(client, record["job_id"])  # the command itself ran: it refuses the missing model
    assert done["status"] == "FAILED" and "no-model-here" in (done["error"] or ""), done
