"""Curation on real (local) Ray Data, through the CLI: quality, decontaminate, rag-generate, flywheel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data" / "curation"


def read_parts(folder: Path) -> list[dict]:
    return [json.loads(line) for part in sorted(folder.glob("*.jsonl")) for line in part.read_text().splitlines()]


@pytest.fixture(scope="module")
def cli(ray_local):
    from provenir.cli import app

    runner = CliRunner()

    def invoke(*args: str, expect: int = 0):
        from provenir.core.errors import ProvenirError

        result = runner.invoke(app, [str(a) for a in args])
        if expect == 2:  # provenir.cli.main turns a ProvenirError into one red line and exit code 2
            assert isinstance(result.exception, ProvenirError), (result.output, result.exception)
        else:
            assert result.exit_code == expect, (result.output, result.exception)
        return result

    return invoke


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVENIR_AUDIT_DIR", str(tmp_path / "audit"))
    train = tmp_path / "train.jsonl"
    lines = (DATA / "train_planted.jsonl").read_text().splitlines()
    bad = ['{"instruction": "Explain tides.", "output": ""}', "not json at all",
           '{"instruction": "Explain tides.", "output": 7}']
    train.write_text("\n".join(lines[:5] + bad + lines[5:]) + "\n")
    return tmp_path, train


def audit_events(tmp_path: Path) -> list[str]:
    from provenir.governance.audit import AuditLogger

    return [e["event"] for e in AuditLogger(tmp_path / "audit").read()]


def test_quality_cli(cli, env):
    tmp_path, train = env
    out = tmp_path / "q"
    result = cli("quality", train, "--out", out, "--threshold", "0.5", "--annotate", "--no-progress", "--json")
    report = json.loads((out / "report.json").read_text())
    assert '"command"' in result.output
    kept, rejected = read_parts(out / "kept"), read_parts(out / "rejected")
    assert report["records"] == 22 and report["malformed"] == 1 and ":7: invalid JSON" in report["errors"][0]
    assert report["kept"] == len(kept) == 20 and report["rejected"] == len(rejected) == 2
    assert all(r["quality"]["score"] >= 0.5 for r in kept)
    assert [r["line"] for r in rejected] == [6, 8]
    assert rejected[0]["quality"]["components"]["non_empty"] == 0.0
    assert rejected[1]["quality"]["reasons"][0].startswith("unreadable")
    assert json.loads((out / "report.json").read_text())["kept"] == 20
    assert audit_events(tmp_path) == ["data.quality_filtered"]
    cli("quality", train, "--out", out, expect=2)  # refuses to overwrite


def test_decontaminate_cli_two_actors(cli, env, embedding_model_path):
    tmp_path, train = env
    out = tmp_path / "d"
    result = cli("decontaminate", train, "--eval", DATA / "eval.jsonl", "--out", out, "--threshold", "0.8",
                 "--actors", "2", "--model", embedding_model_path, "--device", "cpu", "--no-progress", "--json")
    report = json.loads((out / "report.json").read_text())
    assert '"command"' in result.output
    planted = [json.loads(line) for line in (DATA / "train_planted.jsonl").read_text().splitlines()]
    n_planted = sum(r["kind"] != "clean" for r in planted)
    contaminated = read_parts(out / "contaminated")
    clean = read_parts(out / "clean")
    assert report["contaminated"] == len(contaminated) == n_planted
    assert {r["record"]["kind"] for r in contaminated} == {"exact", "near", "paraphrase"}
    assert all(r["eval_reference"] and r["stage"] in ("ngram", "semantic") for r in contaminated)
    assert [r["line"] for r in contaminated] == sorted(r["line"] for r in contaminated)  # input order kept
    assert all(r.get("kind") in (None, "clean") for r in clean) and len(clean) == 22 - n_planted
    assert report["by_stage"]["ngram"] == sum(r["kind"] in ("exact", "near") for r in planted)
    assert report["malformed"] == 1 and report["actors"] == 2
    assert audit_events(tmp_path) == ["data.decontaminated"]


def test_decontaminate_cli_errors(cli, env, tmp_path):
    _, train = env
    empty_eval = tmp_path / "empty_eval.jsonl"
    empty_eval.write_text('{"instruction": "", "output": ""}\n{"foo": 1}\n')
    result = cli("decontaminate", train, "--eval", empty_eval, "--out", tmp_path / "x", "--no-semantic", expect=2)
    assert "no eval record has usable text" in str(result.exception or result.output)
    cli("decontaminate", tmp_path / "missing.jsonl", "--eval", DATA / "eval.jsonl", "--out", tmp_path / "y",
        "--no-semantic", expect=2)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing half-written


def test_an_output_overlapping_an_input_is_refused_and_the_input_kept(cli, env, tmp_path):
    _, train = env
    folder = tmp_path / "indir"
    folder.mkdir()
    shutil.copy(train, folder / "a.jsonl")
    before = (folder / "a.jsonl").read_bytes()
    for out in (folder, folder / "sub"):  # the input folder itself, and a folder inside it
        result = cli("quality", folder, "--out", out, "--overwrite", "--no-progress", expect=2)
        assert "overlaps the input" in str(result.exception)
        assert (folder / "a.jsonl").read_bytes() == before and not (folder / "sub").exists()
    result = cli("decontaminate", train, "--eval", DATA / "eval.jsonl", "--out", train, "--overwrite",
                 "--no-semantic", "--no-progress", expect=2)
    assert "overlaps the input" in str(result.exception) and train.is_file()
    plain = tmp_path / "plain.txt"
    plain.write_text("keep me")
    result = cli("quality", train, "--out", plain, "--overwrite", "--no-progress", expect=2)
    assert "is a file" in str(result.exception) and plain.read_text() == "keep me"


def test_rag_generate_cli(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVENIR_AUDIT_DIR", str(tmp_path / "audit"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "reef.md").write_text(
        "The Great Barrier Reef is the world's largest coral reef system. It lies off Queensland.\n\n"
        "Coral bleaching, caused by rising sea temperatures, has damaged large parts of the reef."
    )
    (docs / "empty.txt").write_text("")
    (docs / "short.txt").write_text("Too short.")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"text": "The Amazon rainforest is the largest tropical rainforest on Earth."})
                     + "\n" + json.dumps({"text": 5}) + "\n")
    out = tmp_path / "rag"
    result = cli("rag-generate", docs, jsonl, "--out", out, "--questions-per-chunk", "2", "--judge", "stub",
                 "--quality-threshold", "0.0", "--no-progress", "--json")
    report = json.loads((out / "report.json").read_text())
    assert '"command"' in result.output
    pairs = read_parts(out / "pairs")
    assert report["pairs"] == len(pairs) > 0 and report["judge"] == "StubJudge"
    sources = {p["provenance"]["source"] for p in pairs}
    assert sources == {str(docs / "reef.md"), f"{jsonl}:1"}
    assert all({"doc_hash", "chunk_index", "chunk_hash", "judge_score"} <= set(p["provenance"]) for p in pairs)
    reasons = {Path(s["source"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["empty.txt"] == "empty document"
    assert reasons["short.txt"].startswith("shorter than min_chunk_length")
    assert "not text (int)" in reasons["docs.jsonl:2"]
    assert audit_events(tmp_path) == ["data.rag_generated"]
    assert "warning" not in result.output
    strict = cli("rag-generate", docs / "reef.md", "--out", tmp_path / "rag-strict", "--judge", "stub",
                 "--quality-threshold", "0.99", "--no-progress")
    assert "no training pairs from 1 document(s): every generated pair scored below --quality-threshold 0.99" in (
        strict.output.replace("\n", " "))


def test_flywheel_cli(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVENIR_AUDIT_DIR", str(tmp_path / "audit"))
    evals = [json.loads(line) for line in (DATA / "eval.jsonl").read_text().splitlines()]
    eval_path = tmp_path / "eval_scored.jsonl"
    eval_path.write_text("".join(json.dumps({**r, "score": 0.3 if i % 2 else 0.9}) + "\n" for i, r in enumerate(evals)))
    train = tmp_path / "train.jsonl"
    shutil.copy(DATA / "train_planted.jsonl", train)
    out = tmp_path / "fw"
    result = cli("flywheel", train, "--eval", eval_path, "--out", out, "--max-variants", "2",
                 "--holdout-fraction", "0.3", "--no-semantic", "--no-progress", "--json")
    report = json.loads((out / "report.json").read_text())
    assert '"command"' in result.output
    new = read_parts(out / "new")
    heldout = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    held_ids = {r["id"] for r in heldout}
    assert report["new_records"] == len(new) > 0 and report["heldout_ids"] == [r["id"] for r in heldout]
    assert {r["flywheel"]["source_eval_id"] for r in new}.isdisjoint(held_ids)
    assert all(r["flywheel"]["eval_score"] == 0.3 for r in new)
    assert len(read_parts(out / "train")) == 20 + len(new)
    # the Ray path and the in-process API agree
    from provenir.data.dataset import JsonlDataset
    from provenir.data.flywheel import DataFlywheel, FlywheelConfig

    fw = DataFlywheel(FlywheelConfig(max_variants_per_failure=2, holdout_fraction=0.3), semantic=False)
    fw.run(JsonlDataset.from_jsonl(train), JsonlDataset.from_jsonl(eval_path))
    assert sorted(json.dumps(r, sort_keys=True) for r in fw.last_result.new_records) == sorted(
        json.dumps(r, sort_keys=True) for r in new)
    assert audit_events(tmp_path) == ["data.flywheel"]
    bad = cli("flywheel", train, "--eval", eval_path, "--out", tmp_path / "fw2", "--min-score", "3", expect=2)
    assert "min_score_threshold" in str(bad.exception)


def test_flywheel_removes_duplicate_variants_across_batches(ray_local, tmp_path):
    from provenir.data.dataset import JsonlDataset
    from provenir.data.flywheel import DataFlywheel, FlywheelConfig
    from provenir.distributed.curation import run_flywheel

    evals = [json.loads(line) for line in (DATA / "eval.jsonl").read_text().splitlines()][:4]
    # "twin" asks what e1 asks: its variants equal e1's, and with two failures a batch they are in another batch
    records = [*evals[:3], {**evals[0], "id": "twin"}, evals[3]]
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("".join(json.dumps({**r, "score": 0.2}) + "\n" for r in records))
    train = tmp_path / "train.jsonl"
    shutil.copy(DATA / "train_planted.jsonl", train)
    config = {"max_variants_per_failure": 2, "holdout_fraction": 0.0}
    report = run_flywheel([str(train)], str(eval_path), str(tmp_path / "fw"), config=config, semantic=False,
                          progress=False, batch_size=2)
    new = read_parts(tmp_path / "fw" / "new")

    fw = DataFlywheel(FlywheelConfig(**config), semantic=False)
    fw.run(JsonlDataset.from_jsonl(train), JsonlDataset.from_jsonl(eval_path))
    expected = fw.last_result.new_records
    assert [r["flywheel"]["source_eval_id"] for r in new] == [r["flywheel"]["source_eval_id"] for r in expected]
    assert new == expected
    sources = {r["flywheel"]["source_eval_id"] for r in new}
    assert "twin" not in sources and "e1" in sources
    assert report["dropped"] == fw.last_result.report["dropped"] and report["dropped"]["duplicate_of_train"] >= 2
    assert report["new_records"] == len(expected)
    assert len(read_parts(tmp_path / "fw" / "train")) == 20 + len(expected)
