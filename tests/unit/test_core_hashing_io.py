"""Canonical hashing stability and atomic writes (including a real crash before the rename)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from provenir.core.hashing import canonical_json, hash_records, sha256_file, sha256_json
from provenir.core.io import atomic_write_bytes, atomic_write_text
from provenir.core.jsonl import hash_jsonl


def test_canonical_json_is_key_order_and_whitespace_independent():
    a = json.loads('{"b": 1, "a": {"y": [1, 2], "x": "é"}}')
    b = json.loads('{ "a" : { "x":"\\u00e9", "y":[1,2] }, "b":1 }')
    assert canonical_json(a) == canonical_json(b) == '{"a":{"x":"é","y":[1,2]},"b":1}'.encode()
    assert sha256_json(a) == sha256_json(b)


def test_one_changed_value_changes_hash():
    base = {"instruction": "Add 2 and 3", "output": "5"}
    assert sha256_json(base) != sha256_json({**base, "output": "6"})
    assert hash_records([base, {"x": 1}]) != hash_records([{"x": 1}, base])  # order matters


def test_hash_is_stable_across_processes():
    code = "from provenir.core.hashing import sha256_json; print(sha256_json({'b': [1, 2.5], 'a': 'x'}))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {sha256_json({"a": "x", "b": [1, 2.5]})}


def test_nan_is_rejected():
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_dataset_hash_same_content_different_spelling(tmp_path):
    plain = tmp_path / "a.jsonl"
    plain.write_text('{"a": 1, "b": "x"}\n{"c": [1, 2]}\n', encoding="utf-8")
    spelled = tmp_path / "b.jsonl"
    spelled.write_bytes(b'\xef\xbb\xbf{"b":"x","a":1}\r\n\r\n{ "c" : [1,2] }')
    assert hash_jsonl(plain) == hash_jsonl(spelled)
    changed = tmp_path / "c.jsonl"
    changed.write_text('{"a": 1, "b": "y"}\n{"c": [1, 2]}\n', encoding="utf-8")
    assert hash_jsonl(changed)[0] != hash_jsonl(plain)[0]


def test_sha256_file_streams(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (3 * (1 << 20) + 7))
    import hashlib

    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_exception_before_rename_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def boom(*_args):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_crash_between_write_and_rename_keeps_old_file(tmp_path):
    """A process killed after writing the temp file but before the rename: the old file is intact."""
    target = tmp_path / "manifest.json"
    target.write_text('{"v": "old"}')
    code = f"""
import os
from provenir.core import io
os.replace = lambda *a, **k: os._exit(9)   # die exactly between write+fsync and rename
io.atomic_write_text({str(target)!r}, '{{"v": "new"}}')
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 9
    assert json.loads(target.read_text()) == {"v": "old"}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "manifest.json"]
    assert all(name.startswith(".manifest.json.") and name.endswith(".tmp") for name in leftovers)
    assert leftovers  # the new bytes went to a temp file, never into the target


def test_atomic_write_into_new_folder(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"\x00\x01"
