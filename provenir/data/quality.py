"""Heuristic quality scoring of training records, and the decontamination checker's import path.

:class:`QualityScorer` rates a record in [0, 1] from named components, each in [0, 1] (1 = no
problem found), computed on the record's *prompt* and *response* (see :func:`record_prompt_response`):

==============  ================================================================================
component       what it measures (default ramp: 1 at the "fine" level, 0 at the "bad" level)
==============  ================================================================================
``length``      response length in characters within ``[min_chars, max_chars]``; below the
                minimum the component is ``len / min_chars``, above the maximum it falls linearly
                to 0 at twice the maximum
``repetition``  share of the response's word 3-grams that repeat an earlier one (Gopher's
                repetition signal): 1 up to 0.15, 0 from 0.5
``printable``   share of non-printable characters (control, private-use, unassigned, U+FFFD) and
                mojibake sequences (UTF-8 read as cp1252/Latin-1, e.g. ``Ã©``, ``â€™``): 1 at 0,
                0 from 0.01
``alpha``       share of alphabetic characters among the response's non-space characters: 1 from
                0.25, 0 at 0.05 (numbers and code keep some letters); responses under 20 non-space
                characters ("4", "O(log n)") are exempt
``non_empty``   0 when the response is empty or whitespace (or the record has no response)
``non_refusal`` 0 when the response opens with a refusal ("I'm sorry, but I can't …", "As an AI
                language model …") and is short (under 60 words)
``non_echo``    word-set Jaccard similarity of response and prompt: 1 up to 0.6, 0 from 0.9 (a
                response that only repeats the instruction)
==============  ================================================================================

The score is the **weighted geometric mean** of the components,
``prod(c_i ** (w_i / sum(w)))``: a component at 0 (an empty, refused or echoed response, garbage
text) zeroes the score whatever the weights, while partial problems lower it in proportion to their
weight. A weight of 0 disables a component. ``aggregation="arithmetic"`` gives the weighted mean
instead. Scoring is deterministic (no randomness, no model) and never raises on a record: a record
whose fields are not text scores 0 with the reason.

Example:
    >>> scorer = QualityScorer()
    >>> scorer.score({"instruction": "Name the capital of France.", "output": "Paris is the capital of France."})
    1.0
    >>> scorer.score({"instruction": "Name the capital of France.", "output": ""})
    0.0
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provenir.core.errors import ConfigError, DataError
from provenir.data.dataset import JsonlDataset
from provenir.data._text import record_prompt_response, record_text

if TYPE_CHECKING:
    from provenir.data.decontamination import SemanticDecontaminationChecker

__all__ = [
    "DEFAULT_WEIGHTS",
    "QualityResult",
    "QualityScorer",
    "SemanticDecontaminationChecker",
    "record_prompt_response",
    "record_text",
]

DEFAULT_WEIGHTS: dict[str, float] = {
    "length": 1.0,
    "repetition": 1.0,
    "printable": 1.0,
    "alpha": 1.0,
    "non_empty": 1.0,
    "non_refusal": 1.0,
    "non_echo": 1.0,
}

_WORD = re.compile(r"\w+", re.UNICODE)
# UTF-8 bytes decoded as cp1252 / Latin-1: a lead byte's character followed by continuation bytes'.
_CONTINUATION = "".join(
    sorted(set(bytes(range(0x80, 0xC0)).decode("cp1252", errors="ignore") + bytes(range(0x80, 0xC0)).decode("latin-1")))
)
_CONT_CLASS = "[" + re.escape(_CONTINUATION) + "]"
_MOJIBAKE = re.compile(f"[\u00c2-\u00df]{_CONT_CLASS}|[\u00e0-\u00ef]{_CONT_CLASS}{{2}}|\ufffd")
_REFUSAL = re.compile(
    r"^\W*(?:i['’]?m sorry|i am sorry|sorry, (?:but )?i|i apologi[sz]e|as an ai\b|as a language model|"
    r"i (?:can(?:not|['’]t)|am (?:not able|unable)|won['’]t|will not|must decline)\b[^.]{0,40}"
    r"\b(?:help|assist|provide|comply|answer|do that|fulfil|fulfill|support|share|create|write)|"
    r"i['’]m (?:not able|unable) to)",
    re.IGNORECASE,
)


def _ramp(value: float, good: float, bad: float) -> float:
    """1 at ``good`` (or better), 0 at ``bad`` (or worse), linear between."""
    if good == bad:
        return 1.0 if value <= good else 0.0
    t = (value - good) / (bad - good)
    return float(min(1.0, max(0.0, 1.0 - t)))


def _is_nonprintable(ch: str) -> bool:
    if ch in "\n\t\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn")


@dataclass
class QualityResult:
    """A record's quality: the score, every component, and why components fell below 1."""

    score: float
    components: dict[str, float]
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "components": dict(self.components), "reasons": list(self.reasons)}


class QualityScorer:
    """Scores records in [0, 1] from named, visible components (see the module docstring).

    Args:
        weights: component weights (missing ones keep their defaults; 0 disables a component).
        min_chars: shortest acceptable response, in characters.
        max_chars: longest acceptable response, in characters.
        aggregation: ``"geometric"`` (default) or ``"arithmetic"`` weighted mean.
        ndigits: the score and components are rounded to this many decimals (stable output files).
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        min_chars: int = 1,
        max_chars: int = 10_000,
        aggregation: str = "geometric",
        ndigits: int = 6,
    ):
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ConfigError(
                f"QualityScorer(weights=...): unknown component(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(DEFAULT_WEIGHTS)}"
            )
        merged = {**DEFAULT_WEIGHTS, **dict(weights or {})}
        for name, value in merged.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or math.isnan(value):
                raise ConfigError(f"QualityScorer(weights={{{name!r}: {value!r}}}): weights must be numbers >= 0")
        if sum(merged.values()) <= 0:
            raise ConfigError("QualityScorer(weights=...): at least one weight must be > 0")
        if min_chars < 0 or max_chars <= 0 or min_chars > max_chars:
            raise ConfigError(f"QualityScorer: need 0 <= min_chars <= max_chars (got {min_chars}, {max_chars})")
        if aggregation not in ("geometric", "arithmetic"):
            raise ConfigError(f"QualityScorer(aggregation={aggregation!r}): use 'geometric' or 'arithmetic'")
        self.weights = {k: float(v) for k, v in merged.items()}
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.aggregation = aggregation
        self.ndigits = ndigits

    # -- components ----------------------------------------------------------------------------
    def components(self, prompt: str, response: str) -> tuple[dict[str, float], list[str]]:
        """Every component for a prompt/response pair, and a reason for each that is below 1."""
        reasons: list[str] = []
        comp: dict[str, float] = {}
        stripped = response.strip()
        n = len(stripped)

        if n < self.min_chars:
            comp["length"] = n / self.min_chars if self.min_chars else 1.0
        elif n > self.max_chars:
            comp["length"] = _ramp(n, self.max_chars, 2 * self.max_chars)
        else:
            comp["length"] = 1.0
        if comp["length"] < 1:
            reasons.append(f"length: response has {n} characters (bounds {self.min_chars}–{self.max_chars})")

        words = _WORD.findall(stripped.lower())
        grams = list(zip(words, words[1:], words[2:]))
        dup = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
        comp["repetition"] = _ramp(dup, 0.15, 0.5)
        if comp["repetition"] < 1:
            reasons.append(f"repetition: {dup:.0%} of word 3-grams repeat")

        both = f"{prompt}{response}"
        if both:
            bad = sum(1 for ch in both if _is_nonprintable(ch)) + len(_MOJIBAKE.findall(both))
            frac = bad / len(both)
        else:
            bad, frac = 0, 0.0
        comp["printable"] = _ramp(frac, 0.0, 0.01)
        if bad:
            reasons.append(f"printable: {bad} non-printable or mojibake sequence(s)")

        visible = [ch for ch in stripped if not ch.isspace()]
        alpha = sum(ch.isalpha() for ch in visible) / len(visible) if len(visible) >= 20 else 1.0
        comp["alpha"] = _ramp(-alpha, -0.25, -0.05)
        if comp["alpha"] < 1:
            reasons.append(f"alpha: {alpha:.0%} of characters are letters")

        comp["non_empty"] = 1.0 if stripped else 0.0
        if not stripped:
            reasons.append("non_empty: the response is empty")

        refusal = bool(stripped) and len(words) < 60 and _REFUSAL.match(stripped) is not None
        comp["non_refusal"] = 0.0 if refusal else 1.0
        if refusal:
            reasons.append("non_refusal: the response is a refusal")

        prompt_words = set(_WORD.findall(prompt.lower()))
        response_words = set(words)
        if prompt_words and response_words:
            jaccard = len(prompt_words & response_words) / len(prompt_words | response_words)
        else:
            jaccard = 0.0
        comp["non_echo"] = _ramp(jaccard, 0.6, 0.9)
        if comp["non_echo"] < 1:
            reasons.append(f"non_echo: response repeats the prompt (word overlap {jaccard:.2f})")
        return comp, reasons

    def _aggregate(self, comp: Mapping[str, float]) -> float:
        total = sum(self.weights.values())
        if self.aggregation == "arithmetic":
            return sum(self.weights[k] * comp[k] for k in comp) / total
        log_sum = 0.0
        for name, value in comp.items():
            weight = self.weights[name]
            if weight == 0:
                continue
            if value <= 0:
                return 0.0
            log_sum += weight / total * math.log(value)
        return math.exp(log_sum)

    # -- public API ----------------------------------------------------------------------------
    def evaluate(self, record: Mapping[str, Any]) -> QualityResult:
        """The score with its components and reasons; never raises on a malformed record."""
        try:
            if not isinstance(record, Mapping):
                raise DataError(f"expected a JSON object, got {type(record).__name__}")
            prompt, response = record_prompt_response(record)
        except DataError as exc:
            zero = {name: 0.0 for name in self.weights}
            return QualityResult(0.0, zero, [f"unreadable: {exc}"])
        comp, reasons = self.components(prompt, response)
        comp = {k: round(v, self.ndigits) for k, v in comp.items()}
        return QualityResult(round(self._aggregate(comp), self.ndigits), comp, reasons)

    def score(self, record: dict[str, Any]) -> float:
        """The record's quality in [0, 1] (see the module docstring for how it is computed)."""
        return self.evaluate(record).score

    def score_batch(self, records: Iterable[Mapping[str, Any]]) -> list[QualityResult]:
        """:meth:`evaluate` over a batch (the op Ray Data maps over record batches)."""
        return [self.evaluate(record) for record in records]

    def filter(self, dataset: JsonlDataset, threshold: float) -> JsonlDataset:
        """The records scoring at least ``threshold``, in their original order."""
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"QualityScorer.filter(threshold={threshold!r}): must be in [0, 1]")
        kept = [r for r, res in zip(dataset.records, self.score_batch(dataset.records)) if res.score >= threshold]
        return JsonlDataset(kept, source=getattr(dataset, "source", None))


def __getattr__(name: str) -> Any:
    # The checker lives in its own module; it is importable from here as the API reference says.
    if name == "SemanticDecontaminationChecker":
        from provenir.data.decontamination import SemanticDecontaminationChecker

        return SemanticDecontaminationChecker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
