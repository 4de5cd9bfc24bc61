"""Supervised fine-tuning with TRL's ``SFTTrainer``: the rows (pre-tokenized on the driver) and the trainer.

With ``training.packing`` the examples are packed on the driver by TRL's best-fit decreasing packing
(:func:`pack_rows`) into rows of at most ``max_seq_length`` tokens, and batched with per-example
position ids (restarting at 0 at every example) and no attention mask (:func:`packed_collator`),
from which transformers builds a block-diagonal causal mask (or FlashAttention its varlen
boundaries): packed neighbours never attend to each other and the loss is the unpacked one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provenir.core.errors import DataError
from provenir.train.backends._trl.loop import run_worker

if TYPE_CHECKING:
    from provenir.data.dataset import JsonlDataset
    from provenir.data.templates import PromptTemplate


def prepare_rows(
    train: JsonlDataset,
    evaluation: JsonlDataset | None,
    template: PromptTemplate,
    tokenizer: Any,
    *,
    max_length: int,
    completion_only_loss: bool,
    **_: Any,
) -> tuple[list[Any], list[Any] | None]:
    """Pre-tokenized SFT examples ``(train, eval)``, after checking the tokenizer serves the template.

    Raises:
        DataError: a record does not format (named by its number), or formats to nothing to learn.
        ConfigError: the tokenizer cannot serve the template's markup.
    """
    from provenir.train import _data

    sample = [_format_or_raise(template, r, train.source, i) for i, r in enumerate(train.records[:16], 1)]
    _data.check_tokenizer_serves(tokenizer, template, sample)
    kwargs = dict(max_length=max_length, completion_only_loss=completion_only_loss)
    train_rows: list[Any] = _data.tokenize_sft(
        train.records, template, tokenizer, source=train.source or "training data", **kwargs
    )
    eval_rows = (
        _data.tokenize_sft(evaluation.records, template, tokenizer,
                           source=evaluation.source or "eval data", **kwargs)
        if evaluation is not None else None
    )
    return train_rows, eval_rows


def _format_or_raise(template: PromptTemplate, record: dict[str, Any], source: str | None, index: int) -> str:
    try:
        return template.format(record)
    except DataError as exc:
        raise DataError(f"{source or 'dataset'}: record {index}: {str(exc).removeprefix('record: ')}") from None


def build_trainer(
    cfg: dict[str, Any], model: Any, tokenizer: Any, arguments: dict[str, Any], train: Any, evaluation: Any
) -> Any:
    """TRL's ``SFTTrainer`` over the pre-tokenized rows (no reshuffling by TRL: the trainer's seeded
    sampler orders the rows); packed rows (see :func:`pack_rows`) get the :func:`packed_collator`."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**arguments, packing=False, shuffle_dataset=False)
    collator = packed_collator(tokenizer.pad_token_id) if cfg.get("packing") else None
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                      processing_class=tokenizer, data_collator=collator)


def pack_rows(rows: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """Pack tokenized examples into rows of at most ``max_length`` tokens with TRL's best-fit
    decreasing packing (no example is cut); each row keeps its examples' ``seq_lengths``."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    columns = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    packed = pack_dataset(columns, max_length, "bfd")
    return [{"input_ids": list(r["input_ids"]), "labels": list(r["labels"]), "seq_lengths": list(r["seq_lengths"])}
            for r in packed]


def packed_collator(pad_token_id: int) -> Any:
    """Batches of packed rows as ``[batch, longest row]`` with per-example position ids and no
    attention mask.

    From position ids that restart at 0 and no mask, transformers builds a block-diagonal causal
    mask (FlashAttention its varlen boundaries), so an example attends only to itself; a row's
    padding restarts at 0 on every token and attends to nothing real. The label of each example's
    first token is ignored, so no example is trained to predict its neighbour's start. Rows stay
    rows (TRL's padding-free mode would flatten the batch into one sequence, which attention
    kernels other than FlashAttention pay for quadratically).
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)

    def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = inner(examples)
        batch.pop("attention_mask", None)
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch

    return collate


def worker_loop(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Train SFT as ``loop_config`` says; rank 0 saves the adapter. Top level so Ray can pickle it."""
    return run_worker(loop_config, build_trainer)


__all__ = ["build_trainer", "pack_rows", "packed_collator", "prepare_rows", "worker_loop"]
