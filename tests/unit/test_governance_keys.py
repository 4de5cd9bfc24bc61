"""Dict keys are scanned like values: PII and secrets in keys are found, reported without the key's
text (``contacts.<key 0>``, ``contacts.<entry 0>``), masked with the structure kept, and two keys
that mask to the same text are told apart (``" #2"``) instead of one being dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provenir.data.dataset import JsonlDataset
from provenir.governance._engine import PII_TYPES, SECRET_TYPES, Engine
from provenir.governance._records import leaf_paths, leaves, replace_leaves
from provenir.governance.pii import PIIMasker, PIIScanner
from provenir.governance.scanners import SecretScanner

GH = "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"
AWS = "AKIAZ3MSJ2KQ7XYPLW4R"


def _found(result) -> set[tuple[int, str, str, int, int]]:
    return {(f.record_index, f.field, f.entity_type, f.start, f.end) for f in result.findings}


def test_leaf_order_puts_each_key_before_its_value():
    record = {"a": "x", "b": {"c": ["y", {"d": "z"}], "n": 12}, 5: "int key", "big": 4155552671}
    values, problem = leaves(record)
    assert problem is None
    assert values == ["a", "x", "b", "c", "y", "d", "z", "n", "int key", "big", "4155552671"]
    assert leaf_paths(record) == ["<key 0>", "a", "<key 1>", "b.<key 0>", "b.c[0]", "b.c[1].<key 0>",
                                  "b.c[1].d", "b.<key 1>", "5", "<key 3>", "big"]
    # a key that holds a finding is never spelled out in the paths below it
    hidden = leaf_paths(record, lambda leaf, key: key == "b")
    assert hidden[3:7] == ["<entry 1>.<key 0>", "<entry 1>.c[0]", "<entry 1>.c[1].<key 0>", "<entry 1>.c[1].d"]


def test_email_and_phone_in_keys():
    record = {"contacts": {"alice@example.com": "met at conf", "tel +1 415 555 2671": "x"}, "ok": "fine"}
    result = PIIScanner(ner=None).scan(JsonlDataset([record]))
    assert _found(result) == {(0, "contacts.<key 0>", "EMAIL", 0, 17), (0, "contacts.<key 1>", "PHONE", 4, 19)}
    assert result.pii_fields == ["contacts.<key 0>", "contacts.<key 1>"]
    dumped = json.dumps(result.to_dict())
    assert "alice@" not in dumped and "example.com" not in dumped and "555 2671" not in dumped
    assert {f.preview for f in result.findings} == {"alic******** (17 chars)", "+1 ******** (15 chars)"}


def test_aws_key_and_github_token_in_keys_fail_the_secret_gate():
    records = [{"headers": {GH: True}}, {"rows": [{"id": 1}, {AWS: "x", "note": "fine"}]}, {"clean": "ok"}]
    result = SecretScanner().scan(JsonlDataset(records))
    assert result.has_secrets and result.secret_types == ["AWS_ACCESS_KEY_ID", "GITHUB_TOKEN"]
    assert _found(result) == {(0, "headers.<key 0>", "GITHUB_TOKEN", 0, 40),
                              (1, "rows[1].<key 0>", "AWS_ACCESS_KEY_ID", 0, 20)}
    assert result.records_with_secrets == 2
    dumped = json.dumps(result.to_dict())
    assert GH not in dumped and AWS not in dumped and GH[4:20] not in dumped


def test_keys_nested_in_lists_of_dicts():
    record = {"rows": [{"id": 1}, {"meta": {"owners": [{"ops@corp.io": [1, 2]}, {"ok": "call (415) 555-2671"}]}}]}
    result = PIIScanner(ner=None).scan(JsonlDataset([record]))
    assert _found(result) == {(0, "rows[1].meta.owners[0].<key 0>", "EMAIL", 0, 11),
                              (0, "rows[1].meta.owners[1].ok", "PHONE", 5, 19)}


def test_paths_through_a_sensitive_key_do_not_leak_it():
    records = [{"bob@example.org": "call (415) 555-2671"}, {"x": 1, "a@b.io": {"phone": "(415) 555-2671"}}]
    result = PIIScanner(ner=None).scan(JsonlDataset(records))
    assert _found(result) == {(0, "<key 0>", "EMAIL", 0, 15), (0, "<entry 0>", "PHONE", 5, 19),
                              (1, "<key 1>", "EMAIL", 0, 6), (1, "<entry 1>.phone", "PHONE", 0, 14)}
    # a key is hidden even when this scan does not look for its type: a token key over PII, an
    # address key over a secret
    pii_only = PIIScanner(ner=None).scan(JsonlDataset([{"headers": {GH: "mail ann@x.io"}}]))
    assert _found(pii_only) == {(0, "headers.<entry 0>", "EMAIL", 5, 13)}
    secrets_only = SecretScanner().scan(JsonlDataset([{"ann@x.io": {"aws": AWS}}]))
    assert _found(secrets_only) == {(0, "<entry 0>.aws", "AWS_ACCESS_KEY_ID", 0, 20)}
    assert "ann@x.io" not in json.dumps(secrets_only.to_dict())
    # ordinary keys stay readable
    plain = PIIScanner(ner=None).scan(JsonlDataset([{"meta": {"phone": "(415) 555-2671"}}]))
    assert _found(plain) == {(0, "meta.phone", "PHONE", 0, 14)}


@pytest.mark.parametrize("key", ["instruction", "messages", "2024-01-15", "v1.2.3.4", "order_1234567890",
                                 "password", "api_key", "ghp_short", "user@localhost", "id 4155552671"])
def test_ordinary_keys_are_clean(key):
    records = [{key: "nothing here"}, {"outer": {key: [1, {key: None}]}}]
    assert PIIScanner(ner=None).scan(JsonlDataset(records)).findings == []
    assert SecretScanner().scan(JsonlDataset(records)).findings == []


def test_masking_keys_keeps_structure_and_values():
    records = [
        {"contacts": {"alice@example.com": "met at conf", "bob": "call (415) 555-2671"}, "n": 3},
        {"headers": {GH: True, "accept": "json"}, "rows": [{AWS: [1, None, 2.5]}, {"tel +1 415 555 2671": None}]},
    ]
    masked = PIIMasker(ner=None).mask(JsonlDataset(records)).records
    assert masked == [
        {"contacts": {"<EMAIL>": "met at conf", "bob": "call <PHONE>"}, "n": 3},
        {"headers": {"<GITHUB_TOKEN>": True, "accept": "json"},
         "rows": [{"<AWS_ACCESS_KEY_ID>": [1, None, 2.5]}, {"tel <PHONE>": None}]},
    ]
    assert list(masked[0]) == ["contacts", "n"] and list(masked[1]["headers"]) == ["<GITHUB_TOKEN>", "accept"]
    assert GH in records[1]["headers"]  # input untouched
    assert not PIIScanner(ner=None).scan(JsonlDataset(masked)).has_pii
    assert SecretScanner().scan(JsonlDataset(masked)).findings == []
    # secrets in keys stay when the masker is told to leave secrets alone
    pii_only = PIIMasker(ner=None, mask_secrets=False).mask(JsonlDataset(records)).records
    assert list(pii_only[1]["headers"]) == [GH, "accept"]


def test_masked_keys_that_collide_are_numbered_not_dropped():
    record = {"a@x.io": 1, "keep": {"b@x.io": "q", "c@x.io": "r"}, "b@x.io": 2, "<EMAIL> #2": 3}
    (masked,) = PIIMasker(ner=None).mask(JsonlDataset([record])).records
    # the key that was not masked keeps its name; masked ones take the first free " #n", in entry order
    assert list(masked.items()) == [("<EMAIL>", 1), ("keep", {"<EMAIL>": "q", "<EMAIL> #2": "r"}),
                                    ("<EMAIL> #3", 2), ("<EMAIL> #2", 3)]
    # pseudonyms of different values differ, so nothing needs numbering
    (pseudo,) = PIIMasker("pseudonym", salt="s", ner=None).mask(JsonlDataset([record])).records
    tokens = [k for k in pseudo if k.startswith("<EMAIL_")]
    assert len(tokens) == 2 and len(set(tokens)) == 2 and "<EMAIL> #2" in pseudo and len(pseudo) == 4


def test_replace_leaves_is_the_inverse_of_leaves():
    record = {"a@x.io": {"b": ["c", {"d": "e"}]}, "f": "g"}
    values, _ = leaves(record)
    same = replace_leaves(record, {i: v for i, v in enumerate(values)})
    assert same == record and list(same) == list(record)
    upper = replace_leaves(record, {i: v.upper() for i, v in enumerate(values)})
    assert upper == {"A@X.IO": {"B": ["C", {"D": "E"}]}, "F": "G"}


def test_a_key_scans_the_same_alone_and_inside_a_record():
    engine = Engine(PII_TYPES, SECRET_TYPES)
    key = f"token={GH} mail ann@x.io"
    alone = [(h.entity_type, h.start, h.end) for h in engine.scan([key])[0].hits]
    inside = engine.scan([{"x": "password", key: "call (415) 555-2671", "y": 1}])[0]
    assert alone and [(h.entity_type, h.start, h.end) for h in inside.hits if h.leaf == 2] == alone
    assert inside.paths[2] == "<key 1>" and inside.paths[3] == "<entry 1>"


def test_ner_runs_on_keys_and_is_memoised(spacy_pipeline):
    scanner = PIIScanner(ner="presidio", ner_model=spacy_pipeline)
    records = [{"people": {"Ada Lovelace": "met in London"}}] * 3
    result = scanner.scan(JsonlDataset(records))
    assert {(f.record_index, f.field, f.entity_type, f.source) for f in result.findings} == {
        (i, field, etype, "ner") for i in range(3)
        for field, etype in (("people.<key 0>", "PERSON"), ("people.<entry 0>", "LOCATION"))}
    assert scanner.ner._memo["Ada Lovelace"] == (("PERSON", 0, 12),) and "people" in scanner.ner._memo
    masked = PIIMasker(ner="presidio", ner_model=spacy_pipeline).mask(JsonlDataset(records[:1])).records
    assert masked == [{"people": {"<PERSON>": "met in <LOCATION>"}}]


def test_file_scan_and_cli_block_a_secret_in_a_key(tmp_path):
    from provenir.cli import app
    from provenir.governance import scan_files

    data = tmp_path / "keys.jsonl"
    rows = [{"headers": {GH: "bearer"}, "output": "ok"}, {"contacts": {"ann@corp.io": "x"}}, {"clean": "fine"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = scan_files([str(data)], mask_dir=str(tmp_path / "m"), mask_mode="placeholder")
    assert report.secrets == {"GITHUB_TOKEN": 1} and report.pii == {"EMAIL": 1}
    assert (tmp_path / "m" / "keys.jsonl").read_text().splitlines()[:2] == [
        '{"headers": {"<GITHUB_TOKEN>": "bearer"}, "output": "ok"}', '{"contacts": {"<EMAIL>": "x"}}']

    runner = CliRunner()
    out, report_path, audit = tmp_path / "masked", tmp_path / "report.json", tmp_path / "audit"
    result = runner.invoke(app, ["scan", str(data), "--mask", str(out), "--report", str(report_path),
                                 "--audit-dir", str(audit)])
    assert result.exit_code == 3, result.output
    assert "GITHUB_TOKEN" in result.output
    findings = [json.loads(x) for x in Path(str(report_path) + ".findings.jsonl").read_text().splitlines()]
    assert {(f["line"], f["field"], f["entity_type"]) for f in findings} == {
        (1, "headers.<key 0>", "GITHUB_TOKEN"), (2, "contacts.<key 0>", "EMAIL")}
    everything = report_path.read_text() + json.dumps(findings) + result.output + (audit / "audit.jsonl").read_text()
    assert GH not in everything and "ann@corp.io" not in everything
    masked = [json.loads(x) for x in (out / "keys.jsonl").read_text().splitlines()]
    assert masked == [{"headers": {"<GITHUB_TOKEN>": "bearer"}, "output": "ok"}, {"contacts": {"<EMAIL>": "x"}},
                      {"clean": "fine"}]
    again = runner.invoke(app, ["scan", str(out), "--audit-dir", str(audit), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["secrets"] == {} and json.loads(again.output)["pii"] == {}
    secrets_only = runner.invoke(app, ["scan", str(data), "--no-pii", "--audit-dir", str(audit), "--json"])
    assert secrets_only.exit_code == 3 and json.loads(secrets_only.output)["secrets"] == {"GITHUB_TOKEN": 1}
