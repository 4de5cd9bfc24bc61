"""Judges without a network: Preference, StubJudge, JSON repair, position-bias combination, CachedJudge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provenir.core.errors import ConfigError
from provenir.eval.judge import (
    CachedJudge,
    JudgeError,
    JudgeResponseError,
    LLMJudge,
    Preference,
    StubJudge,
    judge_identity,
)
from provenir.eval.judge import combine_orders, parse_json_object

pytestmark = pytest.mark.timeout(120)

WORKER = Path(__file__).resolve().parents[1] / "eval_support" / "judge_cache_worker.py"


def test_preference_validates():
    assert Preference("a", 1, "x").confidence == 1.0
    with pytest.raises(JudgeError, match="'a', 'b' or 'tie'"):
        Preference("A", 0.5, "")
    with pytest.raises(JudgeError, match=r"\[0, 1\]"):
        Preference("a", 1.5, "")


def test_stub_judge_is_deterministic_symmetric_and_a_judge():
    judge = StubJudge()
    assert isinstance(judge, LLMJudge)
    prompt = "What is the capital of France?"
    good, bad = "The capital of France is Paris.", "I like turtles."
    first = judge.score_pairwise(prompt, good, bad)
    assert first == judge.score_pairwise(prompt, good, bad)
    assert first.preferred == "a" and 0.5 < first.confidence <= 1.0
    swapped = judge.score_pairwise(prompt, bad, good)
    assert swapped.preferred == "b" and swapped.confidence == first.confidence
    tie = judge.score_pairwise(prompt, good, good)
    assert tie.preferred == "tie" and tie.confidence == 0.5
    assert judge.score_pairwise(prompt, "", "").preferred == "tie"
    scores = judge.score_rubric(prompt, good, ["mentions Paris", "is polite"])
    assert list(scores) == ["mentions Paris", "is polite"]
    assert all(0 <= v <= 1 for v in scores.values())
    assert scores["mentions Paris"] > scores["is polite"]
    assert judge.score_rubric(prompt, "", ["mentions Paris"]) == {"mentions Paris": 0.0}
    with pytest.raises(ConfigError, match="non-empty list"):
        judge.score_rubric(prompt, good, [])


@pytest.mark.parametrize(
    "reply",
    [
        '{"preferred": "A", "confidence": 0.9, "rationale": "x"}',
        '```json\n{"preferred": "A", "confidence": 0.9, "rationale": "x"}\n```',
        'Sure! Here is my verdict: {"preferred": "A", "confidence": 0.9, "rationale": "x {y}"} Hope it helps.',
        '{"preferred": "A", "confidence": 0.9, "rationale": "x",}',
        "{'preferred': 'A', 'confidence': 0.9, 'rationale': 'x'}",
    ],
)
def test_json_repair(reply):
    data = parse_json_object(reply)
    assert data["preferred"] == "A" and data["confidence"] == 0.9


@pytest.mark.parametrize("reply", ["", "A is better", "[1, 2]", '{"preferred": "A", "confidence": '])
def test_json_repair_gives_up_clearly(reply):
    with pytest.raises(JudgeResponseError, match="not a JSON object"):
        parse_json_object(reply)


def test_combine_orders():
    assert combine_orders(("a", 0.8, "r1"), ("a", 0.6, "r2")) == Preference("a", 0.7, "r1")
    disagreement = combine_orders(("a", 0.8, "r1"), ("b", 0.6, "r2"))
    assert disagreement.preferred == "tie" and disagreement.confidence == pytest.approx(0.3)
    assert "position bias" in disagreement.rationale
    assert combine_orders(("a", 0.8, ""), ("tie", 0.9, "")).preferred == "tie"


def test_cached_judge_hits_and_misses(tmp_path):
    calls = []

    class Counting(StubJudge):
        identity = "counting:v1"

        def score_pairwise(self, prompt, a, b):
            calls.append((prompt, a, b))
            return super().score_pairwise(prompt, a, b)

    judge = CachedJudge(inner=Counting(), cache_dir=tmp_path)
    assert isinstance(judge, LLMJudge)
    first = judge.score_pairwise("p", "a long answer p", "b")
    assert judge.score_pairwise("p", "a long answer p", "b") == first
    assert judge.stats() == {"hits": 1, "misses": 1, "corrupt": 0}
    assert len(calls) == 1
    judge.score_pairwise("p", "b", "a long answer p")  # order is part of the key
    assert judge.misses == 2 and len(calls) == 2
    # a new instance (another process, a later run) hits the same file
    again = CachedJudge(inner=Counting(), cache_dir=tmp_path)
    assert again.score_pairwise("p", "a long answer p", "b") == first and again.hits == 1
    # a different judge identity never reads these entries
    other = CachedJudge(inner=StubJudge(), cache_dir=tmp_path)
    other.score_pairwise("p", "a long answer p", "b")
    assert other.misses == 1
    assert judge_identity(judge) == "counting:v1"
    rubric = judge.score_rubric("p", "r", ["c1", "c2"])
    assert judge.score_rubric("p", "r", ["c1", "c2"]) == rubric
    assert judge.hits == 2


def test_cached_judge_key_is_sha256_of_identity_method_inputs(tmp_path):
    from provenir.core.hashing import sha256_json

    judge = CachedJudge(inner=StubJudge(), cache_dir=tmp_path)
    judge.score_rubric("p", "r", ["c"])
    key = sha256_json(
        {"format": 1, "judge": StubJudge().identity, "method": "score_rubric",
         "inputs": {"prompt": "p", "response": "r", "criteria": ["c"]}}
    )
    entry = json.loads((tmp_path / key[:2] / f"{key}.json").read_text())
    assert entry["key"] == key and entry["method"] == "score_rubric"


def test_cached_judge_recovers_from_a_corrupt_entry(tmp_path):
    judge = CachedJudge(inner=StubJudge(), cache_dir=tmp_path)
    value = judge.score_rubric("p", "r", ["c"])
    (path,) = list(tmp_path.rglob("*.json"))
    path.write_text('{"key": "trunc')
    fresh = CachedJudge(inner=StubJudge(), cache_dir=tmp_path)
    assert fresh.score_rubric("p", "r", ["c"]) == value
    assert fresh.stats() == {"hits": 0, "misses": 1, "corrupt": 1}
    assert fresh.score_rubric("p", "r", ["c"]) == value and fresh.hits == 1
    with pytest.raises(ConfigError, match="needs a judge"):
        CachedJudge(inner=object(), cache_dir=tmp_path)


def test_cached_judge_under_four_processes(tmp_path):
    n_keys, rounds = 60, 3
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path), str(n_keys), str(seed), str(rounds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in range(4)
    ]
    stats = []
    for proc in procs:
        out, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
        stats.append(json.loads(out))
    assert all(s["corrupt"] == 0 for s in stats), stats
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 2 * n_keys
    assert not [p for p in tmp_path.rglob("*.tmp")]
    for path in files:
        entry = json.loads(path.read_text())
        assert entry["key"] == path.stem
    after = CachedJudge(inner=StubJudge(), cache_dir=tmp_path)
    for k in range(n_keys):
        after.score_pairwise(f"prompt {k}", f"answer {k} prompt", "other")
        after.score_rubric(f"prompt {k}", f"answer {k}", ["clarity", "prompt"])
    assert after.stats() == {"hits": 2 * n_keys, "misses": 0, "corrupt": 0}
