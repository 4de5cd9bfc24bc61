"""Reward primitives: small, validated, composable ``score(prediction, reference) -> float`` objects.

Every primitive is a :class:`RewardFn`; each is also callable (``reward(prediction, reference)``),
usable as a metric of :class:`~provenir.eval.harness.MultiMetricEvaluator` (per-example scores with
bootstrap intervals) and, through :func:`to_trl_reward`, as a TRL reward function (GRPO/RLOO).

Example:
    >>> reward = ClampedReward(
    ...     WeightedSumReward([(ExactMatchReward(), 1.0), (FormatReward(r"^\\d+$"), 0.5)]), 0.0, 1.0
    ... )
    >>> reward.score("42", "42"), reward.score("forty-two", "42")
    (1.0, 0.0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from provenir.core.errors import ConfigError, DataError
from provenir.eval._metrics import token_f1
from provenir.eval._text import normalize_answer

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


@runtime_checkable
class RewardFn(Protocol):
    """Anything with ``score(prediction, reference) -> float``."""

    def score(self, prediction: str, reference: str) -> float: ...


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return number


def _check_reward(reward: Any, what: str) -> RewardFn:
    if not callable(getattr(reward, "score", None)):
        raise ConfigError(f"{what}: expected a reward with .score(prediction, reference), got {type(reward).__name__}")
    return reward


def _inner_score(reward: RewardFn, prediction: str, reference: str) -> float:
    value = reward.score(prediction, reference)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{type(reward).__name__}.score returned {value!r}; rewards must return finite numbers")
    return float(value)


class _Reward:
    def __call__(self, prediction: str, reference: str) -> float:
        return self.score(prediction, reference)

    def score(self, prediction: str, reference: str) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class ExactMatchReward(_Reward):
    """1.0 when prediction and reference are equal after normalisation, else 0.0.

    ``normalize=True`` (default) uses SQuAD-style normalisation (case, punctuation, articles,
    whitespace); ``normalize=False`` compares the stripped strings exactly.
    """

    def __init__(self, normalize: bool = True):
        self.normalize = normalize

    def score(self, prediction: str, reference: str) -> float:
        if self.normalize:
            return float(normalize_answer(prediction) == normalize_answer(reference))
        return float(prediction.strip() == reference.strip())

    def __repr__(self) -> str:
        return f"ExactMatchReward(normalize={self.normalize})"


class ContainsReward(_Reward):
    """1.0 when the normalised reference occurs in the normalised prediction (word-bounded)."""

    def score(self, prediction: str, reference: str) -> float:
        pred, ref = normalize_answer(prediction), normalize_answer(reference)
        if not ref:
            return float(not pred)
        return float(f" {ref} " in f" {pred} ")


class TokenF1Reward(_Reward):
    """SQuAD token F1 between prediction and reference, in [0, 1]."""

    def score(self, prediction: str, reference: str) -> float:
        return token_f1(prediction, reference)


class FormatReward(_Reward):
    """1.0 when the prediction matches ``pattern``, else 0.0 (the reference is not used).

    Args:
        pattern: a Python regular expression; an invalid one raises :class:`ConfigError` at once.
        full_match: require the whole (stripped) prediction to match, not just a part of it.
        flags: ``re`` flags; default ``re.DOTALL`` so ``.`` spans lines (reasoning traces).
    """

    def __init__(self, pattern: str, *, full_match: bool = False, flags: int = re.DOTALL):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"FormatReward(pattern={pattern!r}): give a non-empty regular expression")
        try:
            self._regex = re.compile(pattern, flags)
        except re.error as exc:
            raise ConfigError(f"FormatReward(pattern={pattern!r}): invalid regular expression: {exc}") from exc
        self.pattern = pattern
        self.full_match = full_match

    def score(self, prediction: str, reference: str) -> float:
        if self.full_match:
            return float(self._regex.fullmatch(prediction.strip()) is not None)
        return float(self._regex.search(prediction) is not None)

    def __repr__(self) -> str:
        return f"FormatReward({self.pattern!r}, full_match={self.full_match})"


class WeightedSumReward(_Reward):
    """``sum(weight * reward.score(...))`` over ``(reward, weight)`` pairs.

    Weights must be finite and not all zero (negative weights are penalties). ``normalize=True``
    divides by the sum of absolute weights, keeping a mix of [0, 1] rewards within [-1, 1].
    """

    def __init__(self, rewards: list[tuple[RewardFn, float]], *, normalize: bool = False):
        if not isinstance(rewards, Sequence) or isinstance(rewards, str) or not rewards:
            raise ConfigError("WeightedSumReward(rewards=...): give a non-empty list of (reward, weight) pairs")
        pairs: list[tuple[RewardFn, float]] = []
        for index, item in enumerate(rewards):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ConfigError(f"WeightedSumReward: item {index} must be a (reward, weight) pair, got {item!r}")
            reward, weight = item
            pairs.append(
                (_check_reward(reward, f"WeightedSumReward item {index}"), _finite(weight, f"WeightedSumReward weight {index}"))
            )
        total = sum(abs(w) for _, w in pairs)
        if total == 0:
            raise ConfigError("WeightedSumReward: the weights are all zero")
        self.rewards = pairs
        self.normalize = normalize
        self._scale = 1.0 / total if normalize else 1.0

    def score(self, prediction: str, reference: str) -> float:
        return self._scale * sum(w * _inner_score(r, prediction, reference) for r, w in self.rewards)


class ThresholdGatedReward(_Reward):
    """The mean of ``rewards`` when every one of them reaches ``threshold``; otherwise 0.0.

    A gate for multi-part rewards: e.g. no credit for a correct answer in the wrong format.
    ``aggregate`` chooses what a passing example scores: ``"mean"`` (default), ``"sum"``, ``"min"``,
    or ``"last"`` (the last reward's score, the earlier ones acting purely as gates).
    """

    _AGGREGATES: dict[str, Callable[[list[float]], float]] = {
        "mean": lambda xs: sum(xs) / len(xs),
        "sum": sum,
        "min": min,
        "last": lambda xs: xs[-1],
    }

    def __init__(self, rewards: list[RewardFn], threshold: float, *, aggregate: str = "mean"):
        if not isinstance(rewards, Sequence) or isinstance(rewards, str) or not rewards:
            raise ConfigError("ThresholdGatedReward(rewards=...): give a non-empty list of rewards")
        self.rewards = [_check_reward(r, f"ThresholdGatedReward item {i}") for i, r in enumerate(rewards)]
        self.threshold = _finite(threshold, "ThresholdGatedReward(threshold)")
        if aggregate not in self._AGGREGATES:
            raise ConfigError(f"ThresholdGatedReward(aggregate={aggregate!r}): choose one of {sorted(self._AGGREGATES)}")
        self.aggregate = aggregate

    def score(self, prediction: str, reference: str) -> float:
        scores = [_inner_score(r, prediction, reference) for r in self.rewards]
        if any(s < self.threshold for s in scores):
            return 0.0
        return float(self._AGGREGATES[self.aggregate](scores))


class ClampedReward(_Reward):
    """``reward.score(...)`` clamped into ``[min_val, max_val]`` (``min_val <= max_val``, both finite)."""

    def __init__(self, reward: RewardFn, min_val: float, max_val: float):
        self.reward = _check_reward(reward, "ClampedReward(reward)")
        self.min_val = _finite(min_val, "ClampedReward(min_val)")
        self.max_val = _finite(max_val, "ClampedReward(max_val)")
        if self.min_val > self.max_val:
            raise ConfigError(f"ClampedReward: min_val ({min_val}) must be <= max_val ({max_val})")

    def score(self, prediction: str, reference: str) -> float:
        return min(self.max_val, max(self.min_val, _inner_score(self.reward, prediction, reference)))


def _completion_text(completion: Any) -> str:
    """TRL passes plain strings, or for conversational data a list of message dicts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(
            m.get("content", "") if isinstance(m.get("content"), str) else ""
            for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        )
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    raise DataError(f"reward function: unsupported completion type {type(completion).__name__}")


def to_trl_reward(
    reward: RewardFn, reference_field: str | None = "output", name: str | None = None
) -> Callable[..., list[float]]:
    """Wrap a reward as a TRL reward function ``f(prompts, completions, **columns) -> list[float]``.

    TRL's GRPO/RLOO trainers pass every dataset column as a keyword list; the reference is taken
    from ``reference_field`` (``None``: the reward reads no reference, e.g. :class:`FormatReward`,
    and gets ``""``). Conversational completions (lists of messages) are reduced to the
    assistant's text. The function's ``__name__`` (what TRL logs) is ``name`` or the reward's class.

    Example:
        >>> fn = to_trl_reward(ExactMatchReward())
        >>> fn(prompts=["2+3?", "1+1?"], completions=["5", "3"], output=["5", "2"])
        [1.0, 0.0]
    """
    _check_reward(reward, "to_trl_reward")

    def reward_function(prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[float]:
        if completions is None:
            raise ConfigError("reward function called without completions=")
        if reference_field is None:
            return [float(reward.score(_completion_text(c), "")) for c in completions]
        if reference_field not in kwargs:
            available = sorted(k for k in kwargs if not k.startswith(("trainer_state", "log_")))
            raise ConfigError(
                f"reward function: the dataset has no {reference_field!r} column (columns: {available}); "
                "pass reference_field= to to_trl_reward"
            )
        references = kwargs[reference_field]
        if len(references) != len(completions):
            raise DataError(f"reward function: {len(completions)} completions but {len(references)} references")
        return [float(reward.score(_completion_text(c), str(r))) for c, r in zip(completions, references)]

    reward_function.__name__ = name or re.sub(r"(?<!^)(?=[A-Z])", "_", type(reward).__name__).lower()
    reward_function.__qualname__ = reward_function.__name__
    return reward_function
