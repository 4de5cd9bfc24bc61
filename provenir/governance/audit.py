"""A tamper-evident, append-only audit log (hash-chained JSONL), safe for concurrent writers.

Each entry is one JSON line::

    {"seq": 7, "ts": "2026-11-25T01:02:03.456789Z", "event": "governance.scan", "actor": "cli",
     "details": {...}, "pid": 4242, "host": "node-1", "prev": "<hash of entry 6>", "hash": "<sha256>"}

``hash`` is the SHA-256 of the entry's canonical JSON without ``hash``; ``prev`` is the previous
entry's ``hash`` (64 zeros for the first). Editing, deleting, reordering or inserting a line breaks
the chain, and :meth:`AuditLogger.verify` names the first broken or missing entry. A writer killed
mid-append leaves a torn last line, which ``verify`` reports as exactly that; the next ``log`` call
seals it (records its bytes' hash in an ``audit.torn_tail`` entry and continues the chain).
Truncating whole entries off the end is only detectable against a head hash kept elsewhere:
pass it as ``verify(expected_head=...)``.

Writers in different processes (Ray workers, the server, the CLI) serialise on a ``filelock`` lock
file next to the log; each entry is written with one ``write`` on an ``O_APPEND`` descriptor and
``fsync``-ed before the lock is released. Details are redacted before they are written: values
under secret-like keys (``password``, ``token``, ``api_key``, …) and any secret the secret scanner
recognises inside strings become ``[REDACTED:TYPE]``.

The default log folder: ``$PROVENIR_AUDIT_DIR`` if set, else ``<store root>/audit`` (the store root
being ``$PROVENIR_STORE`` or ``artifacts``; a store URI keeps its log in the local
``artifacts/audit``); see :func:`default_audit_dir`. The log is always on local disk.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["AuditLogger", "AuditVerification", "default_audit_dir", "redact"]

LOG_NAME = "audit.jsonl"
GENESIS = "0" * 64
_TAIL_BYTES = 1 << 16
_SECRET_KEY_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "access_key",
                     "private_key", "credential", "authorization", "cookie", "session_key")


def _local_dir(folder: str | Path, what: str) -> Path:
    """``folder`` as a local path (``file://`` stripped); a store URI is refused: the log is appended
    under a lock file with ``O_APPEND`` and ``fsync``, which object stores do not offer."""
    from provenir.core.errors import ConfigError
    from provenir.core.io import local_path

    local = local_path(folder)
    if local is None:
        raise ConfigError(f"{what}: the audit log must be a local folder (it is appended under a file "
                          "lock); set PROVENIR_AUDIT_DIR or --audit-dir to a local path")
    return Path(local)


def default_audit_dir(store_root: str | Path | None = None) -> Path:
    """Where audit events go: ``$PROVENIR_AUDIT_DIR``, else ``<store root>/audit``.

    The store root is the argument, else ``$PROVENIR_STORE``, else ``artifacts``. The log is a local
    file: a store root that is a URI (``s3://…``) keeps its audit log in the local
    ``artifacts/audit``, and ``$PROVENIR_AUDIT_DIR`` must be a local folder (else ``ConfigError``).
    """
    env = os.environ.get("PROVENIR_AUDIT_DIR")
    if env:
        return _local_dir(env, f"PROVENIR_AUDIT_DIR={env}")
    from provenir.core.io import local_path

    root = local_path(store_root or os.environ.get("PROVENIR_STORE") or "artifacts")
    return Path(root if root is not None else "artifacts") / "audit"


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")


def _entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


_redactor = None


def _secret_redactor():
    global _redactor
    if _redactor is None:
        try:
            from provenir.governance._engine import SECRET_TYPES, Engine

            _redactor = Engine(pii_types=(), secret_types=SECRET_TYPES)
        except Exception:  # noqa: BLE001 - redaction by key still applies without the engine
            _redactor = False
    return _redactor


def _redact_string(text: str) -> str:
    engine = _secret_redactor()
    if not engine or len(text) < 8:
        return text
    scan = engine.scan([text])[0]
    if not scan.hits:
        return text
    hits = sorted(scan.hits, key=lambda h: (h.start, -h.end))
    out, cursor = [], 0
    for hit in hits:
        if hit.start < cursor:
            cursor = max(cursor, hit.end)
            continue
        out.append(text[cursor:hit.start])
        out.append(f"[REDACTED:{hit.entity_type}]")
        cursor = hit.end
    out.append(text[cursor:])
    return "".join(out)


def redact(value: Any, _key: str = "") -> Any:
    """``value`` with secrets removed: whole values under secret-like keys, recognised secrets in
    strings and in dict keys."""
    low = _key.lower()
    if (low and any(word in low for word in _SECRET_KEY_WORDS) and value not in (None, "")
            and not isinstance(value, (dict, list, tuple, bool, int, float))):
        return "[REDACTED]"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = _redact_string(str(k))  # a secret used as a key is removed too
            unique, n = name, 1
            while unique in out:  # two keys redacted alike: keep both entries
                n += 1
                unique = f"{name} #{n}"
            out[unique] = redact(v, str(k))
        return out
    if isinstance(value, (list, tuple)):
        return [redact(v, _key) for v in value]
    if isinstance(value, str):
        return _redact_string(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return _redact_string(str(value))


@dataclass
class AuditVerification:
    """The outcome of :meth:`AuditLogger.verify`.

    Attributes:
        ok: the whole log is intact (and ends at ``expected_head`` when one was given).
        entries: valid entries before the first problem (all of them when ``ok``).
        first_bad_line: 1-based line of the first broken, missing or torn entry (``None`` when ok).
        first_bad_seq: the ``seq`` expected there.
        reason: what is wrong, in words.
        torn_tail: the only problem is an incomplete last line (a writer died mid-append).
        head: hash of the last valid entry.
        expected_head_seq: the ``seq`` of the entry whose hash is ``expected_head`` (``None`` when no
            head was given or the log does not hold it); entries after it were appended later.
    """

    ok: bool
    entries: int
    first_bad_line: int | None = None
    first_bad_seq: int | None = None
    reason: str = ""
    torn_tail: bool = False
    head: str = GENESIS
    expected_head_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLogger:
    """Append-only, hash-chained audit log in ``log_dir/audit.jsonl``.

    Example:
        >>> import tempfile
        >>> log = AuditLogger(tempfile.mkdtemp())
        >>> log.log("dataset.masked", "alice", path="data.jsonl", api_key="sk-live-123")
        >>> log.read()[0]["details"]
        {'api_key': '[REDACTED]', 'path': 'data.jsonl'}
        >>> log.verify().ok
        True
    """

    def __init__(self, log_dir: str | Path, *, fsync: bool = True, lock_timeout: float = 60.0):
        self.log_dir = _local_dir(log_dir, str(log_dir))
        self.path = self.log_dir / LOG_NAME
        self.lock_path = self.log_dir / (LOG_NAME + ".lock")
        self.fsync = fsync
        self.lock_timeout = lock_timeout

    # -- writing -----------------------------------------------------------------------------------
    def log(self, event: str, actor: str, **details: Any) -> None:
        """Append one event; ``details`` are redacted of secrets first."""
        from filelock import FileLock

        clean = redact(details)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path), timeout=self.lock_timeout):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                seq, prev, torn = self._tail(fd)
                lines = []
                if torn is not None:
                    offset, raw = torn
                    seal = self._entry(seq, prev, "audit.torn_tail", "provenir", {
                        "offset": offset, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                    })
                    lines.append(b"\n" + _canonical(seal) + b"\n")
                    seq, prev = seq + 1, seal["hash"]
                entry = self._entry(seq, prev, event, actor, clean)
                lines.append(_canonical(entry) + b"\n")
                data = b"".join(lines)
                written = os.write(fd, data)
                while written < len(data):  # pragma: no cover - regular files write whole
                    written += os.write(fd, data[written:])
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def _entry(seq: int, prev: str, event: str, actor: str, details: Any) -> dict[str, Any]:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001
            user = None
        entry = {
            "seq": seq, "ts": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "event": str(event), "actor": str(actor), "details": details, "pid": os.getpid(),
            "host": socket.gethostname(), "user": user, "prev": prev,
        }
        entry["hash"] = _entry_hash(entry)
        return entry

    def _tail(self, fd: int) -> tuple[int, str, tuple[int, bytes] | None]:
        """(next seq, last hash, torn tail (offset, bytes) or None), reading only the file's end."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS, None
        start = max(0, size - _TAIL_BYTES)
        while True:
            data = os.pread(fd, size - start, start)
            body = data.rstrip(b"\n") if data.endswith(b"\n") else data
            cut = body.rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            start = max(0, start - _TAIL_BYTES * 4)
        torn = None
        if not data.endswith(b"\n"):
            last_nl = data.rfind(b"\n")
            torn = (start + last_nl + 1, data[last_nl + 1:])
            data = data[: last_nl + 1]
            if not data.strip():
                if start == 0:
                    return 0, GENESIS, torn
                sub_seq, sub_prev, _ = self._tail_before(fd, start + last_nl + 1)
                return sub_seq, sub_prev, torn
        lines = data.rstrip(b"\n").split(b"\n")
        for raw in reversed(lines):
            try:
                last = json.loads(raw)
                return int(last["seq"]) + 1, str(last["hash"]), torn
            except (ValueError, KeyError, TypeError):
                continue
        return 0, GENESIS, torn

    def _tail_before(self, fd: int, end: int) -> tuple[int, str, None]:
        data = os.pread(fd, min(end, _TAIL_BYTES * 16), max(0, end - _TAIL_BYTES * 16))
        for raw in reversed(data.rstrip(b"\n").split(b"\n")):
            try:
                last = json.loads(raw)
                return int(last["seq"]) + 1, str(last["hash"]), None
            except (ValueError, KeyError, TypeError):
                continue
        return 0, GENESIS, None

    # -- reading -------------------------------------------------------------------------------------
    def read(self) -> list[dict[str, Any]]:
        """Every readable entry, oldest first (a torn or corrupt line is skipped; see :meth:`verify`)."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def head(self) -> str:
        """Hash of the last valid entry; keep it elsewhere to detect truncation later."""
        return self.verify().head

    def verify(self, expected_head: str | None = None) -> AuditVerification:
        """Check every entry's hash and link; name the first broken, missing or torn entry.

        A log that does not exist or holds nothing is not intact: every writer appends at least one
        entry, so an absent or empty file means the log was deleted or truncated whole.

        ``expected_head`` (a head kept elsewhere earlier) anchors the log: it must hold an entry with
        that hash, else entries were removed from the end. Entries appended after it are fine (the
        log grows); ``expected_head_seq`` says where the anchor is.

        Raises:
            ConfigError: ``expected_head`` is not a full 64-character hex hash (a prefix cannot anchor).
        """
        if expected_head is not None:
            expected_head = expected_head.strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", expected_head):
                from provenir.core.errors import ConfigError

                raise ConfigError(
                    f"expected head {expected_head[:80]!r}: must be the full 64-character hex hash that "
                    "`provenir audit verify` prints as the head (a prefix cannot anchor the log)"
                )
        if not self.path.is_file():
            return AuditVerification(ok=False, entries=0, first_bad_seq=0, reason=f"no audit log at {self.path}")
        prev, expected_seq, count = GENESIS, 0, 0
        anchor: int | None = None
        with open(self.path, "rb") as handle:
            data = handle.read()
        if not data:
            return self._bad(0, 1, 0, f"audit log {self.path} is empty: every entry was removed", GENESIS)
        lines = data.split(b"\n")
        complete = data.endswith(b"\n") or not data
        if lines and lines[-1] == b"":
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            last_line = number == len(lines)
            if not raw.strip():
                return self._bad(count, number, expected_seq, "blank line inside the log", prev)
            try:
                entry = json.loads(raw)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError:
                if not last_line and self._sealed(raw, lines[number]):
                    continue  # a torn line that a later writer sealed (audit.torn_tail)
                if last_line and not complete:
                    return AuditVerification(
                        ok=False, entries=count, first_bad_line=number, first_bad_seq=expected_seq,
                        reason=f"line {number}: torn last line ({len(raw)} bytes, no newline): a writer "
                               "stopped mid-append; every entry before it is intact",
                        torn_tail=True, head=prev)
                return self._bad(count, number, expected_seq, f"line {number}: not valid JSON", prev)
            seq = entry.get("seq")
            if entry.get("hash") != _entry_hash(entry):
                return self._bad(count, number, expected_seq,
                                 f"line {number} (seq {seq}): content does not match its hash (edited)", prev)
            if seq != expected_seq or entry.get("prev") != prev:
                if isinstance(seq, int) and seq > expected_seq:
                    what = (f"entry seq {expected_seq} is missing" if seq == expected_seq + 1
                            else f"entries seq {expected_seq}..{seq - 1} are missing")
                    reason = f"line {number}: {what} (found seq {seq})"
                else:
                    reason = (f"line {number} (seq {seq}): does not follow seq {expected_seq - 1} "
                              "(reordered, duplicated or inserted)")
                return self._bad(count, number, expected_seq, reason, prev)
            prev, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
            if expected_head is not None and prev == expected_head:
                anchor = seq
        if expected_head is not None and anchor is None:
            return AuditVerification(ok=False, entries=count, first_bad_line=len(lines) + 1,
                                     first_bad_seq=expected_seq, head=prev,
                                     reason="no entry has the expected head: entries were removed from "
                                            "the end (or the head is not from this log)")
        return AuditVerification(ok=True, entries=count, head=prev, expected_head_seq=anchor)

    @staticmethod
    def _sealed(raw: bytes, following: bytes) -> bool:
        try:
            seal = json.loads(following)
            return (seal.get("event") == "audit.torn_tail"
                    and seal["details"]["sha256"] == hashlib.sha256(raw).hexdigest())
        except (ValueError, KeyError, TypeError, AttributeError):
            return False

    @staticmethod
    def _bad(count: int, line: int, seq: int, reason: str, head: str) -> AuditVerification:
        return AuditVerification(ok=False, entries=count, first_bad_line=line, first_bad_seq=seq,
                                 reason=reason, head=head)
