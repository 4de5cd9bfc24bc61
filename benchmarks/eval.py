"""Bootstrap confidence intervals: Provenir's vectorised bootstrap vs a plain Python loop (and SciPy).

Workload: the mean of 10,000 per-example scores, 1,000 percentile-bootstrap resamples, 95% level.
Baselines measured in the same run: a plain Python loop (``random.choices`` + ``statistics.fmean``
per resample) and SciPy's ``scipy.stats.bootstrap(method="percentile")``. Each timing is the best
of ``--repeats`` runs. Run: ``.venv/bin/python benchmarks/eval.py``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from provenir.eval.harness import MultiMetricEvaluator, bootstrap_ci


def python_loop_bootstrap(scores: list[float], n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(statistics.fmean(rng.choices(scores, k=n)) for _ in range(n_resamples))
    alpha = 1 - confidence
    lo = means[int(alpha / 2 * (n_resamples - 1))]
    hi = means[int((1 - alpha / 2) * (n_resamples - 1))]
    return lo, hi


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    scores = (rng.random(args.n) < 0.62).astype(float)
    as_list = scores.tolist()

    t_ours, ci_ours = best_of(lambda: bootstrap_ci(scores, n_resamples=args.resamples, seed=0), args.repeats)
    t_loop, ci_loop = best_of(lambda: python_loop_bootstrap(as_list, args.resamples, 0.95, 0), args.repeats)

    from scipy.stats import bootstrap

    def scipy_ci():
        r = bootstrap((scores,), np.mean, n_resamples=args.resamples, method="percentile", random_state=0)
        return r.confidence_interval.low, r.confidence_interval.high

    t_scipy, ci_scipy = best_of(scipy_ci, args.repeats)

    three = {name: scores for name in ("exact_match", "token_f1", "rouge_l")}
    evaluator = MultiMetricEvaluator(metrics=["exact_match"], n_resamples=args.resamples)
    t_three, _ = best_of(lambda: evaluator.summarize(three), args.repeats)
    t_loop3 = 3 * t_loop

    width = 64
    print(f"bootstrap of {args.n:,} examples x {args.resamples:,} resamples (95% percentile CI), best of {args.repeats}")
    print("-" * width)
    print(f"{'workload':<34}{'Provenir':>10}{'baseline':>10}{'ratio':>9}")
    print(f"{'1 metric vs Python loop':<34}{t_ours * 1e3:>8.1f}ms{t_loop * 1e3:>8.1f}ms{t_loop / t_ours:>8.1f}x")
    print(f"{'1 metric vs scipy.stats.bootstrap':<34}{t_ours * 1e3:>8.1f}ms{t_scipy * 1e3:>8.1f}ms{t_scipy / t_ours:>8.1f}x")
    print(f"{'3 metrics vs 3 Python loops':<34}{t_three * 1e3:>8.1f}ms{t_loop3 * 1e3:>8.1f}ms{t_loop3 / t_three:>8.1f}x")
    print("-" * width)
    print(f"interval  Provenir [{ci_ours[0]:.4f}, {ci_ours[1]:.4f}]  Python loop [{ci_loop[0]:.4f}, {ci_loop[1]:.4f}]  "
          f"SciPy [{ci_scipy[0]:.4f}, {ci_scipy[1]:.4f}]")


if __name__ == "__main__":
    main()
