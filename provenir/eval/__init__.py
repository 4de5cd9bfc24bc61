"""provenir.eval: metrics with confidence intervals, LLM judges, RAG metrics, lm-eval benchmarks.

Submodules are imported on use (``from provenir.eval.harness import MultiMetricEvaluator``) so that
``import provenir.eval`` stays cheap.
"""
