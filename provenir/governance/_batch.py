"""The per-batch operations every executor runs: scan a batch, mask a batch, summarise findings.

The in-process classes (:class:`~provenir.governance.pii.PIIScanner`, …) call these on a
``JsonlDataset``; :mod:`provenir.distributed.governance` calls the very same functions inside Ray Data
``map_batches``. Reports built here never contain a detected value: a masked preview and a SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from provenir.governance._engine import PII, SECRET, Engine, Hit, RecordScan
from provenir.governance._records import replace_leaves


def preview(value: str) -> str:
    """A masked preview that cannot reveal the value: a short prefix, stars, the length."""
    keep = min(4, len(value) // 4)
    return f"{value[:keep]}{'*' * min(max(len(value) - keep, 1), 8)} ({len(value)} chars)"


def value_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Finding:
    """One detection, reported without its value.

    Attributes:
        record_index: 0-based index of the record in its dataset (or file, for file scans).
        field: the field path inside the record, e.g. ``messages[2].content``; a finding in a dict key
            is ``contacts.<key 0>`` (entry 0 of ``contacts``), and a path through a key that holds a
            finding says ``<entry N>``: a path never contains a key's text.
        entity_type: ``EMAIL``, ``CREDIT_CARD``, ``AWS_ACCESS_KEY_ID``, …
        kind: ``"pii"`` or ``"secret"``.
        start, end: character span inside that field's string.
        preview: masked preview (``"john****** (16 chars)"``); never the value.
        value_hash: SHA-256 of the value (to match findings across reports without the value).
        placeholder: a documented example or obvious stand-in, not a live value: AWS's
            ``AKIAIOSFODNN7EXAMPLE``, ``<your-api-key>``, a card network's published test number, the
            SSA's advertised SSNs. Still reported (and masked unless ``keep_examples``); a placeholder
            secret does not count as a live secret.
        source: ``"pattern"`` or ``"ner"``.
        file, line: where the record came from, for file scans.
    """

    record_index: int
    field: str
    entity_type: str
    kind: str
    start: int
    end: int
    preview: str
    value_hash: str
    placeholder: bool = False
    source: str = "pattern"
    file: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RecordError:
    """A record that could not be scanned whole (malformed JSON, not an object, nested too deeply)."""

    record_index: int
    message: str
    file: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan_batch(records: Sequence[Any], engine: Engine, ner: Any = None,
               ner_types: frozenset[str] = frozenset({"PERSON", "LOCATION"})) -> list[RecordScan]:
    """Scan one batch with the pattern engine, plus the NER engine when one is given."""
    scans = engine.scan(records)
    if ner is not None and ner_types:
        for ri, scan in enumerate(scans):
            for li, text in enumerate(scan.values):
                if len(text) < 3:
                    continue
                for etype, start, end in ner.analyze(text):
                    if etype in ner_types:
                        scan.hits.append(Hit(ri, li, etype, PII, start, end, text[start:end], False))
    return scans


def findings_of(scan: RecordScan, record_index: int, *, file: str | None = None,
                line: int | None = None) -> list[Finding]:
    paths = scan.paths if scan.hits else []
    out = []
    for hit in scan.hits:
        out.append(Finding(
            record_index=record_index, field=paths[hit.leaf] if hit.leaf < len(paths) else "",
            entity_type=hit.entity_type, kind=hit.kind, start=hit.start, end=hit.end,
            preview=preview(hit.value), value_hash=value_hash(hit.value), placeholder=hit.placeholder,
            source="ner" if hit.entity_type in ("PERSON", "LOCATION") else "pattern",
            file=file, line=line,
        ))
    return out


def _token(hit: Hit, mode: str, salt: bytes) -> str:
    if mode == "pseudonym":
        digest = hmac.new(salt, hit.value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"<{hit.entity_type}_{digest[:12]}>"
    return f"<{hit.entity_type}>"


def mask_scan(scan: RecordScan, *, mode: str = "placeholder", salt: bytes = b"",
              kinds: frozenset[str] = frozenset({PII, SECRET}), include_placeholders: bool = True) -> Any:
    """The record with every finding replaced by ``<TYPE>`` (or ``<TYPE_pseudonym>``), structure kept.

    Overlapping findings are merged: the outermost (earliest, then longest) decides the token.
    """
    by_leaf: dict[int, list[Hit]] = {}
    for hit in scan.hits:
        if hit.kind in kinds and (include_placeholders or not hit.placeholder):
            by_leaf.setdefault(hit.leaf, []).append(hit)
    if not by_leaf:
        return scan.record
    replacements: dict[int, str] = {}
    for leaf, hits in by_leaf.items():
        text = scan.values[leaf]
        hits.sort(key=lambda h: (h.start, -h.end))
        parts: list[str] = []
        cursor = 0
        for hit in hits:
            if hit.start < cursor:  # inside or overlapping one already replaced: swallow it
                cursor = max(cursor, hit.end)
                continue
            parts.append(text[cursor:hit.start])
            parts.append(_token(hit, mode, salt))
            cursor = hit.end
        parts.append(text[cursor:])
        replacements[leaf] = "".join(parts)
    return replace_leaves(scan.record, replacements)


def summarize(findings: Sequence[Finding]) -> dict[str, dict[str, int]]:
    """Counts by kind and type: ``{"pii": {"EMAIL": 3}, "secret": {...}, "placeholder": {...}}``."""
    out: dict[str, dict[str, int]] = {"pii": {}, "secret": {}, "placeholder": {}}
    for f in findings:
        bucket = "placeholder" if f.placeholder else f.kind
        out[bucket][f.entity_type] = out[bucket].get(f.entity_type, 0) + 1
    return out
