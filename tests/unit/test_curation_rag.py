"""RAG QA generation: chunking bounds, provenance, judge filter, generators and their parsing, bad input."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.core.hashing import sha256_bytes
from provenir.data.generation import (
    ExtractiveGenerator,
    OpenAIGenerator,
    TextGenerator,
    build_generator,
    parse_paraphrases,
    parse_qa,
    split_sentences,
)
from provenir.data.rag_generator import RAGDataGenerator, RAGGeneratorConfig

DOC = (
    "The Great Barrier Reef is the world's largest coral reef system. It lies off the coast of Queensland, "
    "Australia, and stretches for over 2,300 kilometres.\n\n"
    "Coral bleaching, caused by rising sea temperatures, has damaged large parts of the reef. Scientists "
    "monitor the reef with satellites and underwater surveys. Dr. Smith leads one survey team, e.g. in "
    "the northern sections.\n\n"
    "Tourism brings billions of dollars to the regional economy every year."
)


class FixedJudge:
    """A judge whose rubric score depends on whether the answer mentions a word."""

    def __init__(self, word: str):
        self.word = word
        self.calls = []

    def score_rubric(self, prompt, response, criteria):
        self.calls.append((prompt, response, tuple(criteria)))
        return {c: (0.9 if self.word in response.lower() else 0.1) for c in criteria}


def test_sentence_splitting_keeps_abbreviations():
    assert split_sentences("Dr. Smith arrived. He sat, e.g. on a chair! Then? Yes.") == [
        "Dr. Smith arrived.", "He sat, e.g. on a chair!", "Then?", "Yes.",
    ]


def test_chunks_respect_bounds_and_keep_paragraphs_whole():
    gen = RAGDataGenerator(RAGGeneratorConfig(max_chunk_length=200, min_chunk_length=50))
    chunks = gen.chunk_document(DOC)
    assert all(50 <= len(c) <= 200 for c in chunks)
    paragraphs = [" ".join(p.split()) for p in DOC.split("\n\n")]
    assert chunks[0] == paragraphs[0]  # fits whole: not cut
    joined = " ".join(" ".join(c.split()) for c in chunks)
    assert joined == " ".join(paragraphs)  # nothing lost, order kept


def test_long_paragraph_is_cut_at_sentences_then_words():
    gen = RAGDataGenerator(RAGGeneratorConfig(max_chunk_length=80, min_chunk_length=10))
    sentence = "Alpha beta gamma delta. " * 10
    chunks = gen.chunk_document(sentence)
    assert all(len(c) <= 80 for c in chunks)
    assert all(c.endswith(".") for c in chunks)  # cut at sentence ends
    words = gen.chunk_document("word " * 100)
    assert all(len(c) <= 80 for c in words) and sum(len(c.split()) for c in words) == 100
    assert gen.chunk_document("x" * 200) == ["x" * 80, "x" * 80, "x" * 40]


def test_short_trailing_chunk_is_merged_or_dropped():
    gen = RAGDataGenerator(RAGGeneratorConfig(max_chunk_length=120, min_chunk_length=30))
    text = ("A first paragraph that is long enough to stand on its own as a chunk here.\n\n" "Tiny.")
    assert gen.chunk_document(text) == [
        "A first paragraph that is long enough to stand on its own as a chunk here.\n\nTiny."
    ]


@pytest.mark.parametrize("doc", ["", "   \n\n  ", "Too short."])
def test_empty_and_short_documents_give_no_chunk_and_a_reason(doc):
    gen = RAGDataGenerator()
    assert gen.chunk_document(doc) == []
    ds = gen.generate_from_documents([doc])
    assert len(ds) == 0
    reason = gen.last_report["skipped"][0]["reason"]
    assert reason in ("empty document",) or reason.startswith("shorter than min_chunk_length")


def test_non_text_input_is_a_clear_error():
    gen = RAGDataGenerator()
    with pytest.raises(DataError, match=r"documents\[1\]"):
        gen.generate_from_documents([DOC, 42])
    with pytest.raises(DataError):
        gen.generate_from_documents(DOC)
    with pytest.raises(DataError):
        gen.chunk_document(None)
    with pytest.raises(DataError, match="question"):
        gen.to_dataset([{"question": "", "answer": "x"}])
    assert gen.generate_for_document(None)[1] == "not text (NoneType)"


def test_pairs_carry_document_hash_and_chunk_index():
    gen = RAGDataGenerator(RAGGeneratorConfig(max_chunk_length=200, min_chunk_length=40, questions_per_chunk=2))
    ds = gen.generate_from_documents(["", DOC])
    assert len(ds) > 0
    chunks = gen.chunk_document(DOC)
    for record in ds:
        prov = record["provenance"]
        assert prov["doc_hash"] == sha256_bytes(DOC.encode())
        assert prov["doc_index"] == 1
        assert record["input"] == chunks[prov["chunk_index"]]
        assert prov["chunk_hash"] == sha256_bytes(record["input"].encode())
        assert record["output"] in record["input"]  # extractive answers are grounded
        assert prov["generator"] == "extractive"
    per_chunk = {}
    for record in ds:
        per_chunk.setdefault(record["provenance"]["chunk_index"], []).append(record)
    assert max(len(v) for v in per_chunk.values()) <= 2
    assert gen.last_report["skipped"] == [{"doc_index": 0, "reason": "empty document"}]
    assert ds.records == RAGDataGenerator(gen.config).generate_from_documents(["", DOC]).records  # deterministic


def test_judge_filter_uses_the_threshold():
    judge = FixedJudge("reef")
    cfg = RAGGeneratorConfig(max_chunk_length=200, min_chunk_length=40, quality_filter_threshold=0.5)
    gen = RAGDataGenerator(cfg, judge=judge)
    ds = gen.generate_from_documents([DOC])
    assert len(ds) > 0 and all("reef" in r["output"].lower() for r in ds)
    assert all(r["provenance"]["judge_score"] == 0.9 for r in ds)
    assert gen.last_report["judge_rejected"] > 0
    assert "Context:" in judge.calls[0][0] and judge.calls[0][2] == tuple(cfg.judge_criteria)
    everything = RAGDataGenerator(cfg.model_copy(update={"quality_filter_threshold": 0.0}), judge=judge)
    assert len(everything.generate_from_documents([DOC])) == len(ds) + gen.last_report["judge_rejected"]


def test_stub_judge_is_accepted():
    from provenir.eval.judge import StubJudge

    gen = RAGDataGenerator(RAGGeneratorConfig(quality_filter_threshold=0.0), judge=StubJudge())
    ds = gen.generate_from_documents([DOC])
    assert len(ds) and all(0.0 <= r["provenance"]["judge_score"] <= 1.0 for r in ds)


@pytest.mark.parametrize("kwargs", [{"min_chunk_length": 600}, {"questions_per_chunk": 0},
                                    {"quality_filter_threshold": 2}, {"unknown": 1}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        RAGGeneratorConfig(**kwargs)


def test_extractive_questions():
    gen = ExtractiveGenerator()
    qa = gen.generate_qa("The Eiffel Tower is a wrought-iron lattice tower in Paris. It was built for the 1889 fair.", 2)
    assert qa[0] == {"question": "What is the Eiffel Tower?",
                     "answer": "The Eiffel Tower is a wrought-iron lattice tower in Paris."}
    assert qa[1]["question"].startswith("What does the passage say about")
    variants = gen.paraphrase("Explain why the sky is blue.", 3)
    assert len(variants) == 3 and len({v["text"] for v in variants}) == 3
    assert all(v["method"].startswith("rewrite:") for v in variants)


def test_reply_parsing():
    assert parse_qa('```json\n{"pairs": [{"question": "Q?", "answer": "A."}, {"question": 1}]}\n```') == [
        {"question": "Q?", "answer": "A."}]
    assert parse_qa("1. Q: Why? A: Because.\nQuestion: Who?\nAnswer: Me.") == [
        {"question": "Why?", "answer": "Because."}, {"question": "Who?", "answer": "Me."}]
    assert parse_qa("no pairs here") == []
    assert parse_paraphrases('{"paraphrases": ["One way.", "", "Another way."]}') == ["One way.", "Another way."]
    assert parse_paraphrases("1. First\n2) Second\n- Third") == ["First", "Second", "Third"]


def test_build_generator_specs():
    assert isinstance(build_generator(None), ExtractiveGenerator)
    assert build_generator("openai:m@http://127.0.0.1:1/v1").base_url == "http://127.0.0.1:1/v1"
    assert build_generator("anthropic:claude").identity() == "anthropic:claude"
    for bad in ("nope:x", "openai", "transformers:"):
        with pytest.raises(ConfigError):
            build_generator(bad)


class _ChatHandler(BaseHTTPRequestHandler):
    replies: list[str] = []
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body})
        content = type(self).replies.pop(0)
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_compatible_generator_against_a_loopback_server():
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _ChatHandler.replies = [
            '{"pairs": [{"question": "Where is the reef?", "answer": "Off Queensland."}]}',
            '{"paraphrases": ["Why is the sky blue?", "Explain why the sky is blue."]}',
        ]
        url = f"http://127.0.0.1:{server.server_port}/v1"
        gen = OpenAIGenerator("local-model", base_url=url, max_retries=0)
        rag = RAGDataGenerator(RAGGeneratorConfig(questions_per_chunk=1, min_chunk_length=10), generator=gen)
        ds = rag.generate_from_documents([DOC[:120]])
        assert [r["instruction"] for r in ds] == ["Where is the reef?"]
        assert ds[0]["provenance"]["generator"] == "openai:local-model"
        variants = gen.paraphrase("Explain why the sky is blue.", 3)
        assert [v["text"] for v in variants] == ["Why is the sky blue?"]  # the echo is dropped
        assert _ChatHandler.requests[0]["path"] == "/v1/chat/completions"
        assert _ChatHandler.requests[0]["body"]["messages"][0]["role"] == "system"
    finally:
        server.shutdown()
        server.server_close()


def test_generator_failure_is_a_clear_error():
    from provenir.data.generation import GenerationError

    gen = OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=2)
    with pytest.raises(GenerationError, match="openai:m failed"):
        gen.generate_qa("Some passage of text.", 1)


def test_custom_generator_plugs_in():
    class Echo(TextGenerator):
        name = "echo"

        def generate_qa_batch(self, passages, n):
            return [[{"question": f"About {p[:10]}?", "answer": p}] * n for p in passages]

    ds = RAGDataGenerator(RAGGeneratorConfig(questions_per_chunk=2), generator=Echo()).generate_from_documents([DOC])
    assert len(ds) > 0 and ds[0]["provenance"]["generator"] == "echo"


@pytest.mark.slow
def test_transformers_generator_on_the_tiny_model(tiny_model_dir):
    from provenir.data.generation import TransformersGenerator

    gen = TransformersGenerator(str(tiny_model_dir), device="cpu", max_new_tokens=24, batch_size=2)
    replies = gen.complete("system", ["Rewrite: explain tides.", "Rewrite: name a planet.", "third"])
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert replies == gen.complete("system", ["Rewrite: explain tides.", "Rewrite: name a planet.", "third"])
    variants = gen.paraphrase("Explain tides.", 2)
    assert len(variants) <= 2 and all(v["method"] == f"paraphrase:{gen.identity()}" for v in variants)
    rag = RAGDataGenerator(RAGGeneratorConfig(questions_per_chunk=1), generator=gen)
    assert isinstance(rag.generate_qa_pairs([DOC[:200]]), list)  # unparseable replies give no pair, not an error


def _paragraph(length: int, word: str = "lorem") -> str:
    """Words separated by single spaces, exactly ``length`` characters, ending with a full stop."""
    text = " ".join([word] * (length // (len(word) + 1) + 1))[: length - 1].rstrip()
    return text + "x" * (length - 1 - len(text)) + "."


def test_merging_counts_the_paragraph_separator_in_full():
    gen = RAGDataGenerator(RAGGeneratorConfig(max_chunk_length=120, min_chunk_length=40))
    long, short = _paragraph(80), _paragraph(39, "ipsum")
    assert (len(long), len(short)) == (80, 39)
    # 80 + len("\n\n") + 39 = 121: too long to join, and the 39-character rest is too short to keep
    assert gen.chunk_document(f"{long}\n\n{short}") == [long]
    fits = _paragraph(79)
    assert gen.chunk_document(f"{fits}\n\n{short}") == [f"{fits}\n\n{short}"]  # exactly 120


def test_chunk_lengths_stay_within_bounds_for_random_paragraphs():
    import random

    rng = random.Random(0)
    for trial in range(2000):
        limit = rng.randint(8, 160)
        floor = rng.choice([0, rng.randint(0, limit)])
        paragraphs = []
        for _ in range(rng.randint(1, 6)):
            words = []
            for _ in range(rng.randint(1, 40)):
                word = "".join(rng.choices("abcdefgh", k=rng.choice([rng.randint(1, 9), rng.randint(1, 2 * limit)])))
                words.append(word.capitalize() + "." if rng.random() < 0.2 else word)
            paragraphs.append(" ".join(words))
        doc = "\n\n".join(paragraphs)
        chunks = RAGDataGenerator(RAGGeneratorConfig(max_chunk_length=limit, min_chunk_length=floor)).chunk_document(doc)
        context = f"trial {trial}: max={limit} min={floor}"
        assert all(floor <= len(c) <= limit for c in chunks), (context, [len(c) for c in chunks])
        flat_doc, pos = "".join(doc.split()), 0
        for chunk in chunks:  # every chunk is a piece of the document, in order
            found = flat_doc.find("".join(chunk.split()), pos)
            assert found >= pos, context
            pos = found + len("".join(chunk.split()))
        if floor == 0:  # nothing is too short to keep: nothing is lost
            assert "".join("".join(c.split()) for c in chunks) == flat_doc, context
        if len(" ".join(doc.split())) < floor:  # a document shorter than the minimum gives no chunk
            assert chunks == [], context
