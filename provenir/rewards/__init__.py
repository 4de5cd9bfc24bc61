"""provenir.rewards: validated, composable reward primitives (see :mod:`provenir.rewards.primitives`)."""

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
    "RewardFn",
    "ThresholdGatedReward",
    "TokenF1Reward",
    "WeightedSumReward",
    "to_trl_reward",
]
