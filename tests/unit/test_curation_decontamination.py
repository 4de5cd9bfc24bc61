"""Decontamination: planted exact copies, near copies and paraphrases are found; look-alikes are not."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.data.dataset import JsonlDataset
from provenir.data.decontamination import (
    EvalReference,
    SemanticDecontaminationChecker,
    normalize_tokens,
    references_from_records,
    search_best,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "curation"


@pytest.fixture(scope="module")
def planted():
    eval_ds = JsonlDataset.from_jsonl(DATA / "eval.jsonl")
    train = JsonlDataset.from_jsonl(DATA / "train_planted.jsonl")
    refs, skipped = references_from_records(eval_ds.records)
    assert skipped == [] and len(refs) == len(eval_ds)
    return eval_ds, train, refs


def kinds(train, found, eval_ds):
    """{train index: (kind, planted-of, found-of, stage)} of the flagged records."""
    return {m["index"]: (train[m["index"]]["kind"], train[m["index"]].get("of"),
                         eval_ds[m["eval_index"]]["id"], m["stage"]) for m in found}


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert normalize_tokens("  The  Moby-Dick, (1851)!! ") == normalize_tokens("the moby dick 1851")


def test_ngram_stage_finds_exact_and_near_copies_and_nothing_clean(planted):
    eval_ds, train, refs = planted
    checker = SemanticDecontaminationChecker(semantic=False)
    found = checker.check(train, refs)
    by_index = kinds(train, found, eval_ds)
    ngram = {i: v for i, v in by_index.items() if v[3] == "ngram"}
    expected = {i for i, r in enumerate(train) if r["kind"] in ("exact", "near")}
    assert set(ngram) == expected
    assert all(kind_of == found_of for _, kind_of, found_of, _ in ngram.values())
    assert all(v[0] != "clean" for v in by_index.values())
    exact = [m for m in found if train[m["index"]]["kind"] == "exact"]
    assert all(m["score"] == 1.0 and m["eval_reference"] == refs[m["eval_index"]] for m in exact)
    assert checker.last_report["by_stage"]["ngram"] == len(expected)


def test_reordered_near_copy_still_shares_a_13_gram(planted):
    eval_ds, train, refs = planted
    reordered = next(i for i, r in enumerate(train) if r.get("of") == "e6")
    found = SemanticDecontaminationChecker(semantic=False).check(JsonlDataset([train[reordered]]), refs)
    assert found and found[0]["stage"] == "ngram" and 0 < found[0]["score"] < 1
    assert found[0]["matched_ngrams"] >= 1


def test_ngram_size_matters():
    refs = ["one two three four five six seven eight nine ten eleven twelve thirteen fourteen"]
    train = JsonlDataset([{"text": "zero one two three four five six seven eight nine ten eleven twelve xx"}])
    assert SemanticDecontaminationChecker(semantic=False, ngram_size=13).check(train, refs) == []
    hits = SemanticDecontaminationChecker(semantic=False, ngram_size=8).check(train, refs)
    assert len(hits) == 1 and hits[0]["matched_ngrams"] == 5  # 8-grams starting at one..five


def test_short_references_match_whole_and_tiny_ones_are_skipped():
    refs = ["capital city of burkina faso", "yes"]
    train = JsonlDataset([{"instruction": "What is the capital city of Burkina Faso?", "output": "Ouagadougou."},
                          {"instruction": "Say yes.", "output": "yes"}])
    checker = SemanticDecontaminationChecker(semantic=False)
    found = checker.check(train, refs)
    assert [(m["index"], m["eval_index"], m["stage"]) for m in found] == [(0, 0, "ngram")]
    assert checker.last_report["skipped_references"][0]["eval_index"] == 1


def test_substring_fallback_catches_a_record_contained_in_a_reference():
    refs = ["Long passage: the quick brown fox jumps over the lazy dog near the river bank today."]
    train = JsonlDataset([{"text": "The quick brown fox jumps over the lazy dog."}, {"text": "A slow red fox sleeps."}])
    found = SemanticDecontaminationChecker(semantic=False).check(train, refs)
    assert [(m["index"], m["stage"], m["score"]) for m in found] == [(0, "substring", 1.0)]


def test_bad_input():
    checker = SemanticDecontaminationChecker(semantic=False)
    train = JsonlDataset([{"instruction": "x", "output": 3}, {"foo": 1}, {"text": "fine text here"}])
    with pytest.raises(DataError, match="no"):
        checker.check(train, [])
    with pytest.raises(DataError, match="none of the 2"):
        checker.check(train, ["", "  ?! "])
    with pytest.raises(DataError, match=r"eval_references\[1\]"):
        checker.check(train, ["ok text", 5])
    with pytest.raises(DataError):
        checker.check(train, "a string is not a list")
    assert checker.check(train, ["fine text here and more words"]) == []
    assert [s["index"] for s in checker.last_report["skipped_records"]] == [0, 1]
    assert checker.check(JsonlDataset([]), ["some reference text"]) == []


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"threshold": 1.5}, {"ngram_size": 0},
                                    {"views": ["nope"]}, {"search": "annoy"}])
def test_bad_configuration(kwargs):
    with pytest.raises(ConfigError):
        SemanticDecontaminationChecker(**kwargs)


def test_index_survives_pickling(planted):
    _, train, refs = planted
    checker = SemanticDecontaminationChecker(semantic=False)
    index = pickle.loads(pickle.dumps(checker.build_index(refs)))
    again = checker.check_batch(train.records, index)
    assert [m and m.get("eval_index") for m in again] == [
        m and m.get("eval_index") for m in checker.check_batch(train.records, checker.build_index(refs))
    ]


def test_references_carry_their_prompt():
    refs, skipped = references_from_records([
        {"instruction": "Name the largest planet.", "output": "Jupiter."},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]},
        {"text": "Plain text, no prompt."},
        {"instruction": "", "output": ""},
    ])
    assert refs == ["Name the largest planet.\nJupiter.", "Say hi.\nHi!", "Plain text, no prompt."]
    assert all(isinstance(r, EvalReference) for r in refs)
    assert [r.prompt for r in refs] == ["Name the largest planet.", "Say hi.", None]
    assert [s["eval_index"] for s in skipped] == [3]
    again = pickle.loads(pickle.dumps(refs))
    assert again == refs and [r.prompt for r in again] == [r.prompt for r in refs]


def test_faiss_and_numpy_search_agree():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(1000, 16)).astype(np.float32)
    s1, i1 = search_best(queries, keys, search="faiss")
    s2, i2 = search_best(queries, keys, search="numpy", chunk=128)
    brute = queries @ keys.T
    assert np.array_equal(i2, brute.argmax(1))
    assert np.array_equal(i1, i2)
    assert np.allclose(s1, s2, atol=1e-5)


# -- with the real embedding model -------------------------------------------------------------


@pytest.fixture(scope="module")
def semantic_checker(embedding_model_path):
    return SemanticDecontaminationChecker(threshold=0.80, model=embedding_model_path, device="cpu")


def test_semantic_stage_finds_paraphrases_and_leaves_look_alikes(planted, semantic_checker):
    eval_ds, train, refs = planted
    found = semantic_checker.check(train, refs)
    by_index = kinds(train, found, eval_ds)
    planted_ids = {i for i, r in enumerate(train) if r["kind"] != "clean"}
    assert set(by_index) == planted_ids  # every planted item, no clean look-alike
    assert all(v[1] == v[2] for v in by_index.values())  # matched to the eval item it copies
    stages = {v[0]: set() for v in by_index.values()}
    for kind, _, _, stage in by_index.values():
        stages[kind].add(stage)
    assert stages["paraphrase"] == {"semantic"}
    assert stages["exact"] == {"ngram"}
    assert all(0.8 <= m["score"] <= 1.0 for m in found if m["stage"] == "semantic")


# Eval questions reworded, each with a terse answer in another style: the answer pulls the record's
# full text away from the reference's, so only its prompt, compared with the reference's prompt,
# shows the copy (prompt against the reference's prompt and answer scored 0.79-0.88).
QUESTION_PARAPHRASES = [
    ("e3", {"instruction": "Which artist painted the Sistine Chapel's ceiling in Rome, and in what years did he do it?",
            "output": "Michelangelo."}),
    ("e6", {"instruction": "Describe how green plants carry out photosynthesis, and name the gas they give off.",
            "output": "Oxygen."}),
    ("e8", {"instruction": "How do viruses and bacteria differ in their structure and in the way they reproduce?",
            "output": "Size and self-replication."}),
]


@pytest.mark.parametrize("search", ["faiss", "numpy"])
def test_reworded_question_is_found_by_its_prompt_at_the_default_threshold(planted, embedding_model_path, search):
    eval_ds, _, refs = planted
    checker = SemanticDecontaminationChecker(model=embedding_model_path, device="cpu", search=search)
    assert checker.threshold == 0.90
    found = checker.check(JsonlDataset([r for _, r in QUESTION_PARAPHRASES]), refs)
    assert [(m["index"], eval_ds[m["eval_index"]]["id"], m["stage"]) for m in found] == [
        (i, of, "semantic") for i, (of, _) in enumerate(QUESTION_PARAPHRASES)
    ]
    assert all(0.90 <= m["score"] <= 1.0 and m["eval_reference"] == refs[m["eval_index"]] for m in found)


def test_plain_string_references_are_compared_with_training_prompts(embedding_model_path):
    eval_ds = JsonlDataset.from_jsonl(DATA / "eval.jsonl")
    questions = [r["instruction"] for r in eval_ds.records]  # as a .txt file of questions gives them
    checker = SemanticDecontaminationChecker(model=embedding_model_path, device="cpu")
    found = checker.check(JsonlDataset([r for _, r in QUESTION_PARAPHRASES]), questions)
    assert [eval_ds[m["eval_index"]]["id"] for m in found] == [of for of, _ in QUESTION_PARAPHRASES]


def test_default_threshold_flags_close_paraphrases_and_no_look_alike(planted, embedding_model_path):
    eval_ds, train, refs = planted
    checker = SemanticDecontaminationChecker(model=embedding_model_path, device="cpu")
    found = checker.check(train, refs)
    by_index = kinds(train, found, eval_ds)
    assert all(kind != "clean" and of == found_of for kind, of, found_of, _ in by_index.values())
    copies = {i for i, r in enumerate(train) if r["kind"] in ("exact", "near")}
    assert {i for i, v in by_index.items() if v[3] == "ngram"} == copies
    # e7 and e9's paraphrases score 0.95-0.97; e5's (0.898) and e10's (0.875) stay under 0.90
    assert {train[i]["of"] for i, v in by_index.items() if v[0] == "paraphrase"} >= {"e7", "e9"}
    assert checker.last_report["threshold"] == 0.90


def test_thresholds_matter(planted, embedding_model_path):
    eval_ds, train, refs = planted
    counts = {}
    for threshold in (0.5, 0.8, 0.95):
        checker = SemanticDecontaminationChecker(threshold=threshold, model=embedding_model_path, device="cpu")
        found = checker.check(train, refs)
        counts[threshold] = (
            sum(train[m["index"]]["kind"] == "paraphrase" for m in found),
            sum(train[m["index"]]["kind"] == "clean" for m in found),
        )
    paraphrases = sum(r["kind"] == "paraphrase" for r in train)
    assert counts[0.8] == (paraphrases, 0)
    assert counts[0.95][0] < paraphrases  # too strict: some paraphrases slip through
    assert counts[0.5][1] > 0  # too loose: a clean look-alike is flagged


