"""The demo shows real learning: held-out exact match rises from ~0 to >= 0.8."""

from __future__ import annotations

import pytest

from provenir.core.config import RunConfig
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir._demo import demo_records, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]


def test_bundled_demo_data_is_what_the_generator_makes(repo_root):
    train, evaluation = demo_records(seed=0)
    assert JsonlDataset.from_jsonl(repo_root / "examples/data/copy_train.jsonl").records == train
    assert JsonlDataset.from_jsonl(repo_root / "examples/data/copy_eval.jsonl").records == evaluation
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in evaluation}


def test_demo_exact_match_rises(repo_root, tiny_model_dir, store_root):
    config = RunConfig.from_yaml(
        repo_root / "examples/demo.yaml", overrides={"model_name_or_path": str(tiny_model_dir)}
    )
    result = run_demo(config, store=ArtifactStore(store_root))
    assert result["before"].exact_match <= 0.05
    assert result["after"].exact_match >= 0.8
    job = result["job"]
    assert job.verification.ok
    assert job.training.manifest.metrics["steps"] == config.max_steps


def test_demo_command_prints_the_manifest_and_its_verification(repo_root, tiny_model_dir, tmp_path):
    """`provenir demo` (what `make demo` runs) prints the scores, the manifest and its verification."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "provenir.cli", "demo", "--store", str(tmp_path / "store"), "--quiet",
         "--set", "max_steps=2", "--set", f"model_name_or_path={tiny_model_dir}"],
        capture_output=True, text=True, cwd=repo_root, timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "eval exact match before training" in out.stdout
    assert "manifest " in out.stdout and "config_hash" in out.stdout and "dataset_hash" in out.stdout
    assert "artifact " in out.stdout and "metric steps" in out.stdout
    assert ": verified" in out.stdout
