"""PII scanning and masking: e-mail, phone, card, SSN, IBAN, IP, credentials in URLs (+ NER names/places).

Every string anywhere in a record is scanned (nested objects, lists, ``messages[2].content``), object
keys included (reported as ``contacts.<key 0>``, never by their text; see
:mod:`provenir.governance._records`). Pattern types are found by one linear-time RE2 pass per batch
and confirmed by validators (Luhn and IIN ranges, mod-97, ``phonenumbers``, ``ipaddress``, SSN
area/group rules). PERSON and LOCATION need an
NER engine (presidio-analyzer with a spaCy model); when none is active the result says so.

Example:
    >>> from provenir.data.dataset import JsonlDataset
    >>> ds = JsonlDataset.from_records([{"instruction": "Mail jane@corp.io", "output": "ok"}])
    >>> result = PIIScanner(ner=None).scan(ds)
    >>> result.has_pii, result.pii_fields, result.findings[0].entity_type
    (True, ['instruction'], 'EMAIL')
    >>> PIIMasker().mask(ds).records[0]["instruction"]
    'Mail <EMAIL>'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from provenir.core.errors import ConfigError
from provenir.data.dataset import JsonlDataset
from provenir.governance._batch import (
    Finding,
    RecordError,
    findings_of,
    mask_scan,
    scan_batch,
    summarize,
)
from provenir.governance._engine import NER_TYPES, PII, PII_TYPES, SECRET, SECRET_TYPES, Engine
from provenir.governance._ner import load_ner

__all__ = ["PII_ENTITY_TYPES", "PIIFinding", "PIIMasker", "PIIScanResult", "PIIScanner", "RecordError"]

PII_ENTITY_TYPES: tuple[str, ...] = PII_TYPES + NER_TYPES
PIIFinding = Finding
BATCH_SIZE = 1024


def _records(dataset: JsonlDataset | Iterable[dict[str, Any]]) -> list[Any]:
    return dataset.records if isinstance(dataset, JsonlDataset) else list(dataset)


def _check_types(entities: Sequence[str] | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    if entities is None:
        return tuple(allowed)
    unknown = sorted(set(entities) - set(allowed))
    if unknown:
        raise ConfigError(f"{what}: unknown type(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return tuple(entities)


@dataclass
class PIIScanResult:
    """What a PII scan found.

    Attributes:
        has_pii: any finding at all.
        pii_fields: sorted field paths holding PII (``instruction``, ``messages[2].content``).
        record_count: records scanned (malformed ones included).
        findings: one :class:`PIIFinding` per detection (record index, field, type, span; no values).
        counts: findings per entity type.
        records_with_pii: how many records had at least one finding.
        ner_engine: the NER engine used for PERSON/LOCATION, or ``None`` when none was active.
        ner_note: why no NER engine was active (``None`` when one was).
        errors: records that could not be scanned whole, with file and line when known.
    """

    has_pii: bool
    pii_fields: list[str]
    record_count: int
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    records_with_pii: int = 0
    ner_engine: str | None = None
    ner_note: str | None = None
    errors: list[RecordError] = field(default_factory=list)
    entity_types: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "has_pii": self.has_pii, "pii_fields": self.pii_fields, "record_count": self.record_count,
            "records_with_pii": self.records_with_pii, "counts": self.counts,
            "ner_engine": self.ner_engine, "ner_note": self.ner_note,
            "entity_types": self.entity_types,
            "findings": [f.to_dict() for f in self.findings],
            "errors": [e.to_dict() for e in self.errors],
        }


class PIIScanner:
    """Finds PII in every string of every record.

    Args:
        entities: entity types to look for (default: all of :data:`PII_ENTITY_TYPES`).
        ner: ``"auto"`` (presidio + spaCy when installed), ``"presidio"`` (required), or ``None``.
        ner_model: spaCy package name or pipeline folder for the NER engine.
        phone_regions: regions tried for phone numbers written without ``+country``.
        batch_size: records per engine batch.
    """

    def __init__(self, entities: Sequence[str] | None = None, *, ner: str | None = "auto",
                 ner_model: str | None = None, phone_regions: Sequence[str] = ("US",),
                 batch_size: int = BATCH_SIZE):
        self.entities = _check_types(entities, PII_ENTITY_TYPES, "PIIScanner(entities=...)")
        self.engine = Engine(pii_types=[e for e in self.entities if e in PII_TYPES], secret_types=(),
                             phone_regions=phone_regions)
        wants_ner = any(e in NER_TYPES for e in self.entities)
        self.ner, self.ner_note = load_ner(ner if wants_ner else None, ner_model)
        if not wants_ner:
            self.ner_note = "PERSON and LOCATION were not requested"
        self.batch_size = batch_size

    @property
    def ner_engine(self) -> str | None:
        return self.ner.name if self.ner is not None else None

    def scan(self, dataset: JsonlDataset) -> PIIScanResult:
        """Scan a dataset (a :class:`JsonlDataset` or any iterable of dicts)."""
        records = _records(dataset)
        findings: list[Finding] = []
        errors: list[RecordError] = []
        with_pii = 0
        ner_types = frozenset(e for e in self.entities if e in NER_TYPES)
        for offset in range(0, len(records), self.batch_size):
            batch = records[offset:offset + self.batch_size]
            for index, scan in enumerate(scan_batch(batch, self.engine, self.ner, ner_types), start=offset):
                if scan.problem:
                    errors.append(RecordError(index, f"record {index}: {scan.problem}"))
                if scan.hits:
                    with_pii += 1
                    findings.extend(findings_of(scan, index))
        counts = summarize(findings)["pii"]
        return PIIScanResult(
            has_pii=bool(findings), pii_fields=sorted({f.field for f in findings}),
            record_count=len(records), findings=findings, counts=dict(sorted(counts.items())),
            records_with_pii=with_pii, ner_engine=self.ner_engine, ner_note=self.ner_note,
            errors=errors, entity_types=list(self.entities),
        )


class PIIMasker:
    """Replaces PII (and, by default, secrets) with typed placeholders, keeping each record's structure.

    Args:
        mode: ``"placeholder"`` (``<EMAIL>``) or ``"pseudonym"`` (``<EMAIL_3f9a…>``: the same value
            always gets the same token under one salt, so joins across records survive).
        salt: pseudonym key (bytes or str); default ``$PROVENIR_PSEUDONYM_SALT``, else a random salt
            per masker (consistent within one masker, not across runs).
        entities: PII types to mask (default: all).
        mask_secrets: also mask what :class:`~provenir.governance.scanners.SecretScanner` finds.
        keep_examples: leave documented example values as they are (published test card numbers
            such as ``4111 1111 1111 1111``, the SSA's advertised SSNs, AWS's ``AKIAIOSFODNN7EXAMPLE``,
            ``<your-api-key>`` stand-ins): findings with ``placeholder=True``. Default ``False``: they
            look like the real thing, so they are masked like it.
        ner, ner_model, phone_regions: as for :class:`PIIScanner`.
    """

    def __init__(self, mode: str = "placeholder", *, salt: bytes | str | None = None,
                 entities: Sequence[str] | None = None, mask_secrets: bool = True,
                 keep_examples: bool = False, ner: str | None = "auto", ner_model: str | None = None,
                 phone_regions: Sequence[str] = ("US",), batch_size: int = BATCH_SIZE):
        if mode not in ("placeholder", "pseudonym"):
            raise ConfigError(f"PIIMasker(mode={mode!r}): expected 'placeholder' or 'pseudonym'")
        self.mode = mode
        if salt is None:
            salt = os.environ.get("PROVENIR_PSEUDONYM_SALT") or os.urandom(16)
        self.salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        self.entities = _check_types(entities, PII_ENTITY_TYPES, "PIIMasker(entities=...)")
        self.mask_secrets = mask_secrets
        self.keep_examples = keep_examples
        self.engine = Engine(pii_types=[e for e in self.entities if e in PII_TYPES],
                             secret_types=SECRET_TYPES if mask_secrets else (), phone_regions=phone_regions)
        wants_ner = any(e in NER_TYPES for e in self.entities)
        self.ner, self.ner_note = load_ner(ner if wants_ner else None, ner_model)
        self.batch_size = batch_size
        self.last_masked_count = 0

    def mask(self, dataset: JsonlDataset) -> JsonlDataset:
        """A new dataset with every finding replaced; the input is not modified."""
        records = _records(dataset)
        out: list[Any] = []
        kinds = frozenset({PII, SECRET} if self.mask_secrets else {PII})
        ner_types = frozenset(e for e in self.entities if e in NER_TYPES)
        masked = 0
        for offset in range(0, len(records), self.batch_size):
            for scan in scan_batch(records[offset:offset + self.batch_size], self.engine, self.ner, ner_types):
                masked += sum(1 for h in scan.hits if not (self.keep_examples and h.placeholder))
                out.append(mask_scan(scan, mode=self.mode, salt=self.salt, kinds=kinds,
                                     include_placeholders=not self.keep_examples))
        self.last_masked_count = masked
        return JsonlDataset(out, source=getattr(dataset, "source", None))
