"""The REST API's edge under hostile input: strict JSON, bounded query parameters, a body-size
limit enforced while the body streams in, and a schemathesis fuzz run over the whole schema."""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from provenir.core.errors import ConfigError  # noqa: E402
from provenir.server.app import AUDIT_LIMIT_MAX, create_app  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TOKEN = "fuzz-token"
JSON = {"content-type": "application/json"}


class HeldJobs:
    """A stand-in for Ray's ``JobSubmissionClient`` that accepts jobs and never runs them: the
    edge is under test here, not the work (jobs on Ray: tests/integration/test_server_jobs_ray.py)."""

    def __init__(self) -> None:
        self.submitted: dict[str, str] = {}

    def get_address(self) -> str:
        return "held"

    def submit_job(self, *, entrypoint, submission_id, **_options):
        self.submitted[submission_id] = entrypoint
        return submission_id

    def get_job_info(self, submission_id):
        from types import SimpleNamespace

        if submission_id not in self.submitted:
            raise RuntimeError(f"Job {submission_id} does not exist")
        return SimpleNamespace(status="PENDING", message="held", driver_exit_code=None)

    def get_job_logs(self, submission_id):
        return ""

    async def tail_job_logs(self, submission_id):
        yield ""

    def stop_job(self, submission_id):
        return True


@pytest.fixture()
def client(tmp_path):
    app = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(tmp_path / "audit"),
                     max_body_bytes=64 * 1024, job_client=HeldJobs())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _train(config_json: bytes) -> bytes:
    return b'{"config": ' + config_json + b"}"


def _eval(output_json: bytes) -> bytes:
    return b'{"records": [{"instruction": "q", "output": ' + output_json + b'}], "predictions": ["a"]}'


def _only_error(response) -> dict:
    assert response.status_code == 422, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, list) and len(detail) == 1, detail
    return detail[0]


# --- strict JSON --------------------------------------------------------------------------------

NON_FINITE = {
    b"NaN": "NaN is not a number",
    b"Infinity": "Infinity is not a number",
    b"-Infinity": "-Infinity is not a number",
    b"1e999": "too large for a 64-bit float",
    b"-1e999": "too large for a 64-bit float",
    b"9" * 5000: "too many digits",
}


@pytest.mark.parametrize("number", sorted(NON_FINITE))
def test_non_finite_numbers_are_a_422_naming_the_field(client, number):
    body = _train(b'{"name": "x", "training": {"learning_rate": ' + number + b"}}")
    error = _only_error(client.post("/jobs/train", content=body, headers=JSON))
    assert error["loc"] == ["body", "config", "training", "learning_rate"]
    assert NON_FINITE[number] in error["msg"]
    error = _only_error(client.post("/eval", content=_eval(b"[1, " + number + b"]"), headers=JSON))
    assert error["loc"] == ["body", "records", 0, "output", 1]
    assert client.get("/jobs").json() == []  # nothing was queued


INVALID_UNICODE = {
    "escaped lone high surrogate": b'"\\ud800"',
    "escaped lone low surrogate": b'"a\\udfffb"',
    "escaped surrogates reversed": b'"\\udc00\\ud800"',
    "invalid UTF-8 byte": b'"caf\xe9"',
    "UTF-8-encoded surrogate": b'"\xed\xa0\x80"',
    "truncated UTF-8 sequence": b'"\xe2\x82"',
}


@pytest.mark.parametrize("name", sorted(INVALID_UNICODE))
def test_invalid_unicode_is_a_422_naming_the_field(client, name):
    text = INVALID_UNICODE[name]
    error = _only_error(client.post("/eval", content=_eval(text), headers=JSON))
    assert error["loc"] == ["body", "records", 0, "output"] and "Unicode" in error["msg"]
    error = _only_error(client.post("/jobs/train", content=_train(b'{"name": ' + text + b"}"), headers=JSON))
    assert error["loc"] == ["body", "config", "name"]
    keyed = client.post("/jobs/train", content=_train(b"{" + text + b': "x"}'), headers=JSON)
    assert _only_error(keyed)["loc"] == ["body", "config"] and "key" in _only_error(keyed)["msg"]


def test_a_valid_surrogate_pair_is_fine(client):
    response = client.post("/eval", content=_eval(b'"\\ud83d\\ude00"').replace(b'["a"]', b'["\\ud83d\\ude00"]'),
                           headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["metrics"]["exact_match"]["mean"] == 1.0


def test_broken_bodies_are_4xx_not_5xx(client):
    deep = b"[" * 20_000 + b"]" * 20_000  # under the 64 KiB limit
    assert _only_error(client.post("/eval", content=deep, headers=JSON))["type"] == "too_deep"
    nested = _train(b'{"name": "x", "data": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}")
    assert "nested more than" in _only_error(client.post("/jobs/train", content=nested, headers=JSON))["msg"]
    for body, headers in [
        (b'{"config": {"name": "x"', JSON),  # truncated
        (b"\xff\xfe\x00", JSON),  # not UTF-8 and not JSON
        (b"", JSON),
        (b"null", JSON),
        (b'"config"', JSON),
        (b"config=x", {"content-type": "application/x-www-form-urlencoded"}),
        (b"{}", {"content-type": "text/plain"}),
        ('{"config": {"name": "x"}}'.encode("utf-16"), JSON),  # JSON is UTF-8 (RFC 8259)
    ]:
        for path in ("/jobs/train", "/eval"):
            response = client.post(path, content=body, headers=headers)
            assert 400 <= response.status_code < 500, (path, body, response.status_code, response.text)
    assert client.post("/eval", json={"records": [], "predictions": []}).status_code == 400
    assert client.post("/eval", json={"records": [{"output": "a"}], "predictions": ["a"],
                                      "metrics": ["regex:("]}).status_code == 400


def test_config_errors_are_a_422_in_fastapi_shape(client):
    response = client.post("/jobs/train", json={"config": {"name": "x", "peft": {"rank": 0}}})
    errors = response.json()["detail"]
    assert response.status_code == 422 and errors[0]["loc"] == ["body", "config", "peft", "rank"]
    assert {"type", "loc", "msg"} <= set(errors[0])


# --- query parameters ---------------------------------------------------------------------------


@pytest.fixture()
def audited(tmp_path):
    from provenir.governance.audit import AuditLogger

    audit = tmp_path / "audit"
    logger = AuditLogger(str(audit), fsync=False)
    for index in range(5):
        logger.log("test.event", actor="test", index=index)
    app = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(audit))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client, [json.loads(line) for line in test_client.get("/audit").text.splitlines()]


@pytest.mark.parametrize(("query", "param"), [
    ("limit=-1", "limit"), ("limit=0", "limit"), ("limit=abc", "limit"), ("limit=1.5", "limit"),
    (f"limit={10 ** 12}", "limit"), (f"limit={AUDIT_LIMIT_MAX + 1}", "limit"), ("limit=", "limit"),
    ("since=not-a-date", "since"), ("since=1700000000", "since"), ("since=2026-13-01", "since"),
    ("since=", "since"), ("since=%ED%A0%80", "since"),
])
def test_bad_query_parameters_are_a_422_naming_them(audited, query, param):
    client, _ = audited
    error = client.get(f"/audit?{query}").json()["detail"][0]
    assert client.get(f"/audit?{query}").status_code == 422
    assert error["loc"] == ["query", param], error


def test_limit_and_since_select_entries(audited):
    client, entries = audited
    assert len(entries) == 5 and [e["details"]["index"] for e in entries] == [0, 1, 2, 3, 4]
    assert client.get("/audit?limit=2").text.splitlines() == client.get("/audit").text.splitlines()[:2]
    assert client.get(f"/audit?limit={AUDIT_LIMIT_MAX}").status_code == 200
    assert client.get("/audit?since=2999-01-01").text == ""
    assert len(client.get("/audit?since=2000-01-01").text.splitlines()) == 5
    third = entries[2]["ts"]
    assert [json.loads(x)["seq"] for x in client.get("/audit", params={"since": third}).text.splitlines()] == [
        e["seq"] for e in entries[2:]]
    offset = third.replace("Z", "+00:00")
    assert len(client.get("/audit", params={"since": offset, "limit": 1}).text.splitlines()) == 1
    naive = third.removesuffix("Z")  # no offset: read as UTC
    assert len(client.get("/audit", params={"since": naive}).text.splitlines()) == 3


# --- body size ----------------------------------------------------------------------------------


def test_declared_oversized_body_is_a_413(client):
    response = client.post("/eval", content=b"x" * (64 * 1024 + 1), headers=JSON)
    assert response.status_code == 413 and "larger than 65536 bytes" in response.json()["detail"]
    assert client.post("/eval", json={"records": [{"output": "a" * 60_000}], "predictions": ["a"]}).status_code == 200


def test_endless_chunked_body_is_refused_once_it_crosses_the_limit():
    """At the ASGI level (the test client would read a streamed body whole before sending it)."""
    import asyncio

    from provenir.server._edge import RequestGuard

    received = 0
    sent: list[dict] = []
    reached_app = False

    async def endless_body():
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}  # forever

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        nonlocal reached_app
        reached_app = True

    scope = {"type": "http", "method": "POST", "path": "/eval",
             "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]}
    asyncio.run(RequestGuard(app, max_body_bytes=64 * 1024)(scope, endless_body, send))
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    # 64 KiB read, the 65th chunk crossed the limit; then at most DRAIN_BYTES more dropped, never the endless rest
    from provenir.server._edge import DRAIN_BYTES

    assert 65 < received <= 65 + DRAIN_BYTES // 1024 + 1 and not reached_app


def test_a_body_just_over_the_limit_is_read_to_its_end_before_the_413():
    """So a client still sending sees the 413, not a connection reset (the drain is bounded)."""
    import asyncio

    from provenir.server._edge import RequestGuard

    chunks = [{"type": "http.request", "body": b"x" * 1024, "more_body": i < 79} for i in range(80)]
    taken = 0
    sent: list[dict] = []

    async def receive():
        nonlocal taken
        taken += 1
        return chunks[taken - 1]

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app must not see a refused body")

    scope = {"type": "http", "method": "POST", "path": "/eval", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(RequestGuard(app, max_body_bytes=64 * 1024)(scope, receive, send))
    assert taken == 80 and sent[0]["status"] == 413


def test_limit_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVENIR_MAX_BODY_BYTES", "100")
    with TestClient(create_app(str(tmp_path / "s"), api_token="", audit_dir=str(tmp_path / "a"))) as c:
        assert c.post("/eval", json={"records": [{"output": "x" * 100}], "predictions": ["x"]}).status_code == 413
        assert c.get("/health").status_code == 200
    for bad in ("lots", "0", "-5"):
        monkeypatch.setenv("PROVENIR_MAX_BODY_BYTES", bad)
        with pytest.raises(ConfigError, match="PROVENIR_MAX_BODY_BYTES"):
            create_app(str(tmp_path / "s"), api_token="", audit_dir=str(tmp_path / "a"))


@pytest.fixture()
def live_server(tmp_path):
    """uvicorn on a loopback port, in this process, with a 64 KiB body limit."""
    import uvicorn

    app = create_app(str(tmp_path / "store"), api_token="", audit_dir=str(tmp_path / "audit"),
                     max_body_bytes=64 * 1024)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=30)


def _status(sock: socket.socket) -> int:
    reply = b""
    while b"\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_live_server_refuses_an_endless_chunked_body(live_server):
    with socket.create_connection(("127.0.0.1", live_server), timeout=10) as sock:
        sock.sendall(b"POST /eval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 4096
        sent = 0
        sock.settimeout(0.5)
        status = None
        while sent < 50 * 1024 * 1024:  # an "endless" body: 50 MiB unless the server answers first
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            try:
                sock.setblocking(False)
                peek = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                peek = b""
            finally:
                sock.setblocking(True)
                sock.settimeout(10)
            if peek:
                break
        status = _status(sock)
    assert status == 413
    assert sent < 4 * 1024 * 1024, sent  # the server answered long before the 50 MiB


def test_live_server_refuses_a_declared_huge_body_before_it_arrives(live_server):
    with socket.create_connection(("127.0.0.1", live_server), timeout=10) as sock:
        sock.sendall(b"POST /jobs/train HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10000000000\r\n\r\n")
        assert _status(sock) == 413


# --- property-based: schemathesis over the whole OpenAPI schema ---------------------------------

# schemathesis reads the schema when the module is imported, so the app is built here
_FUZZ_ROOT = Path(tempfile.mkdtemp(prefix="provenir-fuzz-"))
atexit.register(shutil.rmtree, _FUZZ_ROOT, True)
_FUZZ_APP = create_app(str(_FUZZ_ROOT / "store"), api_token=TOKEN, audit_dir=str(_FUZZ_ROOT / "audit"),
                       max_body_bytes=256 * 1024, job_client=HeldJobs())
schema = schemathesis.openapi.from_asgi("/openapi.json", _FUZZ_APP)
schema.config.generation.update(max_examples=100, deterministic=True)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=100, derandomize=True)
def test_fuzz_every_operation(case):
    """No 5xx; every status, content type, header and body as the schema documents them.

    ``positive_data_acceptance`` is left out: the handlers check more than the schema can say
    (a run id's characters, a run config's fields), so schema-valid input may rightly be a 400/422.
    """
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                           excluded_checks=[positive_data_acceptance])
