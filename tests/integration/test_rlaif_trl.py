"""RLAIF on the tiny model with the trl backend: real sampling, real DPO, adapter continued."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from provenir.core.config import DataConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.run import verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.eval.judge import StubJudge
from provenir.train import get_backend
from provenir.train.rlaif import PREFERENCES_FILE, RLAIFConfig, RLAIFPipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TRAIN = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in (1234, 5678, 9012, 3456)]
EVAL = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in (1111, 2222, 3333)]


@pytest.mark.slow
def test_two_iterations_of_real_generation_and_dpo(tiny_model_dir, store_root):
    config = RunConfig(
        name="rlaif-tiny", backend="trl", seed=3, model_name_or_path=str(tiny_model_dir), max_steps=2,
        batch_size=2, storage_root=str(store_root), data=DataConfig(template="chatml"),
        peft=PEFTConfig(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
        training=TrainingConfig(learning_rate=5e-3, logging_steps=1, max_seq_length=64),
    )
    rlaif = RLAIFConfig(n_iterations=2, responses_per_prompt=3, max_new_tokens=6, regression_tolerance=1.0)
    store = ArtifactStore(store_root)
    pipeline = RLAIFPipeline(StubJudge(), get_backend("trl"), config, rlaif, store=store)
    first, second = pipeline.run(JsonlDataset.from_records(TRAIN), JsonlDataset.from_records(EVAL))

    assert not first.regressed and not second.regressed
    assert second.manifest.provenance == [first.manifest.run_id]
    assert store.ancestors(second.manifest.run_id) == [first.manifest.run_id]
    for it in (first, second):
        # real DPO optimizer steps: one epoch over the pairs, capped by max_steps
        assert it.manifest.metrics["steps"] == min(2, math.ceil(it.preference_count / 2))
        assert "adapter/adapter_model.safetensors" in it.manifest.artifacts
        assert it.eval_result.metrics["exact_match"].n == len(EVAL)
        assert verify_run(store, it.manifest.run_id).ok
        pairs = [json.loads(x) for x in store.read_text(it.manifest.run_id, PREFERENCES_FILE).splitlines()]
        assert len(pairs) == it.preference_count >= 1
        assert all(p["chosen"] != p["rejected"] for p in pairs)
    # the second round continued the first round's adapter, so its weights moved on from there
    a = (Path(first.adapter_path) / "adapter_model.safetensors").read_bytes()
    b = (Path(second.adapter_path) / "adapter_model.safetensors").read_bytes()
    assert a != b
    # sampled candidates came from the model and differ between iterations (new seed)
    assert first.generation_seed != second.generation_seed
    rows = [json.loads(x) for x in store.read_text(first.manifest.run_id, "rlaif/candidates.jsonl").splitlines()]
    assert len(rows) == len(TRAIN) * 3 and len({r["text"] for r in rows}) > len(TRAIN)
    assert not any("<|im_end|>" in r["text"] or "<pad>" in r["text"] for r in rows)


def test_transformers_policy_sampling_is_seeded(tiny_model_dir):
    from provenir.train.rlaif import TransformersPolicy

    config = RunConfig(name="p", backend="trl", model_name_or_path=str(tiny_model_dir),
                       data=DataConfig(template="chatml"))
    policy = TransformersPolicy(config, None, max_new_tokens=5)
    prompts = [(None, "Copy 1234"), ("Be brief.", "Copy 98")]
    first = policy.sample(prompts, n=3, seed=11)
    assert first == policy.sample(prompts, n=3, seed=11)
    assert first != policy.sample(prompts, n=3, seed=12)
    assert [len(c) for c in first] == [3, 3]
    assert policy.predict(prompts) == policy.predict(prompts)  # greedy
