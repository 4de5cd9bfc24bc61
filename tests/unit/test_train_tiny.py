"""The tiny-model factory: a real model directory, seeded, idempotent, with a chat template."""

from __future__ import annotations

import json

import pytest

from provenir.train.tiny import SPEC_FILE, build_tiny_model

pytestmark = pytest.mark.timeout(120)


def test_tiny_model_is_a_loadable_model_directory(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", SPEC_FILE} <= names
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 2
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 5_000_000
    assert model.config.vocab_size == len(tokenizer)
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token) == ("<pad>", "<|endoftext|>", "<s>")
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}) == 3


def test_tokenizer_splits_digits_and_keeps_markup_atomic(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("<|im_start|>user\n4071<|im_end|>", add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|im_start|>" and tokens[-1] == "<|im_end|>"
    assert tokens[-5:-1] == ["4", "0", "7", "1"]
    assert tokenizer.decode(ids) == "<|im_start|>user\n4071<|im_end|>"


def test_chat_template_marks_only_assistant_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": "Reverse 123"},
        {"role": "assistant", "content": "321"},
    ]
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == "321<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nReverse 123<|im_end|>\n<|im_start|>assistant\n"


def test_build_is_seeded_and_idempotent(tmp_path, tiny_model_dir):
    spec = json.loads((tiny_model_dir / SPEC_FILE).read_text())
    again = build_tiny_model(tiny_model_dir, seed=0)  # same build: reused, not rewritten
    assert again == tiny_model_dir
    assert json.loads((tiny_model_dir / SPEC_FILE).read_text()) == spec

    other = build_tiny_model(tmp_path / "seed1", seed=1, hidden_size=32, intermediate_size=64)
    other_spec = json.loads((other / SPEC_FILE).read_text())
    assert other_spec["files"]["tokenizer.json"] == spec["files"]["tokenizer.json"]
    assert other_spec["files"]["model.safetensors"] != spec["files"]["model.safetensors"]
    twin = build_tiny_model(tmp_path / "seed1-twin", seed=1, hidden_size=32, intermediate_size=64)
    assert json.loads((twin / SPEC_FILE).read_text())["files"] == other_spec["files"]


def test_a_changed_spec_rebuilds(tmp_path):
    path = build_tiny_model(tmp_path / "m", seed=3, hidden_size=32, intermediate_size=64)
    first = json.loads((path / SPEC_FILE).read_text())
    build_tiny_model(path, seed=4, hidden_size=32, intermediate_size=64)
    second = json.loads((path / SPEC_FILE).read_text())
    assert second["spec"]["seed"] == 4
    assert second["files"]["model.safetensors"] != first["files"]["model.safetensors"]
