"""Canonical JSON and SHA-256 hashing.

Canonical JSON is what every hash in Provenir is taken over: keys sorted, UTF-8, no insignificant
whitespace (``separators=(",", ":")``), non-ASCII characters kept as they are, NaN and infinities
rejected. Two documents that parse to the same value therefore hash the same, whatever their key
order or formatting; one changed character changes the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to canonical JSON bytes.

    Example:
        >>> canonical_json({"b": 1, "a": [1.5, "é"]})
        b'{"a":[1.5,"\\xc3\\xa9"],"b":1}'
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``value``."""
    return sha256_bytes(canonical_json(value))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (never whole into memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RecordHasher:
    """Incremental hash over a sequence of JSON records, in order.

    Each record contributes its canonical JSON followed by a newline, so the hash depends on the
    records' values and order, not on how the file spelled them (key order, whitespace, BOM, CRLF).
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.count = 0

    def update(self, record: Any) -> None:
        self._digest.update(canonical_json(record))
        self._digest.update(b"\n")
        self.count += 1

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def hash_records(records: Iterable[Any]) -> str:
    """Hex SHA-256 over ``records`` in order (see :class:`RecordHasher`)."""
    hasher = RecordHasher()
    for record in records:
        hasher.update(record)
    return hasher.hexdigest()
