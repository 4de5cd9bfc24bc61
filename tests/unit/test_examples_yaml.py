"""Every config shipped under examples/ loads and validates; its data files exist and parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenir.core.config import RunConfig
from provenir.data.dataset import JsonlDataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(path):
    config = RunConfig.from_yaml(path)
    for data_path in (config.data.train_path, config.data.eval_path):
        if data_path:
            assert len(JsonlDataset.from_jsonl(data_path)) > 0


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.jsonl")), ids=lambda p: p.name)
def test_example_data_parses(path):
    assert len(JsonlDataset.from_jsonl(path)) > 0
