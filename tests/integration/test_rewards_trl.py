"""Reward primitives as TRL reward functions inside a real GRPOTrainer on the tiny model."""

from __future__ import annotations

import math

import pytest

from provenir.rewards.primitives import (
    ClampedReward,
    ExactMatchReward,
    FormatReward,
    WeightedSumReward,
    to_trl_reward,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PROMPTS = [{"prompt": "Copy 1234:", "output": "1234"}, {"prompt": "Copy 5678:", "output": "5678"}]


class RecordingReward:
    """Delegates to a primitive and records each (prediction, reference, score) TRL made it compute."""

    def __init__(self, reward):
        self.reward = reward
        self.calls: list[tuple[str, str, float]] = []

    def score(self, prediction: str, reference: str) -> float:
        value = self.reward.score(prediction, reference)
        self.calls.append((prediction, reference, value))
        return value


def test_primitive_rewards_are_logged_by_grpo_trainer(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    primitive = ClampedReward(
        WeightedSumReward(
            [(ExactMatchReward(), 1.0), (FormatReward(r"\S"), 0.5), (FormatReward(r"[A-Z]"), 0.25)],
            normalize=True,
        ),
        0.0,
        1.0,
    )
    recorder = RecordingReward(primitive)
    reward_fn = to_trl_reward(recorder, name="copy_reward")

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        use_cpu=True,
        report_to=[],
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=6,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=args,
        train_dataset=Dataset.from_list(PROMPTS),
        processing_class=tokenizer,
    )
    trainer.train()

    assert trainer.state.global_step == 2
    logs = [entry for entry in trainer.state.log_history if "rewards/copy_reward/mean" in entry]
    assert len(logs) == 2
    # each step generates one prompt's group of two completions and scores them in one call
    assert len(recorder.calls) == 4
    # the random tiny model emits some text, so the scores are not all zero and the comparison bites
    assert any(value > 0 for _, _, value in recorder.calls)
    references = {row["output"] for row in PROMPTS}
    for step, entry in enumerate(logs):
        group = recorder.calls[2 * step : 2 * step + 2]
        assert len({ref for _, ref, _ in group}) == 1 and group[0][1] in references
        for prediction, reference, value in group:
            assert isinstance(prediction, str)
            assert value == primitive.score(prediction, reference)
            assert 0.0 <= value <= 1.0
        expected = sum(value for _, _, value in group) / len(group)
        assert math.isfinite(entry["rewards/copy_reward/mean"])
        assert entry["rewards/copy_reward/mean"] == pytest.approx(expected, abs=1e-6)
        assert entry["reward"] == pytest.approx(expected, abs=1e-6)
