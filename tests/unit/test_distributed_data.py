"""Ray Data plumbing without Ray: shard planning and shard reading over plain and compressed JSONL."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import fsspec

from provenir.distributed.data import _count_group, _read_shard, plan_shards
from provenir.governance._files import iter_rows

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _lines(n: int) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        key = "AKIA" + "".join(rng.choice(_B32) for _ in range(16))
        out.append(json.dumps({"instruction": f"row {i} deploy with {key}", "output": "ok"}).encode() + b"\n")
        if i == 5:
            out.append(b'{"broken": \n')
        if i == 9:
            out.append(b"\n")
    return out


def _rows_of(shards: list[dict]) -> list[tuple[int, str | None, str | None]]:
    line, rows = 1, []
    for shard in shards:
        shard["first_line"] = line
        rows.extend((r["line"], r["json"], r["error"]) for r in _read_shard(shard))
        line += _count_group([shard])[0]
    return rows


def test_gzipped_jsonl_is_one_shard_read_whole(tmp_path: Path):
    path = tmp_path / "keys.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.writelines(_lines(50))
    shards = plan_shards(str(path), shard_bytes=256)
    assert shards == [{"file": str(path), "start": 0, "end": path.stat().st_size}]
    assert _count_group(shards) == [52]  # newlines of the decompressed text
    rows = _rows_of(shards)
    local = [(line, text, error) for _f, line, text, error in iter_rows(str(path))]
    assert len(rows) == 51 and rows[6][0] == 7 and rows[6][2] is not None and rows[-1][0] == 52
    assert [n for n, _t, _e in rows] == [n for n, _t, _e in local]
    assert [t for _n, t, e in rows if e is None] == [t for n, t, _e in local if n != 7]


def test_gzipped_jsonl_on_an_fsspec_store():
    path = "memory://provenir-tests/data/keys.jsonl.gz"
    with fsspec.open(path, "wb", compression="gzip") as handle:
        handle.write(b"".join(_lines(20)))
    shards = plan_shards(path, shard_bytes=128)
    assert len(shards) == 1 and shards[0]["start"] == 0
    rows = _rows_of(shards)
    assert [n for n, _t, _e in rows] == [n for n in range(1, 23) if n != 12]  # line 12 is blank
    assert "AKIA" in json.loads(rows[0][1])["instruction"]


def test_plain_jsonl_keeps_byte_range_shards(tmp_path: Path):
    path = tmp_path / "keys.jsonl"
    path.write_bytes(b"".join(_lines(50)))
    shards = plan_shards(str(path), shard_bytes=256)
    assert len(shards) > 10 and shards[0]["start"] == 0 and shards[-1]["end"] == path.stat().st_size
    assert all(a["end"] == b["start"] for a, b in zip(shards, shards[1:]))
    local = [(line, text) for _f, line, text, _e in iter_rows(str(path))]
    assert [(n, t if e is None else '{"broken": ') for n, t, e in _rows_of(shards)] == local
