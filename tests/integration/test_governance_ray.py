"""Governance on Ray Data gives the same answers as in process, over JSONL and Parquet files."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from provenir.governance._files import scan_files_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _github_token(body: str) -> str:
    """ghp_ + 30 characters + their base62 CRC32 (GitHub's documented token format, 2021)."""
    value, checksum = zlib.crc32(body.encode()), ""
    while value:
        value, rest = divmod(value, 62)
        checksum = _BASE62[rest] + checksum
    return "ghp_" + body + checksum.rjust(6, "0")


def _write(path: Path, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"instruction": f"row {i} mail u{i}@corp.io", "output": "fine"})
        elif i % 3 == 1:
            rows.append({"messages": [{"role": "user", "content": f"row {i}"},
                                      {"role": "assistant", "content": "token " + _github_token(f"{i:04d}a1B2c3D4e5F6g7H8i9J0k1L2m3")}]})
        else:
            rows.append({"prompt": f"row {i} is clean", "meta": {"n": i}})
    with open(path, "wb") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps(row).encode() + b"\n")
            if i == 10:
                handle.write(b'{"x": "\xff"}\n')
            if i == 20:
                handle.write(b"[1, 2]\n")
    return rows


@pytest.mark.timeout(300)
def test_ray_matches_in_process(ray_local, tmp_path):
    from provenir.distributed.governance import scan_files

    src = tmp_path / "in"
    src.mkdir()
    _write(src / "a.jsonl", 400)
    _write(src / "b.jsonl", 150)
    ray_report = scan_files([str(src)], mask_dir=str(tmp_path / "ray_masked"),
                            findings_dir=str(tmp_path / "ray_findings"), workers=2, batch_size=64,
                            shard_bytes=8_000, salt=b"k", mask_mode="pseudonym")
    local = scan_files_local([str(src)], mask_dir=str(tmp_path / "local_masked"), salt=b"k",
                             mask_mode="pseudonym", findings_path=str(tmp_path / "local_findings.jsonl"))
    assert ray_report.records == local.records == 554
    assert ray_report.malformed == local.malformed == 4
    assert ray_report.pii == local.pii == {"EMAIL": 134 + 50}
    assert ray_report.secrets == local.secrets == {"GITHUB_TOKEN": 133 + 50}
    assert [(e["line"], Path(e["file"]).name) for e in ray_report.errors] == \
        [(12, "a.jsonl"), (23, "a.jsonl"), (12, "b.jsonl"), (23, "b.jsonl")]
    ray_lines = [line for part in ray_report.masked_outputs for line in Path(part).read_text().splitlines()]
    local_lines = [line for part in local.masked_outputs for line in Path(part).read_text().splitlines()]
    assert ray_lines == local_lines  # same op, same order, same pseudonyms
    assert len(ray_lines) == 550 and "<EMAIL_" in ray_lines[0]
    ray_findings = sorted(
        (f["file"].rsplit("/", 1)[-1], f["line"], f["entity_type"])
        for part in sorted((tmp_path / "ray_findings").glob("*.jsonl"))
        for f in map(json.loads, part.read_text().splitlines())
    )
    local_findings = sorted(
        (f["file"].rsplit("/", 1)[-1], f["line"], f["entity_type"])
        for f in map(json.loads, (tmp_path / "local_findings.jsonl").read_text().splitlines())
    )
    assert ray_findings == local_findings and len(ray_findings) == 367
    with pytest.raises(Exception, match="already exists"):
        scan_files([str(src)], mask_dir=str(tmp_path / "ray_masked"))


@pytest.mark.timeout(300)
def test_ray_mask_into_the_input_folder_is_refused(ray_local, tmp_path):
    from provenir.core.errors import DataError
    from provenir.distributed.governance import scan_files

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "mail alice@example.com"}\n')
    with pytest.raises(DataError, match="overlaps the input"):
        scan_files([str(folder)], mask_dir=str(folder), overwrite=True)
    with pytest.raises(DataError, match="overlaps the input"):
        scan_files([str(folder / "a.jsonl")], mask_dir=str(tmp_path / "ok"), findings_dir=str(folder), overwrite=True)
    assert (folder / "a.jsonl").read_text() == '{"text": "mail alice@example.com"}\n'
    assert not (tmp_path / "ok").exists()


def test_ray_parquet(ray_local, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from provenir.distributed.governance import scan_files

    table = pa.table({"instruction": ["call (415) 555-2671", "nothing", "ip 10.0.0.7"],
                      "output": ["ok", "password = \"Zx9!qWe7rT\"", "ok"]})
    pq.write_table(table, tmp_path / "d.parquet")
    report = scan_files([str(tmp_path / "d.parquet")], mask_dir=str(tmp_path / "m"), workers=1)
    assert report.pii == {"PHONE": 1, "IP_ADDRESS": 1} and report.secrets == {"PASSWORD_ASSIGNMENT": 1}
    lines = [json.loads(x) for p in report.masked_outputs for x in Path(p).read_text().splitlines()]
    assert [r["instruction"] for r in lines] == ["call <PHONE>", "nothing", "ip <IP_ADDRESS>"]
    assert report.ner_engine is None and "not scanned" in report.ner_note


@pytest.mark.timeout(300)
def test_progress_reports_every_byte_once(ray_local, tmp_path):
    from provenir.distributed.governance import scan_files

    _write(tmp_path / "a.jsonl", 300)
    calls: list[tuple[int, int]] = []
    report = scan_files([str(tmp_path / "a.jsonl")], workers=2, shard_bytes=4_000,
                        progress=lambda done, total: calls.append((done, total)))
    size = (tmp_path / "a.jsonl").stat().st_size
    assert report.records == 302 and len(calls) >= 4
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1] == (size, size)


@pytest.mark.timeout(300)
def test_scan_cli_on_ray_masks_reports_audits_and_exits_3(ray_local, tmp_path):
    from typer.testing import CliRunner

    from provenir.cli import app
    from provenir.governance.audit import AuditLogger

    src = tmp_path / "in"
    src.mkdir()
    _write(src / "a.jsonl", 120)
    audit, masked, report = tmp_path / "audit", tmp_path / "masked", tmp_path / "report.json"
    result = CliRunner().invoke(app, ["scan", str(src), "--ray", "--workers", "2", "--mask", str(masked),
                                      "--report", str(report), "--audit-dir", str(audit)])
    assert result.exit_code == 3, result.output
    assert "Ray Data (2 workers)" in result.output and "GITHUB_TOKEN" in result.output
    payload = json.loads(report.read_text())
    assert payload["executor"] == "ray-data (2 workers)" and payload["exit_code"] == 3
    assert payload["records"] == 122 and payload["malformed"] == 2
    assert payload["pii"] == {"EMAIL": 40} and payload["secrets"] == {"GITHUB_TOKEN": 40}
    local = scan_files_local([str(src)], mask_dir=str(tmp_path / "local"), mask_mode="placeholder")
    ray_lines = [x for p in payload["masked_outputs"] for x in Path(p).read_text().splitlines()]
    local_lines = [x for p in local.masked_outputs for x in Path(p).read_text().splitlines()]
    assert ray_lines == local_lines and len(ray_lines) == 120
    findings = [json.loads(x) for p in sorted(Path(str(report) + ".findings").glob("*.jsonl"))
                for x in p.read_text().splitlines()]
    assert len(findings) == 80 and all("a1B2c3D4e5F6g7H8" not in json.dumps(f) for f in findings)
    assert {f["line"] for f in findings if f["entity_type"] == "GITHUB_TOKEN"} == \
        {i + 1 + (i > 10) + (i > 20) for i in range(1, 120, 3)}  # two malformed lines shift the numbers
    (event,) = AuditLogger(audit).read()
    assert event["event"] == "governance.scan" and event["details"]["executor"] == "ray-data (2 workers)"
    # the masked output re-scans clean, on Ray too
    again = CliRunner().invoke(app, ["scan", str(masked), "--ray", "--workers", "1", "--audit-dir", str(audit),
                                     "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["secrets"] == {} and json.loads(again.output)["pii"] == {}


@pytest.mark.timeout(300)
def test_ner_runs_on_the_ray_workers(ray_local, tmp_path, spacy_pipeline):
    from provenir.distributed.governance import scan_files

    path = tmp_path / "people.jsonl"
    rows = [{"instruction": "Ada Lovelace moved to London", "output": "mail ada@x.io"},
            {"instruction": "nobody here", "output": "ok"}] * 20
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = scan_files([str(path)], mask_dir=str(tmp_path / "m"), workers=2, shard_bytes=500,
                        ner="presidio", ner_model=spacy_pipeline)
    assert report.ner_engine == "presidio-analyzer+spacy:tiny_ner" and report.ner_note is None
    assert report.pii == {"PERSON": 20, "LOCATION": 20, "EMAIL": 20}
    masked = [json.loads(x) for p in report.masked_outputs for x in Path(p).read_text().splitlines()]
    assert masked[0] == {"instruction": "<PERSON> moved to <LOCATION>", "output": "mail <EMAIL>"}
    assert masked[1] == rows[1] and len(masked) == 40


@pytest.mark.timeout(300)
def test_ray_parquet_row_numbers_are_exact_across_row_groups(ray_local, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from provenir.distributed.data import plan_parquet_shards
    from provenir.distributed.governance import scan_files

    texts = [f"row {i}" + (f" mail u{i}@corp.io" if i % 7 == 0 else "") for i in range(100)]
    pq.write_table(pa.table({"prompt": texts}), tmp_path / "d.parquet", row_group_size=16)
    shards = plan_parquet_shards([str(tmp_path / "d.parquet")])
    assert [s["first_line"] for s in shards] == [1, 17, 33, 49, 65, 81, 97]
    report = scan_files([str(tmp_path / "d.parquet")], findings_dir=str(tmp_path / "f"), workers=2)
    findings = [json.loads(x) for p in sorted((tmp_path / "f").glob("*.jsonl")) for x in p.read_text().splitlines()]
    assert report.records == 100 and report.pii == {"EMAIL": 15}
    assert sorted(f["line"] for f in findings) == [i + 1 for i in range(0, 100, 7)]


@pytest.mark.timeout(300)
def test_ray_finds_and_masks_keys_like_in_process(ray_local, tmp_path):
    from provenir.distributed.governance import scan_files

    token = "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"
    rows = [{"headers": {token: True}, "n": i} if i % 2 else {"contacts": {f"u{i}@corp.io": "x", "v@corp.io": "y"}}
            for i in range(40)]
    path = tmp_path / "keys.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = scan_files([str(path)], mask_dir=str(tmp_path / "m"), findings_dir=str(tmp_path / "f"), workers=2,
                        shard_bytes=600)
    local = scan_files_local([str(path)], mask_dir=str(tmp_path / "local"), mask_mode="placeholder")
    assert report.secrets == local.secrets == {"GITHUB_TOKEN": 20}
    assert report.pii == local.pii == {"EMAIL": 40}
    findings = [json.loads(x) for p in sorted((tmp_path / "f").glob("*.jsonl")) for x in p.read_text().splitlines()]
    assert sorted({(f["field"], f["entity_type"]) for f in findings}) == [
        ("contacts.<key 0>", "EMAIL"), ("contacts.<key 1>", "EMAIL"), ("headers.<key 0>", "GITHUB_TOKEN")]
    assert all(token not in json.dumps(f) and "@corp.io" not in json.dumps(f) for f in findings)
    masked = [x for p in report.masked_outputs for x in Path(p).read_text().splitlines()]
    assert masked == [x for p in local.masked_outputs for x in Path(p).read_text().splitlines()]
    assert json.loads(masked[0]) == {"contacts": {"<EMAIL>": "x", "<EMAIL> #2": "y"}}
    assert json.loads(masked[1]) == {"headers": {"<GITHUB_TOKEN>": True}, "n": 1}
