"""Strict, streaming JSONL reading (the one reader every layer uses).

Accepted: a UTF-8 byte-order mark, CRLF line ends, blank lines, ``.jsonl.gz`` files, fsspec URIs.
Refused with a :class:`DataError` naming the file and line: invalid UTF-8, invalid JSON, a line that
is not a JSON object, NaN or infinite numbers.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from provenir.core.errors import DataError
from provenir.core.hashing import RecordHasher


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null or a finite number)")


@contextlib.contextmanager
def _open_binary(path: str | Path) -> Iterator[IO[bytes]]:
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        import fsspec

        with fsspec.open(text, "rb", compression="infer") as handle:
            yield handle
        return
    local = Path(text[len("file://") :] if text.startswith("file://") else text)
    try:
        raw = open(local, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a .jsonl file") from None
    with raw:
        if local.suffix == ".gz":
            with gzip.open(raw, "rb") as handle:
                yield handle
        else:
            yield raw


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-blank line, streaming the file.

    Raises:
        DataError: naming the file and line of the first bad line.
    """
    with _open_binary(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1}); re-encode the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            # Parsed without its line end, a truncated line's error points at the end of that line,
            # not at column 1 of a "line 2" beyond the newline.
            line = line.rstrip("\r\n")
            try:
                record = json.loads(line, parse_constant=_reject_constant)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: invalid JSON at column {exc.pos + 1}: {exc.msg}"
                ) from None
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
            except RecursionError:
                raise DataError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}"
                )
            yield lineno, record


def hash_jsonl(path: str | Path) -> tuple[str, int]:
    """``(sha256, record_count)`` over a JSONL file's records, streamed (constant memory)."""
    hasher = RecordHasher()
    for _, record in iter_jsonl(path):
        hasher.update(record)
    return hasher.hexdigest(), hasher.count
