"""Governance on Ray Data gives the same answers as in process, over JSONL and Parquet files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenir.governance._files import scan_files_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _write(path: Path, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"instruction": f"row {i} mail u{i}@corp.io", "output": "fine"})
        elif i % 3 == 1:
            rows.append({"messages": [{"role": "user", "content": f"row {i}"},
                                      {"role": "assistant", "content": "token ghp_" + f"{i:04d}" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"}]})
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
