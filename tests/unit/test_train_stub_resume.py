"""`resume_run_id` on the stub backend follows the trl backend's rules."""

from __future__ import annotations

import pytest

from provenir.core.config import DataConfig, RunConfig
from provenir.core.errors import ConfigError
from provenir.core.run import verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends import get_backend
from provenir.train.backends import stub as stub_module

RECORDS = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(12)]


def _config(**kw) -> RunConfig:
    return RunConfig(name="stub-resume", backend="stub", seed=3, max_steps=5, batch_size=4,
                     data=DataConfig(template="chatml"), **kw)


def _failed_run(store: ArtifactStore, monkeypatch, **kw) -> str:
    """A stub run that failed while writing its adapter (its manifest says ``failed``)."""
    real_write = stub_module.atomic_write_text

    def write_fails_once(path, text):
        monkeypatch.setattr(stub_module, "atomic_write_text", real_write)
        raise OSError("disk full")

    monkeypatch.setattr(stub_module, "atomic_write_text", write_fails_once)
    before = set(store.list_runs())
    with pytest.raises(OSError, match="disk full"):
        get_backend("stub").train_sft(_config(), JsonlDataset.from_records(RECORDS), store=store, **kw)
    [run_id] = set(store.list_runs()) - before
    assert store.load_manifest(run_id).status == "failed"
    return run_id


def test_unknown_run_is_refused_and_nothing_is_written(store_root):
    store = ArtifactStore(store_root)
    with pytest.raises(ConfigError, match=r"--resume nope-123: run 'nope-123' has no manifest"):
        get_backend("stub").train_sft(_config(), JsonlDataset.from_records(RECORDS), store=store,
                                      resume_run_id="nope-123")
    assert not store_root.exists() or store.list_runs() == []


def test_completed_run_is_refused(store_root):
    store = ArtifactStore(store_root)
    done = get_backend("stub").train_sft(_config(), JsonlDataset.from_records(RECORDS), store=store)
    before = store.read_text(done.manifest.run_id, "manifest.json")
    with pytest.raises(ConfigError, match="already completed"):
        get_backend("stub").train_sft(_config(), JsonlDataset.from_records(RECORDS), store=store,
                                      resume_run_id=done.manifest.run_id)
    assert store.read_text(done.manifest.run_id, "manifest.json") == before
    assert store.list_runs() == [done.manifest.run_id]


def test_other_config_or_data_is_refused(store_root, monkeypatch):
    store = ArtifactStore(store_root)
    run_id = _failed_run(store, monkeypatch)
    backend = get_backend("stub")
    with pytest.raises(ConfigError, match="the config differs"):
        backend.train_sft(_config().model_copy(update={"seed": 4}), JsonlDataset.from_records(RECORDS),
                          store=store, resume_run_id=run_id)
    with pytest.raises(ConfigError, match="the training data changed"):
        backend.train_sft(_config(), JsonlDataset.from_records(RECORDS[:-1]), store=store, resume_run_id=run_id)
    assert store.load_manifest(run_id).status == "failed"


def test_failed_run_continues_under_its_own_id_with_its_provenance(store_root, monkeypatch):
    store = ArtifactStore(store_root)
    parents = [get_backend("stub").train_sft(_config().model_copy(update={"name": f"parent-{i}"}),
                                             JsonlDataset.from_records(RECORDS), store=store).manifest.run_id
               for i in (1, 2)]
    run_id = _failed_run(store, monkeypatch, provenance=parents[:1])
    straight = get_backend("stub").train_sft(_config(), JsonlDataset.from_records(RECORDS),
                                             store=ArtifactStore(store_root / "straight"))

    resumed = get_backend("stub").train_sft(_config(), JsonlDataset.from_records(RECORDS), store=store,
                                            resume_run_id=run_id, provenance=parents[1:])
    manifest = resumed.manifest
    assert manifest.run_id == run_id and sorted(store.list_runs()) == sorted([*parents, run_id])
    assert manifest.status == "completed"
    assert manifest.provenance == parents  # the parent recorded at the start is kept
    # no checkpoints: it starts over, says so, and writes what an uninterrupted run writes
    assert resumed.metrics["resumed_from_step"] == 0
    assert "resumed_from_step" not in straight.metrics
    adapter = stub_module.ADAPTER_FILE
    assert manifest.artifacts[adapter] == straight.manifest.artifacts[adapter]
    assert verify_run(store, run_id).ok
