"""The main job's data stages: secret gate, PII masking, quality filter, decontamination, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenir.core.config import RunConfig
from provenir.core.errors import DataError
from provenir.core.store import ArtifactStore
from provenir.governance.audit import AuditLogger
from provenir.pipeline import run_job

LIVE_GITHUB_TOKEN = "ghp_" + "Zq7Lm2Xv9Rt4Bn8Kc1Wd6Fy3Hs5Jp02gTw7q"
EVAL_ITEM = {
    "instruction": "Explain why the sky appears blue during a clear day to a curious child in simple words",
    "output": "Sunlight scatters off air molecules and blue light scatters the most so we see blue.",
}


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def make_config(tmp_path: Path, train: list[dict], evaluation: list[dict] | None = None, **sections) -> RunConfig:
    data = {"train_path": write_jsonl(tmp_path / "train.jsonl", train), "template": "chatml"}
    if evaluation is not None:
        data["eval_path"] = write_jsonl(tmp_path / "eval.jsonl", evaluation)
    return RunConfig.model_validate({
        "name": "pipe", "backend": "stub", "max_steps": 2, "output_dir": str(tmp_path / "store"),
        "data": data, "governance": {"audit_dir": str(tmp_path / "audit"), **sections.pop("governance", {})},
        **sections,
    })


CLEAN = [{"instruction": f"What is {i} plus {i}?", "output": str(2 * i)} for i in range(6)]


def test_a_parent_not_in_the_store_is_refused_before_any_work(tmp_path, monkeypatch):
    import provenir.pipeline as pipeline
    from provenir.core.errors import NotFoundError

    config = make_config(tmp_path, CLEAN)
    parent = run_job(config).run_id
    events_before = len(AuditLogger(tmp_path / "audit").read())
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "prepare_training_data",
                      lambda *a, **k: pytest.fail("data was prepared for a run that cannot be recorded"))
        with pytest.raises(NotFoundError, match="20260101-000000-gone-abcd1234"):
            run_job(config, provenance=[parent, "20260101-000000-gone-abcd1234"])
    assert len(AuditLogger(tmp_path / "audit").read()) == events_before
    assert ArtifactStore(config.store_root).list_runs() == [parent]
    child = run_job(config, provenance=[parent, parent])
    assert child.training.manifest.provenance == [parent]  # a repeated parent is recorded once


def test_live_secret_blocks_the_run_before_training(tmp_path):
    train = CLEAN + [{"instruction": "Store this", "output": f"token = {LIVE_GITHUB_TOKEN}"}]
    config = make_config(tmp_path, train)
    with pytest.raises(DataError) as info:
        run_job(config)
    message = str(info.value)
    assert "1 record(s) hold live secrets (GITHUB_TOKEN" in message and "record(s) 7" in message
    assert LIVE_GITHUB_TOKEN not in message
    assert ArtifactStore(config.store_root).list_runs() == []  # nothing trained, nothing half-written
    events = [e["event"] for e in AuditLogger(tmp_path / "audit").read()]
    assert events == ["data.secret_scan", "run.failed"]
    assert AuditLogger(tmp_path / "audit").verify().ok
    assert LIVE_GITHUB_TOKEN not in (tmp_path / "audit" / "audit.jsonl").read_text()


def test_warn_masks_secrets_and_pii_and_records_it(tmp_path):
    train = CLEAN + [
        {"instruction": "Email the report", "output": "Send it to jane.doe@example.org today."},
        {"instruction": "Keep", "output": f"token = {LIVE_GITHUB_TOKEN}"},
    ]
    config = make_config(tmp_path, train, governance={"secrets": "warn"})
    result = run_job(config)
    prepared = result.training.manifest.inputs["train"]["prepared"]
    assert prepared["secrets"]["live"] == 1 and prepared["secrets"]["types"] == ["GITHUB_TOKEN"]
    assert prepared["pii"]["action"] == "mask" and prepared["pii"]["masked"] >= 2
    assert prepared["sha256"] != result.training.manifest.inputs["train"]["sha256"]
    assert result.training.manifest.dataset_hash == result.training.manifest.inputs["train"]["sha256"]
    assert result.verification.ok
    log = AuditLogger(tmp_path / "audit")
    assert [e["event"] for e in log.read()] == [
        "data.secret_scan", "data.pii_mask", "run.completed"
    ]
    assert log.verify().ok


def test_masked_records_are_what_gets_trained(tmp_path, monkeypatch):
    seen: list[dict] = []
    from provenir.train.backends.stub import StubBackend

    original = StubBackend.train_sft

    def spy(self, config, train_dataset, *args, **kwargs):
        seen.extend(train_dataset.records)
        return original(self, config, train_dataset, *args, **kwargs)

    monkeypatch.setattr(StubBackend, "train_sft", spy)
    train = [{"instruction": "Who to call?", "output": "Call +1 415 555 2671 or bob@corp.example.com"}]
    run_job(make_config(tmp_path, train))
    text = json.dumps(seen)
    assert "bob@corp.example.com" not in text and "<EMAIL>" in text


def test_decontamination_drops_eval_copies(tmp_path):
    train = CLEAN + [dict(EVAL_ITEM)]
    result = run_job(make_config(tmp_path, train, [EVAL_ITEM]))
    prepared = result.training.manifest.inputs["train"]["prepared"]
    assert prepared["decontamination"]["dropped"] == 1
    assert prepared["records_in"] == 7 and prepared["records_out"] == 6
    assert result.training.metrics["records"] == 6


def test_stages_can_be_turned_off(tmp_path):
    train = CLEAN + [dict(EVAL_ITEM), {"instruction": "Mail", "output": "x@y.example.com"}]
    config = make_config(
        tmp_path, train, [EVAL_ITEM],
        governance={"pii": "off", "secrets": "off", "audit": False}, curation={"decontamination": "off"},
    )
    prepared = run_job(config).training.manifest.inputs["train"]["prepared"]
    assert set(prepared) == {"records_in", "records_out", "sha256"}
    assert prepared["records_out"] == 8
    assert not (tmp_path / "audit").exists()


def test_quality_filter_and_nothing_left(tmp_path):
    train = [{"instruction": "Say something useful about Ray.", "output": "I'm sorry, I can't help with that."}]
    config = make_config(tmp_path, train, curation={"quality_threshold": 0.99})
    with pytest.raises(DataError, match="no records left to train on"):
        run_job(config)
