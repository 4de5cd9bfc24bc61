"""Gzipped JSONL on Ray Data: one shard per compressed file, read whole, same answers as in process."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from provenir.governance._files import iter_rows, scan_files_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _write(folder: Path) -> tuple[Path, Path]:
    """A gzipped file with 50 AWS keys (plus a malformed and a blank line) and a plain file next to it."""
    rng = random.Random(11)
    lines = []
    for i in range(50):
        key = "AKIA" + "".join(rng.choice(_B32) for _ in range(16))
        lines.append(json.dumps({"messages": [{"role": "user", "content": f"row {i} key {key}"},
                                              {"role": "assistant", "content": f"mail u{i}@corp.io"}]}))
        if i == 20:
            lines.append('{"broken": ')
        if i == 30:
            lines.append("")
    gz = folder / "keys.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    plain = folder / "plain.jsonl"
    plain.write_text("".join(json.dumps({"prompt": f"row {i} ip 10.0.{i}.7"}) + "\n" for i in range(60)))
    return gz, plain


def _findings(paths: list[Path]) -> list[tuple[str, int, str, str]]:
    return sorted((f["file"].rsplit("/", 1)[-1], f["line"], f["field"], f["entity_type"])
                  for p in paths for f in map(json.loads, p.read_text().splitlines()))


@pytest.mark.timeout(300)
def test_ray_scan_of_gzipped_jsonl_equals_in_process(ray_local, tmp_path):
    from provenir.distributed.governance import scan_files

    src = tmp_path / "in"
    src.mkdir()
    _write(src)
    ray_report = scan_files([str(src)], mask_dir=str(tmp_path / "ray_masked"),
                            findings_dir=str(tmp_path / "ray_findings"), workers=2, shard_bytes=300)
    local = scan_files_local([str(src)], mask_dir=str(tmp_path / "local_masked"), mask_mode="placeholder",
                             findings_path=str(tmp_path / "local_findings.jsonl"))
    assert ray_report.records == local.records == 111
    assert ray_report.malformed == local.malformed == 1
    assert ray_report.secrets == local.secrets == {"AWS_ACCESS_KEY_ID": 50}
    assert ray_report.pii == local.pii == {"EMAIL": 50, "IP_ADDRESS": 60}
    assert [(Path(e["file"]).name, e["line"]) for e in ray_report.errors] == \
        [(Path(e["file"]).name, e["line"]) for e in local.errors] == [("keys.jsonl.gz", 22)]
    ray_findings = _findings(sorted((tmp_path / "ray_findings").glob("*.jsonl")))
    assert ray_findings == _findings([tmp_path / "local_findings.jsonl"]) and len(ray_findings) == 160
    key_lines = [line for name, line, _f, etype in ray_findings if etype == "AWS_ACCESS_KEY_ID"]
    assert key_lines == [i + 1 + (i > 20) + (i > 30) for i in range(50)]
    ray_lines = [x for p in ray_report.masked_outputs for x in Path(p).read_text().splitlines()]
    local_lines = [x for p in local.masked_outputs for x in Path(p).read_text().splitlines()]
    assert sorted(ray_lines) == sorted(local_lines) and len(ray_lines) == 110
    assert not any("AKIA" in line for line in ray_lines)


@pytest.mark.timeout(300)
def test_read_records_of_gzipped_jsonl_has_exact_lines(ray_local, tmp_path):
    from provenir.distributed.data import read_records

    gz, _plain = _write(tmp_path)
    rows = sorted(read_records([str(gz)], shard_bytes=256, min_shards=4).take_all(), key=lambda r: r["line"])
    expected = [(line, text) for _f, line, text, _e in iter_rows(str(gz))]
    assert [r["line"] for r in rows] == [line for line, _t in expected]
    assert [r["json"] for r in rows if r["error"] is None] == [t for line, t in expected if line != 22]
    assert [r["line"] for r in rows if r["error"]] == [22]
