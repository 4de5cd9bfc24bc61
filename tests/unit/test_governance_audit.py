"""The audit log: hash chain, tamper detection, torn writes, concurrent writers, redaction."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provenir.core.errors import ConfigError
from provenir.governance.audit import AuditLogger, default_audit_dir


def _lines(log: AuditLogger) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


@pytest.fixture()
def log(tmp_path: Path) -> AuditLogger:
    logger = AuditLogger(tmp_path / "audit")
    for i in range(5):
        logger.log("dataset.scanned", "alice", index=i)
    return logger


def test_contract_and_chain(log):
    entries = log.read()
    assert [e["seq"] for e in entries] == list(range(5))
    assert entries[0]["event"] == "dataset.scanned" and entries[0]["actor"] == "alice"
    assert entries[3]["details"] == {"index": 3}
    assert entries[1]["prev"] == entries[0]["hash"]
    result = log.verify()
    assert result.ok and result.entries == 5 and result.head == entries[-1]["hash"]
    assert log.verify(expected_head=entries[-1]["hash"]).ok


def test_edit_is_detected(log):
    lines = _lines(log)
    entry = json.loads(lines[2])
    entry["actor"] = "mallory"
    lines[2] = (json.dumps(entry) + "\n").encode()
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.first_bad_line == 3 and "edited" in result.reason and result.entries == 2


def test_deleted_entry_is_named(log):
    lines = _lines(log)
    del lines[1]
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.first_bad_line == 2 and result.first_bad_seq == 1
    assert "seq 1 is missing" in result.reason


def test_reorder_and_truncation(log):
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    log.path.write_bytes(b"".join(lines))
    assert log.verify().first_bad_line == 2
    head = json.loads(_lines(log)[-1])["hash"]
    log.path.write_bytes(b"".join(sorted(lines, key=lambda l: json.loads(l)["seq"])[:3]))
    assert log.verify().ok  # removing whole entries off the end needs an anchor...
    truncated = log.verify(expected_head=head)
    assert not truncated.ok and "removed from the end" in truncated.reason


def test_expected_head_anchors_and_the_log_may_grow_after_it(log):
    from provenir.core.errors import ConfigError

    head = log.head()
    assert log.verify(expected_head=head).expected_head_seq == 4
    log.log("later.event", "carol")
    grown = log.verify(expected_head=head.upper())
    assert grown.ok and grown.expected_head_seq == 4 and grown.entries == 6
    assert grown.head != head
    with pytest.raises(ConfigError, match="full 64-character hex"):
        log.verify(expected_head=head[:12])
    wrong = log.verify(expected_head="ab" * 32)
    assert not wrong.ok and "no entry has the expected head" in wrong.reason


def test_torn_last_line_is_reported_then_sealed(log):
    with open(log.path, "ab") as handle:
        handle.write(b'{"seq": 5, "ts": "2026-')
    result = log.verify()
    assert not result.ok and result.torn_tail and result.first_bad_line == 6 and result.entries == 5
    assert len(log.read()) == 5
    log.log("after.crash", "bob")
    result = log.verify()
    assert result.ok and result.entries == 7
    events = [e["event"] for e in log.read()]
    assert events[-2:] == ["audit.torn_tail", "after.crash"]
    assert log.read()[-2]["details"]["bytes"] == len(b'{"seq": 5, "ts": "2026-')


def test_missing_or_empty_log_is_not_intact(tmp_path):
    missing = AuditLogger(tmp_path / "never-written").verify()
    assert not missing.ok and missing.entries == 0
    assert missing.reason == f"no audit log at {tmp_path / 'never-written' / 'audit.jsonl'}"
    logger = AuditLogger(tmp_path / "emptied")
    logger.log("run", "ci")
    logger.path.write_bytes(b"")
    empty = logger.verify()
    assert not empty.ok and empty.entries == 0 and empty.first_bad_line == 1 and empty.first_bad_seq == 0
    assert "is empty" in empty.reason and str(logger.path) in empty.reason


def test_details_are_redacted(tmp_path):
    logger = AuditLogger(tmp_path)
    logger.log("run", "ci", api_key="sk-secret", db={"password": "hunter2", "host": "db"},
               note="leaked 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 in logs", token_count=512)
    details = logger.read()[0]["details"]
    assert details["api_key"] == "[REDACTED]" and details["db"] == {"password": "[REDACTED]", "host": "db"}
    assert details["note"] == "leaked [REDACTED:GITHUB_TOKEN] in logs"
    assert details["token_count"] == 512
    assert b"hunter2" not in logger.path.read_bytes() and b"ghp_" not in logger.path.read_bytes()


def test_secrets_used_as_keys_are_redacted_and_no_entry_is_lost(tmp_path):
    logger = AuditLogger(tmp_path)
    first, second = "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", "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"
    logger.log("tokens.seen", "ci", seen={first: "repo-a", second: "repo-b", "plain": "x"})
    details = logger.read()[0]["details"]
    assert details["seen"] == {"[REDACTED:GITHUB_TOKEN]": "repo-a", "[REDACTED:GITHUB_TOKEN] #2": "repo-b",
                               "plain": "x"}
    assert b"ghp_" not in logger.path.read_bytes()
    assert logger.verify().ok


def test_default_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("PROVENIR_AUDIT_DIR", raising=False)
    monkeypatch.setenv("PROVENIR_STORE", str(tmp_path / "store"))
    assert default_audit_dir() == tmp_path / "store" / "audit"
    assert default_audit_dir(f"file://{tmp_path}/s") == tmp_path / "s" / "audit"
    # the log is a local file (a lock file, O_APPEND, fsync): a store URI keeps it in ./artifacts/audit
    assert default_audit_dir("s3://bucket/root") == Path("artifacts") / "audit"
    monkeypatch.setenv("PROVENIR_STORE", "s3://bucket/root")
    assert default_audit_dir() == Path("artifacts") / "audit"
    monkeypatch.setenv("PROVENIR_AUDIT_DIR", str(tmp_path / "a"))
    assert default_audit_dir() == tmp_path / "a"
    monkeypatch.setenv("PROVENIR_AUDIT_DIR", "s3://bucket/audit")
    with pytest.raises(ConfigError, match="PROVENIR_AUDIT_DIR=s3://bucket/audit: .*local folder"):
        default_audit_dir()


def test_logger_refuses_a_uri(tmp_path):
    with pytest.raises(ConfigError, match="memory://bkt/audit: .*local folder"):
        AuditLogger("memory://bkt/audit")
    assert AuditLogger(f"file://{tmp_path}/a").log_dir == tmp_path / "a"


def _writer(args: tuple[str, int, int]) -> None:
    log_dir, worker, count = args
    logger = AuditLogger(log_dir)
    for i in range(count):
        logger.log("worker.event", f"w{worker}", i=i, pad="x" * (i % 300))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_four_processes_500_events_each(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), w, 500) for w in range(4)])
    logger = AuditLogger(tmp_path)
    entries = logger.read()
    assert len(entries) == 2000
    assert logger.verify().ok and logger.verify().entries == 2000
    per_worker = {}
    for e in entries:
        per_worker.setdefault(e["actor"], []).append(e["details"]["i"])
    assert {k: v == list(range(500)) for k, v in per_worker.items()} == {f"w{w}": True for w in range(4)}


_KILLED_WRITER = """
import sys
from provenir.governance.audit import AuditLogger
log = AuditLogger(sys.argv[1])
i = 0
while True:
    log.log("busy", "writer", i=i, blob="y" * 4000)
    i += 1
"""


@pytest.mark.timeout(120)
def test_killed_writer_leaves_a_verifiable_log(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)])
    deadline = time.time() + 60
    while time.time() < deadline:
        if (tmp_path / "audit.jsonl").exists() and (tmp_path / "audit.jsonl").stat().st_size > 200_000:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logger = AuditLogger(tmp_path)
    result = logger.verify()
    # either every line is complete, or exactly the torn last line is reported
    assert result.ok or (result.torn_tail and result.first_bad_line == result.entries + 1)
    logger.log("recovered", "tester")
    assert logger.verify().ok
