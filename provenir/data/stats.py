"""Dataset statistics for ``provenir data stats``: one streamed pass over a JSONL file."""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from provenir.core.hashing import RecordHasher
from provenir.core.jsonl import iter_jsonl


def text_length(value: Any) -> int:
    """Characters in every string anywhere in ``value`` (keys excluded)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(text_length(v) for v in value.values())
    if isinstance(value, list):
        return sum(text_length(v) for v in value)
    return 0


def histogram(values: array | list[int], bins: int) -> list[dict[str, int]]:
    """Equal-width integer buckets from min to max; each ``{"lo", "hi", "count"}`` (hi inclusive)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    bins = max(1, bins)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, (v - lo) // width)] += 1
    return [
        {"lo": lo + i * width, "hi": lo + (i + 1) * width - 1, "count": c}
        for i, c in enumerate(counts)
        if lo + i * width <= hi
    ]


def dataset_stats(path: str | Path, bins: int = 10) -> dict[str, Any]:
    """Records, fields (how many records have each), sha256 and text-length distribution."""
    hasher = RecordHasher()
    fields: Counter[str] = Counter()
    lengths: array = array("Q")
    for _, record in iter_jsonl(path):
        hasher.update(record)
        fields.update(record.keys())
        lengths.append(text_length(record))
    count = hasher.count
    return {
        "path": str(path),
        "records": count,
        "sha256": hasher.hexdigest(),
        "fields": dict(sorted(fields.items(), key=lambda kv: (-kv[1], kv[0]))),
        "length_chars": {
            "min": min(lengths) if count else 0,
            "max": max(lengths) if count else 0,
            "mean": (sum(lengths) / count) if count else 0.0,
            "histogram": histogram(lengths, bins),
        },
    }
