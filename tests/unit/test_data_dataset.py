"""JsonlDataset: every bad-JSONL case names file and line; accepted variants; atomic save."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest

from provenir.core.errors import DataError
from provenir.data.dataset import JsonlDataset, hash_jsonl


def write(tmp_path, data: bytes, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "line", "fragment"),
    [
        (b'{"a": 1}\n{"a": 2\n', 2, "invalid JSON at column"),
        (b'{"a": 1}\n\n[1, 2]\n', 3, "expected a JSON object per line, got list"),
        (b'"just a string"\n', 1, "got str"),
        (b'{"a": 1}\n{"a": "caf\xe9"}\n', 2, "invalid UTF-8 (byte 0xe9 at column 11)"),
        (b'{"a": NaN}\n', 1, "NaN is not valid JSON"),
        (b'{"a": 1}\n{"a": Infinity}\n', 2, "Infinity is not valid JSON"),
        (b'{"a": 1} trailing\n', 1, "invalid JSON"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, data, line, fragment):
    path = write(tmp_path, data)
    with pytest.raises(DataError) as info:
        JsonlDataset.from_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n', "column 32: Expecting value"),
        (b'{"instruction": "c", "output": \r\n', "column 32: Expecting value"),
        (b'\xef\xbb\xbf{"a" 1}\n', "column 6: Expecting ':' delimiter"),
        (b'{"a": 1} trailing\n', "column 10: Extra data"),
    ],
)
def test_invalid_json_column_is_the_position_in_the_line(tmp_path, data, expected):
    path = write(tmp_path, data)
    with pytest.raises(DataError) as info:
        JsonlDataset.from_jsonl(path)
    line = data.count(b"\n")
    assert str(info.value) == f"{path}:{line}: invalid JSON at {expected}"


def test_deeply_nested_json_is_a_data_error(tmp_path):
    path = write(tmp_path, b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    with pytest.raises(DataError, match=r":1: JSON nested too deeply"):
        JsonlDataset.from_jsonl(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        JsonlDataset.from_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="is a folder"):
        JsonlDataset.from_jsonl(tmp_path)


def test_bom_crlf_blank_lines_accepted(tmp_path):
    path = write(tmp_path, b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \n{"b": "\xc3\xa9"}\r\n{"c": 3}')
    ds = JsonlDataset.from_jsonl(path)
    assert ds.records == [{"a": 1}, {"b": "é"}, {"c": 3}]
    assert len(ds) == 3 and list(ds) == ds.records and ds[1] == {"b": "é"}


def test_gzip_and_fsspec_uri(tmp_path):
    records = [{"i": i} for i in range(5)]
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    assert JsonlDataset.from_jsonl(gz).records == records
    import fsspec

    uri = f"memory://ds-{uuid.uuid4().hex}/d.jsonl"
    with fsspec.open(uri, "w") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records))
    assert JsonlDataset.from_jsonl(uri).records == records


def test_save_load_round_trip_and_hash(tmp_path):
    records = [{"instruction": "Reverse 'abc'", "output": "cba"}, {"messages": [{"role": "user", "content": "é"}]}]
    ds = JsonlDataset.from_records(records)
    path = tmp_path / "out" / "d.jsonl"
    ds.save(path)
    loaded = JsonlDataset.from_jsonl(path)
    assert loaded.records == records
    assert loaded.hash() == ds.hash() == hash_jsonl(path)[0]
    assert hash_jsonl(path)[1] == 2
    assert "é" in path.read_text(encoding="utf-8")  # saved as UTF-8, not \\u escapes


def test_save_is_atomic_on_failure(tmp_path):
    path = tmp_path / "d.jsonl"
    JsonlDataset.from_records([{"a": 1}]).save(path)
    bad = JsonlDataset.from_records([{"a": 2}, {"b": float("nan")}])
    with pytest.raises(ValueError):
        bad.save(path)
    assert JsonlDataset.from_jsonl(path).records == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]


def test_filter_stream_map_fields(tmp_path):
    ds = JsonlDataset.from_records([{"q": "1+1", "a": "2"}, {"q": "2+2", "a": "5"}])
    assert len(ds.filter(lambda r: r["a"] == "2")) == 1
    mapped = ds.map_fields({"instruction": "q", "output": "a"})
    assert mapped.records[0] == {"instruction": "1+1", "output": "2"}
    path = tmp_path / "s.jsonl"
    ds.save(path)
    assert list(JsonlDataset.stream(path)) == ds.records


def test_from_records_rejects_non_dicts():
    with pytest.raises(DataError, match="record 1: expected a dict, got list"):
        JsonlDataset.from_records([{"a": 1}, [1]])
