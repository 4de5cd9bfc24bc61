"""Reward functions for online RL trainers (GRPO), built from the ``training.rewards`` specs.

A spec is a plain dict ``{"name", "weight", "reference_field", "args"}`` (what
:class:`provenir.core.config.RewardConfig` dumps to). ``name`` is one of:

* a primitive of :data:`REWARD_PRIMITIVES` (``exact_match``, ``contains``, ``token_f1``,
  ``format``), built with ``args`` and wrapped by :func:`~provenir.rewards.to_trl_reward`;
* ``judge``: the mean of an LLM judge's rubric scores for (prompt, completion)
  (:class:`JudgeReward`; ``args.judge`` is ``stub``, ``anthropic`` or ``openai``, ``args.cache_dir``
  wraps it in :class:`~provenir.eval.judge.CachedJudge`);
* ``module:function``: a TRL reward function ``f(prompts, completions, **columns) -> list[float]``
  (``args`` bound as keyword arguments), a class (instantiated with ``args``) whose instances
  have ``score(prediction, reference)`` or are such a function, or an object with ``score``.

:func:`describe_rewards` says what each one is for the run manifest: its name, its spec, where its
code lives and the sha256 of that code's source (``inspect.getsource``) and of its module's file.

Example:
    >>> [fn] = build_rewards([{"name": "exact_match"}])
    >>> fn(prompts=["2+3?", "1+1?"], completions=["5", "3"], output=["5", "2"])
    [1.0, 0.0]
    >>> describe_rewards([{"name": "exact_match"}])[0]["source"]
    'provenir.rewards.primitives:ExactMatchReward'
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from provenir.core.errors import ConfigError, DataError
from provenir.rewards.primitives import (
    ContainsReward,
    ExactMatchReward,
    FormatReward,
    TokenF1Reward,
    _completion_text,
    to_trl_reward,
)

__all__ = ["JUDGES", "REWARD_PRIMITIVES", "JudgeReward", "build_rewards", "describe_rewards", "reward_names"]

#: primitive name -> its class (the names ``training.rewards`` may use)
REWARD_PRIMITIVES: dict[str, type] = {
    "exact_match": ExactMatchReward,
    "contains": ContainsReward,
    "token_f1": TokenF1Reward,
    "format": FormatReward,
}

#: ``args.judge`` of a ``judge`` reward -> the judge class
JUDGES: dict[str, str] = {
    "stub": "provenir.eval.judge:StubJudge",
    "anthropic": "provenir.eval.judge:AnthropicJudge",
    "openai": "provenir.eval.judge:OpenAIJudge",
}


class JudgeReward:
    """TRL reward function: the mean of ``judge.score_rubric(prompt, completion, criteria)``.

    Args:
        judge: any :class:`~provenir.eval.judge.LLMJudge` (e.g. ``StubJudge()``, or an API judge
            inside ``CachedJudge`` so repeated completions cost nothing).
        criteria: the rubric's criteria (default: ``["helpfulness"]``).
    """

    def __init__(self, judge: Any, criteria: list[str] | None = None, name: str = "judge"):
        if not callable(getattr(judge, "score_rubric", None)):
            raise ConfigError(f"JudgeReward: {type(judge).__name__} has no score_rubric(prompt, response, criteria)")
        self.judge = judge
        self.criteria = list(criteria or ["helpfulness"])
        self.__name__ = name

    def __call__(self, prompts: Any = None, completions: Any = None, **_: Any) -> list[float]:
        if prompts is None or completions is None or len(prompts) != len(completions):
            raise DataError("judge reward: needs prompts= and completions= of the same length")
        scores = []
        for prompt, completion in zip(prompts, completions):
            rubric = self.judge.score_rubric(_completion_text(prompt), _completion_text(completion), self.criteria)
            values = [float(v) for v in rubric.values()] if isinstance(rubric, dict) else []
            if not values:
                raise DataError(f"judge reward: {type(self.judge).__name__}.score_rubric returned no scores")
            scores.append(sum(values) / len(values))
        return scores


def reward_names(specs: list[dict[str, Any]]) -> list[str]:
    """The name TRL logs each reward under (``rewards/<name>/mean``): the primitive's name or the
    function's, suffixed ``_2``, ``_3``… where two would collide."""
    names: list[str] = []
    for spec in specs:
        base = spec["name"].rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def build_rewards(specs: list[dict[str, Any]]) -> list[Callable[..., list[float]]]:
    """One TRL reward function per spec, in order (their weights go to the trainer separately).

    Raises:
        ConfigError: an unknown primitive, bad arguments, or a ``module:function`` that does not
            import or is not a reward (the spec's position is named).
    """
    return [_build_one(spec, name, index) for index, (spec, name) in enumerate(zip(specs, reward_names(specs)))]


def describe_rewards(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the manifest records about each reward: ``name`` (as logged), ``spec``, ``source``
    (``module:qualname``), ``code_sha256`` (of ``inspect.getsource``) and ``module_sha256``."""
    out = []
    for index, (spec, name) in enumerate(zip(specs, reward_names(specs))):
        target = _target(spec, index)
        module = inspect.getmodule(target)
        out.append({
            "name": name,
            "spec": {k: spec.get(k) for k in ("name", "weight", "reference_field", "args") if k in spec},
            "source": f"{getattr(module, '__name__', '?')}:{getattr(target, '__qualname__', type(target).__name__)}",
            "code_sha256": _source_sha256(target),
            "module_sha256": _source_sha256(module) if module is not None else None,
        })
    return out


def _spec_error(index: int, spec: dict[str, Any], message: str) -> ConfigError:
    return ConfigError(f"training.rewards[{index}] ({spec.get('name')!r}): {message}")


def _target(spec: dict[str, Any], index: int) -> Any:
    """The class or function whose code the reward runs."""
    name = spec["name"]
    if name in REWARD_PRIMITIVES:
        return REWARD_PRIMITIVES[name]
    if name == "judge":
        return _import(JUDGES[(spec.get("args") or {}).get("judge", "stub")], spec, index)
    obj = _import(name, spec, index)
    return obj if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj) else type(obj)


def _import(dotted: str, spec: dict[str, Any], index: int) -> Any:
    module_name, sep, attr = dotted.partition(":")
    if not sep:
        raise _spec_error(index, spec, "name a primitive or a function as module:function")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _spec_error(index, spec, f"cannot import module {module_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _spec_error(index, spec, f"module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def _build_one(spec: dict[str, Any], name: str, index: int) -> Callable[..., list[float]]:
    args = dict(spec.get("args") or {})
    reference = spec.get("reference_field", "output")
    kind = spec["name"]
    try:
        if kind in REWARD_PRIMITIVES:
            cls = REWARD_PRIMITIVES[kind]
            if kind == "format":
                reward = cls(args.pop("pattern", None), **args)
            else:
                reward = cls(**args)
            uses_reference = kind != "format"
            return to_trl_reward(reward, reference_field=reference if uses_reference else None, name=name)
        if kind == "judge":
            return JudgeReward(_judge(args, spec, index), args.get("criteria"), name=name)
    except TypeError as exc:
        raise _spec_error(index, spec, f"bad arguments {args!r}: {exc}") from None
    obj = _import(kind, spec, index)
    if inspect.isclass(obj):
        try:
            obj = obj(**args)
        except TypeError as exc:
            raise _spec_error(index, spec, f"cannot build {kind} with args {args!r}: {exc}") from None
        args = {}
    if callable(getattr(obj, "score", None)):
        if args:
            raise _spec_error(index, spec, "args are for a class or a function; this is an object already built")
        return to_trl_reward(obj, reference_field=reference, name=name)
    if not callable(obj):
        raise _spec_error(index, spec, f"{kind} is neither a function nor a reward with score()")
    function = functools.partial(obj, **args) if args else obj

    @functools.wraps(obj)
    def reward_function(*a: Any, **kw: Any) -> list[float]:
        return function(*a, **kw)

    reward_function.__name__ = name
    return reward_function


def _judge(args: dict[str, Any], spec: dict[str, Any], index: int) -> Any:
    which = args.get("judge", "stub")
    if which not in JUDGES:
        raise _spec_error(index, spec, f"args.judge {which!r}: choose one of {', '.join(JUDGES)}")
    factory = _import(JUDGES[which], spec, index)
    if which == "stub":
        judge = factory()
    else:
        if not args.get("model"):
            raise _spec_error(index, spec, f"args.model: the {which} judge needs the model's name")
        judge = factory(args["model"], base_url=args.get("base_url"))
    if args.get("cache_dir"):
        from provenir.eval.judge import CachedJudge

        judge = CachedJudge(judge, args["cache_dir"])
    return judge


def _source_sha256(obj: Any) -> str | None:
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode("utf-8")).hexdigest()
