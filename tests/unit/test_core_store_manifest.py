"""Manifest round-trip, tamper detection, run-id validation, store on local disk and memory://."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from provenir.core.abstractions import RunManifest
from provenir.core.config import PEFTConfig, RunConfig
from provenir.core.errors import ManifestError, StoreError
from provenir.core.run import RunRecorder, describe_input, verify_run
from provenir.core.store import ArtifactStore, new_run_id, validate_run_id


def make_manifest(**over) -> RunManifest:
    fields = dict(
        run_id="20260101T000000000000Z-x-0000abcd", config_hash="c" * 64, dataset_hash="d" * 64,
        git_sha=None, seed=1, timestamp="2026-01-01T00:00:00.000000Z", provenance=["p1"],
    )
    fields.update(over)
    return RunManifest(**fields)


def test_manifest_round_trip(tmp_path):
    manifest = make_manifest(metrics={"loss": 0.25}, artifacts={"a.txt": "e" * 64}, status="completed")
    path = tmp_path / "manifest.json"
    manifest.save(path)
    assert RunManifest.load(path) == manifest
    assert json.loads(path.read_text())["provenance"] == ["p1"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"run_id": "x"}', "missing field(s): config_hash"),
        (json.dumps({**make_manifest().to_dict(), "evil": 1}), "unknown field(s): evil"),
        (json.dumps({**make_manifest().to_dict(), "provenance": "p1"}), "provenance must be a list"),
        (json.dumps({**make_manifest().to_dict(), "seed": "1"}), "seed must be an integer"),
    ],
)
def test_manifest_load_rejects_malformed(tmp_path, text, fragment):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ManifestError, match=re.escape(fragment)):
        RunManifest.load(path)


def test_manifest_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        RunManifest.load(tmp_path / "none.json")


@pytest.mark.parametrize(
    "bad",
    ["../etc", "..", "a/b", "a\\b", "/abs", "", ".hidden", "a..b", "x" * 129, "ok id", "a\x00b", "~root"],
)
def test_run_id_traversal_and_junk_rejected(bad):
    with pytest.raises(StoreError, match="invalid run id"):
        validate_run_id(bad)


def test_store_refuses_traversal_everywhere(tmp_path):
    store = ArtifactStore(tmp_path)
    for call in (
        lambda: store.load_manifest("../../etc"),
        lambda: store.read_text("../x", "manifest.json"),
        lambda: store.write_text("ok", "../escape.txt", "x"),
        lambda: store.write_text("ok", "/abs.txt", "x"),
        lambda: store.ancestors("../x"),
        lambda: store.descendants("a/b"),
    ):
        with pytest.raises(StoreError):
            call()
    assert not (tmp_path / "escape.txt").exists()


def test_run_ids_sort_by_time_and_are_unique():
    ids = [new_run_id("My Run!") for _ in range(200)]
    assert len(set(ids)) == 200
    assert ids == sorted(ids)
    assert all(validate_run_id(i) for i in ids)
    assert "-my-run-" in ids[0]


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        return ArtifactStore(tmp_path / "store")
    return ArtifactStore(f"memory://provenir-test-{uuid.uuid4().hex}")


def test_store_files_and_listing(store):
    run_id = store.new_run_id("a")
    store.write_text(run_id, "nested/file.txt", "hi")
    assert store.read_text(run_id, "nested/file.txt") == "hi"
    assert store.exists(run_id, "nested/file.txt")
    assert store.list_files(run_id) == ["nested/file.txt"]
    assert store.list_runs() == []  # no manifest yet: not a run
    with pytest.raises(StoreError, match="not found"):
        store.read_text(run_id, "missing.txt")


def _record(store, tmp_path, name, provenance=(), **cfg):
    data = tmp_path / f"{name}.jsonl"
    data.write_text('{"instruction": "hi", "output": "yo"}\n')
    inputs = {"train": describe_input(data)}
    rec = RunRecorder(store, RunConfig(name=name, **cfg), dataset_hash=inputs["train"]["sha256"],
                      inputs=inputs, provenance=list(provenance), command=["test"])
    (rec.workdir / "adapter").mkdir(parents=True, exist_ok=True)
    (rec.workdir / "adapter" / "weights.bin").write_bytes(b"\x01\x02")
    return rec.finish({"loss": 1.0}), data


def test_lineage_ancestors_and_descendants(store, tmp_path):
    root, _ = _record(store, tmp_path, "root")
    child, _ = _record(store, tmp_path, "child", [root.run_id])
    other, _ = _record(store, tmp_path, "other")
    grandchild, _ = _record(store, tmp_path, "grand", [child.run_id, other.run_id])
    assert store.ancestors(grandchild.run_id) == [child.run_id, other.run_id, root.run_id]
    assert store.descendants(root.run_id) == sorted([child.run_id, grandchild.run_id])
    assert store.descendants(grandchild.run_id) == []
    assert store.list_runs() == sorted([root.run_id, child.run_id, other.run_id, grandchild.run_id])


def test_recorder_writes_verifiable_run(store, tmp_path):
    manifest, _ = _record(store, tmp_path, "v", peft=PEFTConfig(rank=4))
    assert manifest.status == "completed"
    assert set(manifest.artifacts) == {"adapter/weights.bin", "config.yaml", "manifest_metrics.json"}
    assert json.loads(store.read_text(manifest.run_id, "manifest_metrics.json")) == {"loss": 1.0}
    assert manifest.environment["python"] and "torch" in manifest.environment["packages"]
    loaded = store.load_manifest(manifest.run_id)
    assert loaded == manifest
    report = verify_run(store, manifest.run_id)
    assert report.ok, report.failures


def test_tampered_artifact_config_and_data_are_named(store, tmp_path):
    manifest, data = _record(store, tmp_path, "t")
    run_id = manifest.run_id
    store.write_bytes(run_id, "adapter/weights.bin", b"\x01\x03")
    store.write_text(run_id, "extra.txt", "sneaky")
    data.write_text('{"instruction": "hi", "output": "changed"}\n')
    tampered = store.load_manifest(run_id)
    tampered.config["seed"] = 999
    store.save_manifest(tampered)
    failed = {c.name: c for c in verify_run(store, run_id).failures}
    assert set(failed) == {"config_hash", "config.yaml", "seed", "input:train", "artifact:adapter/weights.bin",
                           "artifact:extra.txt"}
    assert (failed["seed"].expected, failed["seed"].actual) == ("999", "42")
    assert failed["artifact:adapter/weights.bin"].detail == "content changed"
    assert failed["artifact:extra.txt"].detail == "not in the manifest"


def test_deleted_artifact_and_corrupt_manifest(store, tmp_path):
    manifest, _ = _record(store, tmp_path, "d")
    if store.is_local:
        (store.local_run_dir(manifest.run_id) / "adapter" / "weights.bin").unlink()
    else:
        store._fs.fs.rm(store.path(manifest.run_id, "adapter/weights.bin"))
    failed = {c.name: c.detail for c in verify_run(store, manifest.run_id).failures}
    assert failed == {"artifact:adapter/weights.bin": "missing"}
    store.write_text(manifest.run_id, "manifest.json", "{broken")
    report = verify_run(store, manifest.run_id)
    assert not report.ok and "not valid JSON" in report.failures[0].detail


def test_manifest_run_id_must_match_folder(store, tmp_path):
    manifest, _ = _record(store, tmp_path, "m")
    other = store.new_run_id("copy")
    store.write_text(other, "manifest.json", manifest.to_json())
    with pytest.raises(ManifestError, match="does not match its folder"):
        store.load_manifest(other)


def test_recorder_fail_marks_run_failed(store, tmp_path):
    rec = RunRecorder(store, RunConfig(name="f"), dataset_hash="0" * 64, command=["x"])
    manifest = rec.fail(RuntimeError("boom"))
    assert manifest.status == "failed" and manifest.metrics["error"] == "RuntimeError: boom"
    assert store.load_manifest(rec.run_id).status == "failed"
