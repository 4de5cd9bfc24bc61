"""Scanning files in process: tolerant streaming of JSONL/Parquet, masked output, a report.

Malformed lines (invalid UTF-8 or JSON, not an object, nested too deeply) never stop a scan: they
are counted and reported with file and line, *and* their raw text is still scanned as one string
(field ``<raw line>``), so a secret in a truncated or mis-encoded line is reported too. They are left
out of the masked output (they are not records it could hold). JSON strings may hold raw control
characters (parsed with ``strict=False``). Cost is linear in the input: see docs/governance.md,
"Bad input".
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from provenir.core.errors import DataError
from provenir.governance._batch import findings_of, mask_scan, scan_batch
from provenir.governance._engine import NER_TYPES, PII, PII_TYPES, SECRET, SECRET_TYPES, Engine
from provenir.governance._ner import load_ner

MAX_LISTED_ERRORS = 1000
RAW_FIELD = "<raw line>"
MAX_LINE_BYTES = 64 << 20  # a longer line is not parsed as JSON: its text is scanned in pieces of this size
BATCH_BYTES = 32 << 20  # a batch is scanned once it holds this much text (or batch_size rows)
CONTINUED = "\x00continued"  # error of a long line's later pieces (+ ":<overlap chars>"): scanned, not counted
_PIECE_OVERLAP = 64 << 10  # each piece repeats the previous piece's tail, so no value is cut in two


@dataclass
class ScanReport:
    """Summary of a file scan (in process or on Ray Data); findings are in ``findings_path``."""

    inputs: list[str]
    executor: str
    records: int = 0
    malformed: int = 0
    records_with_pii: int = 0
    records_with_secrets: int = 0
    pii: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, int] = field(default_factory=dict)
    placeholders: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    findings_path: str | None = None
    masked_outputs: list[str] = field(default_factory=list)
    mask_mode: str | None = None
    ner_engine: str | None = None
    ner_note: str | None = None
    seconds: float = 0.0

    @property
    def has_secrets(self) -> bool:
        return bool(self.secrets)

    @property
    def has_pii(self) -> bool:
        return bool(self.pii)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["has_pii"], out["has_secrets"] = self.has_pii, self.has_secrets
        return out

    def add_counts(self, other: dict[str, Any]) -> None:
        """Merge a partial summary (one batch or one Ray write task)."""
        mine = {key: getattr(self, key) for key in ("records", "malformed", "records_with_pii",
                                                     "records_with_secrets", "pii", "secrets",
                                                     "placeholders", "errors")}
        merge_summary(mine, {**new_summary(), **other})
        for key in ("records", "malformed", "records_with_pii", "records_with_secrets"):
            setattr(self, key, mine[key])


def merge_summary(into: dict[str, Any], part: dict[str, Any], max_errors: int = MAX_LISTED_ERRORS) -> None:
    """Add a partial summary (one batch, one shard, one write task) into ``into``."""
    for key in ("records", "malformed", "records_with_pii", "records_with_secrets"):
        into[key] += part[key]
    for key in ("pii", "secrets", "placeholders"):
        for etype, count in part[key].items():
            into[key][etype] = into[key].get(etype, 0) + count
    room = max_errors - len(into["errors"])
    if room > 0:
        into["errors"].extend(part["errors"][:room])


def new_summary() -> dict[str, Any]:
    return {"records": 0, "malformed": 0, "records_with_pii": 0, "records_with_secrets": 0,
            "pii": {}, "secrets": {}, "placeholders": {}, "errors": []}


class BatchOp:
    """The whole per-batch job over rows ``(file, line, json text, error)``: parse, scan, mask,
    summarise. Used as is in process and as the Ray Data actor class."""

    def __init__(self, *, pii: bool = True, secrets: bool = True, mask_mode: str | None = None,
                 salt: bytes = b"", phone_regions: Sequence[str] = ("US",), ner: str | None = None,
                 ner_model: str | None = None, pii_types: Sequence[str] | None = None,
                 secret_types: Sequence[str] | None = None, keep_examples: bool = False):
        pii_types = tuple(pii_types or (PII_TYPES + NER_TYPES)) if pii else ()
        secret_types = tuple(secret_types or SECRET_TYPES) if secrets else ()
        self.engine = Engine(pii_types=[t for t in pii_types if t in PII_TYPES], secret_types=secret_types,
                             phone_regions=phone_regions)
        self.ner_types = frozenset(t for t in pii_types if t in NER_TYPES)
        self.ner, self.ner_note = load_ner(ner if self.ner_types else None, ner_model)
        self.mask_mode = mask_mode
        self.keep_examples = keep_examples
        self.salt = salt
        self.kinds = frozenset(k for k, on in ((PII, pii), (SECRET, secrets)) if on)

    @staticmethod
    def _error(summary: dict[str, Any], file: str, line: int, message: str) -> None:
        summary["malformed"] += 1
        summary["errors"].append({"file": file, "line": int(line), "message": f"{file}:{line}: {message}"})

    def run(self, files: Sequence[str], lines: Sequence[int], texts: Sequence[str | None],
            errors: Sequence[str | None]) -> tuple[list[str | None], list[str], dict[str, Any]]:
        """Returns (masked JSON text per row or None, finding JSON lines, summary)."""
        summary = new_summary()
        records: list[Any] = []
        where: list[int] = []
        raw: set[int] = set()  # rows scanned as their raw text: not JSON objects
        skip: dict[int, int] = {}  # long-line pieces: characters repeated from the piece before
        masked: list[str | None] = [None] * len(texts)
        for i, (text, error) in enumerate(zip(texts, errors)):
            if error is not None and error.startswith(CONTINUED):
                skip[i] = int(error.rsplit(":", 1)[1])  # a later piece of a long line: counted with its first
            elif error is not None or text is None:
                summary["records"] += 1
                summary["malformed"] += 1
                summary["errors"].append({"file": files[i], "line": int(lines[i]),
                                          "message": error or "empty row"})
            else:
                summary["records"] += 1
                try:
                    records.append(json.loads(text, strict=False))
                    where.append(i)
                    continue
                except json.JSONDecodeError as exc:
                    self._error(summary, files[i], lines[i], f"invalid JSON at column {exc.colno}: {exc.msg}")
                except (ValueError, RecursionError):
                    self._error(summary, files[i], lines[i], "JSON nested too deeply or not valid")
            if text:  # malformed: still scanned, as one string
                records.append(text)
                where.append(i)
                raw.add(i)
        finding_lines: list[str] = []
        scans = scan_batch(records, self.engine, self.ner, self.ner_types)
        for i, scan in zip(where, scans):
            file, line = files[i], int(lines[i])
            if scan.problem:
                summary["malformed"] += 1
                summary["errors"].append({"file": file, "line": line, "message": f"{file}:{line}: {scan.problem}"})
            if scan.hits:
                found = findings_of(scan, line - 1, file=file, line=line)
                if i in raw:
                    found = [dataclasses.replace(f, field=RAW_FIELD) for f in found
                             if f.end > skip.get(i, -1)]  # one wholly inside the overlap was reported already
                pii = sec = False
                for f in found:
                    bucket = "placeholders" if f.placeholder else ("pii" if f.kind == PII else "secrets")
                    summary[bucket][f.entity_type] = summary[bucket].get(f.entity_type, 0) + 1
                    pii |= f.kind == PII
                    sec |= f.kind == SECRET and not f.placeholder
                    finding_lines.append(_dumps(f.to_dict()))
                if i not in skip:  # a long line's later pieces belong to the record of its first
                    summary["records_with_pii"] += pii
                    summary["records_with_secrets"] += sec
            if self.mask_mode and i not in raw:
                record = mask_scan(scan, mode=self.mask_mode, salt=self.salt, kinds=self.kinds,
                                   include_placeholders=not self.keep_examples) \
                    if scan.hits else scan.record
                masked[i] = texts[i] if record is scan.record else _dumps(record)
        return masked, finding_lines, summary


def _dumps(value: Any) -> str:
    """JSON text that is valid UTF-8: non-ASCII kept as is, unless the value holds a lone surrogate
    (``"\\ud800"`` in the input), which only the escaped form can carry."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


# -- reading files in process --------------------------------------------------------------------
def _open(path: str) -> IO[bytes]:
    if "://" in path and not path.startswith("file://"):
        import fsspec

        return fsspec.open(path, "rb", compression="infer").open()
    local = path[len("file://"):] if path.startswith("file://") else path
    if local.endswith(".gz"):
        return gzip.open(local, "rb")
    return open(local, "rb")


def parse_line(raw: bytes, file: str, line: int) -> tuple[str | None, str | None] | None:
    """``(json text, None)``, ``(raw text, error)`` for a line that is not a JSON object (its text,
    bad bytes replaced, is still scanned), or ``None`` for a blank line. Never raises."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # the text (bad bytes replaced) is still scanned as a raw line
        return raw.decode("utf-8", "replace"), f"{file}:{line}: invalid UTF-8 at byte {exc.start + 1}"
    if not text.strip():
        return None
    if not text.lstrip().startswith("{"):
        return text, f"{file}:{line}: expected a JSON object"
    return text, None


def iter_rows(path: str) -> Iterator[tuple[str, int, str | None, str | None]]:
    """``(file, line, json text, error)`` for every non-blank line or Parquet row of ``path``."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        source = path
        if "://" in path and not path.startswith("file://"):
            import fsspec

            source = fsspec.open(path, "rb").open()
        number = 0
        for batch in pq.ParquetFile(source).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield path, number, json.dumps(row, ensure_ascii=False, default=str), None
        return
    with _open(path) as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                yield from _long_line(handle, raw, path, number)
                continue
            parsed = parse_line(raw, path, number)
            if parsed is not None:
                yield path, number, parsed[0], parsed[1]


def _long_line(handle: IO[bytes], first: bytes, path: str,
               number: int) -> Iterator[tuple[str, int, str | None, str | None]]:
    """A line longer than :data:`MAX_LINE_BYTES`: reported once, its text scanned in pieces (each
    repeating the last 64 KiB of the one before), so memory stays bounded and nothing goes unscanned."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    error: str | None = (f"{path}:{number}: line longer than {MAX_LINE_BYTES >> 20} MiB; not parsed as JSON, "
                         f"its text is scanned in {MAX_LINE_BYTES >> 20} MiB pieces")
    tail = ""
    chunk = first
    while chunk:
        ends = chunk.endswith(b"\n")
        text = decoder.decode(chunk.rstrip(b"\r\n") if ends else chunk, final=ends)
        yield path, number, tail + text, error
        tail = (tail + text)[-_PIECE_OVERLAP:]
        error = f"{CONTINUED}:{len(tail)}"
        if ends:
            return
        chunk = handle.readline(MAX_LINE_BYTES)


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Files named, and the ``*.jsonl``/``*.jsonl.gz``/``*.parquet`` files of folders named."""
    out: list[str] = []
    for path in paths:
        path = str(path)
        if "://" in path and not path.startswith("file://"):
            from provenir.core.paths import expand_paths  # fsspec: folders and globs of any store

            out.extend(expand_paths([path]))
            continue
        local = Path(path[len("file://"):] if path.startswith("file://") else path)
        if local.is_dir():
            found = sorted(p for p in local.rglob("*")
                           if p.name.endswith((".jsonl", ".json", ".jsonl.gz", ".parquet")))
            if not found:
                raise DataError(f"{path}: no .jsonl or .parquet files in this folder")
            out.extend(str(p) for p in found)
        elif local.exists():
            out.append(str(local))
        else:
            raise DataError(f"{path}: file not found")
    return out


def _masked_name(path: str, used: set[str]) -> str:
    name = Path(path.split("://")[-1]).name
    for suffix in (".gz", ".parquet", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    candidate, n = f"{name}.jsonl", 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}.jsonl"
    used.add(candidate)
    return candidate


def _local_folder(folder: str) -> str:
    from provenir.core.errors import ConfigError
    from provenir.core.io import local_path

    local = local_path(folder)
    if local is None:
        raise ConfigError(f"{folder}: an in-process scan writes masked records to a local folder only; "
                          "run it on Ray Data (provenir scan --ray or --address) to write to a URI")
    return local


def scan_files_local(
    paths: Sequence[str], *, mask_dir: str | None = None, findings_path: str | None = None,
    batch_size: int = 1024, progress: Callable[[int, int], None] | None = None, overwrite: bool = False,
    **op_kwargs: Any,
) -> ScanReport:
    """Scan (and optionally mask) files in this process; stream findings to ``findings_path``.

    ``mask_dir`` is a local folder (``file://`` accepted); masked output to a store URI is written
    by the Ray Data scan (:func:`provenir.distributed.governance.scan_files`).
    ``progress(bytes_done, bytes_total)`` is called after each batch (local files only count bytes).
    """
    from provenir.core.io import atomic_open

    mask_dir = _local_folder(mask_dir) if mask_dir else None
    files = expand_inputs(paths)
    op = BatchOp(**op_kwargs)
    report = ScanReport(inputs=files, executor="in-process", mask_mode=op.mask_mode,
                        ner_engine=op.ner.name if op.ner else None, ner_note=op.ner_note)
    started = time.perf_counter()
    total = sum(os.path.getsize(f) for f in files if "://" not in f and os.path.exists(f))
    done = 0
    if mask_dir:
        from provenir.core.io import check_output_outside_inputs

        check_output_outside_inputs(mask_dir, files, "--mask")  # before anything is removed
        if Path(mask_dir).exists() and any(Path(mask_dir).iterdir()):
            if not overwrite:
                raise DataError(f"{mask_dir}: output folder exists and is not empty; remove it or pass --overwrite (overwrite=True)")
            import shutil

            shutil.rmtree(mask_dir)  # replaced whole, as on Ray: no stale part from an earlier scan
        Path(mask_dir).mkdir(parents=True, exist_ok=True)
    findings_cm = atomic_open(findings_path, "w", encoding="utf-8") if findings_path else None
    findings_out = findings_cm.__enter__() if findings_cm else None
    used: set[str] = set()
    try:
        for file in files:
            target = Path(mask_dir) / _masked_name(file, used) if mask_dir else None
            out_cm = atomic_open(target, "w", encoding="utf-8") if target else None
            out = out_cm.__enter__() if out_cm else None
            try:
                batch: list[tuple[str, int, str | None, str | None]] = []
                size = os.path.getsize(file) if "://" not in file and os.path.exists(file) else 0
                consumed = 0
                held = 0
                for row in iter_rows(file):
                    batch.append(row)
                    consumed += len(row[2] or "") + 1
                    held += len(row[2] or "")
                    if len(batch) >= batch_size or held >= BATCH_BYTES:
                        _flush(op, batch, report, out, findings_out)
                        batch, held = [], 0
                        if progress and size:
                            progress(done + min(consumed, size), total)
                _flush(op, batch, report, out, findings_out)
                done += size
                if progress:
                    progress(done, total)
            except BaseException as exc:
                if out_cm:
                    out_cm.__exit__(type(exc), exc, exc.__traceback__)
                raise
            if out_cm:
                out_cm.__exit__(None, None, None)
                report.masked_outputs.append(str(target))
    except BaseException as exc:
        if findings_cm:
            findings_cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if findings_cm:
        findings_cm.__exit__(None, None, None)
    report.findings_path = findings_path
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _flush(op: BatchOp, batch: list[tuple[str, int, str | None, str | None]], report: ScanReport,
           out: IO[str] | None, findings_out: IO[str] | None) -> None:
    if not batch:
        return
    files, lines, texts, errors = zip(*batch)
    masked, finding_lines, summary = op.run(files, lines, texts, errors)
    report.add_counts(summary)
    if out is not None:
        out.write("".join(f"{m}\n" for m in masked if m is not None))
    if findings_out is not None and finding_lines:
        findings_out.write("\n".join(finding_lines) + "\n")
