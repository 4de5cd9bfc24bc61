"""RLAIF: iterative self-improvement with AI feedback, every iteration a recorded run.

One iteration::

    policy (base model + the adopted adapter) ──► N sampled candidates per training prompt
      ──► judge fan-out (every pair of distinct candidates) ──► rank by wins ──► best/worst pair
      ──► DPO (continuing from the adopted adapter) ──► eval ──► regression gate
      ──► next iteration (manifest.provenance = [this run])

* **Sampling** is seeded; the seed of iteration ``i`` is derived from ``base_config.seed`` and
  ``i`` and recorded in the run's metrics (``rlaif_generation_seed``) and in ``rlaif/iteration.json``.
* **Judging**: each prompt's distinct candidates are compared pairwise (``C(k, 2)`` calls, run on a
  thread pool since API judges wait on the network); a win counts 1, a tie ½ to each side.
  Position bias is the judge's business (the API judges ask both orders). The candidate with the
  most wins is *chosen*, the one with the fewest *rejected* (ties broken by summed confidence, then
  by sampling order). A prompt yields no pair when its candidates are all identical, when the
  judge's verdict on chosen vs rejected is a tie, or when its confidence is below
  ``min_confidence``; each reason is counted.
* **Training**: ``backend.train_dpo`` on the pairs, with ``provenance=[parent run]`` and
  ``init_adapter=`` the adopted adapter (the ``trl`` backend continues that LoRA adapter; its DPO
  reference model is the base model with the adapter disabled).
* **Artifacts** added to every iteration's run (and hashed into its manifest):
  ``rlaif/preferences.jsonl`` (the pairs, each with the judge's identity, verdict, confidence and
  rationale — the run's ``dataset_hash`` is this file's hash), ``rlaif/candidates.jsonl`` (every
  candidate with its wins) and ``rlaif/iteration.json`` (seed, counts, eval, gate decision).
* **Regression gate**: the primary metric (default ``exact_match``) of the new policy on the eval
  set is compared with the best so far (the starting policy's score included). A drop of more than
  ``regression_tolerance`` (absolute) marks the iteration ``regressed``; its adapter is *not*
  adopted and the loop stops. The regressed run stays in the store, marked as such.

With the ``stub`` backend the policy is :class:`~provenir.train._rlaif_policy.StubPolicy`, a
deterministic stand-in that produces varied candidates and never learns: a fast way to run the
whole pipeline, not a demonstration of improvement.

Example:
    >>> from provenir.core.config import RunConfig
    >>> from provenir.data.dataset import JsonlDataset
    >>> from provenir.eval.judge import StubJudge
    >>> from provenir.train import get_backend
    >>> cfg = RunConfig(name="rlaif-doc", storage_root="memory://rlaif-doc")
    >>> data = JsonlDataset.from_records([{"instruction": "Copy 4071", "output": "4071"}])
    >>> its = RLAIFPipeline(StubJudge(), get_backend("stub"), cfg, RLAIFConfig(n_iterations=2)).run(data, data)
    >>> [(it.iteration, it.regressed) for it in its]
    [(1, False), (2, False)]
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

from provenir.core.abstractions import RunManifest, TrainingBackend
from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError, DataError
from provenir.core.hashing import sha256_json
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.data.templates import to_conversation
from provenir.eval.harness import EvalResult, MultiMetricEvaluator
from provenir.eval.judge import LLMJudge, Preference, judge_identity
from provenir.train._rlaif_policy import (
    Policy,
    PolicyFactory,
    Prompt,
    StubPolicy,
    TransformersPolicy,
    default_policy_factory,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Policy",
    "RLAIFConfig",
    "RLAIFIteration",
    "RLAIFPipeline",
    "StubPolicy",
    "TransformersPolicy",
    "rank_candidates",
]

PREFERENCES_FILE = "rlaif/preferences.jsonl"
CANDIDATES_FILE = "rlaif/candidates.jsonl"
ITERATION_FILE = "rlaif/iteration.json"


class RLAIFConfig(BaseModel):
    """How many rounds, how many candidates, and how much regression is tolerated.

    Attributes:
        n_iterations: rounds of generate → judge → DPO → eval (>= 1).
        responses_per_prompt: sampled candidates per training prompt (>= 2).
        regression_tolerance: the largest absolute drop of the primary metric below the best so
            far that still counts as no regression (>= 0).
        primary_metric: the evaluator metric the gate watches (default ``exact_match``).
        min_confidence: pairs whose chosen-vs-rejected verdict is less sure are dropped.
        max_new_tokens / temperature / top_p: sampling settings of the transformers policy.
        judge_concurrency: judge calls in flight at once (threads).
        judge_retries: a judge call that raises is tried again this many times (with a short
            backoff); one that still fails drops its prompt's pair — counted as ``judge_error`` in
            the round's ``dropped`` — and never the round.
        max_prompts: use only the first this-many training prompts per iteration (None: all).
        generation_actors: 0 generates in this process; N > 0 holds the policy in N Ray actors
            (:class:`~provenir.distributed.generation.GenerationPool`) for large prompt sets.
        generation_chunk_size: prompts per generation task; also the unit of seeding, so the
            candidates are the same in process and with any number of actors.
        generation_actor_cpus: CPUs each generation actor reserves.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    n_iterations: int = 3
    responses_per_prompt: int = 4
    regression_tolerance: float = 0.05
    primary_metric: str = "exact_match"
    min_confidence: float = 0.0
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    judge_concurrency: int = 8
    max_prompts: int | None = None
    generation_actors: int = 0
    generation_chunk_size: int = 32
    generation_actor_cpus: float = 1.0
    judge_retries: int = 2

    @field_validator("n_iterations")
    @classmethod
    def _iterations(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"n_iterations must be >= 1 (got {v}): run at least one round")
        return v

    @field_validator("responses_per_prompt")
    @classmethod
    def _responses(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"responses_per_prompt must be >= 2 (got {v}): a pair needs two candidates")
        return v

    @field_validator("regression_tolerance")
    @classmethod
    def _tolerance(cls, v: float) -> float:
        if not v >= 0:
            raise ValueError(f"regression_tolerance must be >= 0 (got {v})")
        return v

    @field_validator("min_confidence")
    @classmethod
    def _confidence(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"min_confidence must be within [0, 1] (got {v})")
        return v

    @field_validator("max_new_tokens", "judge_concurrency", "generation_chunk_size")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1 (got {v})")
        return v

    @field_validator("judge_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if not 0 <= v <= 10:
            raise ValueError(f"must be between 0 and 10 (got {v})")
        return v

    @field_validator("generation_actor_cpus")
    @classmethod
    def _actor_cpus(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"generation_actor_cpus must be > 0 (got {v})")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"temperature must be > 0 (got {v}); sampling needs variety")
        return v

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"top_p must be within (0, 1] (got {v})")
        return v

    @field_validator("generation_actors")
    @classmethod
    def _actors(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"generation_actors must be >= 0 (got {v}); 0 generates in process")
        return v

    @field_validator("max_prompts")
    @classmethod
    def _max_prompts(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"max_prompts must be >= 1 or null (got {v})")
        return v


@dataclass
class RLAIFIteration:
    """One round's outcome.

    Attributes:
        iteration: 1-based round number.
        preference_count: pairs DPO trained on.
        eval_result: the new policy on the eval set.
        manifest: the DPO run's manifest (``provenance`` = the parent run).
        regressed: the gate rejected this round's adapter (it was not adopted; the loop stopped).
    """

    iteration: int
    preference_count: int
    eval_result: EvalResult
    manifest: RunManifest
    regressed: bool
    adapter_path: str | None = None
    generation_seed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    primary_score: float = 0.0
    best_before: float = 0.0


def _prompts(dataset: JsonlDataset, config: RunConfig, what: str) -> list[Prompt]:
    """``(system, user)`` of every record: single-turn records, their answer (if any) left out."""
    prompts: list[Prompt] = []
    for index, record in enumerate(dataset.map_fields(config.data.fields), start=1):
        where = f"{dataset.source or what}: record {index}"
        conv = to_conversation(record, where)
        if conv.text is not None:
            raise DataError(f"{where}: RLAIF needs prompts ('instruction', 'prompt' or 'messages'), not 'text'")
        users = [content for role, content in conv.turns if role == "user"]
        if len(users) != 1:
            raise DataError(
                f"{where}: RLAIF takes single-turn prompts (one user message); found {len(users)}"
            )
        prompts.append((conv.system, users[0]))
    if not prompts:
        raise DataError(f"{dataset.source or what}: no prompts")
    return prompts


def rank_candidates(
    judge: LLMJudge,
    prompt: str,
    candidates: list[str],
    *,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[list[float], dict[tuple[int, int], Preference]]:
    """Compare every pair of distinct candidates; ``(scores, verdicts)``.

    A win scores 1, a tie ½ to each; the score also carries each candidate's summed confidence
    of its wins as a fraction (< 1) to break equal win counts. Identical texts share a verdict:
    only the first of each distinct text is compared (the others score -1).
    """
    pairs = _comparisons(candidates)
    call = lambda ab: judge.score_pairwise(prompt, candidates[ab[0]], candidates[ab[1]])  # noqa: E731
    verdicts = list(pool.map(call, pairs)) if pool is not None else [call(ab) for ab in pairs]
    return _scores(candidates, pairs, verdicts)


@dataclass(frozen=True)
class _JudgeFailure:
    """A judge call that failed after its retries (the message, never the prompt)."""

    message: str


def _comparisons(candidates: list[str]) -> list[tuple[int, int]]:
    """Index pairs of the distinct candidates (the first of each distinct text), in order."""
    first_of: dict[str, int] = {}
    for i, text in enumerate(candidates):
        first_of.setdefault(text, i)
    distinct = sorted(first_of.values())
    return [(a, b) for n, a in enumerate(distinct) for b in distinct[n + 1 :]]


def _scores(
    candidates: list[str], pairs: list[tuple[int, int]], verdicts: list[Preference]
) -> tuple[list[float], dict[tuple[int, int], Preference]]:
    first_of: dict[str, int] = {}
    for i, text in enumerate(candidates):
        first_of.setdefault(text, i)
    distinct = sorted(first_of.values())
    wins = {i: 0.0 for i in distinct}
    confidence = {i: 0.0 for i in distinct}
    for (a, b), verdict in zip(pairs, verdicts):
        if verdict.preferred == "tie":
            wins[a] += 0.5
            wins[b] += 0.5
        else:
            winner = a if verdict.preferred == "a" else b
            wins[winner] += 1.0
            confidence[winner] += verdict.confidence
    cap = max(1.0, float(len(distinct)))
    scores = [wins[i] + confidence[i] / (cap + 1) if i in wins else -1.0 for i in range(len(candidates))]
    return scores, dict(zip(pairs, verdicts))


class RLAIFPipeline:
    """Generate → judge → DPO → eval → gate, ``n_iterations`` times, with provenance.

    Args:
        judge: any :class:`~provenir.eval.judge.LLMJudge` (wrap API judges in ``CachedJudge``).
        backend: the training backend (``get_backend("trl")`` or ``"stub"``).
        base_config: the run config each iteration's DPO run uses (its ``name`` gets
            ``-rlaif-<i>`` appended; ``seed`` seeds sampling and training).
        rlaif_config: the loop's settings (:class:`RLAIFConfig`).
        evaluator: scores the eval predictions (default: exact match, token F1, ROUGE-L on the
            records' ``output``); must include ``rlaif_config.primary_metric``.
        policy_factory: ``(config, adapter_path) -> Policy``; default: the stub policy for the
            ``stub`` backend, the transformers model (+ adapter) otherwise.
        store: the artifact store (default: ``base_config.store_root``).
        start_run_id: a completed run (e.g. an SFT run) whose adapter is the starting policy; it
            becomes the first iteration's parent in ``provenance``.
        command: the command line recorded in every manifest.
        on_iteration: called with each :class:`RLAIFIteration` as soon as it is known.
    """

    def __init__(
        self,
        judge: LLMJudge,
        backend: TrainingBackend,
        base_config: RunConfig,
        rlaif_config: RLAIFConfig = RLAIFConfig(),  # noqa: B008 - immutable in use; the contract's default
        *,
        evaluator: MultiMetricEvaluator | None = None,
        policy_factory: PolicyFactory | None = None,
        store: ArtifactStore | None = None,
        start_run_id: str | None = None,
        command: list[str] | None = None,
        on_iteration: Callable[[RLAIFIteration], None] | None = None,
    ):
        if not hasattr(judge, "score_pairwise"):
            raise ConfigError(f"RLAIFPipeline(judge=...): {type(judge).__name__} has no score_pairwise")
        self.judge = judge
        self.judge_errors: list[dict[str, Any]] = []  # the calls that failed after their retries
        self.backend = backend
        self.base_config = base_config
        self.config = rlaif_config
        self.evaluator = evaluator or MultiMetricEvaluator(seed=base_config.seed)
        if rlaif_config.primary_metric not in self.evaluator.metric_names:
            raise ConfigError(
                f"primary_metric {rlaif_config.primary_metric!r} is not among the evaluator's metrics "
                f"({', '.join(self.evaluator.metric_names)}); pick one of them"
            )
        factory = policy_factory or default_policy_factory(
            getattr(backend, "name", "trl"),
            max_new_tokens=rlaif_config.max_new_tokens,
            temperature=rlaif_config.temperature,
            top_p=rlaif_config.top_p,
        )
        self.policy_factory = _pooled(factory, rlaif_config) if rlaif_config.generation_actors else factory
        self.store = store or ArtifactStore(base_config.store_root)
        self.start_run_id = start_run_id
        self.command = command
        self.on_iteration = on_iteration
        self.baseline: EvalResult | None = None

    # -- helpers ----------------------------------------------------------------------------------

    def generation_seed(self, iteration: int) -> int:
        """The sampling seed of ``iteration`` (a function of the run seed and the iteration)."""
        return int(sha256_json({"seed": self.base_config.seed, "iteration": iteration})[:8], 16)

    def _start_adapter(self) -> str | None:
        if self.start_run_id is None:
            return None
        manifest = self.store.load_manifest(self.start_run_id)
        if manifest.status != "completed":
            raise ConfigError(f"start run {self.start_run_id}: status is {manifest.status!r}, not completed")
        local = self.store.local_run_dir(self.start_run_id)
        if local is None or not (local / "adapter").is_dir():
            raise ConfigError(f"start run {self.start_run_id}: no local adapter/ folder to start from")
        return str(local / "adapter")

    def _sample(self, policy: Policy, prompts: list[Prompt], seed: int) -> list[list[str]]:
        """Candidates in chunks seeded by position (the same in process and on an actor pool)."""
        from provenir.distributed.generation import GenerationPool, chunk_seed

        n, size = self.config.responses_per_prompt, self.config.generation_chunk_size
        if isinstance(policy, GenerationPool):
            return policy.sample(prompts, n=n, seed=seed)
        out: list[list[str]] = []
        for i, start in enumerate(range(0, len(prompts), size)):
            out.extend(policy.sample(prompts[start : start + size], n=n, seed=chunk_seed(seed, i)))
        return out

    def _evaluate(self, policy: Policy, prompts: list[Prompt], eval_dataset: JsonlDataset) -> EvalResult:
        predictions = policy.predict(prompts)
        return self.evaluator.evaluate(eval_dataset, predictions)

    def make_pairs(
        self, prompts: list[Prompt], candidates: list[list[str]], iteration: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
        """``(pairs, candidate rows, dropped counts)`` for one iteration's candidates."""
        identity = judge_identity(self.judge)
        pairs: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        dropped = {"identical": 0, "tie": 0, "low_confidence": 0, "judge_error": 0}
        comparisons = [_comparisons(texts) for texts in candidates]
        calls = [
            (user, texts[a], texts[b])
            for (_, user), texts, here in zip(prompts, candidates, comparisons, strict=True)
            for a, b in here
        ]
        # one fan-out over every comparison of every prompt; results come back in call order
        with ThreadPoolExecutor(max_workers=self.config.judge_concurrency) as pool:
            flat = list(pool.map(self._judge_call, calls))
        position = 0
        for index, ((system, user), texts) in enumerate(zip(prompts, candidates, strict=True)):
            pairs_here = comparisons[index]
            verdicts_here = flat[position : position + len(pairs_here)]
            position += len(pairs_here)
            failures = [v for v in verdicts_here if isinstance(v, _JudgeFailure)]
            if failures:  # the ranking of this prompt's candidates is incomplete: no pair from it
                dropped["judge_error"] += 1
                self.judge_errors.append({"iteration": iteration, "prompt_index": index,
                                          "error": failures[0].message})
                for k, text in enumerate(texts):
                    rows.append({"iteration": iteration, "prompt_index": index, "candidate": k,
                                 "text": text, "score": None, "duplicate": False, "judge_error": True})
                continue
            scores, verdicts = _scores(texts, pairs_here, verdicts_here)
            for k, (text, score) in enumerate(zip(texts, scores)):
                rows.append({"iteration": iteration, "prompt_index": index, "candidate": k,
                             "text": text, "score": round(score, 6), "duplicate": score < 0})
            order = sorted((i for i, s in enumerate(scores) if s >= 0), key=lambda i: (-scores[i], i))
            if len(order) < 2:
                dropped["identical"] += 1
                continue
            best, worst = order[0], order[-1]
            key = (min(best, worst), max(best, worst))
            verdict = verdicts[key]
            best_label = "a" if key[0] == best else "b"
            if verdict.preferred == "tie" or verdict.preferred != best_label:
                dropped["tie"] += 1
                continue
            if verdict.confidence < self.config.min_confidence:
                dropped["low_confidence"] += 1
                continue
            pair: dict[str, Any] = {"prompt": user, "chosen": texts[best], "rejected": texts[worst]}
            if system is not None:
                pair["system"] = system
            pair.update({
                "iteration": iteration, "prompt_index": index, "chosen_index": best,
                "rejected_index": worst, "chosen_score": round(scores[best], 6),
                "rejected_score": round(scores[worst], 6), "judge": identity,
                "confidence": verdict.confidence, "rationale": verdict.rationale,
            })
            pairs.append(pair)
        return pairs, rows, dropped

    def _judge_call(self, args: tuple[str, str, str]) -> Preference | _JudgeFailure:
        """One pairwise verdict, tried ``judge_retries + 1`` times; a failure is returned, not raised."""
        last: BaseException | None = None
        for attempt in range(self.config.judge_retries + 1):
            try:
                return self.judge.score_pairwise(*args)
            except Exception as exc:  # noqa: BLE001 - a judge call's failure drops its pair, never the round
                last = exc
                if attempt < self.config.judge_retries:
                    time.sleep(min(2.0, 0.05 * 2 ** attempt))
        text = str(last).strip().splitlines()[0][:200] if str(last).strip() else ""
        return _JudgeFailure(f"{type(last).__name__}: {text}" if text else type(last).__name__)

    def _annotate(self, manifest: RunManifest, files: dict[str, str], metrics: dict[str, Any]) -> RunManifest:
        """Add the RLAIF artifacts and metrics to a finished run and re-hash its artifacts."""
        for rel, text in files.items():
            self.store.write_text(manifest.run_id, rel, text)
        manifest.metrics.update(metrics)
        manifest.artifacts = self.store.hash_artifacts(manifest.run_id)
        self.store.save_manifest(manifest)
        return manifest

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, train_dataset: JsonlDataset, eval_dataset: JsonlDataset) -> list[RLAIFIteration]:
        """Run up to ``n_iterations`` rounds; stops early at the first regression.

        Raises:
            DataError: a record is not a single-turn prompt, the data is empty, or an iteration
                produced no preference pair at all (nothing to train on).
            ConfigError: the start run cannot be used.
        """
        cfg = self.config
        prompts = _prompts(train_dataset, self.base_config, "training data")
        if cfg.max_prompts is not None:
            prompts = prompts[: cfg.max_prompts]
        eval_prompts = _prompts(eval_dataset, self.base_config, "eval data")
        self.evaluator.references(eval_dataset)  # fail early on a missing reference field

        adapter = self._start_adapter()
        parent = self.start_run_id
        live: list[Policy] = []
        try:
            return self._loop(prompts, eval_prompts, eval_dataset, train_dataset, adapter, parent, live)
        finally:
            for policy in live:
                _release(policy)

    def _loop(
        self,
        prompts: list[Prompt],
        eval_prompts: list[Prompt],
        eval_dataset: JsonlDataset,
        train_dataset: JsonlDataset,
        adapter: str | None,
        parent: str | None,
        live: list[Policy],
    ) -> list[RLAIFIteration]:
        cfg = self.config
        policy = self.policy_factory(self.base_config, adapter)
        live.append(policy)
        self.baseline = self._evaluate(policy, eval_prompts, eval_dataset)
        best = self.baseline.metrics[cfg.primary_metric].mean
        identity = judge_identity(self.judge)
        results: list[RLAIFIteration] = []
        for iteration in range(1, cfg.n_iterations + 1):
            seed = self.generation_seed(iteration)
            candidates = self._sample(policy, prompts, seed)
            _release(policy)  # free its actors before the next policy needs them
            if len(candidates) != len(prompts) or any(len(c) != cfg.responses_per_prompt for c in candidates):
                raise DataError(f"iteration {iteration}: the policy returned the wrong number of candidates")
            pairs, rows, dropped = self.make_pairs(prompts, candidates, iteration)
            if not pairs:
                raise DataError(
                    f"iteration {iteration}: no preference pairs from {len(prompts)} prompts "
                    f"(dropped: {dropped}); raise responses_per_prompt or temperature, or lower min_confidence"
                )
            pairs_ds = JsonlDataset(pairs, source=f"rlaif iteration {iteration} preferences")
            config = self.base_config.model_copy(update={"name": f"{self.base_config.name}-rlaif-{iteration}"})
            inputs: dict[str, Any] = {
                "train": {"sha256": pairs_ds.hash(), "records": len(pairs), "artifact": PREFERENCES_FILE},
                "prompts": _describe(train_dataset),
                "eval": _describe(eval_dataset),
                "judge": {"identity": identity},
            }
            if parent is not None:
                inputs["policy"] = {"run_id": parent, "artifact": "adapter"}
            kwargs: dict[str, Any] = {"inputs": inputs, "provenance": [parent] if parent else [],
                                      "store": self.store, "command": self.command}
            if adapter is not None:
                kwargs["init_adapter"] = adapter
            result = self.backend.train_dpo(config, pairs_ds, None, **kwargs)
            new_policy = self.policy_factory(self.base_config, result.adapter_path)
            live.append(new_policy)
            evaluation = self._evaluate(new_policy, eval_prompts, eval_dataset)
            score = evaluation.metrics[cfg.primary_metric].mean
            regressed = best - score > cfg.regression_tolerance + 1e-12
            summary = {
                "iteration": iteration, "generation_seed": seed, "prompts": len(prompts),
                "responses_per_prompt": cfg.responses_per_prompt, "preference_pairs": len(pairs),
                "dropped": dropped, "judge": identity, "parent_run": parent, "init_adapter": adapter,
                "judge_errors": [e for e in self.judge_errors if e["iteration"] == iteration][:20],
                "primary_metric": cfg.primary_metric, "score": score, "best_before": best,
                "regression_tolerance": cfg.regression_tolerance, "regressed": regressed,
                "adopted": not regressed, "eval": evaluation.to_dict(),
                "baseline": self.baseline.to_dict() if iteration == 1 else None,
                "rlaif_config": cfg.model_dump(mode="json"),
            }
            metrics = {
                "rlaif_iteration": iteration, "rlaif_generation_seed": seed,
                "rlaif_preference_pairs": len(pairs), "rlaif_regressed": regressed,
                **{f"rlaif_dropped_{k}": v for k, v in dropped.items()},
                **{f"rlaif_eval_{k}": v for k, v in evaluation.means().items()},
            }
            files = {
                PREFERENCES_FILE: _jsonl(pairs),
                CANDIDATES_FILE: _jsonl(rows),
                ITERATION_FILE: json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n",
            }
            manifest = self._annotate(result.manifest, files, metrics)
            record = RLAIFIteration(
                iteration=iteration, preference_count=len(pairs), eval_result=evaluation, manifest=manifest,
                regressed=regressed, adapter_path=result.adapter_path, generation_seed=seed,
                dropped=dropped, primary_score=score, best_before=best,
            )
            results.append(record)
            if self.on_iteration is not None:
                self.on_iteration(record)
            if regressed:
                break
            best = max(best, score)
            policy, adapter, parent = new_policy, result.adapter_path, manifest.run_id
        return results


def _release(policy: Any) -> None:
    """Free what a policy holds (a generation pool's actors); plain policies hold nothing."""
    shutdown = getattr(policy, "shutdown", None)
    if callable(shutdown):
        shutdown()


def _pooled(factory: PolicyFactory, config: RLAIFConfig) -> PolicyFactory:
    """Wrap ``factory`` so each policy lives in a Ray actor pool."""
    import functools

    def make(run_config: RunConfig, adapter: str | None) -> Policy:
        from provenir.distributed.generation import GenerationPool

        return GenerationPool(
            functools.partial(factory, run_config, adapter),
            num_actors=config.generation_actors, chunk_size=config.generation_chunk_size,
            num_cpus=config.generation_actor_cpus,
        )

    return make


def _describe(dataset: JsonlDataset) -> dict[str, Any]:
    info: dict[str, Any] = {"sha256": dataset.hash(), "records": len(dataset)}
    if dataset.source and Path(dataset.source).is_file():
        from provenir.core.run import describe_input

        described = describe_input(dataset.source)
        if described["sha256"] == info["sha256"]:  # only a path that verify_run can re-check
            info = described
    return info


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
