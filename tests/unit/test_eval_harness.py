"""MultiMetricEvaluator: metric values, bootstrap intervals (vs SciPy, coverage), paired comparison."""

from __future__ import annotations

import numpy as np
import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.data.dataset import JsonlDataset
from provenir.eval.harness import (
    DEFAULT_METRICS,
    EvalResult,
    MetricResult,
    MultiMetricEvaluator,
    bootstrap_ci,
    normalize_answer,
)
from provenir.rewards.primitives import FormatReward, WeightedSumReward, ExactMatchReward

pytestmark = pytest.mark.timeout(60)


def _ds(*outputs):
    return JsonlDataset.from_records([{"instruction": f"q{i}", "output": o} for i, o in enumerate(outputs)])


def test_default_metrics_and_reference_field():
    ev = MultiMetricEvaluator()
    assert ev.metric_names == list(DEFAULT_METRICS)
    result = ev.evaluate(_ds("Paris", "5"), ["paris.", "6"])
    assert isinstance(result, EvalResult)
    assert result.metrics["exact_match"].mean == 0.5
    assert result.metrics["exact_match"].n == 2
    assert result.per_example["exact_match"] == [1.0, 0.0]

    custom = MultiMetricEvaluator(metrics=["exact_match"], reference_field="answer")
    ds = JsonlDataset.from_records([{"answer": "x"}, {"answer": "y"}])
    assert custom.evaluate(ds, ["x", "x"]).means() == {"exact_match": 0.5}


def test_normalisation_rules():
    assert normalize_answer("  The  Eiffel Tower! ") == "eiffel tower"
    assert normalize_answer("ＡＢＣ") == "abc"  # NFKC: full-width letters
    ev = MultiMetricEvaluator(metrics=["exact_match", "token_f1", "contains"])
    scores = ev.score(_ds("the cat sat", "Paris", "", "42"), ["A cat sat.", "It is Paris, France", "", ""])
    assert scores["exact_match"].tolist() == [1.0, 0.0, 1.0, 0.0]
    # token F1: "it is paris france" vs "paris": p=1/4, r=1 -> 0.4
    assert scores["token_f1"].tolist() == pytest.approx([1.0, 0.4, 1.0, 0.0])
    assert scores["contains"].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_contains_is_word_bounded_and_multi_reference():
    ev = MultiMetricEvaluator(metrics=["contains", "exact_match"])
    ds = JsonlDataset.from_records([{"output": "cat"}, {"output": ["NYC", "New York City"]}])
    scores = ev.score(ds, ["concatenate", "new york city"])
    assert scores["contains"].tolist() == [0.0, 1.0]
    assert scores["exact_match"].tolist() == [0.0, 1.0]


def test_rouge_chrf_bleu_values():
    ev = MultiMetricEvaluator(metrics=["rouge_l", "chrf", "bleu"])
    scores = ev.score(_ds("the cat sat on the mat", "hello world"), ["the cat sat on the mat", "goodbye moon"])
    assert scores["rouge_l"].tolist() == pytest.approx([1.0, 0.0])
    assert scores["chrf"][0] == pytest.approx(1.0)
    assert scores["bleu"][0] == pytest.approx(1.0)
    assert 0.0 <= scores["chrf"][1] < 0.3 and scores["bleu"][1] < 0.2
    import sacrebleu

    expected = sacrebleu.sentence_chrf("goodbye moon", ["hello world"]).score / 100
    assert scores["chrf"][1] == pytest.approx(expected)


def test_regex_and_reward_primitives_as_metrics():
    ev = MultiMetricEvaluator(
        metrics={"digits": "regex:^\\d+$", "fmt": FormatReward(r"<answer>.*</answer>"),
                 "mix": WeightedSumReward([(ExactMatchReward(), 0.5), (FormatReward(r"\d"), 0.5)])}
    )
    scores = ev.score(_ds("12", "12", "x"), ["12", "<answer>12</answer>", "x"])
    assert scores["digits"].tolist() == [1.0, 0.0, 0.0]
    assert scores["fmt"].tolist() == [0.0, 1.0, 0.0]
    assert scores["mix"].tolist() == [1.0, 0.5, 0.5]


def test_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown metric 'nope'"):
        MultiMetricEvaluator(metrics=["nope"])
    with pytest.raises(ConfigError, match="invalid regular expression"):
        MultiMetricEvaluator(metrics=["regex:("])
    with pytest.raises(ConfigError, match="confidence"):
        MultiMetricEvaluator(confidence=1.5)
    with pytest.raises(ConfigError, match="n_resamples"):
        MultiMetricEvaluator(n_resamples=0)
    ev = MultiMetricEvaluator(metrics=["exact_match"])
    with pytest.raises(DataError, match="2 predictions for 1 records"):
        ev.evaluate(_ds("a"), ["a", "b"])
    with pytest.raises(DataError, match="record 0: no 'output' field"):
        ev.evaluate(JsonlDataset.from_records([{"answer": "a"}]), ["a"])
    with pytest.raises(DataError, match="empty"):
        ev.evaluate(_ds(), [])
    with pytest.raises(DataError, match="prediction 0"):
        ev.evaluate(_ds("a"), [3])
    with pytest.raises(DataError, match="must be finite"):
        MultiMetricEvaluator(metrics={"bad": lambda p, r: float("nan")}).evaluate(_ds("a"), ["a"])


def test_none_prediction_is_an_empty_prediction():
    ev = MultiMetricEvaluator(metrics=["exact_match"])
    assert ev.evaluate(_ds("b", ""), [None, None]).per_example["exact_match"] == [0.0, 1.0]


def test_single_example_interval_collapses():
    result = MultiMetricEvaluator(metrics=["token_f1"]).evaluate(_ds("x y"), ["x"])
    r = result.metrics["token_f1"]
    assert r == MetricResult(mean=pytest.approx(2 / 3), ci_lower=pytest.approx(2 / 3), ci_upper=pytest.approx(2 / 3), n=1)


def test_interval_is_seeded_and_configurable():
    rng = np.random.default_rng(1)
    outputs = ["yes"] * 200
    preds = ["yes" if x else "no" for x in rng.random(200) < 0.7]
    a = MultiMetricEvaluator(metrics=["exact_match"], seed=3).evaluate(_ds(*outputs), preds)
    b = MultiMetricEvaluator(metrics=["exact_match"], seed=3).evaluate(_ds(*outputs), preds)
    c = MultiMetricEvaluator(metrics=["exact_match"], seed=4).evaluate(_ds(*outputs), preds)
    wide = MultiMetricEvaluator(metrics=["exact_match"], seed=3, confidence=0.99).evaluate(_ds(*outputs), preds)
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics
    ra, rw = a.metrics["exact_match"], wide.metrics["exact_match"]
    assert ra.ci_lower < ra.mean < ra.ci_upper
    assert rw.ci_lower < ra.ci_lower and rw.ci_upper > ra.ci_upper
    assert a.n_resamples == 1000 and a.confidence == 0.95


@pytest.mark.parametrize("dist", ["bernoulli", "beta"])
def test_bootstrap_matches_scipy(dist):
    from scipy.stats import bootstrap

    rng = np.random.default_rng(7)
    data = (rng.random(500) < 0.3).astype(float) if dist == "bernoulli" else rng.beta(2, 5, size=500)
    ours = bootstrap_ci(data, n_resamples=20_000, confidence=0.95, seed=11)
    ref = bootstrap(
        (data,), np.mean, n_resamples=20_000, confidence_level=0.95, method="percentile", random_state=12
    ).confidence_interval
    se = data.std(ddof=1) / np.sqrt(len(data))
    # both are Monte-Carlo estimates of the same percentile interval: agree to a small share of a SE
    assert abs(ours[0] - ref.low) < 0.06 * se
    assert abs(ours[1] - ref.high) < 0.06 * se


def test_bootstrap_coverage_near_nominal():
    """Over 400 simulated data sets, the 95% interval covers the true mean ~95% of the time."""
    rng = np.random.default_rng(2024)
    true_p, n, trials = 0.3, 200, 400
    data = (rng.random((trials, n)) < true_p).astype(float)
    ev = MultiMetricEvaluator(metrics=["exact_match"], n_resamples=1000)
    covered = 0
    for t in range(trials):
        result = ev.summarize({"m": data[t]}).metrics["m"]
        covered += result.ci_lower <= true_p <= result.ci_upper
    coverage = covered / trials
    # binomial SE of the coverage estimate at 0.95 with 400 trials is ~0.011
    assert 0.915 <= coverage <= 0.98, coverage


def test_paired_comparison_detects_improvement():
    rng = np.random.default_rng(0)
    refs = [str(i) for i in range(300)]
    correct_a = rng.random(300) < 0.5
    correct_b = correct_a | (rng.random(300) < 0.3)  # B fixes some of A's errors, breaks none
    preds_a = [r if c else "wrong" for r, c in zip(refs, correct_a)]
    preds_b = [r if c else "wrong" for r, c in zip(refs, correct_b)]
    ev = MultiMetricEvaluator(metrics=["exact_match"])
    cmp = ev.compare(_ds(*refs), preds_a, preds_b).metrics["exact_match"]
    assert cmp.difference == pytest.approx(correct_b.mean() - correct_a.mean())
    assert cmp.b_better and not cmp.a_better and cmp.p_value < 0.01
    assert cmp.ci_lower > 0
    # the paired interval is narrower than the unpaired one (differences share the examples)
    unpaired = ev.evaluate(_ds(*refs), preds_b).metrics["exact_match"]
    assert cmp.ci_upper - cmp.ci_lower < unpaired.ci_upper - unpaired.ci_lower
    same = ev.compare(_ds(*refs), preds_a, preds_a).metrics["exact_match"]
    assert same.difference == 0 and same.ci_lower == same.ci_upper == 0 and same.p_value == 1.0


def test_table_and_dict():
    result = MultiMetricEvaluator(metrics=["exact_match"]).evaluate(_ds("a", "b"), ["a", "c"])
    table = result.table()
    assert "exact_match" in table and "95% CI" in table and "0.5000" in table
    data = result.to_dict(per_example=True)
    assert data["metrics"]["exact_match"]["n"] == 2
    assert data["per_example"]["exact_match"] == [1.0, 0.0]


def test_rouge_l_equals_rouge_score_library():
    from rouge_score import rouge_scorer

    from provenir.eval._metrics import rouge_l
    from provenir.eval._text import tokens

    class Tok:
        def tokenize(self, text):
            return tokens(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Tok())
    rng = np.random.default_rng(5)
    vocab = "alpha beta gamma delta eps zeta eta theta".split()
    for _ in range(50):
        a = " ".join(rng.choice(vocab, rng.integers(1, 12)))
        b = " ".join(rng.choice(vocab, rng.integers(1, 12)))
        assert rouge_l(a, b) == pytest.approx(scorer.score(b, a)["rougeL"].fmeasure)


def test_paired_comparison_single_example():
    cmp = MultiMetricEvaluator(metrics=["exact_match"]).compare(_ds("x"), ["y"], ["x"]).metrics["exact_match"]
    assert cmp.difference == 1.0 and cmp.ci_lower == cmp.ci_upper == 1.0 and cmp.n == 1 and cmp.p_value == 1.0
    assert not cmp.b_better and not cmp.a_better
