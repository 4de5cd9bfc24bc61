"""The policies RLAIF samples from: a real transformers model (+ adapter) and the stub stand-in.

A policy does two things: :meth:`sample` (``n`` seeded, sampled candidates per prompt, for the
judge) and :meth:`predict` (one greedy answer per prompt, for evaluation). Prompts are
``(system, user)`` pairs; each policy renders them with the run's template itself.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError
from provenir.core.hashing import sha256_json
from provenir.data.templates import TEMPLATE_REGISTRY

Prompt = tuple[str | None, str]  # (system, user)

#: Generation is cut at the first of these (end-of-turn markers of the built-in templates).
STOP_STRINGS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<|endoftext|>", "\n### ")


@runtime_checkable
class Policy(Protocol):
    """What RLAIF needs from the model being improved."""

    def sample(self, prompts: list[Prompt], *, n: int, seed: int) -> list[list[str]]:
        """``n`` sampled candidates for every prompt (same seed, same candidates)."""
        ...

    def predict(self, prompts: list[Prompt]) -> list[str]:
        """One greedy answer per prompt (for evaluation)."""
        ...


#: ``(config, adapter_path) -> Policy``; ``adapter_path`` is None for the starting model.
PolicyFactory = Callable[[RunConfig, "str | None"], Policy]


def render_prompt(template_name: str, prompt: Prompt) -> str:
    """The generation prompt the model sees (the same rendering DPO trains on)."""
    system, user = prompt
    record: dict[str, Any] = {"prompt": user}
    if system is not None:
        record["system"] = system
    return TEMPLATE_REGISTRY.get(template_name).format(record)


# -- the stub stand-in ----------------------------------------------------------------------------

_FILLER = (
    "the", "answer", "is", "because", "first", "then", "so", "result", "we", "get", "clearly",
    "step", "value", "note", "thus", "given", "which", "means", "here", "final",
)
_WORD = re.compile(r"\S+")


class StubPolicy:
    """A deterministic stand-in policy for the ``stub`` backend: no model, nothing learned.

    * ``sample``: candidate ``k`` of a prompt is 1–12 words drawn (seeded by ``seed``, the prompt
      and ``k``) from the prompt's own words and a fixed filler vocabulary, so candidates differ in
      length and overlap with the prompt and a judge has something to rank.
    * ``predict``: the prompt's last word (``"Copy 4071"`` → ``"4071"``), whatever the adapter.

    It ignores the adapter, so its evaluation scores are the same every iteration: the stub
    exercises the pipeline (generation, judging, pairs, DPO bookkeeping, lineage, gate) quickly;
    it is never evidence that anything improved. Use the ``trl`` backend for that.
    """

    def __init__(self, config: RunConfig | None = None, adapter_path: str | None = None):
        self.adapter_path = adapter_path

    def sample(self, prompts: list[Prompt], *, n: int, seed: int) -> list[list[str]]:
        out = []
        for system, user in prompts:
            words = _WORD.findall(user) or ["?"]
            vocab = list(words) + list(_FILLER)
            candidates = []
            for k in range(n):
                rng = random.Random(sha256_json({"seed": seed, "system": system, "user": user, "k": k}))
                length = rng.randint(1, 12)
                candidates.append(" ".join(rng.choice(vocab) for _ in range(length)))
            out.append(candidates)
        return out

    def predict(self, prompts: list[Prompt]) -> list[str]:
        return [(_WORD.findall(user) or [""])[-1] for _, user in prompts]


# -- the real policy ------------------------------------------------------------------------------


def _cut(text: str) -> str:
    for stop in STOP_STRINGS:
        if stop in text:
            text = text[: text.index(stop)]
    return text.strip()


class TransformersPolicy:
    """The base model of ``config.model_name_or_path`` with ``adapter_path`` (LoRA) loaded over it.

    The model runs on the GPU when there is one. Sampling seeds torch per batch, so the same
    prompts, ``n`` and seed give the same candidates on the same hardware.

    Args:
        config: the run config (model, template).
        adapter_path: an adapter folder, or None for the base model.
        max_new_tokens: the longest completion generated.
        temperature / top_p: sampling settings for :meth:`sample`.
        batch_size: prompts per ``generate`` call.
    """

    def __init__(
        self,
        config: RunConfig,
        adapter_path: str | None = None,
        *,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 8,
    ):
        from provenir.train._generate import load_for_generation
        from provenir.train.backends.trl import resolve_model_path

        model_path = resolve_model_path(config.model_name_or_path)
        if adapter_path is not None and not Path(adapter_path).is_dir():
            raise ConfigError(f"policy adapter {adapter_path}: not a folder (remote stores need a local copy)")
        self.template = config.data.template
        self.model, self.tokenizer = load_for_generation(model_path, adapter_path)
        import torch

        if torch.cuda.is_available():
            self.model.to("cuda")
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        vocab = self.tokenizer.get_vocab()
        self._eos = [self.tokenizer.eos_token_id] + [vocab[t] for t in STOP_STRINGS if t in vocab]

    def _generate(self, texts: list[str], *, n: int, sample: bool, seed: int) -> list[list[str]]:
        import torch

        tok = self.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"
        out: list[list[str]] = []
        try:
            for batch, start in enumerate(range(0, len(texts), self.batch_size)):
                chunk = texts[start : start + self.batch_size]
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
                kwargs: dict[str, Any] = dict(
                    max_new_tokens=self.max_new_tokens, eos_token_id=self._eos, pad_token_id=tok.pad_token_id,
                    num_return_sequences=n, do_sample=sample,
                )
                if sample:
                    kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
                    torch.manual_seed(seed * 1_000_003 + batch)  # per batch: reproducible (seeds CUDA too)
                with torch.no_grad():
                    generated = self.model.generate(**enc, **kwargs)
                cleaned = []
                for row in generated[:, enc["input_ids"].shape[1] :].tolist():
                    end = next((i for i, token in enumerate(row) if token in self._eos), len(row))
                    cleaned.append(_cut(tok.decode(row[:end], skip_special_tokens=True)))
                out.extend(cleaned[i : i + n] for i in range(0, len(cleaned), n))
        finally:
            tok.padding_side = side
        return out

    def sample(self, prompts: list[Prompt], *, n: int, seed: int) -> list[list[str]]:
        texts = [render_prompt(self.template, p) for p in prompts]
        return self._generate(texts, n=n, sample=True, seed=seed)

    def predict(self, prompts: list[Prompt]) -> list[str]:
        texts = [render_prompt(self.template, p) for p in prompts]
        return [c[0] for c in self._generate(texts, n=1, sample=False, seed=0)]


def default_policy_factory(backend_name: str, **generation: Any) -> PolicyFactory:
    """The policy that goes with a backend: ``stub`` → :class:`StubPolicy`, else transformers."""
    if backend_name == "stub":
        return lambda config, adapter: StubPolicy(config, adapter)
    return lambda config, adapter: TransformersPolicy(config, adapter, **generation)


__all__ = ["STOP_STRINGS", "Policy", "PolicyFactory", "Prompt", "StubPolicy", "TransformersPolicy",
           "default_policy_factory", "render_prompt"]
