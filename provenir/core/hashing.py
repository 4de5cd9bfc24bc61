"""Canonical JSON and SHA-256 hashing.

Canonical JSON is what every hash in Provenir is taken over: keys sorted, UTF-8, no insignificant
whitespace (``separators=(",", ":")``), non-ASCII characters kept as they are, NaN and infinities
rejected. Two documents that parse to the same value therefore hash the same, whatever their key
order or formatting; one changed character changes the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
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


def tree_files(path: str | Path) -> list[str]:
    """The relative POSIX paths of the regular files under ``path``, sorted.

    Hidden files and folders (a name starting with ``.``: ``.git``, ``.cache``, ``.gitattributes``)
    are skipped: they are download and version-control bookkeeping, not model content. File
    symlinks count with their target's bytes; folder symlinks are not followed (no cycles).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotADirectoryError: ``path`` is not a folder.
    """
    base = Path(path)
    if not base.exists():
        raise FileNotFoundError(str(base))
    if not base.is_dir():
        raise NotADirectoryError(str(base))
    found: list[str] = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            full = Path(folder) / name
            if not name.startswith(".") and full.is_file():
                found.append(full.relative_to(base).as_posix())
    return sorted(found)


def sha256_tree(path: str | Path) -> tuple[str, dict[str, str], int]:
    """``(digest, {relative path: sha256}, total bytes)`` of a folder's files (see :func:`tree_files`).

    ``digest`` is the SHA-256 of the canonical JSON of the ``{relative path: sha256}`` mapping, so
    it depends on every file's name and bytes and on nothing else (not on mtimes, permissions or
    the order the filesystem lists them in). Files are streamed (:func:`sha256_file`).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "config.json").write_text("{}")
        >>> digest, files, size = sha256_tree(folder)
        >>> digest == sha256_json({"config.json": sha256_bytes(b"{}")}), size
        (True, 2)
    """
    base = Path(path)
    files: dict[str, str] = {}
    total = 0
    for rel in tree_files(base):
        full = base / rel
        files[rel] = sha256_file(full)
        total += full.stat().st_size
    return sha256_json(files), files, total


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
