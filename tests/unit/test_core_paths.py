"""core.paths: folders and globs of any store expand to record files."""

from __future__ import annotations

import pytest

from provenir.core.errors import DataError
from provenir.core.paths import expand_paths


def test_folders_expand_to_record_files_sorted_and_globs_to_matches(tmp_path):
    for name in ("b.jsonl", "a.parquet", "c.jsonl.gz", "notes.txt", "sub/d.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    found = expand_paths([str(tmp_path)])
    assert [p.rsplit("/", 1)[-1] for p in found] == ["a.parquet", "b.jsonl", "c.jsonl.gz", "d.json"]
    assert [p.rsplit("/", 1)[-1] for p in expand_paths([str(tmp_path / "*.jsonl")])] == ["b.jsonl"]
    assert expand_paths([str(tmp_path / "b.jsonl")]) == [str(tmp_path / "b.jsonl")]


def test_missing_paths_and_empty_folders_name_the_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        expand_paths([str(tmp_path / "nope.jsonl")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="empty: no .jsonl or .parquet files found"):
        expand_paths([str(tmp_path / "empty")])


def test_uris_keep_their_protocol():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/core-paths/x.jsonl", b"{}\n")
    fs.pipe("/core-paths/y.jsonl", b"{}\n")
    try:
        assert expand_paths(["memory://core-paths"]) == ["memory://core-paths/x.jsonl", "memory://core-paths/y.jsonl"]
    finally:
        fs.rm("/core-paths", recursive=True)


def test_the_distributed_layer_serves_the_same_helper():
    from provenir.distributed import data

    assert data.expand_paths is expand_paths
