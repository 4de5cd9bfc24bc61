"""Synthetic RAG training data: documents → chunks → question-answer pairs with provenance.

1. **Chunking** (:meth:`RAGDataGenerator.chunk_document`), lengths in characters. Paragraphs (split on
   blank lines, inner whitespace collapsed) are packed whole into chunks of at most
   ``max_chunk_length``; a paragraph too long for one chunk is cut at sentence ends, and a sentence
   too long at word boundaries (a single word longer than the maximum is cut hard). Packing is
   greedy, so a chunk shorter than ``min_chunk_length`` already holds every neighbouring piece that
   fits beside it within the maximum; such a chunk is dropped, and a document shorter than
   ``min_chunk_length`` gives no chunk.
2. **Generation** through a :class:`~provenir.data.generation.TextGenerator`: a local transformers
   model, an OpenAI-compatible endpoint, Anthropic, or (default) the deterministic extractive
   generator. ``questions_per_chunk`` pairs are asked for each chunk.
3. **Judge filter** (optional): each pair is scored by ``judge.score_rubric(prompt, answer, criteria)``
   where the prompt holds the context and the question; pairs whose mean criterion score is below
   ``quality_filter_threshold`` are dropped.
4. **Provenance**: every pair keeps the SHA-256 of its document (``doc_hash``), the document's
   position (``doc_index``), the chunk's position in the document (``chunk_index``) and hash, and the
   generator's identity.

Example:
    >>> gen = RAGDataGenerator(RAGGeneratorConfig(questions_per_chunk=1, min_chunk_length=20))
    >>> ds = gen.generate_from_documents(["The Eiffel Tower is a wrought-iron lattice tower in Paris."])
    >>> ds.records[0]["instruction"], ds.records[0]["provenance"]["chunk_index"]
    ('What is the Eiffel Tower?', 0)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from provenir.core.errors import DataError
from provenir.core.hashing import sha256_bytes
from provenir.data.dataset import JsonlDataset
from provenir.data.generation import TextGenerator, build_generator, split_sentences

if TYPE_CHECKING:
    from provenir.eval.judge import LLMJudge

__all__ = ["DEFAULT_RAG_CRITERIA", "RAGDataGenerator", "RAGGeneratorConfig", "judge_mean"]

DEFAULT_RAG_CRITERIA = ["faithfulness to the context", "relevance of the answer to the question", "clarity"]


class RAGGeneratorConfig(BaseModel):
    """How documents become QA pairs (lengths in characters)."""

    model_config = ConfigDict(extra="forbid")

    questions_per_chunk: int = Field(3, ge=1)
    max_chunk_length: int = Field(512, ge=1)
    min_chunk_length: int = Field(50, ge=0)
    quality_filter_threshold: float = Field(0.5, ge=0.0, le=1.0)
    judge_criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_RAG_CRITERIA), min_length=1)

    @model_validator(mode="after")
    def _bounds(self) -> RAGGeneratorConfig:
        if self.min_chunk_length > self.max_chunk_length:
            raise ValueError(
                f"min_chunk_length ({self.min_chunk_length}) must not exceed max_chunk_length ({self.max_chunk_length})"
            )
        return self


def judge_mean(judge: Any, prompt: str, response: str, criteria: list[str]) -> float:
    """The mean of a judge's rubric scores (the judge is called duck-typed: ``score_rubric``)."""
    scores = judge.score_rubric(prompt, response, list(criteria))
    values = [float(v) for v in scores.values()] if isinstance(scores, dict) else []
    if not values:
        raise DataError(f"judge {type(judge).__name__}.score_rubric returned no scores: {scores!r}")
    return sum(values) / len(values)


def _hash_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def _split_long(text: str, limit: int) -> list[str]:
    """Cut text at word boundaries into pieces of at most ``limit`` characters."""
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:limit])
            word = word[limit:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= limit:
            current = candidate
        else:
            pieces.append(current)
            current = word
    if current:
        pieces.append(current)
    return pieces


class RAGDataGenerator:
    """Documents → chunks → QA pairs (see the module docstring).

    Args:
        config: chunking, questions per chunk, judge threshold.
        judge: an :class:`~provenir.eval.judge.LLMJudge`; pairs below the threshold are dropped.
        generator: a :class:`TextGenerator` or a spec (``"openai:MODEL@URL"``); default extractive.

    After :meth:`generate_from_documents`, ``last_report`` holds counts and the documents that gave
    no pair, each with the reason.
    """

    def __init__(
        self,
        config: RAGGeneratorConfig = RAGGeneratorConfig(),
        judge: LLMJudge | None = None,
        *,
        generator: TextGenerator | str | None = None,
    ):
        self.config = config
        self.judge = judge
        self.generator = build_generator(generator)
        self.last_report: dict[str, Any] = {}

    # -- chunking ------------------------------------------------------------------------------
    def chunk_document(self, text: str) -> list[str]:
        """Sentence- and paragraph-aware chunks within ``[min_chunk_length, max_chunk_length]``.

        Raises:
            DataError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise DataError(f"chunk_document: expected a string, got {type(text).__name__}")
        limit, floor = self.config.max_chunk_length, self.config.min_chunk_length
        units: list[tuple[str, str]] = []  # (separator before, text)
        for paragraph in re.split(r"\n\s*\n", text):
            para = " ".join(paragraph.split())
            if not para:
                continue
            if len(para) <= limit:
                units.append(("\n\n", para))
                continue
            first = True
            for sentence in split_sentences(para):
                for piece in [sentence] if len(sentence) <= limit else _split_long(sentence, limit):
                    units.append(("\n\n" if first else " ", piece))
                    first = False
        chunks: list[str] = []
        current = ""
        for sep, unit in units:
            candidate = f"{current}{sep}{unit}" if current else unit
            if len(candidate) <= limit:
                current = candidate
            else:
                chunks.append(current)
                current = unit
        if current:
            chunks.append(current)
        # No merging pass: a chunk ended because its neighbour's first piece did not fit beside it,
        # so the two joined by a separator cannot fit either.
        return [c for c in chunks if len(c) >= floor]

    # -- generation ----------------------------------------------------------------------------
    def _judge_prompt(self, context: str, question: str) -> str:
        return f"Context:\n{context}\n\nQuestion: {question}"

    def generate_qa_pairs(self, chunks: list[str]) -> list[dict[str, Any]]:
        """QA pairs for the chunks: ``question``, ``answer``, ``context``, ``chunk_index``,
        ``chunk_hash``, ``generator`` (and ``judge_score`` with a judge); judge-rejected pairs dropped."""
        if isinstance(chunks, str):
            raise DataError("generate_qa_pairs: expected a list of chunks, got one string")
        for i, chunk in enumerate(chunks):
            if not isinstance(chunk, str):
                raise DataError(f"chunks[{i}]: expected a string, got {type(chunk).__name__}")
        usable = [(i, c) for i, c in enumerate(chunks) if c.strip()]
        generated = self.generator.generate_qa_batch([c for _, c in usable], self.config.questions_per_chunk)
        pairs: list[dict[str, Any]] = []
        rejected = 0
        for (index, chunk), qas in zip(usable, generated):
            for qa in qas[: self.config.questions_per_chunk]:
                pair: dict[str, Any] = {
                    "question": qa["question"], "answer": qa["answer"], "context": chunk,
                    "chunk_index": index, "chunk_hash": _hash_text(chunk), "generator": self.generator.identity(),
                }
                if self.judge is not None:
                    score = judge_mean(self.judge, self._judge_prompt(chunk, qa["question"]), qa["answer"],
                                       self.config.judge_criteria)
                    pair["judge_score"] = round(score, 6)
                    if score < self.config.quality_filter_threshold:
                        rejected += 1
                        continue
                pairs.append(pair)
        self._rejected = rejected
        return pairs

    def generate_for_document(self, text: Any, doc_index: int = 0) -> tuple[list[dict[str, Any]], str | None]:
        """Pairs for one document and, when it gives none, the reason (never raises on bad input)."""
        if not isinstance(text, str):
            return [], f"not text ({type(text).__name__})"
        if not text.strip():
            return [], "empty document"
        if len(" ".join(text.split())) < self.config.min_chunk_length:
            return [], f"shorter than min_chunk_length ({len(text.strip())} < {self.config.min_chunk_length} characters)"
        chunks = self.chunk_document(text)
        if not chunks:
            return [], "no chunk reached min_chunk_length"
        pairs = self.generate_qa_pairs(chunks)
        doc_hash = _hash_text(text)
        for pair in pairs:
            pair["doc_hash"] = doc_hash
            pair["doc_index"] = doc_index
        if not pairs:
            return [], "the generator produced no question" + (" the judge accepted" if self._rejected else "")
        return pairs, None

    def generate_from_documents(self, documents: list[str]) -> JsonlDataset:
        """Chunk every document, generate and filter QA pairs, and return them as a dataset.

        Empty documents and documents shorter than ``min_chunk_length`` give no pair; they are listed
        in ``last_report["skipped"]`` with the reason.

        Raises:
            DataError: ``documents`` is a string (not a list) or holds something other than strings.
        """
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise DataError("generate_from_documents: expected a list of document strings")
        for i, doc in enumerate(documents):
            if not isinstance(doc, str):
                raise DataError(f"documents[{i}]: expected a string, got {type(doc).__name__}")
        pairs: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        rejected = 0
        for i, doc in enumerate(documents):
            self._rejected = 0
            found, reason = self.generate_for_document(doc, i)
            rejected += self._rejected
            pairs.extend(found)
            if reason:
                skipped.append({"doc_index": i, "reason": reason})
        self.last_report = {
            "documents": len(documents), "pairs": len(pairs), "judge_rejected": rejected, "skipped": skipped,
            "generator": self.generator.identity(),
        }
        return self.to_dataset(pairs)

    def to_dataset(self, pairs: list[dict[str, Any]]) -> JsonlDataset:
        """Training records: ``instruction`` = question, ``input`` = context, ``output`` = answer, and
        ``provenance`` = the pair's document hash, chunk index, chunk hash, generator (and judge score)."""
        records = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict):
                raise DataError(f"pairs[{i}]: expected a dict, got {type(pair).__name__}")
            for key in ("question", "answer"):
                if not isinstance(pair.get(key), str) or not pair[key].strip():
                    raise DataError(f"pairs[{i}]: field {key!r} must be a non-empty string")
            provenance = {k: pair[k] for k in ("doc_hash", "doc_index", "chunk_index", "chunk_hash",
                                                "generator", "judge_score") if k in pair}
            records.append({
                "instruction": pair["question"],
                "input": pair.get("context", ""),
                "output": pair["answer"],
                "provenance": provenance,
            })
        return JsonlDataset(records)
