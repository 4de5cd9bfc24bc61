"""RLAIF with the stub backend and the stub judge: iterations, lineage, pairs, the gate, determinism."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError, DataError
from provenir.core.hashing import sha256_bytes
from provenir.core.run import verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.eval.harness import MultiMetricEvaluator
from provenir.eval.judge import Preference, StubJudge
from provenir.train import get_backend
from provenir.train.rlaif import (
    CANDIDATES_FILE,
    ITERATION_FILE,
    PREFERENCES_FILE,
    RLAIFConfig,
    RLAIFIteration,
    RLAIFPipeline,
    StubPolicy,
    rank_candidates,
)

TRAIN = [{"instruction": f"Copy the number {i:04d} exactly", "output": f"{i:04d}"} for i in range(6)]
EVAL = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(100, 110)]


def _pipeline(store_root, *, seed=7, rlaif=None, **kwargs):
    cfg = RunConfig(name="rl", seed=seed, storage_root=str(store_root))
    return RLAIFPipeline(StubJudge(), get_backend("stub"), cfg, rlaif or RLAIFConfig(), **kwargs)


def _data():
    return JsonlDataset.from_records(TRAIN), JsonlDataset.from_records(EVAL)


# -- config ----------------------------------------------------------------------------------------


def test_config_defaults_are_the_contracts():
    cfg = RLAIFConfig()
    assert (cfg.n_iterations, cfg.responses_per_prompt, cfg.regression_tolerance) == (3, 4, 0.05)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_iterations", 0, "n_iterations must be >= 1"),
        ("responses_per_prompt", 1, "responses_per_prompt must be >= 2"),
        ("regression_tolerance", -0.01, "regression_tolerance must be >= 0"),
        ("min_confidence", 1.5, "min_confidence must be within [0, 1]"),
    ],
)
def test_config_rejects_bad_values_with_clear_messages(field, value, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RLAIFConfig(**{field: value})


def test_config_forbids_unknown_keys():
    with pytest.raises(ValidationError, match="extra"):
        RLAIFConfig(iterations=2)


def test_primary_metric_must_be_an_evaluator_metric(tmp_path):
    with pytest.raises(ConfigError, match="primary_metric 'bleu'"):
        _pipeline(tmp_path, rlaif=RLAIFConfig(primary_metric="bleu"),
                  evaluator=MultiMetricEvaluator(metrics=["exact_match"]))


# -- the loop --------------------------------------------------------------------------------------


def test_three_iterations_chain_their_provenance(tmp_path):
    pipeline = _pipeline(tmp_path)
    iterations = pipeline.run(*_data())
    assert [it.iteration for it in iterations] == [1, 2, 3]
    assert all(isinstance(it, RLAIFIteration) and not it.regressed for it in iterations)
    ids = [it.manifest.run_id for it in iterations]
    assert iterations[0].manifest.provenance == []
    assert iterations[1].manifest.provenance == [ids[0]]
    assert iterations[2].manifest.provenance == [ids[1]]
    assert pipeline.store.ancestors(ids[2]) == [ids[1], ids[0]]
    assert pipeline.store.descendants(ids[0]) == sorted(ids[1:])
    for it in iterations:
        assert it.manifest.status == "completed"
        assert it.manifest.metrics["rlaif_iteration"] == it.iteration
        assert it.manifest.metrics["rlaif_regressed"] is False
        assert verify_run(pipeline.store, it.manifest.run_id).ok
    # sampling seeds differ per iteration and are recorded
    seeds = [it.manifest.metrics["rlaif_generation_seed"] for it in iterations]
    assert len(set(seeds)) == 3 and seeds == [pipeline.generation_seed(i) for i in (1, 2, 3)]


def test_pairs_artifact_has_judge_identity_and_rationale(tmp_path):
    pipeline = _pipeline(tmp_path, rlaif=RLAIFConfig(n_iterations=1))
    (it,) = pipeline.run(*_data())
    store = pipeline.store
    text = store.read_text(it.manifest.run_id, PREFERENCES_FILE)
    pairs = [json.loads(line) for line in text.splitlines()]
    assert len(pairs) == it.preference_count == it.manifest.metrics["rlaif_preference_pairs"]
    assert it.preference_count + sum(it.dropped.values()) == len(TRAIN)
    assert it.manifest.artifacts[PREFERENCES_FILE] == sha256_bytes(text.encode("utf-8"))
    assert it.manifest.dataset_hash == JsonlDataset(pairs).hash()  # the run trained on this file
    assert it.manifest.inputs["judge"]["identity"] == StubJudge().identity
    judge = StubJudge()
    for pair in pairs:
        assert pair["judge"] == judge.identity
        assert pair["rationale"].startswith("heuristic quality")
        assert pair["chosen"] != pair["rejected"]
        # the stub judge really prefers the chosen answer
        assert judge.quality(pair["prompt"], pair["chosen"]) > judge.quality(pair["prompt"], pair["rejected"])
        assert pair["prompt"] == TRAIN[pair["prompt_index"]]["instruction"]
    candidates = store.read_text(it.manifest.run_id, CANDIDATES_FILE).splitlines()
    assert len(candidates) == len(TRAIN) * 4
    summary = json.loads(store.read_text(it.manifest.run_id, ITERATION_FILE))
    assert summary["adopted"] is True and summary["preference_pairs"] == it.preference_count


def test_start_run_is_the_first_parent_and_its_adapter_is_continued(tmp_path):
    store = ArtifactStore(tmp_path)
    cfg = RunConfig(name="sft", storage_root=str(tmp_path))
    sft = get_backend("stub").train_sft(cfg, JsonlDataset.from_records(TRAIN), store=store)
    calls = []

    class Recording:
        name = "stub"

        def train_dpo(self, config, data, evaluation=None, **kwargs):
            calls.append(kwargs.get("init_adapter"))
            return get_backend("stub").train_dpo(config, data, evaluation, **kwargs)

    pipeline = RLAIFPipeline(StubJudge(), Recording(), cfg, RLAIFConfig(n_iterations=2),
                             store=store, start_run_id=sft.manifest.run_id)
    first, second = pipeline.run(*_data())
    assert first.manifest.provenance == [sft.manifest.run_id]
    assert store.ancestors(second.manifest.run_id) == [first.manifest.run_id, sft.manifest.run_id]
    assert calls == [sft.adapter_path, first.adapter_path]


def test_unknown_start_run_is_refused(tmp_path):
    with pytest.raises(Exception, match="no manifest"):
        _pipeline(tmp_path, start_run_id="20260101T000000000000Z-missing-00000000").run(*_data())


def test_same_seed_same_pairs_other_seed_other_pairs(tmp_path):
    def pairs(root, seed):
        pipeline = _pipeline(root, seed=seed, rlaif=RLAIFConfig(n_iterations=2))
        return [pipeline.store.read_text(it.manifest.run_id, PREFERENCES_FILE) for it in pipeline.run(*_data())]

    first, again, other = pairs(tmp_path / "a", 7), pairs(tmp_path / "b", 7), pairs(tmp_path / "c", 8)
    assert first == again
    assert first[0] != first[1]  # a new seed each iteration
    assert first != other


# -- the regression gate ---------------------------------------------------------------------------


class ScriptedPolicy:
    """Answers correctly on the first ``correct`` eval prompts; candidates from the stub policy."""

    def __init__(self, correct: int):
        self.correct = correct
        self.stub = StubPolicy()

    def sample(self, prompts, *, n, seed):
        return self.stub.sample(prompts, n=n, seed=seed)

    def predict(self, prompts):
        answers = {r["instruction"]: r["output"] for r in EVAL}
        return [answers[user] if i < self.correct else "wrong" for i, (_, user) in enumerate(prompts)]


def _scripted(correct_per_policy):
    made = []

    def factory(config, adapter):
        made.append(adapter)
        return ScriptedPolicy(correct_per_policy[len(made) - 1])

    return factory, made


def test_regression_stops_the_loop_and_the_adapter_is_not_adopted(tmp_path):
    # policies: start 5/10, after iteration 1 8/10, after iteration 2 6/10 (a 0.2 drop > 0.05)
    factory, made = _scripted([5, 8, 6, 10])
    calls = []

    class Recording:
        name = "stub"

        def train_dpo(self, config, data, evaluation=None, **kwargs):
            calls.append(kwargs.get("init_adapter"))
            return get_backend("stub").train_dpo(config, data, evaluation, **kwargs)

    cfg = RunConfig(name="rl", storage_root=str(tmp_path))
    pipeline = RLAIFPipeline(StubJudge(), Recording(), cfg, RLAIFConfig(n_iterations=4), policy_factory=factory)
    iterations = pipeline.run(*_data())
    assert [it.regressed for it in iterations] == [False, True]
    assert len(made) == 3 and len(calls) == 2  # no third round
    assert pipeline.baseline.metrics["exact_match"].mean == pytest.approx(0.5)
    first, second = iterations
    assert first.eval_result.metrics["exact_match"].mean == pytest.approx(0.8)
    assert second.eval_result.metrics["exact_match"].mean == pytest.approx(0.6)
    assert second.best_before == pytest.approx(0.8)
    assert second.manifest.metrics["rlaif_regressed"] is True
    summary = json.loads(pipeline.store.read_text(second.manifest.run_id, ITERATION_FILE))
    assert summary["adopted"] is False and summary["regressed"] is True
    assert second.manifest.provenance == [first.manifest.run_id]
    assert calls == [None, first.adapter_path]


def test_a_drop_within_tolerance_is_adopted_and_best_so_far_is_kept(tmp_path):
    # 0.5 -> 0.8 -> 0.75 (within 0.05 of 0.8: adopted) -> 0.7 (0.1 below the best 0.8: regressed)
    evaluator = MultiMetricEvaluator(metrics=["exact_match"])
    records = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(100, 120)]
    answers = {r["instruction"]: r["output"] for r in records}
    scores = iter([10, 16, 15, 14, 20])

    class Policy:
        def __init__(self, correct):
            self.correct, self.stub = correct, StubPolicy()

        def sample(self, prompts, *, n, seed):
            return self.stub.sample(prompts, n=n, seed=seed)

        def predict(self, prompts):
            return [answers[u] if i < self.correct else "x" for i, (_, u) in enumerate(prompts)]

    pipeline = _pipeline(tmp_path, rlaif=RLAIFConfig(n_iterations=5), evaluator=evaluator,
                         policy_factory=lambda config, adapter: Policy(next(scores)))
    iterations = pipeline.run(JsonlDataset.from_records(TRAIN), JsonlDataset.from_records(records))
    assert [it.regressed for it in iterations] == [False, False, True]
    assert [it.best_before for it in iterations] == pytest.approx([0.5, 0.8, 0.8])


# -- pairs from judgements -------------------------------------------------------------------------


class LengthJudge:
    """Prefers the longer answer; equal lengths tie."""

    identity = "test:length"

    def __init__(self, confidence=0.9):
        self.confidence = confidence
        self.calls = 0

    def score_pairwise(self, prompt, a, b):
        self.calls += 1
        if len(a) == len(b):
            return Preference("tie", 0.5, "same length")
        return Preference("a" if len(a) > len(b) else "b", self.confidence, f"len {len(a)} vs {len(b)}")

    def score_rubric(self, prompt, response, criteria):
        return {c: 0.5 for c in criteria}


def test_rank_candidates_counts_wins_and_compares_distinct_texts_once():
    judge = LengthJudge()
    scores, verdicts = rank_candidates(judge, "p", ["aa", "a", "aaaa", "aa"])
    assert judge.calls == 3  # the duplicate "aa" is not compared again
    assert scores[3] == -1.0
    assert max(range(4), key=lambda i: scores[i]) == 2 and min(range(3), key=lambda i: scores[i]) == 1
    assert verdicts[(0, 2)].preferred == "b"


def test_ties_low_confidence_and_identical_candidates_are_dropped_and_counted(tmp_path):
    class Same(StubPolicy):
        def sample(self, prompts, *, n, seed):
            return [["same"] * n if i == 0 else [f"{'x' * (k + 1)}" for k in range(n)]
                    for i, _ in enumerate(prompts)]

    pipeline = RLAIFPipeline(
        LengthJudge(confidence=0.6), get_backend("stub"), RunConfig(name="rl", storage_root=str(tmp_path)),
        RLAIFConfig(n_iterations=1, min_confidence=0.5), policy_factory=lambda c, a: Same(),
    )
    (it,) = pipeline.run(*_data())
    assert it.dropped == {"identical": 1, "tie": 0, "low_confidence": 0, "judge_error": 0}
    assert it.preference_count == len(TRAIN) - 1

    strict = RLAIFPipeline(
        LengthJudge(confidence=0.6), get_backend("stub"), RunConfig(name="rl", storage_root=str(tmp_path)),
        RLAIFConfig(n_iterations=1, min_confidence=0.7), policy_factory=lambda c, a: Same(),
    )
    with pytest.raises(DataError, match="no preference pairs"):
        strict.run(*_data())


def test_a_judge_that_always_ties_gives_no_pairs(tmp_path):
    class Tie(LengthJudge):
        def score_pairwise(self, prompt, a, b):
            return Preference("tie", 0.5, "cannot tell")

    pipeline = RLAIFPipeline(Tie(), get_backend("stub"), RunConfig(name="rl", storage_root=str(tmp_path)),
                             RLAIFConfig(n_iterations=1))
    with pytest.raises(DataError, match=r"'tie': 6"):
        pipeline.run(*_data())


def test_multi_turn_and_text_records_are_refused(tmp_path):
    multi = JsonlDataset.from_records([{"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"}]}])
    with pytest.raises(DataError, match="single-turn prompts"):
        _pipeline(tmp_path).run(multi, JsonlDataset.from_records(EVAL))
    with pytest.raises(DataError, match="not 'text'"):
        _pipeline(tmp_path).run(JsonlDataset.from_records([{"text": "x"}]), JsonlDataset.from_records(EVAL))


def test_eval_set_without_references_fails_before_any_training(tmp_path):
    pipeline = _pipeline(tmp_path)
    with pytest.raises(DataError, match="no 'output' field"):
        pipeline.run(JsonlDataset.from_records(TRAIN), JsonlDataset.from_records([{"prompt": "x"}]))
    assert ArtifactStore(tmp_path).list_runs() == []


def test_stub_policy_is_deterministic_and_varied():
    policy = StubPolicy()
    prompts = [(None, "Copy 4071 now"), ("sys", "Name a colour")]
    first = policy.sample(prompts, n=4, seed=3)
    assert first == policy.sample(prompts, n=4, seed=3)
    assert first != policy.sample(prompts, n=4, seed=4)
    assert all(len(set(c)) > 1 for c in first)
    assert policy.predict(prompts) == ["now", "colour"]


def test_a_failing_judge_call_is_retried_then_drops_its_pair_not_the_round(tmp_path):
    class Flaky(LengthJudge):
        """Fails twice on every comparison of prompt 0003 (then succeeds), always on prompt 0004."""

        def __init__(self):
            super().__init__()
            self.failures: dict[str, int] = {}

        def score_pairwise(self, prompt, a, b):
            for marker, limit in (("0003", 2), ("0004", 10**9)):
                if marker in prompt and self.failures.get(prompt + a + b, 0) < limit:
                    self.failures[prompt + a + b] = self.failures.get(prompt + a + b, 0) + 1
                    raise ConnectionError(f"judge endpoint reset (call {self.failures[prompt + a + b]})")
            return super().score_pairwise(prompt, a, b)

    judge = Flaky()
    pipeline = RLAIFPipeline(
        judge, get_backend("stub"), RunConfig(name="rl", storage_root=str(tmp_path)),
        RLAIFConfig(n_iterations=1, judge_retries=2), policy_factory=lambda c, a: StubPolicy(),
    )
    (it,) = pipeline.run(*_data())
    assert it.dropped["judge_error"] == 1  # 0004 kept failing; 0003 succeeded on its third try
    assert it.preference_count == len(TRAIN) - 1 - it.dropped["identical"] - it.dropped["tie"]
    errors = pipeline.judge_errors
    assert len(errors) == 1 and errors[0]["prompt_index"] == 4
    assert errors[0]["error"].startswith("ConnectionError: judge endpoint reset")
    assert it.manifest.metrics["rlaif_dropped_judge_error"] == 1
    report = json.loads(pipeline.store.read_text(it.manifest.run_id, "rlaif/iteration.json"))
    assert report["judge_errors"][0]["prompt_index"] == 4 and report["dropped"]["judge_error"] == 1

    with pytest.raises(Exception):
        RLAIFConfig(judge_retries=-1)
