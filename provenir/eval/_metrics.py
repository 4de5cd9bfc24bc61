"""Per-example metrics and the registry that names them.

Every metric maps ``(prediction, reference) -> float`` (higher is better, usually in [0, 1]), so its
per-example scores can be bootstrapped. Choices, stated once:

* Normalisation (exact match, token F1, contains, ROUGE-L tokens): SQuAD-style — NFKC, lower case,
  punctuation and English articles removed, whitespace collapsed (see ``provenir.eval._text``).
* Empty predictions are scored, not skipped: an empty prediction scores 0 against a non-empty
  reference and 1 against a reference that is itself empty after normalisation (SQuAD's rule).
* chrF and BLEU are sentence-level sacrebleu scores divided by 100 (BLEU with sacrebleu's default
  exponential smoothing); their mean is the mean of sentence scores, not corpus BLEU.
* A reference may be a list of strings: the example's score is the best over them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from provenir.core.errors import ConfigError
from provenir.eval._text import normalize_answer, tokens

ScoreFn = Callable[[str, str], float]


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between the normalised texts (both empty: 1.0; one empty: 0.0)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, reference: str) -> float:
    """1.0 when the normalised reference occurs in the normalised prediction (word-bounded)."""
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if not ref:
        return float(not pred)
    return float(f" {ref} " in f" {pred} ")


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence) on normalised tokens (both empty: 1.0).

    Equal to ``rouge_score``'s ``rougeL`` F-measure with Provenir's tokenizer, without importing
    NLTK (two seconds) for it.
    """
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


class ChrF:
    """Sentence chrF (sacrebleu) / 100."""

    def __init__(self) -> None:
        from provenir.core.errors import require

        module = require("sacrebleu.metrics", feature="the chrf metric", extra="eval")
        self._metric = module.CHRF()  # type: ignore[attr-defined]

    def __call__(self, prediction: str, reference: str) -> float:
        if not prediction.strip() or not reference.strip():
            return float(not prediction.strip() and not reference.strip())
        return float(self._metric.sentence_score(prediction, [reference]).score) / 100.0


class Bleu:
    """Sentence BLEU (sacrebleu, exponential smoothing) / 100."""

    def __init__(self) -> None:
        from provenir.core.errors import require

        module = require("sacrebleu.metrics", feature="the bleu metric", extra="eval")
        self._metric = module.BLEU(effective_order=True)  # type: ignore[attr-defined]

    def __call__(self, prediction: str, reference: str) -> float:
        if not prediction.strip() or not reference.strip():
            return float(not prediction.strip() and not reference.strip())
        return float(self._metric.sentence_score(prediction, [reference]).score) / 100.0


class RegexMatch:
    """1.0 when ``pattern`` matches somewhere in the prediction (the reference is not used).

    Example:
        >>> RegexMatch(r"^\\d+$")("42", "")
        1.0
    """

    def __init__(self, pattern: str, flags: int = 0):
        try:
            self._regex = re.compile(pattern, flags)
        except re.error as exc:
            raise ConfigError(f"RegexMatch({pattern!r}): invalid regular expression: {exc}") from exc
        self.pattern = pattern

    def __call__(self, prediction: str, reference: str) -> float:
        return float(self._regex.search(prediction) is not None)


METRIC_REGISTRY: dict[str, Callable[[], ScoreFn]] = {
    "exact_match": lambda: exact_match,
    "token_f1": lambda: token_f1,
    "contains": lambda: contains,
    "rouge_l": lambda: rouge_l,
    "chrf": ChrF,
    "bleu": Bleu,
}


def register_metric(name: str, factory: Callable[[], ScoreFn]) -> None:
    """Add a metric that evaluators can then name; ``factory()`` returns ``score(pred, ref) -> float``."""
    if not name or not isinstance(name, str):
        raise ConfigError("register_metric: name must be a non-empty string")
    METRIC_REGISTRY[name] = factory


def resolve_metric(spec: Any, name: str | None = None) -> tuple[str, ScoreFn]:
    """Turn a metric spec into ``(name, score function)``.

    Accepted: a registered name; ``"regex:PATTERN"``; an object with ``score(prediction, reference)``
    (every reward primitive); a plain callable ``(prediction, reference) -> float``.
    """
    if isinstance(spec, str):
        if spec.startswith("regex:"):
            return name or spec, RegexMatch(spec[len("regex:") :])
        factory = METRIC_REGISTRY.get(spec)
        if factory is None:
            known = ", ".join(sorted(METRIC_REGISTRY))
            raise ConfigError(f"unknown metric {spec!r}: choose one of {known}, or 'regex:PATTERN'")
        return name or spec, factory()
    score = getattr(spec, "score", None)
    if callable(score):
        return name or _snake(type(spec).__name__), score
    if callable(spec):
        return name or getattr(spec, "__name__", None) or _snake(type(spec).__name__), spec
    raise ConfigError(f"metric {spec!r}: give a metric name, an object with .score(pred, ref), or a callable")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
