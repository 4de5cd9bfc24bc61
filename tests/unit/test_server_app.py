"""The REST API through FastAPI's test client: auth, manifests, jobs, eval, adapters, audit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from provenir.server.app import create_app  # noqa: E402


def _train_body(tmp_path: Path, name: str = "api") -> dict:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}+{i}?", "output": str(2 * i)}) + "\n"
                            for i in range(10)))
    return {"config": {"name": name, "backend": "stub", "max_steps": 2,
                       "data": {"train_path": str(data), "template": "chatml"}}}


def _wait(client: TestClient, job_id: str, headers=None) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture()
def client(tmp_path):
    app = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(tmp_path / "audit"))
    with TestClient(app) as test_client:
        yield test_client


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_train_job_then_manifests_and_adapters(client, tmp_path):
    response = client.post("/jobs/train", json=_train_body(tmp_path))
    assert response.status_code == 202
    job = _wait(client, response.json()["job_id"])
    assert job["status"] == "completed" and job["verified"] is True, job
    run_id = job["run_id"]
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


def test_failed_job_reports_error(client, tmp_path):
    body = _train_body(tmp_path)
    Path(body["config"]["data"]["train_path"]).write_text('{"broken\n')
    job = _wait(client, client.post("/jobs/train", json=body).json()["job_id"])
    assert job["status"] == "failed" and "invalid JSON" in job["error"]


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


def test_eval_endpoint(client):
    records = [{"instruction": "2+2?", "output": "4"}, {"instruction": "3+3?", "output": "6"}]
    response = client.post("/eval", json={"records": records, "predictions": ["4", "7"]})
    assert response.status_code == 200, response.text
    metrics = response.json()["metrics"]
    assert metrics["exact_match"]["mean"] == 0.5 and metrics["exact_match"]["n"] == 2
    mismatch = client.post("/eval", json={"records": records, "predictions": ["4"]})
    assert mismatch.status_code == 422 and "2 records but 1 predictions" in mismatch.json()["detail"]


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
