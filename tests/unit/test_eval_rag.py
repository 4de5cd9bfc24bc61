"""RAG metrics: definitions on hand-checked triples, the embedding path, the judge path, no NaN."""

from __future__ import annotations

import math

import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.eval.judge import StubJudge
from provenir.eval.rag_metrics import RAGEvaluator, RAGMetricSummary, harmonic_mean

pytestmark = pytest.mark.timeout(180)

GOOD = {
    "question": "What is the capital of France?",
    "answer": "Paris is the capital of France.",
    "context": ["Paris is the capital and largest city of France.", "Bananas are rich in potassium."],
}
HALLUCINATED = {
    "question": "When was the Eiffel Tower completed?",
    "answer": "The Eiffel Tower was completed in 1925. It is made of gold.",
    "context": "The Eiffel Tower is a wrought-iron tower in Paris. It was completed in 1889.",
}
IRRELEVANT_FIRST = {
    "question": "What is the capital of France?",
    "answer": "Paris is the capital of France.",
    "context": ["Bananas are rich in potassium.", "Paris is the capital and largest city of France."],
}
EMPTY = {"question": "What is the capital of France?", "answer": "", "context": []}


def test_harmonic_mean():
    assert harmonic_mean([1.0, 1.0, 1.0]) == 1.0
    assert harmonic_mean([0.5, 1.0, 1.0]) == pytest.approx(3 / (2 + 1 + 1))
    assert harmonic_mean([0.0, 1.0, 1.0]) == 0.0
    assert harmonic_mean([]) == 0.0


def test_lexical_mode_values():
    ev = RAGEvaluator(use_embeddings=False)
    good, bad, ranked, empty = ev.evaluate([GOOD, HALLUCINATED, IRRELEVANT_FIRST, EMPTY])
    assert good.faithfulness == 1.0
    assert good.context_precision == 1.0  # relevant chunk ranked first
    assert ranked.context_precision == 0.5  # the only relevant chunk at rank 2: precision@2 = 1/2
    assert good.answer_relevance == pytest.approx(2 / 2)  # {capital, france} both used
    # "completed in 1925": the number is not in the context; "made of gold": words not in context
    assert bad.faithfulness == 0.0 and bad.combined == 0.0
    assert empty == RAGMetricSummary(0.0, 0.0, 0.0, 0.0)
    assert good.combined == pytest.approx(harmonic_mean([good.faithfulness, good.context_precision, good.answer_relevance]))


def test_partial_faithfulness():
    triple = dict(HALLUCINATED, answer="The Eiffel Tower was completed in 1889. It is made of gold.")
    [summary] = RAGEvaluator(use_embeddings=False).evaluate([triple])
    assert summary.faithfulness == 0.5


@pytest.mark.slow
def test_embedding_mode(embedding_model_path):
    ev = RAGEvaluator(embedding_model=embedding_model_path)
    good, bad, ranked, empty = ev.evaluate([GOOD, HALLUCINATED, IRRELEVANT_FIRST, EMPTY])
    assert good.faithfulness == 1.0 and bad.faithfulness == 0.0
    assert good.context_precision == 1.0 and ranked.context_precision == 0.5
    assert good.answer_relevance > 0.7
    off_topic = dict(GOOD, answer="Bananas are rich in potassium.")
    [off] = ev.evaluate([off_topic])
    assert off.answer_relevance < 0.2 < good.answer_relevance
    assert empty.combined == 0.0
    for s in (good, bad, ranked, empty, off):
        assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in s.to_dict().values())
    agg = ev.aggregate([good, bad])
    assert agg["faithfulness"] == 0.5 and agg["n"] == 2.0
    assert set(agg) == {"faithfulness", "context_precision", "answer_relevance", "combined", "n"}
    with_ci = ev.summarize([good, bad, ranked])
    r = with_ci.metrics["faithfulness"]
    assert r.n == 3 and r.ci_lower <= r.mean <= r.ci_upper


def test_custom_encoder_is_used():
    calls = []

    def encoder(texts):
        calls.append(list(texts))
        # one-hot on whether the text mentions France: question and answers about France align
        return [[1.0, 0.0] if "France" in t else [0.0, 1.0] for t in texts]

    [summary] = RAGEvaluator(encoder=encoder).evaluate([GOOD])
    assert calls and summary.answer_relevance == 1.0


def test_judge_path_uses_rubric():
    seen = []

    class RecordingJudge(StubJudge):
        def score_rubric(self, prompt, response, criteria):
            seen.append((prompt, response, list(criteria)))
            return {c: (1.0 if "Paris" in c or "capital" in response else 0.0) for c in criteria}

    [summary] = RAGEvaluator(judge=RecordingJudge(), use_embeddings=False).evaluate([GOOD])
    assert summary.faithfulness == 1.0
    assert summary.context_precision == 1.0
    faith_prompt, answer, criteria = seen[0]
    assert "Paris is the capital and largest city of France." in faith_prompt and answer == GOOD["answer"]
    assert criteria == ["The context supports this statement: Paris is the capital of France."]


def test_aggregate_of_nothing_and_validation():
    ev = RAGEvaluator(use_embeddings=False)
    assert ev.aggregate([]) == {"faithfulness": 0.0, "context_precision": 0.0, "answer_relevance": 0.0, "combined": 0.0, "n": 0.0}
    assert ev.evaluate([]) == []
    with pytest.raises(DataError, match="triple 0: missing 'context'"):
        ev.evaluate([{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match="must be a string or a list"):
        ev.evaluate([{"question": "q", "answer": "a", "context": 3}])
    with pytest.raises(ConfigError, match="support_threshold"):
        RAGEvaluator(support_threshold=2)
