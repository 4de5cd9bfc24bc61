"""GPU actors in the curation pools: the reservation reaches Ray, and over-asking fails up front.

No GPU is needed: a separate embedded Ray is started in a child process with one *logical* GPU
(``num_gpus=1``), which Ray schedules and hands out (``CUDA_VISIBLE_DEVICES``) like a real one. The
session's own Ray (no GPUs) checks the refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

DATA = Path(__file__).resolve().parents[1] / "data" / "curation"

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import ray
    from provenir.distributed.curation import run_decontaminate
    from provenir.distributed.data import map_records

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _temp_dir=sys.argv[3])

    class WhereAmI:
        def __call__(self, batch):
            ids = [str(i) for i in ray.get_gpu_ids()]
            n = len(batch["x"])
            return {"x": batch["x"], "gpus": [",".join(ids)] * n,
                    "visible": [os.environ.get("CUDA_VISIBLE_DEVICES", "")] * n,
                    "actor": [os.getpid()] * n}

    ds = ray.data.from_items([{"x": i} for i in range(40)], override_num_blocks=4)
    shared = map_records(ds, WhereAmI, batch_size=10, actors=2, num_cpus=0.5, num_gpus=0.5).take_all()
    whole = map_records(ds, WhereAmI, batch_size=10, actors=1, num_cpus=0.5, num_gpus=1).take_all()
    plain = map_records(ds, WhereAmI, batch_size=10, actors=1, num_cpus=0.5).take_all()
    report = run_decontaminate([sys.argv[1]], [sys.argv[2]], sys.argv[4], actors=1, gpus_per_actor=1,
                               checker_kwargs={"semantic": False}, progress=False)
    print("RESULT " + json.dumps({
        "shared": sorted({(r["gpus"], r["visible"]) for r in shared}),
        "whole": sorted({(r["gpus"], r["visible"]) for r in whole}),
        "plain": sorted({r["gpus"] for r in plain}),
        "rows": sorted(r["x"] for r in shared),
        "report": {k: report[k] for k in ("gpus_per_actor", "records", "contaminated", "by_stage")},
    }))
    """
)


def test_gpu_actors_get_their_gpu(tmp_path, ray_local):
    temp = Path("/tmp") / f"ray-gpu-{os.getpid()}"  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(DATA / "train_planted.jsonl"), str(DATA / "eval.jsonl"), str(temp),
         str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=280,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    got = json.loads(lines[-1][len("RESULT "):])
    # Two actors of half a GPU each share GPU 0; each sees only that device.
    assert got["shared"] == [["0", "0"]] and got["rows"] == list(range(40))
    assert got["whole"] == [["0", "0"]]
    assert got["plain"] == [""]  # an actor that asked for no GPU is given none
    # The same n-gram stage result as without a GPU (the planted exact and near copies).
    planted = [json.loads(line) for line in (DATA / "train_planted.jsonl").read_text().splitlines()]
    ngram = sum(r["kind"] in ("exact", "near") for r in planted)
    assert got["report"]["gpus_per_actor"] == 1 and got["report"]["records"] == len(planted)
    assert got["report"]["by_stage"] == {"ngram": ngram}


def test_more_gpus_than_the_cluster_has_fails_before_any_work(tmp_path, ray_local, monkeypatch):
    from typer.testing import CliRunner

    from provenir.cli import app
    from provenir.core.errors import ConfigError

    monkeypatch.setenv("PROVENIR_AUDIT_DIR", str(tmp_path / "audit"))
    out = tmp_path / "d"
    result = CliRunner().invoke(app, ["decontaminate", str(DATA / "train_planted.jsonl"), "--eval",
                                      str(DATA / "eval.jsonl"), "--out", str(out), "--no-semantic",
                                      "--actors", "2", "--gpus-per-actor", "1", "--no-progress"])
    assert isinstance(result.exception, ConfigError), result.output
    assert "2 actor(s) × 1 GPU = 2 GPUs, but the Ray cluster has 0" in str(result.exception)
    assert not out.exists()
    from provenir.distributed.curation import run_flywheel, run_rag_generate

    with pytest.raises(ConfigError, match="Ray cluster has 0"):
        run_rag_generate([str(DATA / "eval.jsonl")], str(tmp_path / "r"), gpus_per_actor=0.5, progress=False)
    with pytest.raises(ConfigError, match="Ray cluster has 0"):
        run_flywheel([str(DATA / "train_planted.jsonl")], str(DATA / "eval.jsonl"), str(tmp_path / "f"),
                     gpus_per_actor=1, progress=False)
    assert not (tmp_path / "r").exists() and not (tmp_path / "f").exists()


def test_more_cpus_than_the_cluster_can_give_fails_before_any_work(tmp_path, ray_local):
    from provenir.core.errors import ConfigError
    from provenir.distributed.curation import run_decontaminate

    with pytest.raises(ConfigError, match=r"1 actor\(s\) × 8 CPU = 8 CPUs, but the Ray cluster has 2 and one stays free"):
        run_decontaminate([str(DATA / "train_planted.jsonl")], [str(DATA / "eval.jsonl")], str(tmp_path / "d"),
                          cpus_per_actor=8, checker_kwargs={"semantic": False}, progress=False)
    assert not (tmp_path / "d").exists()
