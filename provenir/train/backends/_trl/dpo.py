"""DPO with TRL's ``DPOTrainer`` on ``{"prompt", "chosen", "rejected"}`` pairs (LoRA reference = the base
model with the adapter disabled): the formatted triples and the trainer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provenir.train.backends._trl.loop import run_worker

if TYPE_CHECKING:
    from provenir.data.dataset import JsonlDataset
    from provenir.data.templates import PromptTemplate


def prepare_rows(
    train: JsonlDataset,
    evaluation: JsonlDataset | None,
    template: PromptTemplate,
    tokenizer: Any,
    **_: Any,
) -> tuple[list[Any], list[Any] | None]:
    """Formatted DPO triples ``(train, eval)``; an eval set that is not all pairs is left out.

    Raises:
        DataError: a record is not a preference pair (named by its number).
        ConfigError: the tokenizer cannot serve the template's markup.
    """
    from provenir.train import _data

    train_rows: list[Any] = _data.format_dpo(train.records, template, source=train.source or "preferences")
    sample = [r["prompt"] + r["chosen"] for r in train_rows[:16]]
    _data.check_tokenizer_serves(tokenizer, template, sample)
    eval_rows = None
    if evaluation is not None and all("chosen" in r for r in evaluation.records):
        eval_rows = _data.format_dpo(evaluation.records, template, source=evaluation.source or "eval")
    return train_rows, eval_rows


def build_trainer(
    cfg: dict[str, Any], model: Any, tokenizer: Any, arguments: dict[str, Any], train: Any, evaluation: Any
) -> Any:
    """TRL's ``DPOTrainer`` with ``beta`` from the loop config."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**arguments, beta=cfg["dpo_beta"])
    return DPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                      processing_class=tokenizer)


def worker_loop(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Train DPO as ``loop_config`` says; rank 0 saves the adapter. Top level so Ray can pickle it."""
    return run_worker(loop_config, build_trainer)


__all__ = ["build_trainer", "prepare_rows", "worker_loop"]
