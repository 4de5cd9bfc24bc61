"""What the manifest proves: the base model, the parents, the seed and the metrics.

Each test edits or removes one thing a run depends on and asserts that recording or verification
names it; every one of them passed silently before the base model was hashed, parents were
checked, and the seed and metrics were cross-checked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from provenir.cli import main
from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError, NotFoundError
from provenir.core.hashing import sha256_bytes, sha256_json, sha256_tree
from provenir.core.run import RunRecorder, describe_model, verify_run
from provenir.core.store import METRICS_RECORD_NAME, ArtifactStore
from provenir.pipeline import run_job


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def failures(store: ArtifactStore, run_id: str) -> dict[str, str]:
    return {c.name: c.detail for c in verify_run(store, run_id).failures}


def fake_model(folder: Path, weights: bytes = b"\x00\x01weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    (folder / ".cache").mkdir(exist_ok=True)
    (folder / ".cache" / "download.metadata").write_text("timestamps change")
    return folder


def train_file(tmp_path: Path) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}+1?", "output": str(i + 1)}) + "\n" for i in range(8)))
    return data


def stub_config(tmp_path: Path, **over) -> RunConfig:
    fields = dict(name="prov", backend="stub", max_steps=2, batch_size=4, output_dir=str(tmp_path / "store"),
                  data={"train_path": str(train_file(tmp_path)), "template": "chatml"})
    fields.update(over)
    return RunConfig(**fields)


def record(store: ArtifactStore, name: str, provenance=(), **config) -> str:
    rec = RunRecorder(store, RunConfig(name=name, **config), dataset_hash="0" * 64,
                      provenance=list(provenance), command=["test"])
    (rec.workdir / "weights.bin").write_bytes(b"w")
    return rec.finish({"loss": 0.5}).run_id


# -- 1. the base model ------------------------------------------------------------------------------


def test_sha256_tree_is_content_addressed(tmp_path):
    a = fake_model(tmp_path / "a")
    digest, files, size = sha256_tree(a)
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer/tokenizer.json"]  # no .cache
    assert files["model.safetensors"] == sha256_bytes(b"\x00\x01weights")
    assert size == sum((a / rel).stat().st_size for rel in files)
    assert digest == sha256_json(files)
    b = fake_model(tmp_path / "b")
    os.utime(b / "model.safetensors", (1, 1))
    (b / ".cache" / "download.metadata").write_text("other bookkeeping")
    assert sha256_tree(b)[0] == digest  # same names and bytes, whatever the mtimes and hidden files
    (b / "tokenizer" / "tokenizer.json").rename(b / "tokenizer" / "renamed.json")
    assert sha256_tree(b)[0] != digest
    with pytest.raises(FileNotFoundError):
        sha256_tree(tmp_path / "none")


def test_local_model_is_recorded_with_its_absolute_path_and_hash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_model(tmp_path / "models" / "base")
    config = stub_config(tmp_path, model_name_or_path="models/base")  # relative, as configs say it
    manifest = run_job(config).training.manifest
    model = manifest.inputs["model"]
    digest, files, size = sha256_tree(tmp_path / "models" / "base")
    assert model == {
        "kind": "local_dir", "name": "models/base", "path": str((tmp_path / "models" / "base").resolve()),
        "sha256": digest, "files": 3, "bytes": size, "file_sha256": files,
    }


def test_changed_or_deleted_model_fails_verification(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = fake_model(tmp_path / "base")
    config = stub_config(tmp_path, model_name_or_path="base")
    job = run_job(config)
    assert job.verification.ok, job.verification.failures
    store, run_id = ArtifactStore(config.store_root), job.run_id
    monkeypatch.chdir(tmp_path.parent)  # the recorded path is absolute: no dependence on the cwd
    assert verify_run(store, run_id).ok

    (base / "model.safetensors").write_bytes(b"\x00\x01other seed")
    (base / "extra.bin").write_bytes(b"x")
    failed = failures(store, run_id)
    assert set(failed) == {"input:model"}
    assert "the base model changed since the run" in failed["input:model"]
    assert "changed: model.safetensors" in failed["input:model"] and "added: extra.bin" in failed["input:model"]

    shutil.rmtree(base)
    failed = failures(store, run_id)
    assert set(failed) == {"input:model"} and "no longer exists" in failed["input:model"]


def test_rebuilt_tiny_model_with_another_seed_is_caught(tmp_path, monkeypatch, tiny_model_dir, capsys):
    """The reviewer's case: train on a local model folder, rebuild it with --seed 5, verify."""
    from provenir.train.tiny import build_tiny_model

    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    config = stub_config(tmp_path, model_name_or_path=str(model))
    job = run_job(config)
    assert job.verification.ok
    build_tiny_model(model, seed=5)
    code, out, _ = cli(capsys, "manifest", "verify", job.run_id, "--store", config.store_root, "--json")
    report = json.loads(out)
    assert code == 1
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["input:model"]


def test_hub_id_is_recorded_by_id_and_cached_revision(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    missing = describe_model("org/not-cached")
    assert missing["kind"] == "hub" and missing["id"] == "org/not-cached"
    assert missing["sha256"] is None and missing["revision"] is None and "not verifiable" in missing["note"]

    commit = "a" * 40
    refs = tmp_path / "hub" / "models--org--cached" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit + "\n")
    cached = describe_model("org/cached")
    assert cached["revision"] == commit and cached["sha256"] is None and commit in cached["note"]

    # the stub backend takes a bare name too: recorded, verified as "not hashed", not an error
    job = run_job(stub_config(tmp_path, model_name_or_path="org/cached"))
    assert job.verification.ok
    assert job.training.manifest.inputs["model"]["revision"] == commit
    check = next(c for c in job.verification.checks if c.name == "input:model")
    assert check.ok and "not hashed locally" in check.detail


def test_resume_refuses_a_changed_model(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    base = fake_model(tmp_path / "base")
    config = RunConfig(name="r", model_name_or_path=str(base))
    started = RunRecorder(store, config, dataset_hash="0" * 64, command=["t"])
    RunRecorder(store, config, dataset_hash="0" * 64, command=["t"], run_id=started.run_id)  # same model: fine
    (base / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="the base model changed since the run started"):
        RunRecorder(store, config, dataset_hash="0" * 64, command=["t"], run_id=started.run_id)


# -- 2. parents -------------------------------------------------------------------------------------


def test_missing_parent_is_refused_before_anything_is_written(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    parent = record(store, "p")
    with pytest.raises(NotFoundError, match="parent run.* not found in the store.*does-not-exist"):
        RunRecorder(store, RunConfig(name="c"), dataset_hash="0" * 64, provenance=[parent, "does-not-exist"])
    assert store.list_runs() == [parent]
    assert [p.name for p in (tmp_path / "store" / "runs").iterdir()] == [parent]


def test_duplicate_parents_are_recorded_once_in_order(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    a, b = record(store, "a"), record(store, "b")
    child = record(store, "c", [b, a, b, a])
    assert store.load_manifest(child).provenance == [b, a]


def test_cli_run_with_unknown_parent_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    monkeypatch.setenv("PROVENIR_STORE", str(store))
    train_file(tmp_path)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: p\nbackend: stub\nmax_steps: 2\noutput_dir: {store}\n"
                   "data:\n  train_path: train.jsonl\n  template: chatml\n")
    code, _, err = cli(capsys, "run", str(cfg), "--parent", "does-not-exist")
    assert code == 2 and "does-not-exist" in err and "not found in the store" in err
    assert ArtifactStore(store).list_runs() == []


def test_lineage_marks_missing_ancestors_and_verify_names_missing_parent(tmp_path, capsys):
    store = ArtifactStore(tmp_path / "store")
    a = record(store, "a")
    b = record(store, "b", [a])
    c = record(store, "c", [b])
    assert verify_run(store, c).ok
    shutil.rmtree(tmp_path / "store" / "runs" / b)

    assert store.trace_ancestors(c) == [(b, "missing")]
    code, out, _ = cli(capsys, "manifest", "lineage", c, "--store", str(store.root), "--json")
    assert code == 0 and json.loads(out) == {"run_id": c, "ancestors": [b], "descendants": [], "missing": [b]}
    code, out, _ = cli(capsys, "manifest", "lineage", c, "--store", str(store.root))
    assert f"{b} (missing)" in " ".join(out.split()) and "cannot be followed" in out

    assert failures(store, c) == {f"parent:{b}": f"parent run missing from the store {store.runs_dir()}"}
    code, out, _ = cli(capsys, "manifest", "verify", c, "--store", str(store.root))
    assert code == 1 and "MISMATCH" in out


def test_unreadable_ancestor_is_marked_not_raised(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    a = record(store, "a")
    b = record(store, "b", [a])
    store.write_text(a, "manifest.json", "{broken")
    (rid, problem), = store.trace_ancestors(b)
    assert rid == a and problem.startswith("unreadable:") and "not valid JSON" in problem
    assert store.ancestors(b) == [a]
    assert set(failures(store, b)) == {f"parent:{a}"}


# -- 3. seed and metrics ----------------------------------------------------------------------------


def edit_manifest(store: ArtifactStore, run_id: str, edit) -> None:
    path = Path(store.path(run_id, "manifest.json"))
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_edited_seed_or_metrics_are_named(tmp_path):
    config = stub_config(tmp_path)
    job = run_job(config)
    store, run_id = ArtifactStore(config.store_root), job.run_id
    assert job.verification.ok
    assert json.loads(store.read_text(run_id, METRICS_RECORD_NAME)) == job.training.manifest.metrics

    edit_manifest(store, run_id, lambda m: m["metrics"].update(train_loss=0.0001))
    failed = failures(store, run_id)
    assert set(failed) == {f"metrics:{METRICS_RECORD_NAME}"}
    assert "train_loss (manifest 0.0001, recorded" in failed[f"metrics:{METRICS_RECORD_NAME}"]

    edit_manifest(store, run_id, lambda m: m.update(seed=7))
    failed = failures(store, run_id)
    assert set(failed) == {"seed", f"metrics:{METRICS_RECORD_NAME}"}

    edit_manifest(store, run_id, lambda m: (m.update(seed=config.seed), m["metrics"].pop("train_loss"),
                                            m["metrics"].update(accuracy=0.99)))
    detail = failures(store, run_id)[f"metrics:{METRICS_RECORD_NAME}"]
    assert "accuracy (manifest 0.99, not recorded)" in detail and "train_loss (missing from the manifest" in detail


def test_backend_metrics_file_is_cross_checked(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    rec = RunRecorder(store, RunConfig(name="m"), dataset_hash="0" * 64, command=["t"])
    metrics = {"train_loss": 0.75, "train_steps": 3}
    (rec.workdir / "train_metrics.json").write_text(json.dumps(metrics))  # as the trl backend writes it
    (rec.workdir / "metrics.json").write_text(json.dumps({"loss": [1.0, 0.9]}))  # the stub's loss curve
    rec.finish(metrics)
    assert verify_run(store, rec.run_id).ok
    # the record and the manifest edited together: the backend's own file still disagrees
    store.write_text(rec.run_id, METRICS_RECORD_NAME, json.dumps({"train_loss": 0.1, "train_steps": 3}))
    edit_manifest(store, rec.run_id, lambda m: (m["metrics"].update(train_loss=0.1),
                                                m["artifacts"].update({METRICS_RECORD_NAME: sha256_bytes(
                                                    store.read_bytes(rec.run_id, METRICS_RECORD_NAME))})))
    failed = failures(store, rec.run_id)
    assert set(failed) == {"metrics:train_metrics.json"}
    assert "train_loss (manifest 0.1, recorded 0.75)" in failed["metrics:train_metrics.json"]


def test_metrics_added_after_finish_through_the_store_still_verify(tmp_path):
    """RLAIF adds its metrics to a finished run and saves the manifest again: still consistent."""
    store = ArtifactStore(tmp_path / "store")
    run_id = record(store, "r")
    manifest = store.load_manifest(run_id)
    manifest.metrics["rlaif_iteration"] = 1
    manifest.artifacts = store.hash_artifacts(run_id)
    store.save_manifest(manifest)
    assert verify_run(store, run_id).ok
    assert json.loads(store.read_text(run_id, METRICS_RECORD_NAME)) == {"loss": 0.5, "rlaif_iteration": 1}

