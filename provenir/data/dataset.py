"""JSONL datasets: strict reading with file:line errors, streaming, hashing, atomic saves.

Accepted: a UTF-8 byte-order mark, CRLF line ends, blank lines, ``.jsonl.gz`` files, fsspec URIs.
Refused with a :class:`DataError` naming the file and line: invalid UTF-8, invalid JSON, a line that
is not a JSON object, NaN or infinite numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from provenir.core.errors import DataError
from provenir.core.hashing import RecordHasher
from provenir.core.io import atomic_open
from provenir.core.jsonl import hash_jsonl, iter_jsonl

__all__ = ["JsonlDataset", "hash_jsonl", "iter_jsonl"]


class JsonlDataset:
    """An in-memory list of JSON records, loaded from and saved to JSONL.

    Example:
        >>> ds = JsonlDataset.from_records([{"instruction": "Add 2 and 3", "output": "5"}])
        >>> len(ds), ds.filter(lambda r: r["output"] == "6").records
        (1, [])
    """

    records: list[dict[str, Any]]

    def __init__(self, records: list[dict[str, Any]] | None = None, source: str | None = None):
        self.records = list(records or [])
        self.source = source

    @classmethod
    def from_jsonl(cls, path: str | Path) -> JsonlDataset:
        """Load every record of a JSONL file (see :func:`iter_jsonl` for what is accepted)."""
        return cls([record for _, record in iter_jsonl(path)], source=str(path))

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> JsonlDataset:
        """Wrap a list of dicts (copied shallowly); every item must be a dict."""
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise DataError(f"record {index}: expected a dict, got {type(record).__name__}")
        return cls(list(records))

    @staticmethod
    def stream(path: str | Path) -> Iterator[dict[str, Any]]:
        """Iterate a large JSONL file's records without loading it whole."""
        for _, record in iter_jsonl(path):
            yield record

    def save(self, path: str | Path) -> None:
        """Write the records as JSONL (UTF-8, one object a line), atomically."""
        with atomic_open(path, "w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False))
                handle.write("\n")

    def filter(self, predicate: Callable[[dict], bool]) -> JsonlDataset:
        """A new dataset with the records for which ``predicate`` is true."""
        return JsonlDataset([r for r in self.records if predicate(r)], source=self.source)

    def hash(self) -> str:
        """SHA-256 over the records in order (canonical JSON; equal to :func:`hash_jsonl`)."""
        hasher = RecordHasher()
        for record in self.records:
            hasher.update(record)
        return hasher.hexdigest()

    def map_fields(self, mapping: dict[str, str]) -> JsonlDataset:
        """Rename fields: ``mapping`` is {canonical name: name used in the records}."""
        if not mapping:
            return self
        out = []
        for record in self.records:
            new = dict(record)
            for canonical, actual in mapping.items():
                if actual in new and canonical != actual:
                    new[canonical] = new.pop(actual)
            out.append(new)
        return JsonlDataset(out, source=self.source)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"JsonlDataset({len(self.records)} records{where})"
