"""The data flywheel: evaluation failures → variants → filtered, decontaminated training records.

One turn of :meth:`DataFlywheel.run`:

1. **Split the eval set.** Each eval record is assigned, by a hash of its canonical JSON (seeded by
   ``holdout_seed``), to the *mined* part or to the *held-out* part (``holdout_fraction``, at least
   one record when the set has two or more). The flywheel only ever mines the first part; the
   held-out part is what the next evaluation should report on, so that the reported score stays
   honest (variants of an eval item would otherwise inflate it).
2. **Score and find failures.** A mined record's score comes from, in order:
   (a) its ``score`` field (``score_field``), a number in [0, 1] written by an eval run;
   (b) with a judge and a ``prediction`` field: the mean of ``judge.score_rubric(prompt, prediction,
   judge_criteria)``; (c) with a ``prediction`` and a reference answer: SQuAD-style token F1.
   Records scoring below ``min_score_threshold`` are failures; records that cannot be scored are
   listed in the report with the reason.
3. **Variants.** Each failure's prompt is reworded up to ``max_variants_per_failure`` times, by the
   configured generator (paraphrases from a model) or, without one, by deterministic rewrites; each
   variant is paired with the eval record's *reference* answer (``output``, ``completion``, the last
   assistant turn, or a ``reference``/``answer`` field), never with the failed prediction.
4. **Filter.** Variants whose quality (:class:`~provenir.data.quality.QualityScorer`) is below
   ``quality_filter_threshold``, that repeat a training prompt, or that are contaminated with respect
   to the held-out part (:class:`~provenir.data.decontamination.SemanticDecontaminationChecker`) are
   dropped.
5. **Result.** The training records followed by the new ones; each new record carries
   ``flywheel = {"source_eval_id", "variant_index", "method", "eval_score", "score_source"}``.
   ``last_result`` holds the new records, the held-out part and the report.

Example:
    >>> from provenir.data.dataset import JsonlDataset
    >>> evalset = JsonlDataset.from_records([
    ...     {"id": "q1", "instruction": "Explain why the sky is blue during the day.",
    ...      "output": "Air molecules scatter short blue wavelengths of sunlight the most.", "score": 0.2},
    ...     {"id": "q2", "instruction": "Name the largest planet.", "output": "Jupiter.", "score": 0.9}])
    >>> fw = DataFlywheel(FlywheelConfig(holdout_fraction=0.0), semantic=False)
    >>> out = fw.run(JsonlDataset.from_records([]), evalset)
    >>> sorted({r["flywheel"]["source_eval_id"] for r in out.records}), len(out)
    (['q1'], 3)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from provenir.core.errors import DataError
from provenir.core.hashing import sha256_json
from provenir.data.dataset import JsonlDataset
from provenir.data.generation import TextGenerator, build_generator
from provenir.data.quality import QualityScorer, record_prompt_response

if TYPE_CHECKING:
    from provenir.eval.judge import LLMJudge

__all__ = ["DataFlywheel", "FlywheelConfig", "FlywheelResult", "eval_record_id", "prompt_key", "reference_answer", "token_f1"]

ANSWER_FIELDS = ("reference", "answer")


class FlywheelConfig(BaseModel):
    """One turn of the flywheel (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    min_score_threshold: float = Field(0.7, ge=0.0, le=1.0)
    max_variants_per_failure: int = Field(3, ge=1)
    quality_filter_threshold: float = Field(0.5, ge=0.0, le=1.0)
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    holdout_seed: int = 0
    decontamination_threshold: float = Field(0.90, gt=0.0, le=1.0)
    score_field: str = "score"
    prediction_field: str = "prediction"
    judge_criteria: list[str] = Field(default_factory=lambda: ["correctness", "helpfulness"], min_length=1)


@dataclass
class FlywheelResult:
    """What a turn produced: the new records, the held-out eval part, the failures, the report."""

    new_records: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 (lower case, punctuation and articles dropped)."""
    import re

    def toks(text: str) -> list[str]:
        words = re.findall(r"\w+", text.lower())
        return [w for w in words if w not in ("a", "an", "the")]

    pred, ref = toks(prediction), toks(reference)
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def prompt_key(record: Mapping[str, Any]) -> int:
    """A stable 64-bit key of a record's normalised prompt (0 when it has none): duplicate detection."""
    import hashlib

    from provenir.data.decontamination import normalize_tokens

    try:
        prompt, _ = record_prompt_response(record)
    except DataError:
        return 0
    text = " ".join(normalize_tokens(prompt))
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") if text else 0


def eval_record_id(record: Mapping[str, Any]) -> str:
    """The record's ``id`` (string or integer), else ``eval-`` and 12 hex digits of its hash."""
    value = record.get("id")
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
        return str(value)
    return "eval-" + sha256_json(dict(record))[:12]


def reference_answer(record: Mapping[str, Any]) -> str | None:
    """The gold answer of an eval record (``output``/``completion``/last assistant turn, or
    ``reference``/``answer``), or ``None``."""
    for key in ANSWER_FIELDS:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key]
    try:
        _, response = record_prompt_response(record)
    except DataError:
        return None
    return response or None


class DataFlywheel:
    """Turns evaluation failures into new training data (see the module docstring).

    Args:
        config: thresholds, variants per failure, held-out share.
        judge: scores records that carry a prediction but no score (duck-typed ``score_rubric``).
        generator: a :class:`TextGenerator` or spec for paraphrases; ``None`` uses deterministic rewrites.
        semantic: passed to the decontamination checker (``None``: embeddings when installed).
        embedding_model: sentence-transformers model for decontamination (default: the shipped one).
    """

    def __init__(
        self,
        config: FlywheelConfig = FlywheelConfig(),
        judge: LLMJudge | None = None,
        *,
        generator: TextGenerator | str | None = None,
        semantic: bool | None = None,
        embedding_model: str | None = None,
    ):
        self.config = config
        self.judge = judge
        self.generator = build_generator(generator)
        self.scorer = QualityScorer()
        self.semantic = semantic
        self.embedding_model = embedding_model
        self.last_result: FlywheelResult | None = None

    # -- step 1 --------------------------------------------------------------------------------
    def split_eval(self, eval_dataset: JsonlDataset) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(mined, held_out)``: a deterministic split by record hash (see the module docstring)."""
        records = list(eval_dataset.records)
        fraction = self.config.holdout_fraction
        if fraction <= 0 or len(records) < 2:
            return records, []
        buckets = [
            int(sha256_json({"seed": self.config.holdout_seed, "record": r})[:8], 16) / 0x1_0000_0000 for r in records
        ]
        held = {i for i, b in enumerate(buckets) if b < fraction}
        if not held:
            held = {min(range(len(records)), key=buckets.__getitem__)}
        mined = [r for i, r in enumerate(records) if i not in held]
        return mined, [r for i, r in enumerate(records) if i in held]

    # -- step 2 --------------------------------------------------------------------------------
    def score_record(self, record: Mapping[str, Any]) -> tuple[float | None, str]:
        """``(score, source)`` with source ``field``/``judge``/``f1``, or ``(None, reason)``."""
        cfg = self.config
        value = record.get(cfg.score_field)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                return None, f"field {cfg.score_field!r} must be a number in [0, 1], got {value!r}"
            return float(value), "field"
        prediction = record.get(cfg.prediction_field)
        if prediction is None:
            return None, (f"no {cfg.score_field!r} field and no {cfg.prediction_field!r} to score; "
                          "run an evaluation that writes one of them")
        if not isinstance(prediction, str):
            return None, f"field {cfg.prediction_field!r} must be a string, got {type(prediction).__name__}"
        if self.judge is not None:
            from provenir.data.rag_generator import judge_mean

            try:
                prompt, _ = record_prompt_response(record)
            except DataError as exc:
                return None, str(exc)
            return judge_mean(self.judge, prompt, prediction, cfg.judge_criteria), "judge"
        answer = reference_answer(record)
        if answer is None:
            return None, "a prediction but no reference answer to compare it with (and no judge)"
        return token_f1(prediction, answer), "f1"

    def find_failures(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(failures, unscored)``: each failure ``{"id", "record", "score", "score_source"}``."""
        failures, unscored = [], []
        for record in records:
            if not isinstance(record, Mapping):
                unscored.append({"id": None, "reason": f"not a JSON object ({type(record).__name__})"})
                continue
            rid = eval_record_id(record)
            score, source = self.score_record(record)
            if score is None:
                unscored.append({"id": rid, "reason": source})
            elif score < self.config.min_score_threshold:
                failures.append({"id": rid, "record": dict(record), "score": round(score, 6), "score_source": source})
        return failures, unscored

    # -- step 3 (the batch op) -----------------------------------------------------------------
    def make_variants(self, failures: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(variant records, skipped)`` for a batch of failures (from :meth:`find_failures`)."""
        todo, skipped = [], []
        for failure in failures:
            record = failure["record"]
            answer = reference_answer(record)
            try:
                prompt, _ = record_prompt_response(record)
            except DataError as exc:
                skipped.append({"id": failure["id"], "reason": str(exc)})
                continue
            if not prompt.strip() or answer is None:
                skipped.append({"id": failure["id"], "reason": "no prompt or no reference answer"})
                continue
            todo.append((failure, self._instruction_of(record), answer))
        paraphrases = self.generator.paraphrase_batch([t[1] for t in todo], self.config.max_variants_per_failure)
        out = []
        for (failure, instruction, answer), variants in zip(todo, paraphrases):
            for k, variant in enumerate(variants[: self.config.max_variants_per_failure]):
                new = self._with_prompt(failure["record"], variant["text"], answer)
                new["flywheel"] = {
                    "source_eval_id": failure["id"], "variant_index": k, "method": variant["method"],
                    "eval_score": failure["score"], "score_source": failure["score_source"],
                }
                out.append(new)
            if not variants:
                skipped.append({"id": failure["id"], "reason": "the generator produced no variant"})
        return out, skipped

    @staticmethod
    def _instruction_of(record: Mapping[str, Any]) -> str:
        if isinstance(record.get("instruction"), str):
            return record["instruction"]
        if isinstance(record.get("prompt"), str):
            return record["prompt"]
        users = [m["content"] for m in record.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""

    @staticmethod
    def _with_prompt(record: Mapping[str, Any], prompt: str, answer: str) -> dict[str, Any]:
        if "messages" in record:
            messages = [dict(m) for m in record["messages"]]
            while messages and messages[-1].get("role") == "assistant":
                messages.pop()
            for m in reversed(messages):
                if m.get("role") == "user":
                    m["content"] = prompt
                    break
            return {"messages": [*messages, {"role": "assistant", "content": answer}]}
        if "instruction" in record:
            new: dict[str, Any] = {"instruction": prompt}
            if isinstance(record.get("input"), str) and record["input"]:
                new["input"] = record["input"]
            if isinstance(record.get("system"), str):
                new["system"] = record["system"]
            new["output"] = answer
            return new
        return {"prompt": prompt, "completion": answer}

    # -- step 4 --------------------------------------------------------------------------------
    def checker(self) -> Any:
        from provenir.data.decontamination import SemanticDecontaminationChecker

        return SemanticDecontaminationChecker(
            threshold=self.config.decontamination_threshold, semantic=self.semantic, model=self.embedding_model
        )

    def heldout_index(self, heldout: Sequence[Mapping[str, Any]]) -> Any:
        """The decontamination index of the held-out part (``None`` when it has no usable text)."""
        from provenir.data.decontamination import references_from_records

        refs, _ = references_from_records(heldout)
        return self.checker().build_index(refs) if refs else None

    def screen_variants(
        self, variants: list[dict[str, Any]], train_keys: set[int], seen: set[int] | None = None,
    ) -> tuple[list[dict[str, Any]], list[int], Counter[str]]:
        """``(candidates, their prompt keys, dropped)``: the quality filter, then prompt duplicates of
        ``train_keys``, of ``seen`` and of earlier variants (the first in input order is kept)."""
        dropped: Counter[str] = Counter()
        seen = set() if seen is None else seen
        kept, keys = [], []
        for record, result in zip(variants, self.scorer.score_batch(variants)):
            key = prompt_key(record)
            if result.score < self.config.quality_filter_threshold:
                dropped["quality"] += 1
            elif key in seen or key in train_keys:
                dropped["duplicate_of_train"] += 1
            else:
                seen.add(key)
                record["flywheel"]["quality"] = result.score
                kept.append(record)
                keys.append(key)
        return kept, keys, dropped

    def contaminated(self, records: list[dict[str, Any]], index: Any, checker: Any = None,
                     embedder: Any = None) -> list[bool]:
        """Per record, whether it matches the held-out ``index`` (from :meth:`heldout_index`)."""
        if not records or index is None:
            return [False] * len(records)
        checker = checker or self.checker()
        return [m is not None and "skipped" not in m for m in checker.check_batch(records, index, embedder)]

    def filter_variants(
        self, variants: list[dict[str, Any]], train_keys: set[int], index: Any, checker: Any = None,
        embedder: Any = None,
    ) -> tuple[list[dict[str, Any]], Counter[str]]:
        """:meth:`screen_variants`, then decontamination against the held-out ``index``. Duplicates are
        removed within ``variants`` only: an executor that splits them into batches removes the
        duplicates across batches itself (see :func:`provenir.distributed.curation.run_flywheel`)."""
        kept, _, dropped = self.screen_variants(variants, train_keys)
        flags = self.contaminated(kept, index, checker, embedder)
        if kept and index is not None:
            dropped["contaminated"] += sum(flags)
        return [r for r, bad in zip(kept, flags) if not bad], dropped

    # -- the whole turn ------------------------------------------------------------------------
    def run(self, train_dataset: JsonlDataset, eval_dataset: JsonlDataset) -> JsonlDataset:
        """One turn: the training records followed by the new, filtered variants of eval failures."""
        mined, heldout = self.split_eval(eval_dataset)
        failures, unscored = self.find_failures(mined)
        variants, skipped = self.make_variants(failures)
        train_keys = {prompt_key(r) for r in train_dataset.records if isinstance(r, Mapping)}
        kept, dropped = self.filter_variants(variants, train_keys, self.heldout_index(heldout))
        report = {
            "eval_records": len(eval_dataset), "mined": len(mined), "heldout": len(heldout),
            "heldout_ids": [eval_record_id(r) for r in heldout],
            "failures": len(failures), "unscored": unscored, "variants": len(variants),
            "dropped": dict(dropped), "skipped_failures": skipped, "new_records": len(kept),
            "generator": self.generator.identity(),
        }
        self.last_result = FlywheelResult(kept, heldout, failures, report)
        return JsonlDataset([*train_dataset.records, *kept], source=getattr(train_dataset, "source", None))
