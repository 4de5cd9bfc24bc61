"""Text generators for synthetic data: question-answer pairs from passages, and paraphrases.

One interface, :class:`TextGenerator`, with two tasks: :meth:`~TextGenerator.generate_qa` (pairs that
a passage answers) and :meth:`~TextGenerator.paraphrase` (rewordings of an instruction). Four
implementations:

* :class:`ExtractiveGenerator` — deterministic, no model: questions built from the passage's own
  sentences (``"X is Y."`` → ``"What is X?"``; otherwise ``"What does the passage say about K?"``
  for the sentence's key phrase K), the sentence itself as the answer, so every answer is grounded
  in the text; paraphrases by a fixed list of rewrites (framings and a synonym table). Used when no
  generator is configured.
* :class:`TransformersGenerator` — a local causal LM (``transformers``), greedy decoding, the
  model's chat template when it has one. Loaded once per process (a Ray actor holds one).
* :class:`OpenAIGenerator` — any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM,
  llama.cpp's server, TGI) through the ``openai`` client.
* :class:`AnthropicGenerator` — Anthropic's Messages API through the ``anthropic`` client.

The model-backed generators share the prompts and the parsing (:class:`LLMGenerator`): the model is
asked for one JSON object; a reply that is not JSON is read line by line (``Q: … A: …``, numbered
lists), and what cannot be read is dropped rather than guessed.

:func:`build_generator` turns a spec string into a generator: ``extractive``,
``transformers:PATH``, ``openai:MODEL`` or ``openai:MODEL@BASE_URL``, ``anthropic:MODEL``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from provenir.core.errors import ConfigError, DependencyError, ProvenirError

__all__ = [
    "GENERATORS",
    "AnthropicGenerator",
    "ExtractiveGenerator",
    "GenerationError",
    "LLMGenerator",
    "OpenAIGenerator",
    "TextGenerator",
    "TransformersGenerator",
    "build_generator",
    "parse_paraphrases",
    "parse_qa",
    "split_sentences",
]


class GenerationError(ProvenirError):
    """A generator could not produce text (the endpoint failed, the model could not be loaded)."""


# Sentence ends: . ! ? (optionally followed by a closing quote or bracket) then space and an
# upper-case letter, digit or quote; a few abbreviations are protected.
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Mr|Mrs|Ms|Dr|Prof|St|No|Fig|cf|approx)\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9À-Ý])")
_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*", re.UNICODE)
_STOP = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being it its this
    that these those there here what which who whom whose when where why how do does did has have had not
    no so than then too very can could should would may might will shall must also into over under about
    such their they them he she his her we our you your i me my one two many most more some any all each
    other only just after before while during between through""".split()
)
_PRONOUNS = frozenset("it this that they these those he she we you there here which".split())
_CAPS = re.compile(r"(?:[A-Z][\w'’-]+)(?: (?:of |the |de )?[A-Z][\w'’-]+)*")
_COPULA = re.compile(
    r"^(?P<subj>(?:The |A |An )?[A-Z][\w'’\- ]{1,60}?) (?P<verb>is|are|was|were) (?P<rest>[^.!?]{8,})[.!?]?$"
)


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (``.``, ``!``, ``?`` followed by a capital; common abbreviations kept)."""
    protected = _ABBREV.sub(lambda m: m.group(0).replace(".", "\x00"), text.strip())
    parts = _SENTENCE_END.split(protected)
    return [p.replace("\x00", ".").strip() for p in parts if p and p.strip()]


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in _STOP and not w.isdigit()]


class TextGenerator:
    """The interface: QA pairs from a passage, paraphrases of an instruction.

    Implementations must be deterministic for a given configuration where the backend allows it
    (the extractive generator always is; model generators decode greedily).
    """

    name = "generator"

    def identity(self) -> str:
        """What produced a record (written into its provenance)."""
        return self.name

    def generate_qa(self, passage: str, n: int) -> list[dict[str, str]]:
        """Up to ``n`` ``{"question", "answer"}`` pairs answerable from ``passage``."""
        return self.generate_qa_batch([passage], n)[0]

    def generate_qa_batch(self, passages: Sequence[str], n: int) -> list[list[dict[str, str]]]:
        raise NotImplementedError

    def paraphrase(self, text: str, n: int) -> list[dict[str, str]]:
        """Up to ``n`` distinct rewordings, each ``{"text", "method"}``."""
        return self.paraphrase_batch([text], n)[0]

    def paraphrase_batch(self, texts: Sequence[str], n: int) -> list[list[dict[str, str]]]:
        raise NotImplementedError


def _norm(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text))


def _distinct(original: str, candidates: Sequence[dict[str, str]], n: int) -> list[dict[str, str]]:
    seen = {_norm(original)}
    out: list[dict[str, str]] = []
    for cand in candidates:
        if len(out) >= n:
            break
        key = _norm(cand["text"])
        if cand["text"].strip() and key and key not in seen:
            seen.add(key)
            out.append(cand)
    return out


# --------------------------------------------------------------------------------------------------
# Extractive (deterministic, no model)

_SYNONYMS = {
    "explain": "describe", "describe": "explain", "why": "for what reason", "list": "enumerate",
    "give": "provide", "write": "compose", "show": "demonstrate", "use": "employ", "big": "large",
    "large": "big", "small": "little", "important": "significant", "quickly": "rapidly", "help": "assist",
    "make": "create", "find": "identify", "tell": "explain", "main": "primary", "example": "instance",
    "difference": "distinction", "method": "approach", "happens": "occurs", "begin": "start",
    "start": "begin", "simple": "straightforward", "name": "identify", "causes": "leads to",
    "roughly": "approximately", "about": "approximately", "most": "greatest number of",
}
_FRAMES: list[tuple[str, Callable[[str], str]]] = [
    ("frame:question", lambda t: f"Question: {t}\nAnswer:"),
    ("frame:please", lambda t: f"Please respond to the following. {t}"),
    ("frame:concise", lambda t: f"{t} Give a clear and concise answer."),
    ("frame:task", lambda t: f"Task: {t}"),
    ("frame:step", lambda t: f"{t} Think it through and then answer."),
]


def _swap_synonyms(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        word = match.group(0)
        sub = _SYNONYMS.get(word.lower())
        if sub is None:
            return word
        return sub[0].upper() + sub[1:] if word[0].isupper() else sub

    return re.sub(r"[A-Za-z]+", repl, text)


class ExtractiveGenerator(TextGenerator):
    """Deterministic QA pairs and paraphrases without a model (see the module docstring).

    Example:
        >>> gen = ExtractiveGenerator()
        >>> gen.generate_qa("The Eiffel Tower is a wrought-iron lattice tower in Paris.", 1)[0]["question"]
        'What is the Eiffel Tower?'
    """

    name = "extractive"

    def __init__(self, min_words: int = 5, max_words: int = 60):
        self.min_words = min_words
        self.max_words = max_words

    def _question(self, sentence: str) -> str:
        match = _COPULA.match(sentence)
        if match and match.group("subj").split()[0].lower() not in _PRONOUNS:
            subj = match.group("subj").strip()
            if subj.split()[0] in ("The", "A", "An"):
                subj = subj[0].lower() + subj[1:]
            return f"What {match.group('verb')} {subj}?"
        return f"What does the passage say about {self._key_phrase(sentence)}?"

    @staticmethod
    def _key_phrase(sentence: str) -> str:
        """A multi-word proper name, else the first two adjacent content words, else the longest word."""
        caps = [m.group(0) for m in _CAPS.finditer(sentence)]
        caps = [c for c in caps if len(c.split()) > 1 and c.split()[0].lower() not in _STOP]
        if caps:
            return max(caps, key=lambda c: (len(c.split()), len(c)))
        words = _WORD.findall(sentence)
        for first, second in zip(words, words[1:]):
            if all(w.lower() not in _STOP and w.lower() not in _PRONOUNS and not w.isdigit() for w in (first, second)):
                return f"{first} {second}"
        content = _content_words(sentence)
        return max(content, key=len) if content else words[0] if words else sentence

    def generate_qa_batch(self, passages: Sequence[str], n: int) -> list[list[dict[str, str]]]:
        out = []
        for passage in passages:
            sentences = [s for s in split_sentences(passage) if self.min_words <= len(s.split()) <= self.max_words]
            ranked = sorted(range(len(sentences)), key=lambda i: (-len(set(_content_words(sentences[i]))), i))
            pairs: list[dict[str, str]] = []
            seen: set[str] = set()
            for i in sorted(ranked[: max(0, n) * 2]):
                if len(pairs) >= n:
                    break
                question = self._question(sentences[i])
                if question in seen:
                    continue
                seen.add(question)
                pairs.append({"question": question, "answer": sentences[i]})
            out.append(pairs)
        return out

    def paraphrase_batch(self, texts: Sequence[str], n: int) -> list[list[dict[str, str]]]:
        out = []
        for text in texts:
            base = text.strip()
            swapped = _swap_synonyms(base)
            candidates = [{"text": swapped, "method": "rewrite:synonyms"}]
            for method, frame in _FRAMES:
                candidates.append({"text": frame(base), "method": f"rewrite:{method}"})
                candidates.append({"text": frame(swapped), "method": f"rewrite:{method}+synonyms"})
            out.append(_distinct(base, candidates, n))
        return out


# --------------------------------------------------------------------------------------------------
# Model-backed generators

QA_SYSTEM = "You write training data for question answering. You reply with one JSON object only."
QA_USER = (
    "Write {n} question-answer pairs that can be answered from the passage alone. Questions must be "
    "self-contained; answers must be supported by the passage.\n\nPassage:\n{passage}\n\n"
    'Reply as JSON: {{"pairs": [{{"question": "...", "answer": "..."}}]}}'
)
PARA_SYSTEM = "You rewrite instructions. You reply with one JSON object only."
PARA_USER = (
    "Rewrite the instruction below in {n} different ways. Keep its meaning and everything needed to "
    "answer it; change the wording and structure.\n\nInstruction:\n{text}\n\n"
    'Reply as JSON: {{"paraphrases": ["...", "..."]}}'
)
_QA_LINE = re.compile(
    r"^\s*(?:\d+[.)]\s*)?(?:Q|Question)\s*[:.-]\s*(?P<q>.+?)\s*(?:A|Answer)\s*[:.-]\s*(?P<a>.+)$", re.I
)


def _json_object(text: str) -> Any:
    text = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.M).strip()
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if start != -1 and end > start:
            try:
                return json.loads(text[start : end + 1])
            except json.JSONDecodeError:
                continue
    return None


def parse_qa(reply: str) -> list[dict[str, str]]:
    """QA pairs from a model reply: JSON (``{"pairs": [...]}`` or a list), else ``Q: … A: …`` lines."""
    data = _json_object(reply)
    items = data.get("pairs", data.get("qa", [])) if isinstance(data, dict) else data
    pairs = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                q, a = item.get("question"), item.get("answer")
                if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
                    pairs.append({"question": q.strip(), "answer": a.strip()})
    if pairs:
        return pairs
    joined = re.sub(r"\n\s*(?=(?:A|Answer)\s*[:.-])", " ", reply, flags=re.I)
    for line in joined.splitlines():
        match = _QA_LINE.match(line)
        if match:
            pairs.append({"question": match.group("q").strip(), "answer": match.group("a").strip()})
    return pairs


def parse_paraphrases(reply: str) -> list[str]:
    """Paraphrases from a model reply: JSON (``{"paraphrases": [...]}`` or a list), else list lines."""
    data = _json_object(reply)
    items = data.get("paraphrases", []) if isinstance(data, dict) else data
    if isinstance(items, list):
        found = [s.strip() for s in items if isinstance(s, str) and s.strip()]
        if found:
            return found
    lines = [re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip() for line in reply.splitlines()]
    return [line for line in lines if line and not line.startswith(("{", "}", "```"))]


class LLMGenerator(TextGenerator):
    """A generator backed by a language model: subclasses implement :meth:`complete`."""

    def complete(self, system: str, prompts: Sequence[str]) -> list[str]:
        """One reply per user prompt."""
        raise NotImplementedError

    def generate_qa_batch(self, passages: Sequence[str], n: int) -> list[list[dict[str, str]]]:
        replies = self.complete(QA_SYSTEM, [QA_USER.format(n=n, passage=p) for p in passages])
        return [parse_qa(reply)[:n] for reply in replies]

    def paraphrase_batch(self, texts: Sequence[str], n: int) -> list[list[dict[str, str]]]:
        replies = self.complete(PARA_SYSTEM, [PARA_USER.format(n=n, text=t) for t in texts])
        method = f"paraphrase:{self.identity()}"
        return [
            _distinct(text, [{"text": p, "method": method} for p in parse_paraphrases(reply)], n)
            for text, reply in zip(texts, replies)
        ]


class TransformersGenerator(LLMGenerator):
    """A local causal language model (``pip install 'provenir[train]'``), greedy decoding.

    Args:
        model_path: a local model folder (or a cached model id; nothing is downloaded offline).
        device: ``"cpu"``, ``"cuda"``…; ``None`` picks CUDA when available.
        max_new_tokens: generation budget per reply.
        batch_size: prompts per ``generate`` call.
    """

    name = "transformers"
    _cache: dict[tuple[str, str], tuple[Any, Any]] = {}

    def __init__(self, model_path: str, *, device: str | None = None, max_new_tokens: int = 256,
                 batch_size: int = 8, seed: int = 0):
        self.model_path = str(model_path)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed

    def identity(self) -> str:
        return f"transformers:{os.path.basename(self.model_path.rstrip('/')) or self.model_path}"

    def _load(self) -> tuple[Any, Any]:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise DependencyError("TransformersGenerator needs transformers: pip install 'provenir[train]'") from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (self.model_path, device)
        if key not in self._cache:
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_path)
                model = AutoModelForCausalLM.from_pretrained(self.model_path).to(device).eval()
            except Exception as exc:  # noqa: BLE001 - any loading failure is a clear error
                raise GenerationError(f"TransformersGenerator: cannot load {self.model_path!r}: {exc}") from exc
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"
            self._cache[key] = (tokenizer, model)
        return self._cache[key]

    def _render(self, tokenizer: Any, system: str, prompt: str) -> str:
        if getattr(tokenizer, "chat_template", None):
            try:
                return tokenizer.apply_chat_template(
                    [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                    tokenize=False, add_generation_prompt=True,
                )
            except Exception:  # noqa: BLE001 - templates without a system role
                pass
        return f"{system}\n\n{prompt}\n\n"

    def complete(self, system: str, prompts: Sequence[str]) -> list[str]:
        import torch

        tokenizer, model = self._load()
        torch.manual_seed(self.seed)
        replies: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            texts = [self._render(tokenizer, system, p) for p in prompts[start : start + self.batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
            with torch.no_grad():
                output = model.generate(
                    **batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            replies.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return replies


class _APIGenerator(LLMGenerator):
    _env_key = ""
    _module_name = ""
    _extra = ""

    def __init__(self, model: str, *, api_key: str | None = None, base_url: str | None = None,
                 max_tokens: int = 1024, temperature: float = 0.0, timeout: float = 60.0, max_retries: int = 2):
        if not model:
            raise ConfigError(f"{type(self).__name__}: give a model name")
        self.model = model
        self.api_key = api_key
        self.base_url = base_url
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.max_retries = max_retries
        self._client: Any = None

    def identity(self) -> str:
        return f"{self.name}:{self.model}"

    def _module(self) -> Any:
        try:
            return __import__(self._module_name)
        except ImportError as exc:
            raise DependencyError(
                f"{type(self).__name__} needs {self._module_name}: pip install 'provenir[{self._extra}]'"
            ) from exc

    def _key(self) -> str | None:
        return self.api_key or os.environ.get(self._env_key)

    def _one(self, system: str, prompt: str) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def complete(self, system: str, prompts: Sequence[str]) -> list[str]:
        replies = []
        for prompt in prompts:
            try:
                replies.append(self._one(system, prompt))
            except ProvenirError:
                raise
            except Exception as exc:  # noqa: BLE001 - the client's errors become one clear error
                raise GenerationError(
                    f"{self.identity()} failed: {type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
        return replies


class OpenAIGenerator(_APIGenerator):
    """Any OpenAI-compatible Chat Completions endpoint (``pip install 'provenir[judge-openai]'``).

    ``base_url`` selects the server (``http://host:8000/v1`` for vLLM); the key defaults to
    ``OPENAI_API_KEY`` and may be absent for local servers.
    """

    name = "openai"
    _env_key = "OPENAI_API_KEY"
    _module_name = "openai"
    _extra = "judge-openai"

    def _one(self, system: str, prompt: str) -> str:
        if self._client is None:
            kwargs: dict[str, Any] = {"api_key": self._key() or "not-needed", "timeout": self.timeout,
                                      "max_retries": self.max_retries}
            if self.base_url:
                kwargs["base_url"] = self.base_url
            self._client = self._module().OpenAI(**kwargs)
        completion = self._client.chat.completions.create(
            model=self.model, temperature=self.temperature, max_tokens=self.max_tokens,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        )
        if not completion.choices:
            return ""
        return completion.choices[0].message.content or ""


class AnthropicGenerator(_APIGenerator):
    """Anthropic's Messages API (``pip install 'provenir[judge-anthropic]'``); key from ``ANTHROPIC_API_KEY``."""

    name = "anthropic"
    _env_key = "ANTHROPIC_API_KEY"
    _module_name = "anthropic"
    _extra = "judge-anthropic"

    def _one(self, system: str, prompt: str) -> str:
        if self._client is None:
            kwargs: dict[str, Any] = {"api_key": self._key(), "timeout": self.timeout, "max_retries": self.max_retries}
            if self.base_url:
                kwargs["base_url"] = self.base_url
            self._client = self._module().Anthropic(**kwargs)
        message = self._client.messages.create(
            model=self.model, max_tokens=self.max_tokens, temperature=self.temperature, system=system,
            messages=[{"role": "user", "content": prompt}],
        )
        return "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", "") == "text")


def _openai(arg: str) -> TextGenerator:
    model, _, base_url = arg.partition("@")
    return OpenAIGenerator(model, base_url=base_url or None)


GENERATORS: dict[str, Callable[[str], TextGenerator]] = {
    "extractive": lambda _arg: ExtractiveGenerator(),
    "transformers": lambda arg: TransformersGenerator(arg),
    "openai": _openai,
    "anthropic": lambda arg: AnthropicGenerator(arg),
}


def build_generator(spec: str | TextGenerator | None) -> TextGenerator:
    """A generator from a spec: ``extractive`` (default for ``None``), ``transformers:PATH``,
    ``openai:MODEL[@BASE_URL]``, ``anthropic:MODEL``; a :class:`TextGenerator` is returned as is."""
    if spec is None:
        return ExtractiveGenerator()
    if isinstance(spec, TextGenerator):
        return spec
    kind, _, arg = str(spec).partition(":")
    if kind not in GENERATORS:
        raise ConfigError(f"generator {spec!r}: unknown kind {kind!r}; use one of {', '.join(GENERATORS)} "
                          "(e.g. transformers:/path/to/model, openai:MODEL@http://host:8000/v1)")
    if kind != "extractive" and not arg:
        raise ConfigError(f"generator {spec!r}: give {kind}:<model>")
    return GENERATORS[kind](arg)
