"""Measure scanners on labelled data: recall, precision, example flags and masking leak, per type.

A labelled corpus is JSONL, one object per line::

    {"record": {...the record to scan...},
     "labels": [{"field": "messages[1].content", "start": 12, "end": 52, "type": "GITHUB_TOKEN",
                 "kind": "secret", "placeholder": false}],
     "phone_regions": ["US"]}              # optional: regions for numbers written without +country

``field`` is the path of a string inside ``record`` (``a.b[2].c``); ``start``/``end`` are character
offsets into that string. ``tests/data/governance/formats/formats.jsonl`` is one such corpus, built
from published format documents. How findings are matched to labels (see :func:`score`): same record,
field and kind, overlapping spans, and (for typed scanners) the same type.

Example:
    >>> rows = [{"record": {"t": "mail ann@example.org"},
    ...          "labels": [{"field": "t", "start": 5, "end": 20, "type": "EMAIL", "kind": "pii",
    ...                      "placeholder": False}]}]
    >>> table = score(label_spans(rows), provenir_spans(rows))
    >>> table[("pii", "EMAIL")].recall, table[("pii", "EMAIL")].precision
    (1.0, 1.0)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenir.core.errors import DataError

__all__ = ["Span", "TypeScore", "label_spans", "load_labelled", "masking_leaks", "mask_spans",
           "provenir_spans", "score", "format_table"]

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_KINDS = ("pii", "secret")


@dataclass(frozen=True, slots=True)
class Span:
    """One labelled or detected value: record ``row``, ``field`` path, ``kind``, ``type`` (``None``
    for scanners that do not type what they find), character span, and the example flag."""

    row: int
    field: str
    type: str | None
    kind: str
    start: int
    end: int
    placeholder: bool = False


@dataclass
class TypeScore:
    """Counts for one ``(kind, type)``.

    Attributes:
        expected: labels of this type; ``recalled``: how many a finding matched.
        found: findings of this type that count (a secret finding flagged as an example that matches
            no label is neutral: it claims no live secret); ``correct``: how many matched a label.
        placeholder_labels / placeholder_agreed: matched labels, and those whose example flag the
            finding got right.
        leaks: labels whose value is still in the record after masking (when measured).
    """

    kind: str
    type: str
    expected: int = 0
    recalled: int = 0
    found: int = 0
    correct: int = 0
    placeholder_labels: int = 0
    placeholder_agreed: int = 0
    leaks: int | None = None

    @property
    def recall(self) -> float:
        return self.recalled / self.expected if self.expected else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.found if self.found else 1.0

    @property
    def placeholder_agreement(self) -> float:
        return self.placeholder_agreed / self.placeholder_labels if self.placeholder_labels else 1.0


_KEY_STEP = re.compile(r"<(key|entry) (\d+)>")


def _child(node: Any, key: str, index: str) -> Any:
    if index:
        return node[int(index)]
    special = _KEY_STEP.fullmatch(key)
    if special and isinstance(node, dict) and key not in node:  # a key leaf, or the value of a hidden key
        name = list(node)[int(special.group(2))]
        return name if special.group(1) == "key" else node[name]
    return node[key]


def resolve(record: Any, path: str) -> Any:
    """The value at a field path such as ``messages[1].content`` (``<key N>`` is the text of an
    object's N-th key, ``<entry N>`` its value, as scanner reports write them)."""
    node = record
    for key, index in _STEP.findall(path):
        node = _child(node, key, index)
    return node


def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a labelled corpus; a bad line is a :class:`DataError` naming file, line, field."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict) or not isinstance(row.get("record"), dict):
                raise DataError(f"{where}: expected an object with a 'record' object and a 'labels' list")
            labels = row.get("labels")
            if not isinstance(labels, list):
                raise DataError(f"{where}: 'labels' must be a list (use [] for a record with nothing to find)")
            for k, lab in enumerate(labels):
                _check_label(row["record"], lab, f"{where}: labels[{k}]")
            rows.append(row)
    return rows


def _check_label(record: dict, lab: Any, where: str) -> None:
    if not isinstance(lab, dict):
        raise DataError(f"{where}: expected an object")
    for name, kind in (("field", str), ("type", str), ("kind", str), ("start", int), ("end", int)):
        if not isinstance(lab.get(name), kind):
            raise DataError(f"{where}.{name}: expected a {kind.__name__}")
    if lab["kind"] not in _KINDS:
        raise DataError(f"{where}.kind: {lab['kind']!r}; expected 'pii' or 'secret'")
    try:
        text = resolve(record, lab["field"])
    except (KeyError, IndexError, TypeError):
        raise DataError(f"{where}.field: {lab['field']!r} is not a path in the record") from None
    if not isinstance(text, str) or not 0 <= lab["start"] < lab["end"] <= len(text):
        raise DataError(f"{where}: span {lab['start']}..{lab['end']} is not inside the string at {lab['field']!r}")


def label_spans(rows: Sequence[dict[str, Any]]) -> list[Span]:
    return [Span(i, lab["field"], lab["type"], lab["kind"], lab["start"], lab["end"], bool(lab.get("placeholder")))
            for i, row in enumerate(rows) for lab in row["labels"]]


def provenir_spans(rows: Sequence[dict[str, Any]], *, default_regions: Sequence[str] = ("US",)) -> list[Span]:
    """What :class:`PIIScanner` (patterns) and :class:`SecretScanner` find, rows grouped by their
    ``phone_regions``."""
    from provenir.data.dataset import JsonlDataset
    from provenir.governance.pii import PIIScanner
    from provenir.governance.scanners import SecretScanner

    by_regions: dict[tuple[str, ...], list[int]] = {}
    for i, row in enumerate(rows):
        by_regions.setdefault(tuple(row.get("phone_regions") or default_regions), []).append(i)
    out: list[Span] = []
    secrets = SecretScanner()
    for regions, indexes in by_regions.items():
        ds = JsonlDataset([rows[i]["record"] for i in indexes])
        for result in (PIIScanner(ner=None, phone_regions=regions).scan(ds), secrets.scan(ds)):
            for f in result.findings:
                out.append(Span(indexes[f.record_index], f.field, f.entity_type, f.kind, f.start, f.end,
                                f.placeholder))
    return out


def _overlaps(a: Span, b: Span, typed: bool) -> bool:
    return (a.row == b.row and a.field == b.field and a.kind == b.kind and a.start < b.end and b.start < a.end
            and (not typed or a.type == b.type))


def score(labels: Sequence[Span], predicted: Sequence[Span], *, typed: bool = True) -> dict[tuple[str, str], TypeScore]:
    """Per ``(kind, type)`` counts; ``("pii"|"secret", "*")`` rows hold each kind's totals.

    A label is recalled by an overlapping finding of the same kind (and type, when ``typed``); a
    live secret found only as an example does not count (it would pass a secret gate). A finding is
    correct when it overlaps such a label. Untyped findings (``typed=False``) count in the totals
    only, and per type for recall.
    """
    index: dict[tuple[int, str, str], list[Span]] = {}
    for p in predicted:
        index.setdefault((p.row, p.field, p.kind), []).append(p)
    lab_index: dict[tuple[int, str, str], list[Span]] = {}
    for lab in labels:
        lab_index.setdefault((lab.row, lab.field, lab.kind), []).append(lab)
    table: dict[tuple[str, str], TypeScore] = {}

    def row(kind: str, etype: str) -> TypeScore:
        return table.setdefault((kind, etype), TypeScore(kind, etype))

    for lab in labels:
        hits = [p for p in index.get((lab.row, lab.field, lab.kind), ()) if _overlaps(lab, p, typed)]
        counted = [p for p in hits if lab.kind == "pii" or lab.placeholder or not p.placeholder]
        for target in (row(lab.kind, lab.type or "?"), row(lab.kind, "*")):
            target.expected += 1
            target.recalled += bool(counted)
            if hits:
                target.placeholder_labels += 1
                target.placeholder_agreed += any(p.placeholder == lab.placeholder for p in hits)
    for p in predicted:
        matched = any(_overlaps(lab, p, typed) for lab in lab_index.get((p.row, p.field, p.kind), ()))
        if p.kind == "secret" and p.placeholder and not matched:
            continue  # an example flagged as such claims no live secret
        targets = [row(p.kind, "*")] + ([row(p.kind, p.type)] if typed and p.type else [])
        for target in targets:
            target.found += 1
            target.correct += matched
    return dict(sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1] == "*", kv[0][1])))


def mask_spans(record: Any, spans: Iterable[Span]) -> Any:
    """``record`` with each span's text replaced by ``<MASKED>`` (to measure a baseline's leak)."""
    import copy

    out = copy.deepcopy(record)
    by_field: dict[str, list[Span]] = {}
    for s in spans:
        by_field.setdefault(s.field, []).append(s)
    def renames_last(item: tuple[str, list[Span]]) -> tuple[bool, int]:
        steps = _STEP.findall(item[0])  # keys renamed after every value below them, deepest first
        last_is_key = bool(steps) and not steps[-1][1] and steps[-1][0].startswith("<key ")
        return last_is_key, -len(steps) if last_is_key else 0

    for path, group in sorted(by_field.items(), key=renames_last):
        steps = _STEP.findall(path)
        parent = out
        for key, idx in steps[:-1]:
            parent = _child(parent, key, idx)
        key, idx = steps[-1]
        text = _child(parent, key, idx)
        special = None if idx or key in parent else _KEY_STEP.fullmatch(key)
        if special:  # write to the real key: the value of an <entry N>, or the N-th key renamed
            name = list(parent)[int(special.group(2))]
            key = name
        cursor, parts = 0, []
        for s in sorted(group, key=lambda s: (s.start, -s.end)):
            if s.start < cursor:
                cursor = max(cursor, s.end)
                continue
            parts += [text[cursor:s.start], "<MASKED>"]
            cursor = s.end
        parts.append(text[cursor:])
        if idx:
            parent[int(idx)] = "".join(parts)
        elif special and special.group(1) == "key":  # rename the key, keeping the entries' order
            renamed = {("".join(parts) if k == key else k): v for k, v in parent.items()}
            parent.clear()
            parent.update(renamed)
        else:
            parent[key] = "".join(parts)
    return out


def masking_leaks(rows: Sequence[dict[str, Any]], masked: Sequence[Any],
                  table: dict[tuple[str, str], TypeScore] | None = None) -> Counter:
    """Labels whose value is still somewhere in the masked record (any string in it), per ``(kind, type)``;
    also written into ``table``'s ``leaks`` when a table is given."""
    from provenir.governance._records import leaves

    leaks: Counter = Counter()
    for i, (row, out) in enumerate(zip(rows, masked)):
        strings = leaves(out)[0] if row["labels"] else []
        for lab in row["labels"]:
            value = resolve(row["record"], lab["field"])[lab["start"]:lab["end"]]
            if any(value in s for s in strings):
                leaks[(lab["kind"], lab["type"])] += 1
                leaks[(lab["kind"], "*")] += 1
    if table is not None:
        for key, ts in table.items():
            if ts.expected:
                ts.leaks = leaks.get(key, 0)
    return leaks


def format_table(columns: dict[str, dict[tuple[str, str], TypeScore]],
                 fmt: Callable[[float], str] = "{:.3f}".format) -> str:
    """A text table: one line per ``(kind, type)``, recall / precision / leak per named scanner."""
    keys: list[tuple[str, str]] = []
    for table in columns.values():
        keys += [k for k in table if k not in keys]
    keys.sort(key=lambda k: (k[0], k[1] == "*", k[1]))
    first = next(iter(columns.values()))
    head = f"{'kind':6} {'type':27} {'labels':>6}" + "".join(f" | {name[:26]:^26}" for name in columns)
    sub = " " * 41 + "".join(f" | {'recall':>8} {'precis.':>8} {'leak':>6}" for _ in columns)
    lines = [head, sub, "-" * len(sub)]
    for key in keys:
        base = first.get(key)
        cells = []
        for table in columns.values():
            ts = table.get(key)
            if ts is None or (not ts.expected and not ts.found):
                cells.append(f" | {'—':>8} {'—':>8} {'':>6}")
                continue
            recall = fmt(ts.recall) if ts.expected else "—"
            precision = fmt(ts.precision) if ts.found else "—"
            leak = "" if ts.leaks is None else str(ts.leaks)
            cells.append(f" | {recall:>8} {precision:>8} {leak:>6}")
        name = "all" if key[1] == "*" else key[1]
        lines.append(f"{key[0]:6} {name:27} {base.expected if base else 0:6d}" + "".join(cells))
    return "\n".join(lines)
