"""Records → token ids and loss masks for TRL, through the template registry.

SFT examples are tokenized here, once, on the driver (so a bad record or a template the tokenizer
cannot serve fails before any training starts) and handed to TRL's ``SFTTrainer`` pre-tokenized as
``input_ids`` + ``labels`` (``-100`` where no loss is taken). The loss covers:

* single-turn records (``instruction``/``output``, ``prompt``/``completion``): the completion only;
* multi-turn records (``messages``): every assistant turn, with its end-of-turn markup;
* raw ``text`` records, or ``completion_only_loss: false``: every token.

An end-of-sequence token closes every example and is trained, so generation learns to stop.
Masks come from character offsets of the formatted text: the prompt for each assistant turn is
rendered by the same template, so ``prompt + answer`` is exactly the text being tokenized.
"""

from __future__ import annotations

import re
from typing import Any

from provenir.core.errors import ConfigError, DataError
from provenir.data.templates import Conversation, PromptTemplate, to_conversation

IGNORE_INDEX = -100
_MARKUP = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def assistant_spans(template: PromptTemplate, record: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
    """The formatted text and the ``(start, end)`` character spans of its assistant turns."""
    conv = template._conversation(record)  # noqa: SLF001 - same-package helper
    full = template.format(record)
    if conv.text is not None or not conv.has_answer:
        return full, []
    if len(conv.turns) <= 2:  # single turn: split() knows each template's exact boundary
        prompt, _ = template.split(record)
        return full, [(len(prompt), len(full))]
    spans: list[tuple[int, int]] = []
    for index, (role, _content) in enumerate(conv.turns):
        if role != "assistant":
            continue
        head = Conversation(conv.system, conv.turns[:index], conv.single_turn_input)
        start_text = template.render(head, add_generation_prompt=True)
        if index == len(conv.turns) - 1:
            end = len(full)
        else:
            upto = template.render(
                Conversation(conv.system, conv.turns[: index + 1], conv.single_turn_input), False
            )
            end = _common_prefix(upto, full)
        if not full.startswith(start_text) or end <= len(start_text):
            raise DataError(
                f"template {template.name!r} cannot locate assistant turn {index} in the formatted "
                "text; use a chat template (chatml, llama3, phi3, mistral) for multi-turn data"
            )
        spans.append((len(start_text), end))
    return full, spans


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def check_tokenizer_serves(tokenizer: Any, template: PromptTemplate, sample_texts: list[str]) -> None:
    """Refuse a template the tokenizer cannot represent faithfully.

    Raises:
        ConfigError: the tokenizer has no EOS token, maps template text to its unknown token,
            cannot round-trip the text, or splits the template's ``<|…|>`` markup into pieces.
    """
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {name}: has no eos_token; set one (tokenizer.eos_token) first")
    markup = sorted({m for text in sample_texts for m in _MARKUP.findall(text)})
    vocab = tokenizer.get_vocab()
    missing = [m for m in markup if m not in vocab]
    if missing:
        raise ConfigError(
            f"data.template {template.name!r}: the tokenizer {name} has no token for "
            f"{', '.join(missing)}, so it cannot serve this template; choose the template of the "
            "model's family (data.template) or a tokenizer that defines these tokens"
        )
    unk = tokenizer.unk_token_id
    for text in sample_texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if unk is not None and unk in ids:
            raise ConfigError(
                f"data.template {template.name!r}: tokenizer {name} maps part of {text[:60]!r} to "
                "its unknown token; it cannot serve this template"
            )
        if tokenizer.decode(ids, clean_up_tokenization_spaces=False) != text:
            raise ConfigError(
                f"data.template {template.name!r}: tokenizer {name} does not round-trip "
                f"{text[:60]!r}; it cannot serve this template"
            )


def tokenize_sft(
    records: list[dict[str, Any]],
    template: PromptTemplate,
    tokenizer: Any,
    *,
    max_length: int,
    completion_only_loss: bool = True,
    source: str = "dataset",
) -> list[dict[str, list[int]]]:
    """``[{"input_ids", "labels"}]`` for SFT (see the module docstring for what is trained).

    Raises:
        DataError: the dataset is empty, a record is malformed (its 1-based index is named), or
            no record keeps a trained token within ``max_length``.
    """
    if not records:
        raise DataError(f"{source}: no records to train on")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("the trl backend needs a fast tokenizer (offsets); load one with use_fast=True")
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if _adds_bos(tokenizer) else None
    examples: list[dict[str, list[int]]] = []
    for index, record in enumerate(records, start=1):
        try:
            text, spans = assistant_spans(template, record)
        except DataError as exc:
            raise DataError(f"{source}: record {index}: {str(exc).removeprefix('record: ')}") from None
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(enc["input_ids"])
        if completion_only_loss and spans:
            labels = [
                tok if any(s <= start < e for s, e in spans) else IGNORE_INDEX
                for tok, (start, _end) in zip(ids, enc["offset_mapping"], strict=True)
            ]
        else:
            labels = list(ids)
        if bos is not None and (not ids or ids[0] != bos):
            ids, labels = [bos, *ids], [IGNORE_INDEX, *labels]
        if not ids or ids[-1] != eos:
            ids, labels = [*ids, eos], [*labels, eos]
        ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            continue  # the prompt alone fills max_length: nothing to learn from this record
        examples.append({"input_ids": ids, "labels": labels})
    if not examples:
        raise DataError(
            f"{source}: every record's answer lies beyond training.max_seq_length={max_length}; "
            "raise max_seq_length"
        )
    return examples


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's own encoding starts with BOS (Llama-style), so we keep it."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def format_dpo(
    records: list[dict[str, Any]], template: PromptTemplate, *, source: str = "preferences"
) -> list[dict[str, str]]:
    """``[{"prompt", "chosen", "rejected"}]`` as template text (the answers carry their end markup).

    Records need string ``prompt``, ``chosen`` and ``rejected`` (and may carry ``system``).

    Raises:
        DataError: the dataset is empty or a record is not a preference pair.
    """
    if not records:
        raise DataError(f"{source}: no preference pairs to train on")
    out: list[dict[str, str]] = []
    for index, record in enumerate(records, start=1):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(record.get(key), str):
                raise DataError(
                    f"{source}: record {index}: preference pairs need a string {key!r} "
                    "(fields: prompt, chosen, rejected)"
                )
        base = {"prompt": record["prompt"]}
        if isinstance(record.get("system"), str):
            base["system"] = record["system"]
        try:
            prompt, chosen = template.split({**base, "completion": record["chosen"]})
            prompt_r, rejected = template.split({**base, "completion": record["rejected"]})
        except DataError as exc:
            raise DataError(f"{source}: record {index}: {str(exc).removeprefix('record: ')}") from None
        if prompt != prompt_r:  # pragma: no cover - templates render the same prompt
            raise DataError(f"{source}: record {index}: prompt renders differently per answer")
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


def prompt_text(template: PromptTemplate, record: dict[str, Any]) -> str:
    """The generation prompt for ``record`` (its last answer, if any, left out)."""
    return template.format_prompt(record) if to_conversation(record).has_answer else template.format(record)


__all__ = [
    "IGNORE_INDEX",
    "assistant_spans",
    "check_tokenizer_serves",
    "format_dpo",
    "prompt_text",
    "tokenize_sft",
]
