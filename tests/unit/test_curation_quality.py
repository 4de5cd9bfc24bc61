"""QualityScorer: each component reacts to the problem it names; weights, determinism, filter, bad input."""

from __future__ import annotations

import pytest

from provenir.core.errors import ConfigError
from provenir.data.dataset import JsonlDataset
from provenir.data.quality import DEFAULT_WEIGHTS, QualityScorer, record_prompt_response

GOOD = {"instruction": "Explain what causes ocean tides.",
        "output": "Tides are caused mainly by the Moon's gravity pulling on Earth's oceans, with a smaller pull from the Sun."}


def comp(record, **kwargs):
    return QualityScorer(**kwargs).evaluate(record).components


def test_clean_record_scores_one_with_every_component_visible():
    result = QualityScorer().evaluate(GOOD)
    assert result.score == 1.0
    assert set(result.components) == set(DEFAULT_WEIGHTS)
    assert result.reasons == []


@pytest.mark.parametrize(
    ("output", "component"),
    [
        ("", "non_empty"),
        ("   \n ", "non_empty"),
        ("I'm sorry, but I can't help with that request.", "non_refusal"),
        ("As an AI language model, I cannot provide that.", "non_refusal"),
        ("the tide goes in and out " * 12, "repetition"),
        ("Tides are caused by the Moonâ€™s gravity; itâ€™s a pull on the oceans.", "printable"),
        ("Tides \x00\x01\x02 come \x03 from gravity\x04.", "printable"),
        ("Explain what causes ocean tides.", "non_echo"),
        ("12 34 56 78 90 13 35 57 79 91 ## %% $$ ^^ 11 22 33 44 55 66 77 88 99 00 1", "alpha"),
    ],
)
def test_each_problem_lowers_its_component_and_the_score(output, component):
    record = {**GOOD, "output": output}
    result = QualityScorer().evaluate(record)
    assert result.components[component] < 0.5, result
    assert result.score < 0.7
    assert any(reason.startswith(component) for reason in result.reasons)
    others = {k: v for k, v in result.components.items() if k not in (component, "length", "non_empty", "alpha")}
    assert all(v == 1.0 for v in others.values()), others


def test_length_bounds_and_short_numeric_answers():
    assert QualityScorer().score({"instruction": "What is 2 + 2?", "output": "4"}) == 1.0
    res = QualityScorer(min_chars=10).evaluate({"instruction": "What is 2 + 2?", "output": "4"})
    assert res.components["length"] == pytest.approx(0.1)
    long = QualityScorer(max_chars=100).evaluate({**GOOD, "output": "word " * 30})
    assert 0 < long.components["length"] < 1  # 149 chars: 1 - 49/100


def test_weights_change_the_score_and_zero_weight_disables_a_component():
    record = {"instruction": "What is 2 + 2?", "output": "4"}
    default = QualityScorer(min_chars=4).score(record)
    heavier = QualityScorer(min_chars=4, weights={"length": 5.0}).score(record)
    ignored = QualityScorer(min_chars=4, weights={"length": 0.0}).score(record)
    assert heavier < default < ignored == 1.0
    refusal = {**GOOD, "output": "I'm sorry, but I cannot help with that."}
    assert QualityScorer().score(refusal) == 0.0
    assert QualityScorer(weights={"non_refusal": 0}).score(refusal) == 1.0


def test_arithmetic_aggregation_is_the_weighted_mean():
    record = {**GOOD, "output": ""}
    scorer = QualityScorer(aggregation="arithmetic")
    comps = scorer.evaluate(record).components
    assert scorer.score(record) == pytest.approx(sum(comps.values()) / len(comps), abs=1e-6)


def test_scores_are_deterministic_and_in_range():
    records = [GOOD, {**GOOD, "output": "the tide " * 9}, {"prompt": "Hi", "completion": "Hello! How can I help?"},
               {"text": "Raw pretraining text about tides and the moon."}]
    first = [QualityScorer().score(r) for r in records]
    assert first == [QualityScorer().score(r) for r in records]
    assert all(0.0 <= s <= 1.0 for s in first)


def test_record_shapes():
    msgs = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q1"},
                         {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
                         {"role": "assistant", "content": "A2"}]}
    assert record_prompt_response(msgs) == ("Q1\nQ2", "A2")
    assert record_prompt_response({"instruction": "Do", "input": "this", "output": "done"}) == ("Do\n\nthis", "done")
    assert record_prompt_response({"prompt": "p"}) == ("p", "")
    assert record_prompt_response({"text": "t"}) == ("", "t")


@pytest.mark.parametrize("record", [{"instruction": "x", "output": 5}, {"foo": "bar"}, {"messages": "nope"}, ["a"]])
def test_unreadable_records_score_zero_with_a_reason(record):
    result = QualityScorer().evaluate(record)
    assert result.score == 0.0
    assert result.reasons[0].startswith("unreadable:")


def test_filter_keeps_order_and_threshold():
    records = [GOOD, {**GOOD, "output": ""}, {"instruction": "Name a colour.", "output": "Blue is a colour."}]
    kept = QualityScorer().filter(JsonlDataset.from_records(records), threshold=0.5)
    assert kept.records == [records[0], records[2]]
    assert len(QualityScorer().filter(JsonlDataset.from_records(records), 0.0)) == 3
    with pytest.raises(ConfigError):
        QualityScorer().filter(JsonlDataset.from_records(records), 1.5)


@pytest.mark.parametrize(
    "kwargs",
    [{"weights": {"nope": 1}}, {"weights": {"length": -1}}, {"weights": {k: 0 for k in DEFAULT_WEIGHTS}},
     {"min_chars": 10, "max_chars": 5}, {"aggregation": "median"}],
)
def test_bad_configuration_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        QualityScorer(**kwargs)


def test_checker_importable_from_quality():
    from provenir.data.decontamination import SemanticDecontaminationChecker as Direct
    from provenir.data.quality import SemanticDecontaminationChecker

    assert SemanticDecontaminationChecker is Direct
