"""BenchmarkConfig validation and the shipped task files (no model needed)."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from provenir.eval.benchmarks import BENCHMARKS, SHIPPED_TASKS_DIR, BenchmarkConfig, _absolutise_tasks, _pick_metric

pytestmark = pytest.mark.timeout(30)


def test_config_defaults_and_validation():
    config = BenchmarkConfig(benchmark="mmlu")
    assert config.num_fewshot == 0 and config.limit is None
    with pytest.raises(ValidationError):
        BenchmarkConfig(benchmark="mmlu", num_fewshot=-1)
    with pytest.raises(ValidationError):
        BenchmarkConfig(benchmark="mmlu", limit=0)
    with pytest.raises(ValidationError):
        BenchmarkConfig(benchmark="mmlu", shots=5)


def test_names_map_to_tasks():
    for name in ("mmlu", "hellaswag", "arc_easy", "arc_challenge", "gsm8k", "provenir_arith", "provenir_copy"):
        assert name in BENCHMARKS
    assert BENCHMARKS["hellaswag"].metric == "acc_norm"


def test_shipped_tasks_are_valid_and_absolutised(tmp_path):
    yamls = sorted(SHIPPED_TASKS_DIR.glob("*.yaml"))
    assert {p.stem for p in yamls} == {"provenir_arith", "provenir_copy"}
    _absolutise_tasks(SHIPPED_TASKS_DIR, tmp_path)
    for path in yamls:
        config = yaml.safe_load((tmp_path / path.name).read_text())
        assert config["task"] == path.stem
        for split, file in config["dataset_kwargs"]["data_files"].items():
            rows = [json.loads(line) for line in open(file)]
            assert rows, (path, split)
            if path.stem == "provenir_arith":
                for row in rows:
                    a, b = (int(x) for x in row["question"][len("What is "):-1].split(" + "))
                    assert row["choices"][row["label"]] == str(a + b)
                    assert len(set(row["choices"])) == 4


def test_pick_metric():
    results = {"alias": "x", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6}
    assert _pick_metric(results, "acc_norm") == ("acc_norm,none", 0.6, None)
    assert _pick_metric(results, None) == ("acc,none", 0.5, 0.1)
