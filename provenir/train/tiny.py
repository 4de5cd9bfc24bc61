"""A tiny, seeded, randomly initialised Llama and a locally trained byte-level BPE tokenizer.

Nothing can be downloaded in tests or in the demo, so the model they train is built here: a small
:class:`~transformers.LlamaConfig` (two layers, hidden size 64 by default, well under a million
parameters) initialised from a seed, and a byte-level BPE tokenizer trained with the
``tokenizers`` library on a built-in corpus (arithmetic, short words, the chat markup of every
built-in template). The tokenizer is wrapped in :class:`~transformers.PreTrainedTokenizerFast`
with ``<s>``/``<|endoftext|>``/``<pad>`` tokens and a ChatML chat template whose assistant turns
sit inside ``{% generation %}`` blocks, so TRL's assistant-only loss works. The result is a normal
model directory (``config.json``, ``model.safetensors``, ``tokenizer.json``, …) that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load.

Building is idempotent: the directory records the build's spec (and a hash of its files) in
``provenir_tiny.json``; a second call with the same arguments returns the existing directory.

Example:
    >>> from provenir.train.tiny import build_tiny_model
    >>> path = build_tiny_model("/tmp/tiny-doc", seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from provenir.core.hashing import sha256_file, sha256_json
from provenir.core.io import atomic_write_text

SPEC_FILE = "provenir_tiny.json"
FACTORY_VERSION = 1

BOS, EOS, PAD = "<s>", "<|endoftext|>", "<pad>"
#: Markup of the built-in templates, kept atomic so each is one token.
MARKUP_TOKENS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "[INST]",
    "[/INST]",
    "</s>",
)

#: ChatML with the assistant's text (and its end marker) inside a generation block, so
#: ``return_assistant_tokens_mask`` and TRL's ``assistant_only_loss`` find the assistant tokens.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' + '\\n' }}{% endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = (
    "the a an of to and in is it that for on with as was be at by this from or are not but "
    "what which who how when where why yes no name reverse word letters number numbers plus "
    "minus times sum answer question instruction input response below task request write "
    "appropriately completes describes paired provides further context assistant user system "
    "you concise helpful prime above under cat dog sun ray code data model train test eval "
    "apple river stone cloud light green blue red small large quick brown fox jumps over lazy "
    "copy upper lower first last letter count vowel string echo hello world"
).split()


def builtin_corpus() -> list[str]:
    """The text the tokenizer is trained on: deterministic, ~2k lines, no files needed."""
    lines: list[str] = []
    for a in range(100):
        for b in range(0, 100, 7):
            lines.append(f"What is {a} plus {b}? {a + b}")
    for a in range(10):
        for b in range(10):
            lines.append(f"{a}+{b}={a + b}")
    for word in _WORDS:
        lines.append(f"Reverse the word '{word}'. {word[::-1]} {word.upper()} {word.capitalize()}")
    lines.append(" ".join(_WORDS))
    lines.append("Below is an instruction that describes a task. Write a response that appropriately "
                 "completes the request.\n\n### Instruction:\n### Input:\n### Response:\n")
    for role in ("system", "user", "assistant"):
        lines.append(f"<|im_start|>{role}\nhello<|im_end|>\n")
    lines.append("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}<>|/\\-_=+*#")
    return lines


def _spec(
    seed: int,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    extra_corpus: list[str],
    markup_tokens: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "factory_version": FACTORY_VERSION,
        "seed": seed,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "extra_corpus_sha256": sha256_json(extra_corpus),
        "markup_tokens": list(markup_tokens),
    }


def _files_digest(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != SPEC_FILE
    }


def _existing_build(directory: Path, spec: dict[str, Any]) -> bool:
    try:
        recorded = json.loads((directory / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded.get("spec") != spec:
        return False
    files = recorded.get("files") or {}
    return all((directory / rel).is_file() for rel in files) and "model.safetensors" in files


def build_tokenizer(
    vocab_size: int = 1024,
    extra_corpus: list[str] | None = None,
    markup_tokens: tuple[str, ...] = MARKUP_TOKENS,
) -> Any:
    """A byte-level BPE :class:`~transformers.PreTrainedTokenizerFast` trained on local text.

    Digits are split one per token (arithmetic stays learnable); every template markup token
    is a single special token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [PAD, BOS, EOS, *markup_tokens]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(builtin_corpus() + list(extra_corpus or []), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(markup_tokens),
        padding_side="right",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    output_dir: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 256,
    max_position_embeddings: int = 512,
    extra_corpus: list[str] | None = None,
    markup_tokens: tuple[str, ...] = MARKUP_TOKENS,
    replace: bool = True,
) -> Path:
    """Build (or reuse) a tiny random-init Llama and its tokenizer in ``output_dir``.

    Args:
        output_dir: the model directory to create (its parent is created if needed).
        seed: seeds the weight initialisation; the same seed gives the same ``model.safetensors``.
        vocab_size: target BPE vocabulary size (the model's embedding size follows the tokenizer).
        hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings: the
            :class:`~transformers.LlamaConfig` shape.
        extra_corpus: more lines to train the tokenizer on.
        markup_tokens: template markup kept as single special tokens (``()``: none, e.g. to
            get a tokenizer that cannot serve the chat templates).
        replace: replace a non-empty ``output_dir`` that holds something else (another seed or
            shape, or not a tiny model); with ``False`` that is a :class:`DataError` instead.

    Returns:
        ``output_dir`` as a :class:`~pathlib.Path`.
    """
    output_dir = Path(output_dir)
    extra = list(extra_corpus or [])
    spec = _spec(
        seed, vocab_size, hidden_size, num_layers, num_heads, intermediate_size,
        max_position_embeddings, extra, tuple(markup_tokens),
    )
    if _existing_build(output_dir, spec):
        return output_dir
    if not replace and output_dir.is_dir() and any(output_dir.iterdir()):
        from provenir.core.errors import DataError

        raise DataError(
            f"{output_dir}: holds another model (or other files); a run that used it could no longer "
            "be verified. Choose another folder, or pass --overwrite to replace it"
        )

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(vocab_size, extra, tuple(markup_tokens))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    devices = []  # fork_rng wants no CUDA devices touched on CPU-only machines
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        record = {"spec": spec, "files": _files_digest(staging),
                  "parameters": sum(p.numel() for p in model.parameters())}
        atomic_write_text(staging / SPEC_FILE, json.dumps(record, sort_keys=True, indent=2) + "\n")
        if output_dir.exists():
            if _existing_build(output_dir, spec):  # another process finished first
                return output_dir
            shutil.rmtree(output_dir)
        try:
            os.replace(staging, output_dir)
        except OSError:
            if _existing_build(output_dir, spec):
                return output_dir
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output_dir


__all__ = ["CHAT_TEMPLATE", "build_tiny_model", "build_tokenizer", "builtin_corpus"]
