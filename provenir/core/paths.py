"""Input paths of any store: a local path or an fsspec URI, folders and globs expanded to files.

Used alike by the in-process ops (governance's file scans) and the Ray Data pipelines
(:mod:`provenir.distributed.data`), so it lives here, below both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from provenir.core.errors import DataError

#: the file suffixes a folder is searched for
RECORD_FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".parquet")


def fs_and_path(path: str) -> tuple[Any, str]:
    """The fsspec filesystem serving ``path`` and the path as that filesystem names it."""
    import fsspec

    fs, resolved = fsspec.core.url_to_fs(path)
    return fs, resolved


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Expand folders (their ``*.jsonl``, ``*.json``, ``*.parquet`` files, sorted) and globs.

    Raises:
        DataError: a path does not exist, or a folder or glob holds no such file.
    """
    out: list[str] = []
    for path in paths:
        fs, resolved = fs_and_path(str(path))
        protocol = str(path).split("://", 1)[0] + "://" if "://" in str(path) else ""
        if any(ch in resolved for ch in "*?["):
            matches = sorted(fs.glob(resolved))
        elif fs.isdir(resolved):
            matches = sorted(p for p in fs.find(resolved) if p.endswith(RECORD_FILE_SUFFIXES))
        elif fs.exists(resolved):
            matches = [resolved]
        else:
            raise DataError(f"{path}: file not found")
        if not matches:
            raise DataError(f"{path}: no .jsonl or .parquet files found")
        for match in matches:
            if protocol and protocol != "file://" and "://" not in match:
                match = protocol + match.lstrip("/") if protocol == "memory://" else protocol + match
            out.append(match)
    return out


__all__ = ["RECORD_FILE_SUFFIXES", "expand_paths", "fs_and_path"]
