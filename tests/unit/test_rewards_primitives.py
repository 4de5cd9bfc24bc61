"""Reward primitives: values, validation, composition, metric and TRL use."""

from __future__ import annotations

import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.rewards.primitives import (
    ClampedReward,
    ContainsReward,
    ExactMatchReward,
    FormatReward,
    RewardFn,
    ThresholdGatedReward,
    TokenF1Reward,
    WeightedSumReward,
    to_trl_reward,
)

pytestmark = pytest.mark.timeout(30)


class Const:
    def __init__(self, value):
        self.value = value

    def score(self, prediction, reference):
        return self.value


def test_exact_match_normalised_and_raw():
    assert ExactMatchReward().score("The Answer.", "answer") == 1.0
    assert ExactMatchReward().score("answers", "answer") == 0.0
    assert ExactMatchReward(normalize=False).score(" answer ", "answer") == 1.0
    assert ExactMatchReward(normalize=False).score("Answer", "answer") == 0.0
    assert isinstance(ExactMatchReward(), RewardFn)


def test_format_reward():
    think = FormatReward(r"<think>.*</think>\s*<answer>.*</answer>")
    assert think.score("<think>a\nb</think>\n<answer>4</answer>", "") == 1.0
    assert think.score("<answer>4</answer>", "") == 0.0
    assert FormatReward(r"\d+", full_match=True).score(" 42 ", "") == 1.0
    assert FormatReward(r"\d+", full_match=True).score("42 apples", "") == 0.0
    with pytest.raises(ConfigError, match="invalid regular expression"):
        FormatReward("(unclosed")
    with pytest.raises(ConfigError, match="non-empty"):
        FormatReward("")


def test_weighted_sum():
    reward = WeightedSumReward([(ExactMatchReward(), 2.0), (FormatReward(r"\d"), -0.5)])
    assert reward.score("5", "5") == pytest.approx(1.5)
    assert reward.score("x", "5") == 0.0
    normalised = WeightedSumReward([(Const(1.0), 3.0), (Const(0.0), 1.0)], normalize=True)
    assert normalised.score("", "") == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="non-empty list"):
        WeightedSumReward([])
    with pytest.raises(ConfigError, match="all zero"):
        WeightedSumReward([(Const(1), 0.0)])
    with pytest.raises(ConfigError, match="finite"):
        WeightedSumReward([(Const(1), float("inf"))])
    with pytest.raises(ConfigError, match="pair"):
        WeightedSumReward([Const(1)])
    with pytest.raises(ConfigError, match="must be a number"):
        WeightedSumReward([(Const(1), "1")])
    with pytest.raises(ConfigError, match=r"\.score"):
        WeightedSumReward([(object(), 1.0)])


def test_threshold_gate():
    gate = ThresholdGatedReward([Const(0.8), Const(0.6)], threshold=0.5)
    assert gate.score("", "") == pytest.approx(0.7)
    assert ThresholdGatedReward([Const(0.8), Const(0.4)], threshold=0.5).score("", "") == 0.0
    assert ThresholdGatedReward([Const(0.8), Const(0.6)], 0.5, aggregate="last").score("", "") == 0.6
    assert ThresholdGatedReward([Const(0.8), Const(0.6)], 0.5, aggregate="min").score("", "") == 0.6
    fmt_then_correct = ThresholdGatedReward([FormatReward(r"^\d+$"), ExactMatchReward()], 1.0)
    assert fmt_then_correct.score("12", "12") == 1.0
    assert fmt_then_correct.score("twelve", "twelve") == 0.0
    with pytest.raises(ConfigError):
        ThresholdGatedReward([], 0.5)
    with pytest.raises(ConfigError, match="finite"):
        ThresholdGatedReward([Const(1)], float("nan"))
    with pytest.raises(ConfigError, match="aggregate"):
        ThresholdGatedReward([Const(1)], 0.5, aggregate="max")


def test_clamped():
    assert ClampedReward(Const(3.0), 0.0, 1.0).score("", "") == 1.0
    assert ClampedReward(Const(-3.0), -1.0, 1.0).score("", "") == -1.0
    assert ClampedReward(Const(0.25), 0.0, 1.0).score("", "") == 0.25
    assert ClampedReward(Const(0.25), 0.5, 0.5).score("", "") == 0.5
    with pytest.raises(ConfigError, match="min_val"):
        ClampedReward(Const(1), 1.0, 0.0)
    with pytest.raises(DataError, match="finite"):
        ClampedReward(Const(float("nan")), 0.0, 1.0).score("", "")


def test_contains_and_f1():
    assert ContainsReward().score("I think it is Paris.", "paris") == 1.0
    assert TokenF1Reward().score("paris france", "paris") == pytest.approx(2 / 3)


def test_trl_adapter_plain_and_conversational():
    fn = to_trl_reward(ExactMatchReward(), reference_field="answer")
    assert fn.__name__ == "exact_match_reward"
    assert fn(prompts=["q", "q"], completions=["5", "6"], answer=["5", "5"]) == [1.0, 0.0]
    conversational = [[{"role": "assistant", "content": "5"}], [{"role": "assistant", "content": "7"}]]
    assert fn(prompts=["q", "q"], completions=conversational, answer=["5", "5"], trainer_state=None) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="no 'answer' column"):
        fn(prompts=["q"], completions=["5"], output=["5"])
    with pytest.raises(DataError, match="1 completions but 2"):
        fn(prompts=["q"], completions=["5"], answer=["5", "5"])


def test_trl_adapter_is_accepted_by_grpo_reward_signature():
    import inspect

    fn = to_trl_reward(FormatReward(r"\d"), name="has_digit")
    params = inspect.signature(fn).parameters
    assert "prompts" in params and "completions" in params
    assert fn.__name__ == "has_digit"
    assert fn(prompts=None, completions=["a1", "b"], output=["", ""]) == [1.0, 0.0]
