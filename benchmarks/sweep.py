"""`provenir sweep` wall time with 1 and 2 concurrent trials, and what ASHA saves over a full grid.

The workload: the tiny model on CPU, 4 trials (learning rate × rank), 8 steps each, evaluated
every 2 steps, one Ray Train worker per trial. The same sweep runs twice, once with
``max_concurrent_trials: 1`` and once with 2, on one embedded Ray instance; the tables must be the
same (ordered halving decides alike), so the only difference is the wall time. The scheduler's
saving is the trial-steps the runs actually trained against the full grid's (trials × max_steps).

    python benchmarks/sweep.py [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def _run(config: Path, store: Path, concurrent: int, address: str | None) -> tuple[float, dict]:
    command = [str(Path(sys.executable).parent / "provenir"), "sweep", str(config), "--store", str(store),
               "--json", "--set", "name=bench", "--quiet"]
    text = config.read_text().replace("max_concurrent_trials: 2", f"max_concurrent_trials: {concurrent}")
    variant = config.with_name(f"sweep-{concurrent}.yaml")
    variant.write_text(text)
    command[2] = str(variant)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if address:
        command += ["--address", address]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-4000:])
    return wall, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="a Ray address (default: an embedded instance per run)")
    args = parser.parse_args()
    from test_sweep_ray import _sweep_config, _table  # the test's workload, so the figures match it

    from provenir.train.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="provenir-bench-sweep-") as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "tiny", seed=0)
        config = _sweep_config(work, model)
        results = {n: _run(config, work / f"store-{n}", n, args.address) for n in (1, 2)}
    (wall1, one), (wall2, two) = results[1], results[2]
    same = _table(one) == _table(two) and one["best"]["adapter_sha256"] == two["best"]["adapter_sha256"]
    full = one["max_steps"] * len(one["trials"])
    decided = sum(t["steps"] for t in one["trials"])
    trained = sum(t.get("steps_run", t["steps"]) for t in one["trials"])
    rows = [
        ("sweep wall time, 4 trials (s)", f"{wall2:.1f} (2 concurrent)", f"{wall1:.1f} (1 at a time)", f"{wall1 / wall2:.2f}×"),
        ("trial-steps, decided by ASHA vs full grid", str(decided), str(full), f"{full / max(decided, 1):.2f}×"),
        ("trial-steps, actually trained vs full grid", str(trained), str(full), f"{full / max(trained, 1):.2f}×"),
    ]
    width = [max(len(r[i]) for r in rows + [("workload", "provenir", "baseline", "ratio")]) for i in range(4)]
    for row in [("workload", "provenir", "baseline", "ratio"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))
    print(f"same table and best adapter with 1 and 2 concurrent trials: {same}")


if __name__ == "__main__":
    main()
