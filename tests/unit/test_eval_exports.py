"""The contract's eval, rewards and EvalCallback names exist with the promised signatures."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

CONTRACT = {
    "provenir.eval.harness": ["MultiMetricEvaluator", "EvalResult", "MetricResult"],
    "provenir.eval.judge": ["LLMJudge", "Preference", "StubJudge", "CachedJudge", "AnthropicJudge", "OpenAIJudge"],
    "provenir.eval.rag_metrics": ["RAGEvaluator", "RAGMetricSummary"],
    "provenir.eval.benchmarks": ["BenchmarkEvaluator", "BenchmarkConfig", "BenchmarkResult"],
    "provenir.rewards.primitives": [
        "ExactMatchReward", "FormatReward", "WeightedSumReward", "ThresholdGatedReward", "ClampedReward",
    ],
    "provenir.train.eval_callback": ["EvalCallback", "EvalCallbackConfig", "EvalCallbackResult"],
}


@pytest.mark.parametrize(("module", "names"), sorted(CONTRACT.items()))
def test_names(module, names):
    mod = importlib.import_module(module)
    assert [n for n in names if not hasattr(mod, n)] == []
    assert all(hasattr(mod, n) for n in mod.__all__)


def test_package_all_resolves():
    for package in ("provenir.eval", "provenir.rewards"):
        mod = importlib.import_module(package)
        assert all(hasattr(mod, name) for name in mod.__all__)


def test_signatures_and_fields():
    from provenir.eval.benchmarks import BenchmarkConfig, BenchmarkResult
    from provenir.eval.harness import EvalResult, MetricResult, MultiMetricEvaluator
    from provenir.eval.judge import CachedJudge, Preference
    from provenir.eval.rag_metrics import RAGMetricSummary
    from provenir.rewards.primitives import ClampedReward, ThresholdGatedReward, WeightedSumReward
    from provenir.train.eval_callback import EvalCallback, EvalCallbackConfig, EvalCallbackResult

    def fields(cls):
        return [f.name for f in dataclasses.fields(cls)]

    assert fields(MetricResult) == ["mean", "ci_lower", "ci_upper", "n"]
    assert fields(EvalResult)[0] == "metrics"
    assert fields(Preference) == ["preferred", "confidence", "rationale"]
    assert fields(RAGMetricSummary) == ["faithfulness", "context_precision", "answer_relevance", "combined"]
    assert fields(BenchmarkResult)[:4] == ["benchmark", "score", "num_examples", "config"]
    assert fields(EvalCallbackResult)[:4] == ["step", "metrics", "should_stop", "best_step"]
    assert list(inspect.signature(MultiMetricEvaluator.evaluate).parameters) == ["self", "dataset", "predictions"]
    assert list(inspect.signature(CachedJudge).parameters)[:2] == ["inner", "cache_dir"]
    assert list(inspect.signature(WeightedSumReward).parameters)[:1] == ["rewards"]
    assert list(inspect.signature(ThresholdGatedReward).parameters)[:2] == ["rewards", "threshold"]
    assert list(inspect.signature(ClampedReward).parameters)[:3] == ["reward", "min_val", "max_val"]
    assert list(inspect.signature(EvalCallback).parameters)[:3] == ["config", "evaluator", "eval_dataset"]
    assert BenchmarkConfig(benchmark="mmlu").model_dump() == {"benchmark": "mmlu", "num_fewshot": 0, "limit": None}
    assert EvalCallbackConfig().model_dump() == {
        "eval_every_n_steps": 100, "early_stopping_patience": 3, "regression_tolerance": 0.02,
        "primary_metric": "exact_match",
    }


def test_imports_stay_light():
    code = (
        "import sys, provenir.eval, provenir.eval.harness, provenir.eval.judge, provenir.eval.rag_metrics, "
        "provenir.rewards, provenir.train.eval_callback, provenir.eval.benchmarks\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'lm_eval', 'anthropic', 'openai', "
        "'ray', 'numpy') if m in sys.modules]\nprint(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
