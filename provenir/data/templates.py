"""Prompt templates: how records become the exact text each model family was trained on.

Records come in three shapes, read through the field names below (a ``DataConfig.fields`` mapping
renames other names onto these first):

* single-turn: ``{"instruction", "input"?, "output"?, "system"?}``
* multi-turn: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, …]}``
* prompt/completion: ``{"prompt", "completion"?}`` and, for ``raw_completion`` only, ``{"text"}``

Single-turn records become one user turn: the instruction, then a blank line and the input when
there is one (alpaca keeps its own ``### Input:`` section instead). A record without a final
assistant answer is formatted as a generation prompt (the text ends where the model should start).

Each template's output is its family's published format:

* ``alpaca`` — Stanford Alpaca's prompt (with and without input); multi-turn repeats the
  ``### Instruction:`` / ``### Response:`` pair, separated by a blank line.
* ``chatml`` — ``<|im_start|>role\\ncontent<|im_end|>\\n`` for each turn.
* ``llama3`` — Llama 3 Instruct: ``<|begin_of_text|>``, ``<|start_header_id|>role<|end_header_id|>\\n\\n``,
  content (trimmed, as Meta's template does), ``<|eot_id|>``.
* ``mistral`` — Mistral Instruct: ``<s>[INST] user [/INST]answer</s>``; a system message is put
  before the first user message, followed by a blank line (Mistral has no system role).
* ``phi3`` — Phi-3 Instruct: ``<|role|>\\ncontent<|end|>\\n`` and ``<|endoftext|>`` after the last turn.
* ``raw_completion`` — no markup: ``text`` as it is, or the turns' contents joined by newlines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provenir.core.errors import ConfigError, DataError
from provenir.core.template_names import BUILTIN_TEMPLATE_NAMES, provide_template_names

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    """A record normalised to a system prompt and alternating user/assistant turns."""

    system: str | None
    turns: list[tuple[str, str]]  # (role, content), starting with "user"
    single_turn_input: str | None = None  # alpaca's separate input section
    text: str | None = None  # raw text records

    @property
    def has_answer(self) -> bool:
        return bool(self.turns) and self.turns[-1][0] == "assistant"


def _require_str(record: dict[str, Any], key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def to_conversation(record: dict[str, Any], where: str = "record") -> Conversation:
    """Normalise a record of any supported shape (see the module docstring).

    Raises:
        DataError: the record has no usable fields, or its messages are malformed.
    """
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        system = None
        turns: list[tuple[str, str]] = []
        for i, message in enumerate(messages):
            loc = f"{where}: messages[{i}]"
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise DataError(f"{loc}: each message needs 'role' and 'content'")
            role, content = message["role"], message["content"]
            if role not in ROLES:
                raise DataError(f"{loc}: unknown role {role!r}; allowed: {', '.join(ROLES)}")
            if not isinstance(content, str):
                raise DataError(f"{loc}: 'content' must be a string")
            if role == "system":
                if i != 0:
                    raise DataError(f"{loc}: a system message may only come first")
                system = content
                continue
            expected = "user" if not turns or turns[-1][0] == "assistant" else "assistant"
            if role != expected:
                raise DataError(f"{loc}: expected a {expected} message (turns must alternate)")
            turns.append((role, content))
        if not turns:
            raise DataError(f"{where}: 'messages' has no user message")
        return Conversation(system, turns)
    system = _require_str(record, "system", where) if record.get("system") is not None else None
    if "instruction" in record:
        instruction = _require_str(record, "instruction", where)
        extra = record.get("input")
        if extra is not None and not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be a string")
        user = f"{instruction}\n\n{extra}" if extra else instruction
        turns = [("user", user)]
        if record.get("output") is not None:
            turns.append(("assistant", _require_str(record, "output", where)))
        return Conversation(system, turns, single_turn_input=extra or "")
    if "prompt" in record:
        turns = [("user", _require_str(record, "prompt", where))]
        if record.get("completion") is not None:
            turns.append(("assistant", _require_str(record, "completion", where)))
        return Conversation(system, turns)
    if "text" in record:
        return Conversation(None, [], text=_require_str(record, "text", where))
    found = ", ".join(sorted(record)) or "none"
    raise DataError(
        f"{where}: no field a template can read; expected 'messages', 'instruction', 'prompt' or "
        f"'text' (found: {found}); map your field names with data.fields in the config"
    )


class PromptTemplate:
    """A model family's prompt format.

    Subclasses implement :meth:`render`; :meth:`format`, :meth:`format_prompt` and :meth:`split`
    are derived from it, so ``format(r) == prompt + completion`` always holds.
    """

    name: str = "template"
    description: str = ""
    supports_text: bool = False

    def render(self, conv: Conversation, add_generation_prompt: bool) -> str:
        raise NotImplementedError

    def _conversation(self, record: dict[str, Any]) -> Conversation:
        conv = to_conversation(record)
        if conv.text is not None and not self.supports_text:
            raise DataError(
                f"template {self.name!r} needs 'instruction', 'messages' or 'prompt'; a bare "
                "'text' record fits only raw_completion"
            )
        return conv

    def format(self, record: dict[str, Any]) -> str:
        """The full text: the whole conversation, or a generation prompt if it has no answer."""
        conv = self._conversation(record)
        return self.render(conv, add_generation_prompt=not conv.has_answer and conv.text is None)

    def split(self, record: dict[str, Any]) -> tuple[str, str]:
        """``(prompt, completion)``: the completion is the last answer and its end markup."""
        conv = self._conversation(record)
        full = self.format(record)
        if conv.text is not None or not conv.has_answer:
            return ("", full) if conv.text is not None else (full, "")
        prompt = self.render(
            Conversation(conv.system, conv.turns[:-1], conv.single_turn_input), True
        )
        if not full.startswith(prompt):  # pragma: no cover - guards template bugs
            raise AssertionError(f"template {self.name}: prompt is not a prefix of the full text")
        return prompt, full[len(prompt) :]

    def format_prompt(self, record: dict[str, Any]) -> str:
        """The text up to where the model writes its (last) answer."""
        return self.split(record)[0]


class _ChatTemplate(PromptTemplate):
    """Formats where each turn is ``prefix(role) + content + suffix(role)``."""

    bos = ""
    eos_after_last = ""
    trim = False
    system_in_first_user = False

    def prefix(self, role: str) -> str:
        raise NotImplementedError

    def suffix(self, role: str) -> str:
        raise NotImplementedError

    def render(self, conv: Conversation, add_generation_prompt: bool) -> str:
        clean = (lambda s: s.strip()) if self.trim else (lambda s: s)
        parts = [self.bos]
        turns = list(conv.turns)
        if conv.system is not None:
            if self.system_in_first_user and turns:
                turns[0] = ("user", f"{conv.system}\n\n{turns[0][1]}")
            elif not self.system_in_first_user:
                parts.append(self.prefix("system") + clean(conv.system) + self.suffix("system"))
        for role, content in turns:
            parts.append(self.prefix(role) + clean(content) + self.suffix(role))
        if add_generation_prompt:
            parts.append(self.prefix("assistant"))
        else:
            parts.append(self.eos_after_last)
        return "".join(parts)


class ChatMLTemplate(_ChatTemplate):
    name = "chatml"
    description = "ChatML (<|im_start|>role … <|im_end|>), as used by Qwen, Hermes, Yi"

    def prefix(self, role: str) -> str:
        return f"<|im_start|>{role}\n"

    def suffix(self, role: str) -> str:
        return "<|im_end|>\n"


class Llama3Template(_ChatTemplate):
    name = "llama3"
    description = "Llama 3 / 3.1 Instruct"
    bos = "<|begin_of_text|>"
    trim = True

    def prefix(self, role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    def suffix(self, role: str) -> str:
        return "<|eot_id|>"


class MistralTemplate(_ChatTemplate):
    name = "mistral"
    description = "Mistral Instruct ([INST] … [/INST])"
    bos = "<s>"
    system_in_first_user = True

    def prefix(self, role: str) -> str:
        return "[INST] " if role == "user" else ""

    def suffix(self, role: str) -> str:
        return " [/INST]" if role == "user" else "</s>"


class Phi3Template(_ChatTemplate):
    name = "phi3"
    description = "Phi-3 Instruct (<|user|> … <|end|>)"
    eos_after_last = "<|endoftext|>"

    def prefix(self, role: str) -> str:
        return f"<|{role}|>\n"

    def suffix(self, role: str) -> str:
        return "<|end|>\n"


ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)


class AlpacaTemplate(PromptTemplate):
    name = "alpaca"
    description = "Stanford Alpaca (### Instruction / ### Input / ### Response)"

    def render(self, conv: Conversation, add_generation_prompt: bool) -> str:
        single_with_input = bool(conv.single_turn_input) and len(conv.turns) <= 2
        if conv.system is not None:
            preamble = conv.system
        else:
            preamble = ALPACA_PREAMBLE_INPUT if single_with_input else ALPACA_PREAMBLE
        blocks = [preamble]
        for role, content in conv.turns:
            if role == "user":
                if single_with_input:
                    instruction = content[: -(len(conv.single_turn_input or "") + 2)]
                    blocks.append(f"### Instruction:\n{instruction}")
                    blocks.append(f"### Input:\n{conv.single_turn_input}")
                else:
                    blocks.append(f"### Instruction:\n{content}")
            else:
                blocks.append(f"### Response:\n{content}")
        text = "\n\n".join(blocks)
        if add_generation_prompt:
            text += "\n\n### Response:\n"
        return text

    def split(self, record: dict[str, Any]) -> tuple[str, str]:
        conv = self._conversation(record)
        full = self.format(record)
        if not conv.has_answer:
            return full, ""
        answer = conv.turns[-1][1]
        return full[: len(full) - len(answer)], answer


class RawCompletionTemplate(PromptTemplate):
    name = "raw_completion"
    description = "No markup: 'text' as is, else the turns' contents joined by newlines"
    supports_text = True

    def render(self, conv: Conversation, add_generation_prompt: bool) -> str:
        if conv.text is not None:
            return conv.text
        contents = ([conv.system] if conv.system is not None else []) + [c for _, c in conv.turns]
        text = "\n".join(contents)
        if add_generation_prompt:
            text += "\n"
        return text


class TemplateRegistry:
    """Templates by name.

    Example:
        >>> TEMPLATE_REGISTRY.format("chatml", {"instruction": "Hi", "output": "Hello"})
        '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello<|im_end|>\\n'
    """

    def __init__(self) -> None:
        self._templates: dict[str, PromptTemplate] = {}

    def register(self, name: str, template: PromptTemplate, overwrite: bool = False) -> None:
        """Add ``template`` under ``name`` (refuses to replace one unless ``overwrite``)."""
        if not isinstance(template, PromptTemplate):
            raise ConfigError(f"template {name!r} must be a PromptTemplate instance")
        if name in self._templates and not overwrite:
            raise ConfigError(f"template {name!r} is already registered; pass overwrite=True")
        self._templates[name] = template

    def get(self, name: str) -> PromptTemplate:
        try:
            return self._templates[name]
        except KeyError:
            raise ConfigError(
                f"unknown template {name!r}; available: {', '.join(self.list_names())}"
            ) from None

    def format(self, name: str, record: dict[str, Any]) -> str:
        """Format ``record`` with the template called ``name``."""
        return self.get(name).format(record)

    def list_names(self) -> list[str]:
        return sorted(self._templates)

    def __contains__(self, name: object) -> bool:
        return name in self._templates


TEMPLATE_REGISTRY = TemplateRegistry()
for _template in (
    AlpacaTemplate(),
    ChatMLTemplate(),
    Llama3Template(),
    MistralTemplate(),
    Phi3Template(),
    RawCompletionTemplate(),
):
    TEMPLATE_REGISTRY.register(_template.name, _template)

assert set(TEMPLATE_REGISTRY.list_names()) == set(BUILTIN_TEMPLATE_NAMES), "template registry and core disagree"
provide_template_names(TEMPLATE_REGISTRY.list_names)  # config validation (core) checks data.template
