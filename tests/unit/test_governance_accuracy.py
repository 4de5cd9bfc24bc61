"""Per-type precision and recall on the labelled corpus (tests/data/governance/corpus.jsonl).

The corpus is generated from how each value was built (make_corpus.py), with hard negatives; a
finding counts as correct only with the same record, field, type, exact value and placeholder flag.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from provenir.data.dataset import JsonlDataset
from provenir.governance.pii import PIIScanner
from provenir.governance.scanners import SecretScanner

CORPUS = Path(__file__).resolve().parents[1] / "data" / "governance" / "corpus.jsonl"
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def resolve(record, path):
    node = record
    for key, index in _STEP.findall(path):
        node = node[int(index)] if index else node[key]
    return node


def load():
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    return rows, JsonlDataset([r["record"] for r in rows])


def score(rows, findings, kind):
    expected = Counter()
    for i, row in enumerate(rows):
        for lab in row["labels"]:
            if lab["kind"] == kind:
                expected[(i, lab["field"], lab["type"], lab["value"], lab["placeholder"])] += 1
    got = Counter()
    for f in findings:
        value = resolve(rows[f.record_index]["record"], f.field)[f.start:f.end]
        got[(f.record_index, f.field, f.entity_type, value, f.placeholder)] += 1
    types = sorted({k[2] for k in expected} | {k[2] for k in got})
    table = {}
    for t in types:
        tp = sum(min(n, got[k]) for k, n in expected.items() if k[2] == t)
        n_exp = sum(n for k, n in expected.items() if k[2] == t)
        n_got = sum(n for k, n in got.items() if k[2] == t)
        table[t] = (tp / n_exp if n_exp else 1.0, tp / n_got if n_got else 1.0, n_exp, n_got)
    misses = [k for k in expected if got[k] < expected[k]]
    extras = [k for k in got if expected[k] < got[k]]
    return table, misses, extras


@pytest.fixture(scope="module")
def corpus():
    return load()


def test_corpus_is_large_and_varied(corpus):
    rows, ds = corpus
    assert len(rows) >= 300
    shapes = Counter("messages" if "messages" in r["record"] else "instruction" if "instruction" in r["record"]
                     else "nested" for r in rows)
    assert min(shapes.values()) >= 50, shapes
    assert sum(1 for r in rows if not r["labels"]) >= 100  # hard negatives only


@pytest.mark.parametrize("kind", ["pii", "secret"])
def test_per_type_precision_and_recall(corpus, kind):
    rows, ds = corpus
    result = PIIScanner(ner=None).scan(ds) if kind == "pii" else SecretScanner().scan(ds)
    table, misses, extras = score(rows, result.findings, kind)
    bad = {t: v for t, v in table.items() if v[0] < 0.95 or v[1] < 0.90}
    assert not bad, f"{bad}\nmissed: {misses[:8]}\nspurious: {extras[:8]}"
    expected_types = {"pii": 7, "secret": 14}[kind]
    assert len([t for t, v in table.items() if v[2] >= 10]) >= expected_types


def test_key_and_entry_paths_resolve_and_mask():
    from provenir.governance.accuracy import Span, mask_spans, resolve

    record = {"a": {"tok ghp_x": "v", "b": "secret here"}, "c": "keep"}
    assert resolve(record, "a.<key 0>") == "tok ghp_x" and resolve(record, "a.<entry 1>") == "secret here"
    out = mask_spans(record, [Span(0, "a.<key 0>", None, "secret", 4, 9),
                              Span(0, "a.<entry 0>", None, "secret", 0, 1),
                              Span(0, "<key 0>", None, "pii", 0, 1)])
    assert out == {"<MASKED>": {"tok <MASKED>": "<MASKED>", "b": "secret here"}, "c": "keep"}
    assert list(out["<MASKED>"]) == ["tok <MASKED>", "b"] and record["a"]["tok ghp_x"] == "v"
