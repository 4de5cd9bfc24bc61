"""PII scanning and masking: types, nested paths, spans, malformed records, masking, pseudonyms, NER."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenir.core.errors import ConfigError, DependencyError
from provenir.data.dataset import JsonlDataset
from provenir.governance.pii import PIIMasker, PIIScanner, PIIScanResult
from provenir.governance.scanners import SecretScanner

NESTED = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I'm at 10.1.2.3"},
        {"role": "assistant", "content": "Write to ops@corp.io or call +44 20 7946 0958."},
    ],
    "meta": {"payer": {"card": "4111-1111-1111-1111", "iban": "GB82 WEST 1234 5698 7654 32"},
             "ids": ["ssn 536-22-8741", 12, None, 3.5, True], "card_as_int": 4111111111111111},
}


def test_nested_paths_types_and_spans():
    result = PIIScanner(ner=None).scan(JsonlDataset([NESTED]))
    got = {(f.field, f.entity_type) for f in result.findings}
    assert got == {
        ("messages[1].content", "IP_ADDRESS"), ("messages[2].content", "EMAIL"),
        ("messages[2].content", "PHONE"), ("meta.payer.card", "CREDIT_CARD"),
        ("meta.payer.iban", "IBAN"), ("meta.ids[0]", "US_SSN"), ("meta.card_as_int", "CREDIT_CARD"),
    }
    email = next(f for f in result.findings if f.entity_type == "EMAIL")
    assert NESTED["messages"][2]["content"][email.start:email.end] == "ops@corp.io"
    assert result.has_pii and result.record_count == 1 and result.records_with_pii == 1
    assert "messages[2].content" in result.pii_fields
    assert result.counts["EMAIL"] == 1
    # reports never carry the value
    assert "ops@corp.io" not in json.dumps(result.to_dict())


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn",                 # Luhn-invalid
    "ssn 666-12-3456 and 000-12-3456 and 912-12-3456",     # invalid areas
    "IBAN GB83 WEST 1234 5698 7654 32",                    # bad mod-97
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39",
    "version 1.2.3.4 and v10.0.19045.2965",
    "ISBN 978-0-306-40615-7, dated 2024-01-15 10:30:00",
    "std::vector<int> at 12:30:45, MAC 00:1A:2B:3C:4D:5E",
    "order 1234567890 for user@localhost",
    "999.1.1.1 is not an address",
])
def test_hard_negatives_are_clean(text):
    result = PIIScanner(ner=None).scan(JsonlDataset([{"text": text}]))
    assert result.findings == [], [(f.entity_type, f.preview) for f in result.findings]


def test_phone_formats_and_validation():
    texts = ["call (415) 555-2671", "+49 30 901820", "+33 1 42 68 53 00", "+81 3-1234-5678",
             "phone: 4155552671", "tel +91 98765 43210"]
    result = PIIScanner(entities=["PHONE"], ner=None).scan(JsonlDataset([{"t": t} for t in texts]))
    assert sorted(f.record_index for f in result.findings) == list(range(len(texts)))
    # a bare 10-digit number without phone formatting or context is not a phone
    assert not PIIScanner(entities=["PHONE"], ner=None).scan(JsonlDataset([{"t": "id 4155552671"}])).has_pii


def test_malformed_records_never_crash():
    deep: dict = {"a": "x@y.io"}
    for _ in range(400):
        deep = {"n": deep}
    records = [{"ok": "a@b.io"}, ["not", "an", "object"], deep, {"blob": "z" * 2_000_000 + " q@w.io"},
               {"weird": object(), "b": b"bytes c@d.io"}]
    result = PIIScanner(ner=None).scan(JsonlDataset(records))
    assert result.record_count == 5
    assert {e.record_index for e in result.errors} == {1, 2, 4}
    assert "expected a JSON object" in result.errors[0].message
    assert any("nested deeper" in e.message for e in result.errors)
    found = {(f.record_index, f.entity_type) for f in result.findings}
    assert {(0, "EMAIL"), (3, "EMAIL"), (4, "EMAIL")} <= found


def test_unicode_offsets_are_characters():
    text = "Grüße 😀 – schreib an jürgen.x@beispiel.de bitte"
    result = PIIScanner(ner=None).scan(JsonlDataset([{"t": text}]))
    (f,) = result.findings
    assert text[f.start:f.end] == "x@beispiel.de" or text[f.start:f.end].endswith("@beispiel.de")


def test_masking_keeps_structure_and_rescans_clean():
    records = [NESTED, {"instruction": "db postgres://bob:Pa55w0rd!@db:5432/x, key AKIAZ3MSJ2KQ7XYPLW4R",
                        "output": "password = \"hunter22!\""}]
    masked = PIIMasker(ner=None).mask(JsonlDataset(records))
    out = masked.records
    assert out[0]["messages"][2]["content"] == "Write to <EMAIL> or call <PHONE>."
    assert out[0]["meta"]["payer"] == {"card": "<CREDIT_CARD>", "iban": "<IBAN>"}
    assert out[0]["meta"]["ids"][1:] == [12, None, 3.5, True]
    assert out[0]["meta"]["card_as_int"] == "<CREDIT_CARD>"
    assert set(out[0]) == set(NESTED) and len(out[0]["messages"]) == 3
    assert "<URL_CREDENTIALS>@db" in out[1]["instruction"] and "<AWS_ACCESS_KEY_ID>" in out[1]["instruction"]
    assert out[1]["output"] == 'password = "<PASSWORD_ASSIGNMENT>"'
    assert records[0]["messages"][2]["content"].startswith("Write to ops@")  # input untouched
    assert not PIIScanner(ner=None).scan(masked).has_pii
    again = SecretScanner().scan(masked)
    assert not again.has_secrets and again.findings == []


def test_pseudonyms_are_consistent_and_salted():
    records = [{"a": "mail ann@x.io"}, {"b": "again ann@x.io and bob@x.io"}]
    one = PIIMasker("pseudonym", salt="s1", ner=None).mask(JsonlDataset(records)).records
    two = PIIMasker("pseudonym", salt="s2", ner=None).mask(JsonlDataset(records)).records
    token = one[0]["a"].split()[-1]
    assert token.startswith("<EMAIL_") and token in one[1]["b"]
    assert one[1]["b"].split()[-1] != token            # a different value → a different token
    assert two[0]["a"].split()[-1] != token            # a different salt → a different token
    assert not PIIScanner(ner=None).scan(JsonlDataset(one)).has_pii


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="NAME"):
        PIIScanner(entities=["NAME"])
    with pytest.raises(ConfigError):
        PIIMasker(mode="hash")


def test_no_ner_engine_is_stated():
    result = PIIScanner().scan(JsonlDataset([{"t": "Angela Merkel lives in Berlin"}]))
    assert result.ner_engine is None
    assert "PERSON and LOCATION were not scanned" in result.ner_note
    assert isinstance(result, PIIScanResult) and not result.has_pii
    with pytest.raises(DependencyError, match="spaCy model"):
        PIIScanner(ner="presidio", ner_model="en_core_web_lg")


def test_presidio_engine_wiring(spacy_pipeline):
    scanner = PIIScanner(ner="presidio", ner_model=spacy_pipeline)
    record = {"messages": [{"role": "user", "content": "Ada Lovelace moved to London; mail ada@x.io"}]}
    result = scanner.scan(JsonlDataset([record]))
    assert result.ner_engine.startswith("presidio-analyzer+spacy:") and result.ner_note is None
    by_type = {f.entity_type: f for f in result.findings}
    text = record["messages"][0]["content"]
    assert text[by_type["PERSON"].start:by_type["PERSON"].end] == "Ada Lovelace"
    assert text[by_type["LOCATION"].start:by_type["LOCATION"].end] == "London"
    assert by_type["PERSON"].source == "ner" and by_type["EMAIL"].source == "pattern"
    masked = PIIMasker(ner="presidio", ner_model=spacy_pipeline).mask(JsonlDataset([record]))
    assert masked.records[0]["messages"][0]["content"] == "<PERSON> moved to <LOCATION>; mail <EMAIL>"


def test_file_scan_reports_bad_lines_with_file_and_line(tmp_path):
    from provenir.governance import scan_files

    path = tmp_path / "mixed.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'{"a": "x@y.io"}\n')
        handle.write(b'{"deep": ' + b"[" * 5000 + b"]" * 5000 + b"}\n")      # too deep for json
        handle.write(b'{"big": "' + b"w " * 1_000_000 + b'z@q.io"}\n')        # 2 MB string
        handle.write(b'{"bad": "\xc3\x28"}\n')                                 # invalid UTF-8
        handle.write(b'"a string, not an object"\n')
        handle.write(b"\n")
        handle.write(b'{"n": 1, "s": "ok"}\n')
    report = scan_files([str(path)], mask_dir=str(tmp_path / "m"), mask_mode="placeholder")
    assert report.records == 6 and report.malformed == 3
    assert [e["line"] for e in report.errors] == [2, 4, 5]
    assert all(e["message"].startswith(f"{path}:{e['line']}:") for e in report.errors)
    assert report.pii == {"EMAIL": 2}
    masked = (tmp_path / "m" / "mixed.jsonl").read_text().splitlines()
    assert len(masked) == 3 and masked[0] == '{"a": "<EMAIL>"}' and masked[2] == '{"n": 1, "s": "ok"}'


def test_in_process_scan_of_a_remote_fsspec_folder(tmp_path):
    import fsspec

    from provenir.governance import scan_files

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket-gov/data/a.jsonl", b'{"instruction": "mail a@corp.io", "output": "ok"}\n')
    fs.pipe("/bucket-gov/data/sub/b.jsonl", b'{"prompt": "call (415) 555-2671"}\n{"prompt": "clean"}\n')
    fs.pipe("/bucket-gov/data/notes.txt", b"not a dataset")
    try:
        report = scan_files(["memory://bucket-gov/data"], mask_dir=str(tmp_path / "m"), mask_mode="placeholder")
        assert report.records == 3 and report.pii == {"EMAIL": 1, "PHONE": 1}
        assert [Path(p).name for p in report.masked_outputs] == ["a.jsonl", "b.jsonl"]
        assert (tmp_path / "m" / "b.jsonl").read_text().splitlines()[0] == '{"prompt": "call <PHONE>"}'
    finally:
        fs.rm("/bucket-gov", recursive=True)


def test_documented_examples_are_reported_and_masked_unless_kept():
    # Visa's and Stripe's published test numbers, the SSA's advertised SSN, AWS's documented key id
    text = "card 4111 1111 1111 1111, ssn 078-05-1120, key AKIAIOSFODNN7EXAMPLE, real 4532 0151 1283 0366"
    ds = JsonlDataset.from_records([{"t": text}])
    found = {(f.entity_type, f.placeholder) for f in PIIScanner(ner=None).scan(ds).findings}
    assert {("CREDIT_CARD", True), ("US_SSN", True), ("CREDIT_CARD", False)} <= found
    assert PIIMasker(ner=None).mask(ds).records[0]["t"] == (
        "card <CREDIT_CARD>, ssn <US_SSN>, key <AWS_ACCESS_KEY_ID>, real <CREDIT_CARD>")
    kept = PIIMasker(ner=None, keep_examples=True)
    assert kept.mask(ds).records[0]["t"] == text.replace("4532 0151 1283 0366", "<CREDIT_CARD>")
    assert kept.last_masked_count == 1
