"""provenir.rewards: validated, composable reward primitives (see :mod:`provenir.rewards.primitives`),
and the reward functions GRPO trains with, built from config (:mod:`provenir.rewards.functions`)."""

from provenir.rewards.functions import JudgeReward, build_rewards, describe_rewards

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

__all__ = [
    "ClampedReward",
    "ContainsReward",
    "ExactMatchReward",
    "FormatReward",
    "JudgeReward",
    "RewardFn",
    "ThresholdGatedReward",
    "TokenF1Reward",
    "WeightedSumReward",
    "build_rewards",
    "describe_rewards",
    "to_trl_reward",
]
