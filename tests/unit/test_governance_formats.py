"""Recall, precision, example flags and masking leak per type, on the format-derived corpus.

``tests/data/governance/formats/formats.jsonl`` is written by ``make_formats.py`` from the published
format documents it cites (provider token docs, card-network IIN tables, RFCs, the SSA's rules, the
SWIFT IBAN registry, numbering plans), with hard negatives of the same shapes. Its labels come from
the generator, never from a scanner: the file is regenerated and compared byte for byte, and its hash
is pinned here, so a change to the scanners cannot edit the expectations.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from provenir.data.dataset import JsonlDataset
from provenir.governance._engine import PII_TYPES, SECRET_TYPES
from provenir.governance.accuracy import (
    Span,
    format_table,
    label_spans,
    load_labelled,
    masking_leaks,
    provenir_spans,
    score,
)
from provenir.governance.pii import PIIMasker

FOLDER = Path(__file__).resolve().parents[1] / "data" / "governance" / "formats"
CORPUS = FOLDER / "formats.jsonl"
# Pinned on purpose: a new corpus is a deliberate edit of make_formats.py, this hash and nothing else.
CORPUS_SHA256 = "5e55755fae8d8b2e87a318b844e5990918da0ccb6ad9e0c137e613840dde05c2"
RECALL, PRECISION = 0.99, 0.98


def _generator():
    spec = importlib.util.spec_from_file_location("make_formats", FOLDER / "make_formats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows():
    return load_labelled(CORPUS)


@pytest.fixture(scope="module")
def table(rows):
    labels = label_spans(rows)
    result = score(labels, provenir_spans(rows))
    masker_by_regions: dict[tuple, PIIMasker] = {}
    masked = []
    for row in rows:
        regions = tuple(row.get("phone_regions") or ("US",))
        masker = masker_by_regions.setdefault(regions, PIIMasker(ner=None, phone_regions=regions))
        masked.append(masker.mask(JsonlDataset([row["record"]])).records[0])
    masking_leaks(rows, masked, result)
    print("\n" + format_table({"provenir": result}))
    return result


def test_corpus_is_the_generators_output_and_is_pinned():
    text = CORPUS.read_bytes()
    assert hashlib.sha256(text).hexdigest() == CORPUS_SHA256
    module = _generator()
    assert module.render(module.generate()).encode("utf-8") == text
    assert module.SOURCES, "every type cites the format document it was built from"


def test_every_type_has_positives_carriers_and_sources(rows):
    module = _generator()
    live = Counter(lab["type"] for row in rows for lab in row["labels"] if not lab["placeholder"])
    carriers: dict[str, set] = {}
    for row in rows:
        for lab in row["labels"]:
            carriers.setdefault(lab["type"], set()).add(row["carrier"])
    for etype in (*PII_TYPES, *SECRET_TYPES):
        assert live[etype] >= 30, (etype, live[etype])
        assert etype in module.SOURCES, etype
    assert all(len(c) >= 2 for c in carriers.values()), carriers
    negatives = Counter(row["group"] for row in rows if row["group"].startswith("negative:"))
    assert sum(negatives.values()) >= 300 and len(negatives) >= 15, negatives
    assert all(not row["labels"] for row in rows if row["group"].startswith("negative:"))


def test_recall_and_precision_per_type(table):
    weak = {f"{kind}/{etype}": (round(ts.recall, 3), round(ts.precision, 3), ts.expected, ts.found)
            for (kind, etype), ts in table.items() if ts.recall < RECALL or ts.precision < PRECISION}
    assert not weak, weak
    for etype in (*PII_TYPES, *SECRET_TYPES):
        kind = "pii" if etype in PII_TYPES else "secret"
        assert table[(kind, etype)].expected >= 30


def test_examples_are_flagged_as_examples(table):
    disagree = {f"{k}/{t}": (ts.placeholder_agreed, ts.placeholder_labels)
                for (k, t), ts in table.items() if ts.placeholder_agreement < 1.0}
    assert not disagree, disagree


def test_masking_leaks_nothing(table):
    leaked = {f"{k}/{t}": ts.leaks for (k, t), ts in table.items() if ts.leaks}
    assert not leaked, leaked


# -- the scoring itself, on hand-made spans ---------------------------------------------------------
def test_scoring_rules():
    lab = [Span(0, "t", "EMAIL", "pii", 0, 5), Span(0, "t", "GITHUB_TOKEN", "secret", 10, 50),
           Span(1, "t", "CREDIT_CARD", "pii", 3, 19, placeholder=True)]
    got = [Span(0, "t", "EMAIL", "pii", 1, 4),                               # overlap: recalled
           Span(0, "t", "GITHUB_TOKEN", "secret", 10, 50, placeholder=True),  # live found as example: missed
           Span(1, "t", "CREDIT_CARD", "pii", 3, 19, placeholder=False),     # found, flag wrong
           Span(1, "t", "PHONE", "pii", 3, 13),                              # wrong type: spurious
           Span(2, "t", "JWT", "secret", 0, 9, placeholder=True)]            # example, no label: neutral
    t = score(lab, got)
    assert (t[("pii", "EMAIL")].recall, t[("pii", "EMAIL")].precision) == (1.0, 1.0)
    assert t[("secret", "GITHUB_TOKEN")].recall == 0.0
    assert t[("pii", "CREDIT_CARD")].recall == 1.0 and t[("pii", "CREDIT_CARD")].placeholder_agreement == 0.0
    assert t[("pii", "PHONE")].precision == 0.0 and t[("pii", "PHONE")].expected == 0
    assert ("secret", "JWT") not in t
    assert (t[("pii", "*")].expected, t[("pii", "*")].recalled, t[("pii", "*")].found, t[("pii", "*")].correct) \
        == (2, 2, 3, 2)
    untyped = score(lab[1:2], [Span(0, "t", None, "secret", 20, 30)], typed=False)
    assert untyped[("secret", "GITHUB_TOKEN")].recall == 1.0 and untyped[("secret", "*")].precision == 1.0
