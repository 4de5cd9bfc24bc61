"""DataFlywheel: held-out split, scoring sources, variants with provenance, filters, honest held-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenir.data.dataset import JsonlDataset
from provenir.data.flywheel import DataFlywheel, FlywheelConfig, eval_record_id, reference_answer, token_f1

DATA = Path(__file__).resolve().parents[1] / "data" / "curation"


def eval_with_scores(low_every: int = 2) -> JsonlDataset:
    records = JsonlDataset.from_jsonl(DATA / "eval.jsonl").records
    return JsonlDataset([{**r, "score": 0.2 if i % low_every == 0 else 0.95} for i, r in enumerate(records)])


def test_split_is_deterministic_disjoint_and_seeded():
    ev = eval_with_scores()
    fw = DataFlywheel(FlywheelConfig(holdout_fraction=0.3))
    mined, held = fw.split_eval(ev)
    assert (mined, held) == fw.split_eval(ev)
    assert len(mined) + len(held) == len(ev) and held
    assert {r["id"] for r in mined}.isdisjoint({r["id"] for r in held})
    other = DataFlywheel(FlywheelConfig(holdout_fraction=0.3, holdout_seed=7)).split_eval(ev)[1]
    assert {r["id"] for r in other} != {r["id"] for r in held}
    assert DataFlywheel(FlywheelConfig(holdout_fraction=0.0)).split_eval(ev) == (ev.records, [])
    tiny = JsonlDataset(ev.records[:2])
    assert len(DataFlywheel(FlywheelConfig(holdout_fraction=0.01)).split_eval(tiny)[1]) == 1


def test_run_mines_only_failures_and_never_the_heldout_part():
    ev = eval_with_scores()
    cfg = FlywheelConfig(holdout_fraction=0.3, max_variants_per_failure=2)
    fw = DataFlywheel(cfg, semantic=False)
    train = JsonlDataset([{"instruction": "Say hi.", "output": "Hi there!"}])
    out = fw.run(train, ev)
    result = fw.last_result
    held_ids = {eval_record_id(r) for r in result.heldout}
    failing_mined = {r["id"] for r in ev if r["score"] < cfg.min_score_threshold} - held_ids
    assert out.records[0] == train.records[0]
    new = out.records[1:]
    assert new == result.new_records and new
    sources = {r["flywheel"]["source_eval_id"] for r in new}
    assert sources == failing_mined
    assert sources.isdisjoint(held_ids)
    for record in new:
        source = next(r for r in ev if r["id"] == record["flywheel"]["source_eval_id"])
        assert record["output"] == source["output"]  # the reference answer, not a prediction
        assert record["instruction"] != source["instruction"]
        assert record["flywheel"]["eval_score"] == 0.2 and record["flywheel"]["score_source"] == "field"
    per_source = {}
    for record in new:
        per_source[record["flywheel"]["source_eval_id"]] = per_source.get(record["flywheel"]["source_eval_id"], 0) + 1
    assert max(per_source.values()) <= 2
    assert result.report["heldout_ids"] == sorted(held_ids, key=[eval_record_id(r) for r in result.heldout].index)
    again = DataFlywheel(cfg, semantic=False).run(train, ev)
    assert again.records == out.records  # deterministic


def test_scoring_sources():
    fw = DataFlywheel()
    assert fw.score_record({"instruction": "q", "output": "a", "score": 0.4}) == (0.4, "field")
    score, source = fw.score_record({"instruction": "Capital of France?", "output": "Paris",
                                     "prediction": "It is Paris"})
    assert source == "f1" and score == pytest.approx(token_f1("It is Paris", "Paris"))
    assert fw.score_record({"instruction": "q", "output": "a", "score": 3})[0] is None
    assert fw.score_record({"instruction": "q", "output": "a", "score": True})[0] is None
    assert "no 'score' field" in fw.score_record({"instruction": "q", "output": "a"})[1]

    class Judge:
        def score_rubric(self, prompt, response, criteria):
            return {c: 0.25 for c in criteria}

    judged = DataFlywheel(judge=Judge()).score_record({"instruction": "q", "output": "a", "prediction": "b"})
    assert judged == (0.25, "judge")


def test_token_f1_and_reference_answer():
    assert token_f1("The cat sat", "the cat sat") == 1.0
    assert token_f1("dog", "cat") == 0.0
    assert reference_answer({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) == "a"
    assert reference_answer({"prompt": "q", "reference": "gold"}) == "gold"
    assert reference_answer({"prompt": "q"}) is None


def test_unscorable_and_unusable_records_are_reported_not_fatal():
    ev = JsonlDataset([
        {"id": "a", "instruction": "Explain what makes rainbows appear in the sky.", "output": "Light refracts in raindrops.", "prediction": "Clouds."},
        {"id": "b", "instruction": "No score here.", "output": "x"},
        {"id": "c", "prompt": "Prompt without a reference answer", "prediction": "p", "score": 0.1},
        {"id": "d", "instruction": "Bad score", "output": "y", "score": "high"},
    ])
    fw = DataFlywheel(FlywheelConfig(holdout_fraction=0.0), semantic=False)
    out = fw.run(JsonlDataset([]), ev)
    report = fw.last_result.report
    assert {u["id"] for u in report["unscored"]} == {"b", "d"}
    assert report["failures"] == 2
    assert [s["id"] for s in report["skipped_failures"]] == ["c"]
    assert {r["flywheel"]["source_eval_id"] for r in out} == {"a"}
    assert DataFlywheel(semantic=False).run(JsonlDataset([]), JsonlDataset([])).records == []


def test_messages_and_prompt_shapes_keep_their_shape():
    ev = JsonlDataset([
        {"id": "m", "score": 0.0, "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Explain how vaccines train the immune system."},
                                               {"role": "assistant", "content": "They show it a harmless piece of a pathogen."}]},
        {"id": "p", "score": 0.0, "prompt": "Describe how a refrigerator keeps food cold.",
         "completion": "A refrigerant absorbs heat inside and releases it outside."},
    ])
    out = DataFlywheel(FlywheelConfig(holdout_fraction=0.0, max_variants_per_failure=1), semantic=False).run(JsonlDataset([]), ev)
    by_id = {r["flywheel"]["source_eval_id"]: r for r in out}
    msgs = by_id["m"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[-1]["content"] == "They show it a harmless piece of a pathogen."
    assert msgs[1]["content"] != "Explain how vaccines train the immune system."
    assert set(by_id["p"]) == {"prompt", "completion", "flywheel"}


def test_quality_filter_and_train_duplicates():
    ev = JsonlDataset([{"id": "r", "score": 0.1, "instruction": "Explain tides.", "output": ""},
                       {"id": "s", "score": 0.1, "instruction": "Explain why leaves change colour in autumn.",
                        "output": "Chlorophyll breaks down, revealing yellow and red pigments."}])
    fw = DataFlywheel(FlywheelConfig(holdout_fraction=0.0, max_variants_per_failure=2), semantic=False)
    variants, _ = fw.make_variants(fw.find_failures(ev.records)[0])
    train = JsonlDataset([{"instruction": variants[-1]["instruction"], "output": "already here"}])
    out = fw.run(train, ev)
    report = fw.last_result.report
    assert report["skipped_failures"] == [{"id": "r", "reason": "no prompt or no reference answer"}]
    assert report["dropped"].get("duplicate_of_train") == 1
    assert len(out) == 1 + 1


def test_variants_close_to_heldout_items_are_removed():
    base = "Explain why the sky appears blue during the day but red and orange at sunset."
    ev = JsonlDataset([
        {"id": "mine", "score": 0.1, "instruction": base, "output": "Rayleigh scattering of sunlight by air."},
        {"id": "twin", "score": 0.9, "instruction": base + " Be brief.", "output": "Rayleigh scattering of sunlight by air."},
    ])
    fw = DataFlywheel(FlywheelConfig(holdout_fraction=0.0), semantic=False)
    fw.split_eval = lambda ds: ([ds.records[0]], [ds.records[1]])  # the twin is held out
    out = fw.run(JsonlDataset([]), ev)
    assert len(out) == 0
    assert fw.last_result.report["dropped"]["contaminated"] == fw.last_result.report["variants"]


def test_embeddings_remove_variants_that_paraphrase_a_heldout_item():
    heldout = next(r for r in JsonlDataset.from_jsonl(DATA / "eval.jsonl") if r["id"] == "e7")
    ev = JsonlDataset([
        {"id": "moons", "score": 0.1, "output": "Saturn, with more than a hundred confirmed moons.",
         "instruction": "Which planet of the solar system has the most confirmed moons, and about how many?"},
        {"id": "leaves", "score": 0.1, "instruction": "Explain why leaves change colour in autumn.",
         "output": "Chlorophyll breaks down, revealing yellow and red pigments."},
        {**heldout, "score": 0.3},  # fails too, but is held out: never mined
    ])
    cfg = FlywheelConfig(holdout_fraction=0.3, holdout_seed=2)
    fw = DataFlywheel(cfg, semantic=True)  # the shipped embedding model, default threshold 0.90
    assert [r["id"] for r in fw.split_eval(ev)[1]] == ["e7"]
    out = fw.run(JsonlDataset([]), ev)
    report = fw.last_result.report
    assert report["heldout_ids"] == ["e7"] and report["variants"] == 6
    assert report["dropped"] == {"contaminated": 3} and report["new_records"] == 3
    assert {r["flywheel"]["source_eval_id"] for r in out.records} == {"leaves"}

    variants, _ = fw.make_variants(fw.find_failures(ev.records[:1])[0])  # the dropped ones, and why
    matches = fw.checker().check_batch(variants, fw.heldout_index([heldout]))
    assert len(matches) == 3 and all(m["stage"] == "semantic" and m["score"] >= 0.90 for m in matches)
    assert {m["eval_reference"] for m in matches} == {f"{heldout['instruction']}\n{heldout['output']}"}

    lexical = DataFlywheel(cfg, semantic=False)  # n-grams and substrings do not see the paraphrase
    lexical.run(JsonlDataset([]), ev)
    assert lexical.last_result.report["dropped"].get("contaminated", 0) == 0
    assert lexical.last_result.report["new_records"] == 6


def test_config_validation():
    with pytest.raises(ValueError):
        FlywheelConfig(min_score_threshold=1.5)
    with pytest.raises(ValueError):
        FlywheelConfig(max_variants_per_failure=0)
    with pytest.raises(ValueError):
        FlywheelConfig(holdout_fraction=1.0)
