"""provenir.eval: metrics with confidence intervals, LLM judges, RAG metrics, lm-eval benchmarks.

The names below resolve lazily from their modules (``provenir.eval.harness``, ``.judge``,
``.rag_metrics``, ``.benchmarks``), so ``import provenir.eval`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MultiMetricEvaluator": "harness",
    "EvalResult": "harness",
    "MetricResult": "harness",
    "ComparisonResult": "harness",
    "PairedDifference": "harness",
    "bootstrap_ci": "harness",
    "register_metric": "harness",
    "LLMJudge": "judge",
    "Preference": "judge",
    "StubJudge": "judge",
    "CachedJudge": "judge",
    "AnthropicJudge": "judge",
    "OpenAIJudge": "judge",
    "RAGEvaluator": "rag_metrics",
    "RAGMetricSummary": "rag_metrics",
    "BenchmarkEvaluator": "benchmarks",
    "BenchmarkConfig": "benchmarks",
    "BenchmarkResult": "benchmarks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'provenir.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"provenir.eval.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
