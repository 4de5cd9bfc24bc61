"""Records → token ids and loss masks for TRL, through the template registry."""

from __future__ import annotations

import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.data.templates import TEMPLATE_REGISTRY
from provenir.train._data import (
    IGNORE_INDEX,
    assistant_spans,
    check_tokenizer_serves,
    format_dpo,
    tokenize_sft,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _trained_text(tokenizer, example):
    return tokenizer.decode([t for t, lab in zip(example["input_ids"], example["labels"], strict=True)
                             if lab != IGNORE_INDEX])


def test_single_turn_trains_only_the_completion_and_eos(tokenizer):
    chatml = TEMPLATE_REGISTRY.get("chatml")
    [example] = tokenize_sft([{"instruction": "Reverse 123", "output": "321"}], chatml, tokenizer, max_length=64)
    assert tokenizer.decode(example["input_ids"]) == (
        "<|im_start|>user\nReverse 123<|im_end|>\n<|im_start|>assistant\n321<|im_end|>\n<|endoftext|>"
    )
    assert _trained_text(tokenizer, example) == "321<|im_end|>\n<|endoftext|>"
    assert example["labels"][0] == IGNORE_INDEX


def test_multi_turn_trains_every_assistant_turn(tokenizer):
    chatml = TEMPLATE_REGISTRY.get("chatml")
    record = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "11"},
    ]}
    text, spans = assistant_spans(chatml, record)
    assert [text[s:e] for s, e in spans] == ["7<|im_end|>\n", "11<|im_end|>\n"]
    [example] = tokenize_sft([record], chatml, tokenizer, max_length=128)
    assert _trained_text(tokenizer, example) == "7<|im_end|>\n11<|im_end|>\n<|endoftext|>"


def test_alpaca_and_full_sequence_loss(tokenizer):
    alpaca = TEMPLATE_REGISTRY.get("alpaca")
    record = {"instruction": "What is 3 plus 4?", "output": "7"}
    [example] = tokenize_sft([record], alpaca, tokenizer, max_length=256)
    assert _trained_text(tokenizer, example) == "7<|endoftext|>"
    [full] = tokenize_sft([record], alpaca, tokenizer, max_length=256, completion_only_loss=False)
    assert full["labels"] == full["input_ids"]


def test_records_whose_answer_is_truncated_away_are_dropped(tokenizer):
    chatml = TEMPLATE_REGISTRY.get("chatml")
    records = [{"instruction": "x " * 40, "output": "long prompt"}, {"instruction": "Hi", "output": "Yo"}]
    examples = tokenize_sft(records, chatml, tokenizer, max_length=12)
    assert len(examples) == 1 and len(examples[0]["input_ids"]) <= 12
    with pytest.raises(DataError, match="max_seq_length"):
        tokenize_sft(records[:1], chatml, tokenizer, max_length=12)


def test_bad_records_and_empty_data_are_named(tokenizer):
    chatml = TEMPLATE_REGISTRY.get("chatml")
    with pytest.raises(DataError, match="train.jsonl: no records"):
        tokenize_sft([], chatml, tokenizer, max_length=64, source="train.jsonl")
    with pytest.raises(DataError, match="train.jsonl: record 2: .*no field a template can read"):
        tokenize_sft([{"instruction": "a", "output": "b"}, {"question": "?"}], chatml, tokenizer,
                     max_length=64, source="train.jsonl")


def test_dpo_pairs_are_rendered_with_the_template():
    chatml = TEMPLATE_REGISTRY.get("chatml")
    [row] = format_dpo([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], chatml)
    assert row == {
        "prompt": "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
        "chosen": "4<|im_end|>\n",
        "rejected": "5<|im_end|>\n",
    }
    with pytest.raises(DataError, match="record 1: preference pairs need a string 'rejected'"):
        format_dpo([{"prompt": "p", "chosen": "c"}], chatml)
    with pytest.raises(DataError, match="no preference pairs"):
        format_dpo([], chatml)


def test_a_template_the_tokenizer_cannot_serve_is_refused(tmp_path):
    from transformers import AutoTokenizer

    from provenir.train.tiny import build_tokenizer

    plain = build_tokenizer(markup_tokens=())
    plain.save_pretrained(tmp_path)
    plain = AutoTokenizer.from_pretrained(tmp_path)
    llama3 = TEMPLATE_REGISTRY.get("llama3")
    text = llama3.format({"instruction": "hi", "output": "yo"})
    with pytest.raises(ConfigError, match=r"no token for <\|begin_of_text\|>.*cannot serve"):
        check_tokenizer_serves(plain, llama3, [text])
    alpaca = TEMPLATE_REGISTRY.get("alpaca")
    check_tokenizer_serves(plain, alpaca, [alpaca.format({"instruction": "hi", "output": "yo"})])
