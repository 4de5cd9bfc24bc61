"""A record's prompt and response as text: what quality scoring and decontamination both read.

Its own small module so that :mod:`provenir.data.quality` and :mod:`provenir.data.decontamination`
import it from below instead of from each other; :mod:`provenir.data.quality` exports both names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provenir.data.templates import to_conversation


def record_prompt_response(record: Mapping[str, Any]) -> tuple[str, str]:
    """The record's prompt and response as text, for any record shape of :mod:`provenir.data.templates`.

    * ``instruction``/``input``/``output``: prompt = instruction (+ blank line + input), response = output;
    * ``messages``: prompt = the user turns before the last assistant turn, response = that turn;
    * ``prompt``/``completion``: as named; ``text``: prompt = "", response = text.

    Raises:
        DataError: the record has no readable text fields or a field is not a string.
    """
    conv = to_conversation(dict(record))
    if conv.text is not None:
        return "", conv.text
    turns = conv.turns
    if conv.has_answer:
        prompt = "\n".join(c for r, c in turns[:-1] if r == "user")
        return prompt, turns[-1][1]
    return "\n".join(c for r, c in turns if r == "user"), ""


def record_text(record: Mapping[str, Any]) -> str:
    """Prompt and response joined by a newline (the text a decontamination check reads)."""
    prompt, response = record_prompt_response(record)
    return f"{prompt}\n{response}" if prompt and response else prompt or response


__all__ = ["record_prompt_response", "record_text"]
