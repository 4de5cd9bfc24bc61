"""A merge is a run in the store (kind ``merge``): parents are the runs its adapters came from, its
inputs are the adapters (re-hashed by ``verify_run``), its artifacts the merged adapter."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters_support.lora import make_adapter  # noqa: E402

from provenir.cli import main  # noqa: E402
from provenir.core.config import RunConfig  # noqa: E402
from provenir.core.run import RunRecorder, verify_run  # noqa: E402
from provenir.core.store import ArtifactStore  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture()
def trained(tiny_model_dir: Path, tmp_path) -> tuple[ArtifactStore, list[str], list[Path]]:
    """Two runs in a store, each holding an adapter (as a training run leaves it)."""
    store = ArtifactStore(tmp_path / "store")
    ids, paths = [], []
    for name, seed in (("sft-a", 41), ("sft-b", 42)):
        rec = RunRecorder(store, RunConfig(name=name, seed=seed), dataset_hash="0" * 64)
        make_adapter(tiny_model_dir, rec.workdir / "adapter", seed=seed)
        rec.finish({"loss": 0.5})
        ids.append(rec.run_id)
        paths.append(rec.workdir / "adapter")
    return store, ids, paths


def test_merge_is_a_verified_run_whose_parents_are_the_adapters_runs(capsys, trained, tmp_path):
    store, ids, paths = trained
    out = tmp_path / "merged"
    code, stdout, err = cli(capsys, "merge", *map(str, paths), "--strategy", "ties", "--out", str(out),
                            "--store", str(store.root), "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    run_id = summary["run_id"]
    assert summary["parents"] == ids
    manifest = store.load_manifest(run_id)
    assert manifest.kind == "merge" and manifest.provenance == ids and manifest.status == "completed"
    assert manifest.inputs["merge"]["strategy"] == "ties"
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/merge_manifest.json"} \
        <= set(manifest.artifacts)
    report = verify_run(store, run_id)
    assert report.ok, [c for c in report.checks if not c.ok]
    assert {c.name for c in report.checks} >= {"input:adapter:0", "input:adapter:1", f"parent:{ids[0]}"}

    code, stdout, _ = cli(capsys, "manifest", "lineage", run_id, "--store", str(store.root), "--json")
    assert code == 0 and json.loads(stdout)["ancestors"] == ids
    code, stdout, _ = cli(capsys, "manifest", "lineage", ids[0], "--store", str(store.root), "--json")
    assert run_id in json.loads(stdout)["descendants"]

    # a parent adapter changed after the merge: verify names the input
    weights = paths[0] / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    failed = {c.name for c in verify_run(store, run_id).checks if not c.ok}
    assert "input:adapter:0" in failed
    # the merged adapter in the store changed: verify names the artifact
    merged = store.local_run_dir(run_id) / "adapter" / "adapter_model.safetensors"
    merged.write_bytes(merged.read_bytes()[:-1] + b"\x01")
    assert "artifact:adapter/adapter_model.safetensors" in {c.name for c in verify_run(store, run_id).checks if not c.ok}


def test_no_record_and_unknown_parent(capsys, trained, tmp_path):
    store, _, paths = trained
    before = set(store.list_runs())
    code, stdout, _ = cli(capsys, "merge", *map(str, paths), "--out", str(tmp_path / "m1"), "--store", str(store.root),
                          "--no-record", "--json")
    assert code == 0 and json.loads(stdout)["run_id"] is None and set(store.list_runs()) == before
    code, _, err = cli(capsys, "merge", *map(str, paths), "--out", str(tmp_path / "m2"), "--store", str(store.root),
                       "--parent", "no-such-run-20260101-000000-abcd")
    assert code == 2 and "no-such-run" in err and not (tmp_path / "m2").exists()
