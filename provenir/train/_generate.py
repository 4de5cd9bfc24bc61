"""Greedy generation with a base model and an optional adapter (for before/after evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_for_generation(model_path: str | Path, adapter_path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode; the adapter (if any) is loaded over the base model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_path or model_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_path))
    if adapter_path is not None and (Path(adapter_path) / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path))
    elif adapter_path is not None:  # full fine-tune: the "adapter" folder is a whole model
        model = AutoModelForCausalLM.from_pretrained(str(adapter_path))
    model.eval()
    return model, tokenizer


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    stop_tokens: list[str] | None = None,
) -> list[str]:
    """Greedy completions of ``prompts`` (special tokens dropped, surrounding whitespace kept).

    Args:
        stop_tokens: extra single tokens that end a completion (e.g. ``<|im_end|>``), besides EOS.
    """
    import torch

    eos_ids = [tokenizer.eos_token_id]
    vocab = tokenizer.get_vocab()
    for token in stop_tokens or []:
        if token in vocab:
            eos_ids.append(vocab[token])
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=eos_ids,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return outputs


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to their reference after stripping surrounding whitespace."""
    if not references:
        return 0.0
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    return hits / len(references)
