"""Evaluate during training: generate on an eval set every N steps, track the best step, stop early.

:class:`EvalCallback` works on its own (call :meth:`EvalCallback.on_step` from any loop) and as a
transformers ``TrainerCallback`` (pass it in a TRL trainer's ``callbacks=``): at every
``eval_every_n_steps``-th optimizer step it generates greedily for each eval record (prompt from
the template's ``format_prompt(record)``, reference from the evaluator's reference field, ``output``
by default), scores the generations with the :class:`~provenir.eval.harness.MultiMetricEvaluator`,
and

* tracks ``best_step``: the step with the highest ``primary_metric`` so far (the earliest wins a tie);
* sets ``should_stop`` once ``early_stopping_patience`` evaluations in a row fail to beat the best
  (``early_stopping_patience=0`` disables early stopping); as a TrainerCallback it then sets
  ``control.should_training_stop``;
* flags ``regressed`` when the metric falls more than ``regression_tolerance`` below the best.

Under data-parallel training every rank evaluates (greedy decoding on the same data gives every
rank the same numbers), so every rank takes the same decision to stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from provenir.core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from provenir.data.dataset import JsonlDataset
    from provenir.eval.harness import EvalResult, MultiMetricEvaluator

DEFAULT_STOP_STRINGS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "\n### ")

__all__ = ["EvalCallback", "EvalCallbackConfig", "EvalCallbackResult", "generate_greedy"]


class EvalCallbackConfig(BaseModel):
    """When to evaluate, when to stop, and what counts as a regression."""

    model_config = ConfigDict(extra="forbid")

    eval_every_n_steps: int = Field(default=100, ge=1)
    early_stopping_patience: int = Field(default=3, ge=0)
    regression_tolerance: float = Field(default=0.02, ge=0.0)
    primary_metric: str = "exact_match"


@dataclass
class EvalCallbackResult:
    """One evaluation: the metric means at ``step``, whether to stop, and the best step so far."""

    step: int
    metrics: dict[str, float]
    should_stop: bool
    best_step: int
    regressed: bool = False
    best_metric: float = 0.0
    evaluations_without_improvement: int = 0
    eval_result: EvalResult | None = field(default=None, repr=False)


def _last_assistant(record: dict[str, Any]) -> str | None:
    messages = record.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("content"), str):
                return message["content"]
    return None


def generate_greedy(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    stop_strings: tuple[str, ...] = (),
) -> list[str]:
    """Greedy completions of ``prompts`` with a transformers model (left padding, no special tokens).

    The model is put in eval mode for the generation and returned to its previous mode; a
    completion is cut at the first of ``stop_strings`` and stripped.
    """
    import torch

    was_training = bool(getattr(model, "training", False))
    side = getattr(tokenizer, "padding_side", "right")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = getattr(model, "device", None)
    outputs: list[str] = []
    try:
        if hasattr(model, "eval"):
            model.eval()
        tokenizer.padding_side = "left"
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            if device is not None:
                enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        if was_training and hasattr(model, "train"):
            model.train()
    cleaned = []
    for text in outputs:
        for stop in stop_strings:
            if stop and stop in text:
                text = text[: text.index(stop)]
        cleaned.append(text.strip())
    return cleaned


class EvalCallback:
    """Periodic generation-based evaluation with best-step tracking and early stopping.

    Args:
        config: when to evaluate and stop (:class:`EvalCallbackConfig`).
        evaluator: scores the generations; its ``reference_field`` names the reference (records
            with ``messages`` and no such field use their last assistant message).
        eval_dataset: the records to generate for.
        tokenizer: the model's tokenizer (as a TrainerCallback, the trainer's ``processing_class``
            is used when none is given).
        template: a name from ``provenir.data.templates.TEMPLATE_REGISTRY`` (default ``alpaca``).
        max_new_tokens / batch_size: generation settings.
        generate_fn: ``(model, prompts) -> completions`` to replace the built-in greedy generation.
        on_result: called with every :class:`EvalCallbackResult` (logging, manifests).
        stop_strings: a completion is cut at the first of these (end-of-turn markers, the start of
            a new Alpaca section).

    Example:
        >>> from provenir.data.dataset import JsonlDataset
        >>> from provenir.eval.harness import MultiMetricEvaluator
        >>> ds = JsonlDataset.from_records([{"instruction": "Say yes", "output": "yes"}])
        >>> cb = EvalCallback(EvalCallbackConfig(eval_every_n_steps=10), MultiMetricEvaluator(), ds,
        ...                   generate_fn=lambda model, prompts: ["yes"] * len(prompts))
        >>> cb.on_step(5, model=None) is None, cb.on_step(10, model=None).metrics["exact_match"]
        (True, 1.0)
    """

    def __init__(
        self,
        config: EvalCallbackConfig,
        evaluator: MultiMetricEvaluator,
        eval_dataset: JsonlDataset,
        *,
        tokenizer: Any = None,
        template: str = "alpaca",
        max_new_tokens: int = 64,
        batch_size: int = 8,
        generate_fn: Callable[[Any, list[str]], list[str]] | None = None,
        on_result: Callable[[EvalCallbackResult], None] | None = None,
        stop_strings: tuple[str, ...] = DEFAULT_STOP_STRINGS,
    ):
        from provenir.data.templates import TEMPLATE_REGISTRY

        if not isinstance(config, EvalCallbackConfig):
            config = EvalCallbackConfig.model_validate(config)
        if max_new_tokens < 1 or batch_size < 1:
            raise ConfigError("EvalCallback: max_new_tokens and batch_size must be >= 1")
        if config.primary_metric not in evaluator.metric_names:
            raise ConfigError(
                f"EvalCallbackConfig(primary_metric={config.primary_metric!r}) is not one of the evaluator's "
                f"metrics {evaluator.metric_names}"
            )
        records = list(eval_dataset)
        if not records:
            raise DataError("EvalCallback: the eval dataset is empty")
        self.config = config
        self.evaluator = evaluator
        self.eval_dataset = eval_dataset
        self.tokenizer = tokenizer
        self.template = TEMPLATE_REGISTRY.get(template)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.generate_fn = generate_fn
        self.on_result = on_result
        self.prompts = [self.template.format_prompt(r) for r in records]
        field_name = evaluator.reference_field
        self.references: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            ref = record.get(field_name, _last_assistant(record))
            if ref is None:
                raise DataError(
                    f"eval record {index}: no {field_name!r} field (or assistant message) to use as the reference"
                )
            self.references.append({field_name: ref})
        self.stop_strings = tuple(stop_strings)
        self.history: list[EvalCallbackResult] = []
        self.best_step: int | None = None
        self.best_metric: float = -math.inf
        self._bad_evaluations = 0
        self._stopped = False

    # -- standalone API ------------------------------------------------------------------------------

    def evaluate(self, model: Any) -> EvalResult:
        """Generate for every eval record and score the generations (no bookkeeping)."""
        predictions = self._generate(model)
        return self.evaluator.evaluate(self.references, predictions)

    def _generate(self, model: Any) -> list[str]:
        if self.generate_fn is not None:
            predictions = list(self.generate_fn(model, list(self.prompts)))
        else:
            if self.tokenizer is None:
                raise ConfigError("EvalCallback needs tokenizer= (or generate_fn=) to generate")
            predictions = generate_greedy(
                model,
                self.tokenizer,
                self.prompts,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                stop_strings=self.stop_strings,
            )
        if len(predictions) != len(self.prompts):
            raise DataError(f"generation returned {len(predictions)} completions for {len(self.prompts)} prompts")
        return predictions

    def on_step(self, step: int, model: Any) -> EvalCallbackResult | None:
        """Evaluate when ``step`` is a multiple of ``eval_every_n_steps`` (and > 0); else None."""
        if step <= 0 or step % self.config.eval_every_n_steps:
            return None
        result = self.evaluate(model)
        metrics = result.means()
        value = metrics[self.config.primary_metric]
        if value > self.best_metric:
            self.best_metric, self.best_step, self._bad_evaluations = value, step, 0
        else:
            self._bad_evaluations += 1
        patience = self.config.early_stopping_patience
        should_stop = patience > 0 and self._bad_evaluations >= patience
        regressed = value < self.best_metric - self.config.regression_tolerance
        outcome = EvalCallbackResult(
            step=step,
            metrics=metrics,
            should_stop=should_stop,
            best_step=self.best_step if self.best_step is not None else step,
            regressed=regressed,
            best_metric=self.best_metric,
            evaluations_without_improvement=self._bad_evaluations,
            eval_result=result,
        )
        self.history.append(outcome)
        self._stopped = self._stopped or should_stop
        if self.on_result is not None:
            self.on_result(outcome)
        return outcome

    @property
    def should_stop(self) -> bool:
        return self._stopped

    # -- transformers TrainerCallback protocol -------------------------------------------------------

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        """Trainer hook: evaluate at the configured steps and ask the trainer to stop when due."""
        if self.tokenizer is None and self.generate_fn is None:
            self.tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        result = self.on_step(int(state.global_step), model)
        if result is not None:
            prefix = "eval_callback/"
            entry = {f"{prefix}{k}": v for k, v in result.metrics.items()}
            entry.update({"step": result.step, f"{prefix}best_step": result.best_step, f"{prefix}regressed": result.regressed})
            state.log_history.append(entry)
            if result.should_stop:
                control.should_training_stop = True
        return control

    def __getattr__(self, name: str) -> Any:
        # Every other TrainerCallback event (on_init_end, on_log, …) is a no-op, so the callback
        # works with the transformers versions that add events without importing transformers here.
        if name.startswith("on_"):
            return _noop
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")


def _noop(*args: Any, **kwargs: Any) -> None:
    return None
