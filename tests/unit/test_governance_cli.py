"""`provenir scan` (in process) and `provenir audit show|verify`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provenir.cli import app
from provenir.governance.audit import AuditLogger

runner = CliRunner()


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [
        {"instruction": "Email bob@corp.io", "output": "ok"},
        {"messages": [{"role": "user", "content": "key AKIAZ3MSJ2KQ7XYPLW4R"}]},
        {"instruction": "clean", "output": "fine"},
    ]
    with open(path, "wb") as handle:
        for row in rows:
            handle.write(json.dumps(row).encode() + b"\n")
        handle.write(b'{"broken": \n')
        handle.write(b'{"bad": "\xff\xfe"}\n')
    return path


def test_scan_masks_reports_audits_and_exits_3(data, tmp_path):
    audit = tmp_path / "audit"
    out, report = tmp_path / "masked", tmp_path / "report.json"
    result = runner.invoke(app, ["scan", str(data), "--mask", str(out), "--report", str(report),
                                 "--audit-dir", str(audit)])
    assert result.exit_code == 3, result.output
    assert "AWS_ACCESS_KEY_ID" in result.output and "EMAIL" in result.output
    assert "has them replaced" in result.output and "mask with --mask" not in result.output
    assert f"{data}:5: invalid UTF-8" in result.output or "invalid UTF-8" in result.output
    payload = json.loads(report.read_text())
    assert payload["secrets"] == {"AWS_ACCESS_KEY_ID": 1} and payload["pii"] == {"EMAIL": 1}
    assert payload["records"] == 5 and payload["malformed"] == 2 and payload["exit_code"] == 3
    assert {e["line"] for e in payload["errors"]} == {4, 5}
    masked = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert masked[0]["instruction"] == "Email <EMAIL>"
    assert masked[1]["messages"][0]["content"] == "key <AWS_ACCESS_KEY_ID>"
    findings = [json.loads(line) for line in Path(str(report) + ".findings.jsonl").read_text().splitlines()]
    assert {(f["line"], f["entity_type"]) for f in findings} == {(1, "EMAIL"), (2, "AWS_ACCESS_KEY_ID")}
    assert "AKIAZ3MSJ2KQ7XYPLW4R" not in report.read_text() + json.dumps(findings)
    (event,) = AuditLogger(audit).read()
    assert event["event"] == "governance.scan" and event["details"]["exit_code"] == 3
    # the masked output re-scans clean
    again = runner.invoke(app, ["scan", str(out), "--audit-dir", str(audit), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["pii"] == {} and json.loads(again.output)["secrets"] == {}


def test_allow_secrets_and_audit_commands(data, tmp_path):
    audit = tmp_path / "audit"
    result = runner.invoke(app, ["scan", str(data), "--allow-secrets", "--audit-dir", str(audit)])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["audit", "show", str(audit), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)[0]["event"] == "governance.scan"
    ok = runner.invoke(app, ["audit", "verify", str(audit)])
    assert ok.exit_code == 0 and "intact" in ok.output
    log = audit / "audit.jsonl"
    log.write_text(log.read_text().replace("governance.scan", "governance.skip"))
    bad = runner.invoke(app, ["audit", "verify", str(audit)])
    assert bad.exit_code == 1 and "line 1" in bad.output


def test_audit_verify_expected_head(tmp_path, capsys):
    from provenir.governance.audit import AuditLogger

    audit = tmp_path / "audit"
    log = AuditLogger(audit)
    log.log("a.event", "alice")
    head = log.head()
    log.log("b.event", "bob")
    ok = runner.invoke(app, ["audit", "verify", str(audit), "--expected-head", head])
    assert ok.exit_code == 0 and "expected head at seq 0, 1 entry after it" in ok.output
    code, err = _run_main(["audit", "verify", str(audit), "--expected-head", head[:12]], capsys)
    assert code == 2 and "full 64-character hex" in err


def test_mask_into_the_input_folder_is_refused(data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(data.read_bytes())
    before = (folder / "train.jsonl").read_bytes()
    result = runner.invoke(app, ["scan", str(folder), "--mask", str(folder), "--overwrite",
                                 "--audit-dir", str(tmp_path / "audit")])
    assert result.exit_code != 0 and "overlaps the input" in str(result.exception)
    assert (folder / "train.jsonl").read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["train.jsonl"]


def test_missing_input_is_one_clear_error(tmp_path):
    from provenir.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["scan", str(tmp_path / "nope.jsonl"), "--audit-dir", str(tmp_path / "a")])
    assert exc.value.code == 2


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_verify_of_a_missing_or_empty_log_fails(tmp_path, state):
    audit = tmp_path / "audit"
    if state == "empty":
        audit.mkdir()
        (audit / "audit.jsonl").write_bytes(b"")
    result = runner.invoke(app, ["audit", "verify", str(audit)])
    assert result.exit_code == 1, result.output
    assert "intact" not in result.output
    assert ("no audit log at" if state == "missing" else "is empty") in result.output
    as_json = runner.invoke(app, ["audit", "verify", str(audit), "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.output)["ok"] is False


def _run_main(argv: list[str], capsys) -> tuple[int, str]:
    from provenir.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


def test_failed_scans_are_audited(data, tmp_path, capsys):
    audit = tmp_path / "audit"
    token = "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"
    missing = tmp_path / f"leak-{token}.jsonl"
    code, err = _run_main(["scan", str(missing), "--audit-dir", str(audit)], capsys)
    assert code == 2 and err.count("error:") == 1 and "file not found" in err
    full = tmp_path / "masked"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    code, err = _run_main(["scan", str(data), "--mask", str(full), "--audit-dir", str(audit)], capsys)
    assert code == 2 and err.count("error:") == 1 and "not empty" in err
    first, second = AuditLogger(audit).read()
    assert first["event"] == second["event"] == "governance.scan"
    assert first["details"]["status"] == second["details"]["status"] == "failed"
    assert first["details"]["exit_code"] == second["details"]["exit_code"] == 2
    assert first["details"]["error"].endswith("leak-[REDACTED:GITHUB_TOKEN].jsonl: file not found")
    assert first["details"]["inputs"] == [str(tmp_path / "leak-[REDACTED:GITHUB_TOKEN].jsonl")]
    assert "not empty" in second["details"]["error"] and second["details"]["masked_to"] == str(full)
    assert token.encode() not in (audit / "audit.jsonl").read_bytes()
    assert AuditLogger(audit).verify().ok


def test_successful_scan_event_has_ok_status(data, tmp_path):
    audit = tmp_path / "audit"
    assert runner.invoke(app, ["scan", str(data), "--allow-secrets", "--audit-dir", str(audit)]).exit_code == 0
    (event,) = AuditLogger(audit).read()
    assert event["details"]["status"] == "ok" and "error" not in event["details"]


def test_audit_commands_take_audit_dir_option(data, tmp_path, capsys):
    audit = tmp_path / "audit"
    assert runner.invoke(app, ["scan", str(data), "--allow-secrets", "--audit-dir", str(audit)]).exit_code == 0
    shown = runner.invoke(app, ["audit", "show", "--audit-dir", str(audit), "--json"])
    assert shown.exit_code == 0, shown.output
    assert [e["event"] for e in json.loads(shown.output)] == ["governance.scan"]
    ok = runner.invoke(app, ["audit", "verify", "--audit-dir", str(audit)])
    assert ok.exit_code == 0 and "intact: 1 entries" in ok.output, ok.output
    nowhere = runner.invoke(app, ["audit", "verify", "--audit-dir", str(tmp_path / "nowhere")])
    assert nowhere.exit_code == 1 and "no audit log at" in nowhere.output
    code, err = _run_main(["audit", "verify", str(audit), "--audit-dir", str(tmp_path / "other")], capsys)
    assert code == 2 and "not both" in err


@pytest.mark.parametrize("uri", ["memory://bkt/out", "s3://bkt/out"])
def test_uri_mask_without_ray_is_refused(data, tmp_path, capsys, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    audit = tmp_path / "audit"
    code, err = _run_main(["scan", str(data), "--mask", uri, "--audit-dir", str(audit)], capsys)
    assert code == 2 and "--ray" in err and uri in err
    assert not (tmp_path / (uri.split("://")[0] + ":")).exists()
    (event,) = AuditLogger(audit).read()
    assert event["details"]["status"] == "failed" and uri in event["details"]["error"]


def test_uri_audit_dir_is_refused(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run_main(["scan", str(data), "--audit-dir", "s3://bkt/audit"], capsys)
    assert code == 2 and "must be a local folder" in err
    code, err = _run_main(["audit", "verify", "--audit-dir", "s3://bkt/audit"], capsys)
    assert code == 2 and "must be a local folder" in err
    assert list(tmp_path.iterdir()) == [data]


def test_keep_examples_leaves_documented_examples_unmasked(tmp_path):
    path = tmp_path / "cards.jsonl"
    path.write_text(json.dumps({"t": "test card 4242 4242 4242 4242; customer card 4532 0151 1283 0366"}) + "\n")
    for flag, expected in (([], "test card <CREDIT_CARD>; customer card <CREDIT_CARD>"),
                           (["--keep-examples"], "test card 4242 4242 4242 4242; customer card <CREDIT_CARD>")):
        out = tmp_path / f"masked{len(flag)}"
        result = runner.invoke(app, ["scan", str(path), "--mask", str(out), "--audit-dir", str(tmp_path / "a"),
                                     "--json", *flag])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        assert payload["pii"] == {"CREDIT_CARD": 1} and payload["placeholders"] == {"CREDIT_CARD": 1}
        assert json.loads((out / "cards.jsonl").read_text())["t"] == expected
