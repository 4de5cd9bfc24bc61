"""Curation on Ray Data: quality filtering, decontamination, RAG generation and the flywheel at scale.

Each pipeline reads records with :func:`provenir.distributed.data.read_records` (rows ``{"file",
"line", "json", "error"}``), maps the *same* batch op the in-process classes use
(:meth:`QualityScorer.score_batch`, :meth:`SemanticDecontaminationChecker.check_batch`,
:meth:`RAGDataGenerator.generate_for_document`, :meth:`DataFlywheel.make_variants` /
:meth:`DataFlywheel.screen_variants` / :meth:`DataFlywheel.contaminated`) with ``map_batches``, and
writes JSONL part files atomically plus a ``report.json``. Models (the embedder, a local
generator) live in actor pools: class UDFs constructed once per actor. The decontamination index
(the references' n-gram hashes and embeddings) is built once on the driver and shared with the
actors through the object store.

Malformed input lines never stop a pipeline: they are counted in the report with file and line.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from provenir.core.errors import DataError

__all__ = [
    "DecontaminationActor",
    "FlywheelActor",
    "QualityOp",
    "RAGActor",
    "run_decontaminate",
    "run_flywheel",
    "quality_batch",
    "run_quality",
    "run_rag_generate",
]


def _str(value: Any) -> str | None:
    """A string cell, or ``None`` (a column of nulls arrives in NumPy batches as NaN)."""
    return value if isinstance(value, str) else None


def _records(batch: dict[str, np.ndarray]) -> list[dict[str, Any] | None]:
    out = []
    for text, error in zip(batch["json"], batch["error"]):
        out.append(json.loads(text) if _str(error) is None and _str(text) is not None else None)
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _resolve(value: Any) -> Any:
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _write_report(out_dir: str, report: dict[str, Any]) -> str:
    from provenir.core.io import atomic_write_text

    path = os.path.join(out_dir, "report.json")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
    return path


_PREPARED: set[str] = set()  # output folders created by the running pipeline (see _cleans_up)


def _prepare_out(out_dir: str, overwrite: bool, inputs: Sequence[str] = ()) -> None:
    """Create ``out_dir`` (replacing it only with ``overwrite``), after checking that it is neither
    an input, inside one, nor holding one: replacing it would delete the data about to be read."""
    import shutil

    from provenir.core.io import check_output_outside_inputs

    check_output_outside_inputs(out_dir, inputs)
    path = Path(out_dir)
    out = path.resolve()
    if path.exists() and not path.is_dir():
        raise DataError(f"--out {out_dir}: is a file; the output is a folder (part files + report.json)")
    if path.exists():
        if not overwrite:
            raise DataError(f"{out_dir}: output folder already exists; remove it or pass --overwrite")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    _PREPARED.add(str(out))


def actor_cpus(actors: int, cpus_per_actor: float | None = None) -> float:
    """CPUs to reserve per actor: 1, or less when the pool would otherwise take every CPU of the
    cluster and leave none for the read tasks that feed it (which would stall the pipeline)."""
    if cpus_per_actor is not None:
        return cpus_per_actor
    import ray

    total = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.1, min(1.0, (total - 1.0) / max(1, actors))) if total > 1 else 0.5


def actor_resources(actors: int, cpus_per_actor: float | None = None, gpus_per_actor: float = 0.0) -> dict[str, float]:
    """Ray resources of each actor in a model pool: ``num_cpus`` (see :func:`actor_cpus`) and, when
    ``gpus_per_actor`` is set, ``num_gpus`` (Ray then gives each actor its own ``CUDA_VISIBLE_DEVICES``,
    and a model that picks CUDA when available runs there).

    Raises:
        ConfigError: a negative count, or more CPUs or GPUs than the cluster has (Ray would
            otherwise wait for them forever, with nothing started).
    """
    from provenir.core.errors import ConfigError

    if gpus_per_actor < 0 or (cpus_per_actor is not None and cpus_per_actor <= 0):
        raise ConfigError("gpus_per_actor must be >= 0 and cpus_per_actor > 0")
    import ray

    cluster = ray.cluster_resources()
    checks = [("CPU", cpus_per_actor, "--cpus-per-actor", "nodes"), ("GPU", gpus_per_actor or None,
                                                                      "--gpus-per-actor", "GPU nodes")]
    for kind, per_actor, option, more in checks:
        if per_actor is None:
            continue
        have = float(cluster.get(kind, 0.0))
        # one CPU stays free for the read tasks that feed the actors
        usable = have - 1.0 if kind == "CPU" and have >= 2 else have
        need = actors * per_actor
        if need > usable:
            spare = " and one stays free for the read tasks that feed the actors" if kind == "CPU" else ""
            raise ConfigError(
                f"{actors} actor(s) × {per_actor:g} {kind} = {need:g} {kind}s, but the Ray cluster has "
                f"{have:g}{spare}; lower --actors or {option}, or add {more}"
            )
    resources = {"num_cpus": actor_cpus(actors, cpus_per_actor)}
    if gpus_per_actor:
        resources["num_gpus"] = gpus_per_actor
    return resources


def _cleans_up(fn: Any) -> Any:
    """Remove a pipeline's output folder when the pipeline fails: nothing half-written is left."""
    import functools
    import inspect
    import shutil

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        out_dir = Path(bound.arguments["out_dir"])
        key = str(out_dir.resolve())
        _PREPARED.discard(key)
        try:
            return fn(*args, **kwargs)
        except BaseException:
            # only a folder this call (re)created: a refusal before that (an output overlapping an
            # input, an existing folder without --overwrite) must leave everything as it was
            if key in _PREPARED and out_dir.exists():
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        finally:
            _PREPARED.discard(key)

    return wrapper


def _progress(enabled: bool) -> None:
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = enabled


def _stream(ds: Any, columns: list[str], batch_size: int = 4096) -> Iterable[dict[str, np.ndarray]]:
    """Small columns of a (materialised) dataset, batch by batch: reports never collect the records."""
    yield from ds.select_columns(columns).iter_batches(batch_size=batch_size, batch_format="numpy")


# --------------------------------------------------------------------------------------------------
# Quality


class QualityOp:
    """The quality batch op: adds ``score``, ``keep`` and ``detail`` (components and reasons, JSON)."""

    def __init__(self, threshold: float, scorer_kwargs: dict[str, Any] | None = None, annotate: bool = False):
        from provenir.data.quality import QualityScorer

        self.scorer = QualityScorer(**(scorer_kwargs or {}))
        self.threshold = threshold
        self.annotate = annotate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        records = _records(batch)
        results = self.scorer.score_batch([r for r in records if r is not None])
        it = iter(results)
        scores, keeps, details, texts = [], [], [], []
        for record, text, error in zip(records, batch["json"], batch["error"]):
            if record is None:
                scores.append(0.0)
                keeps.append(False)
                details.append(_dumps({"reasons": [_str(error) or "unreadable line"]}))
                texts.append(None)
                continue
            result = next(it)
            keep = result.score >= self.threshold
            scores.append(result.score)
            keeps.append(keep)
            details.append(_dumps(result.to_dict()))
            texts.append(_dumps({**record, "quality": result.to_dict()}) if self.annotate else text)
        return {"file": batch["file"], "line": batch["line"], "json": texts,
                "error": [_str(e) for e in batch["error"]], "score": np.asarray(scores, dtype=np.float64), "keep": np.asarray(keeps, dtype=bool),
                "detail": details}


def quality_batch(batch: dict[str, np.ndarray], threshold: float, scorer_kwargs: dict[str, Any] | None = None,
                  annotate: bool = False) -> dict[str, Any]:
    """The quality op as a plain function (no model to hold: it runs as Ray tasks)."""
    return QualityOp(threshold, scorer_kwargs, annotate)(batch)


def _rejected_row(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    lines = []
    for file, line, text, detail in zip(batch["file"], batch["line"], batch["json"], batch["detail"]):
        info = json.loads(detail)
        lines.append(_dumps({"file": str(file), "line": int(line),
                             "record": json.loads(text) if _str(text) else None, "quality": info}))
    return {"json": lines}


@_cleans_up
def run_quality(
    inputs: Sequence[str],
    out_dir: str,
    *,
    threshold: float = 0.5,
    scorer_kwargs: dict[str, Any] | None = None,
    annotate: bool = False,
    overwrite: bool = False,
    batch_size: int = 1024,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every record; write ``kept/`` (records at or above ``threshold``), ``rejected/`` (with
    their components and reasons) and ``report.json`` under ``out_dir``."""
    from provenir.core.errors import ConfigError
    from provenir.distributed.data import map_records, read_records, set_preserve_order, write_jsonl

    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: must be in [0, 1]")
    QualityOp(threshold, scorer_kwargs)  # validate the scorer's arguments before any work
    _prepare_out(out_dir, overwrite, inputs)
    _progress(progress)
    set_preserve_order(True)
    started = time.perf_counter()
    scored = map_records(read_records(inputs), quality_batch, batch_size=batch_size,
                         fn_kwargs={"threshold": threshold, "scorer_kwargs": scorer_kwargs,
                                    "annotate": annotate}).materialize()
    kept_parts = write_jsonl(scored.filter(lambda r: bool(r["keep"])), os.path.join(out_dir, "kept"))
    rejected = scored.filter(lambda r: not r["keep"] and _str(r["error"]) is None)
    write_jsonl(rejected.map_batches(_rejected_row, batch_format="numpy"), os.path.join(out_dir, "rejected"))
    total = kept = 0
    errors: list[str] = []
    score_sum = 0.0
    hist = np.zeros(10, dtype=np.int64)
    reasons: Counter[str] = Counter()
    for batch in _stream(scored, ["score", "keep", "error", "detail"]):
        for score, keep, error, detail in zip(batch["score"], batch["keep"], batch["error"], batch["detail"]):
            if _str(error) is not None:
                errors.append(str(error))
                continue
            total += 1
            kept += bool(keep)
            score_sum += float(score)
            hist[min(9, int(float(score) * 10))] += 1
            if not keep:
                for reason in json.loads(detail).get("reasons", []):
                    reasons[reason.split(":", 1)[0]] += 1
    report = {
        "command": "quality", "inputs": list(inputs), "threshold": threshold, "records": total,
        "kept": kept, "rejected": total - kept, "malformed": len(errors), "errors": errors[:100],
        "mean_score": round(score_sum / total, 6) if total else None,
        "score_histogram": {f"{i / 10:.1f}-{(i + 1) / 10:.1f}": int(c) for i, c in enumerate(hist)},
        "rejection_reasons": dict(reasons.most_common()), "kept_parts": kept_parts,
        "seconds": round(time.perf_counter() - started, 3),
    }
    report["report"] = _write_report(out_dir, report)
    return report


# --------------------------------------------------------------------------------------------------
# Decontamination


class DecontaminationActor:
    """Holds the shared index and the embedder (loaded once per actor); maps ``check_batch``."""

    def __init__(self, index: Any, checker_kwargs: dict[str, Any]):
        from provenir.data.decontamination import SemanticDecontaminationChecker

        self.index = _resolve(index)
        self.checker = SemanticDecontaminationChecker(**checker_kwargs)
        self.embedder = self.checker.embedder() if self.checker.semantic else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        records = _records(batch)
        present = [r for r in records if r is not None]
        matches = iter(self.checker.check_batch(present, self.index, self.embedder))
        flags, infos = [], []
        for record in records:
            match = next(matches) if record is not None else None
            if match is not None and "skipped" in match:
                flags.append(False)
                infos.append(_dumps(match))
            elif match is not None:
                flags.append(True)
                infos.append(_dumps(match))
            else:
                flags.append(False)
                infos.append(None)
        return {"file": batch["file"], "line": batch["line"], "json": [_str(t) for t in batch["json"]],
                "error": [_str(e) for e in batch["error"]], "contaminated": np.asarray(flags, dtype=bool), "match": infos}


def _contaminated_row(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    lines = []
    for file, line, text, match in zip(batch["file"], batch["line"], batch["json"], batch["match"]):
        lines.append(_dumps({"file": str(file), "line": int(line), "record": json.loads(text), **json.loads(match)}))
    return {"json": lines}


def load_eval_references(eval_paths: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Reference texts from eval files (JSONL records, or ``.txt`` with one reference per line)."""
    from provenir.core.jsonl import iter_jsonl
    from provenir.data.decontamination import references_from_records

    refs: list[str] = []
    skipped: list[dict[str, Any]] = []
    for path in eval_paths:
        if str(path).endswith(".txt"):
            with open(path, encoding="utf-8") as handle:
                refs.extend(line.rstrip("\n") for line in handle if line.strip())
            continue
        records = [record for _, record in iter_jsonl(path)]
        found, why = references_from_records(records)
        refs.extend(found)
        skipped.extend({"file": str(path), **s} for s in why)
    if not refs:
        raise DataError(
            f"{', '.join(map(str, eval_paths))}: no eval record has usable text "
            f"({len(skipped)} skipped, e.g. {skipped[0]['reason'] if skipped else 'the files are empty'}); "
            "nothing to decontaminate against"
        )
    return refs, skipped


@_cleans_up
def run_decontaminate(
    train_inputs: Sequence[str],
    eval_paths: Sequence[str],
    out_dir: str,
    *,
    threshold: float = 0.90,
    actors: int = 1,
    checker_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    batch_size: int = 1024,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Check every training record against the eval set; write ``clean/``, ``contaminated/`` (each
    with its matching reference, score and stage) and ``report.json``."""
    import ray

    from provenir.data.decontamination import SemanticDecontaminationChecker
    from provenir.distributed.data import map_records, read_records, set_preserve_order, write_jsonl

    resources = actor_resources(actors, cpus_per_actor, gpus_per_actor)
    kwargs = {"threshold": threshold, **(checker_kwargs or {})}
    checker = SemanticDecontaminationChecker(**kwargs)
    kwargs["semantic"] = checker.semantic
    refs, skipped_eval = load_eval_references(eval_paths)
    _prepare_out(out_dir, overwrite, [*train_inputs, *eval_paths])
    _progress(progress)
    set_preserve_order(True)
    started = time.perf_counter()
    index = checker.build_index(refs)
    index_seconds = time.perf_counter() - started
    index_ref = ray.put(index)
    checked = map_records(
        read_records(train_inputs), DecontaminationActor, batch_size=batch_size, actors=actors,
        **resources, fn_constructor_kwargs={"index": index_ref, "checker_kwargs": kwargs},
    ).materialize()
    clean_parts = write_jsonl(checked.filter(lambda r: not r["contaminated"]), os.path.join(out_dir, "clean"))
    write_jsonl(checked.filter(lambda r: bool(r["contaminated"])).map_batches(_contaminated_row, batch_format="numpy"),
                os.path.join(out_dir, "contaminated"))
    total = 0
    stages: Counter[str] = Counter()
    errors: list[str] = []
    skipped_records: list[str] = []
    for batch in _stream(checked, ["file", "line", "contaminated", "match", "error"]):
        for file, line, flag, match, error in zip(batch["file"], batch["line"], batch["contaminated"],
                                                  batch["match"], batch["error"]):
            if _str(error) is not None:
                errors.append(str(error))
                continue
            total += 1
            if flag:
                stages[json.loads(match)["stage"]] += 1
            elif _str(match) is not None:
                skipped_records.append(f"{file}:{line}: {json.loads(match)['skipped']}")
    report = {
        "command": "decontaminate", "train": list(train_inputs), "eval": list(eval_paths),
        "references": len(refs), "skipped_references": index.skipped + skipped_eval,
        "threshold": threshold, "second_stage": checker.second_stage, "actors": actors,
        "gpus_per_actor": gpus_per_actor,
        "records": total, "contaminated": sum(stages.values()), "by_stage": dict(stages),
        "clean": total - sum(stages.values()),
        "unreadable_records": skipped_records[:100], "malformed": len(errors), "errors": errors[:100],
        "clean_parts": clean_parts, "seconds_index": round(index_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    report["report"] = _write_report(out_dir, report)
    return report


# --------------------------------------------------------------------------------------------------
# RAG generation

_TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def _read_text_files(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    sources, texts, errors = [], [], []
    for path in batch["path"]:
        path = str(path)
        sources.append(path)
        try:
            with open(path, encoding="utf-8") as handle:
                texts.append(handle.read())
            errors.append(None)
        except (OSError, UnicodeDecodeError) as exc:
            texts.append(None)
            errors.append(f"{path}: {exc}")
    return {"source": sources, "text": texts, "error": errors}


def _jsonl_docs(text_field: str):
    def convert(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        sources, texts, errors = [], [], []
        for file, line, raw, error in zip(batch["file"], batch["line"], batch["json"], batch["error"]):
            sources.append(f"{file}:{line}")
            if _str(error) is not None:
                texts.append(None)
                errors.append(str(error))
                continue
            value = json.loads(raw).get(text_field)
            if not isinstance(value, str):
                texts.append(None)
                errors.append(f"{file}:{line}: field {text_field!r} is "
                              f"{'missing' if value is None else 'not text (' + type(value).__name__ + ')'}")
            else:
                texts.append(value)
                errors.append(None)
        return {"source": sources, "text": texts, "error": errors}

    return convert


class RAGActor:
    """Holds a :class:`RAGDataGenerator` (its generator model loaded once per actor)."""

    def __init__(self, config: dict[str, Any], generator: str | None, judge: Any = None):
        from provenir.data.rag_generator import RAGDataGenerator, RAGGeneratorConfig

        self.gen = RAGDataGenerator(RAGGeneratorConfig(**config), judge=_resolve(judge), generator=generator)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {"json": [], "source": [], "skip": []}
        for source, text, error in zip(batch["source"], batch["text"], batch["error"]):
            if _str(error) is not None:
                pairs, reason = [], str(error)
            else:
                self.gen._rejected = 0
                pairs, reason = self.gen.generate_for_document(text)
            for record in self.gen.to_dataset(pairs).records:
                record["provenance"]["source"] = str(source)
                record["provenance"].pop("doc_index", None)
                out["json"].append(_dumps(record))
                out["source"].append(str(source))
                out["skip"].append(None)
            if reason:
                out["json"].append(None)
                out["source"].append(str(source))
                out["skip"].append(reason)
        return out


@_cleans_up
def run_rag_generate(
    docs: Sequence[str],
    out_dir: str,
    *,
    config: dict[str, Any] | None = None,
    generator: str | None = None,
    judge: Any = None,
    actors: int = 1,
    text_field: str = "text",
    overwrite: bool = False,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Documents (``.txt``/``.md`` files, one document each, or JSONL with a ``text_field``) → QA
    training records in ``pairs/`` and ``report.json``."""
    import ray
    import ray.data

    from provenir.data.generation import build_generator
    from provenir.data.rag_generator import RAGGeneratorConfig
    from provenir.distributed.data import expand_paths, map_records, read_records, set_preserve_order, write_jsonl

    resources = actor_resources(actors, cpus_per_actor, gpus_per_actor)
    cfg = RAGGeneratorConfig(**(config or {}))
    identity = build_generator(generator).identity()
    text_files, record_files = [], []
    for path in docs:
        if os.path.isdir(path):
            found = sorted(str(p) for p in Path(path).rglob("*") if p.suffix in _TEXT_SUFFIXES)
            text_files.extend(found)
            if any(p.name.endswith((".jsonl", ".json", ".jsonl.gz", ".parquet")) for p in Path(path).rglob("*")):
                record_files.extend(f for f in expand_paths([path]) if not f.endswith(_TEXT_SUFFIXES))
        elif str(path).endswith(_TEXT_SUFFIXES):
            if not os.path.exists(path):
                raise DataError(f"{path}: file not found")
            text_files.append(str(path))
        else:
            record_files.extend(expand_paths([path]))
    if not text_files and not record_files:
        raise DataError(f"{', '.join(docs)}: no documents (.txt, .md, .rst, .jsonl, .parquet) found")
    _prepare_out(out_dir, overwrite, docs)
    _progress(progress)
    set_preserve_order(True)
    started = time.perf_counter()
    parts = []
    if text_files:
        parts.append(ray.data.from_items([{"path": p} for p in text_files]).map_batches(_read_text_files, batch_format="numpy"))
    if record_files:
        parts.append(read_records(record_files).map_batches(_jsonl_docs(text_field), batch_format="numpy"))
    docs_ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    judge_ref = ray.put(judge) if judge is not None else None
    generated = map_records(
        docs_ds, RAGActor, batch_size=8, actors=actors, **resources,
        fn_constructor_kwargs={"config": cfg.model_dump(), "generator": generator, "judge": judge_ref},
    ).materialize()
    pair_parts = write_jsonl(generated, os.path.join(out_dir, "pairs"))
    pairs = 0
    documents: set[str] = set()
    skipped = []
    for batch in _stream(generated, ["json", "source", "skip"]):
        for raw, source, skip in zip(batch["json"], batch["source"], batch["skip"]):
            documents.add(str(source))
            if _str(skip) is not None:
                skipped.append({"source": str(source), "reason": str(skip)})
            elif _str(raw) is not None:
                pairs += 1
    report = {
        "command": "rag-generate", "inputs": list(docs), "documents": len(documents), "pairs": pairs,
        "skipped": skipped[:1000], "skipped_count": len(skipped), "generator": identity,
        "judge": type(judge).__name__ if judge is not None else None, "config": cfg.model_dump(),
        "actors": actors, "gpus_per_actor": gpus_per_actor, "pair_parts": pair_parts,
        "seconds": round(time.perf_counter() - started, 3),
    }
    report["report"] = _write_report(out_dir, report)
    return report


# --------------------------------------------------------------------------------------------------
# Flywheel


def _prompt_keys(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    from provenir.data.flywheel import prompt_key

    keys = [prompt_key(json.loads(t)) if _str(e) is None and _str(t) else 0 for t, e in zip(batch["json"], batch["error"])]
    return {"key": np.asarray(keys, dtype=np.uint64)}


class FlywheelActor:
    """Makes variants of a batch of failures and filters them (generator and embedder loaded once)."""

    def __init__(self, config: dict[str, Any], generator: str | None, shared: Any, semantic: bool | None,
                 embedding_model: str | None):
        from provenir.data.flywheel import DataFlywheel, FlywheelConfig

        self.flywheel = DataFlywheel(FlywheelConfig(**config), generator=generator, semantic=semantic,
                                     embedding_model=embedding_model)
        shared = _resolve(shared)
        self.train_keys: set[int] = shared["train_keys"]
        self.index = shared["index"]
        self.checker = self.flywheel.checker()
        self.embedder = self.checker.embedder() if self.checker.semantic and self.index is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """One row per candidate (``json``, its prompt ``key``, ``contaminated``, and its place: the
        batch's first failure ``position`` and the ``slot`` within the batch), then one ``note`` row."""
        failures = [json.loads(t) for t in batch["failure"]]
        variants, skipped = self.flywheel.make_variants(failures)
        candidates, keys, dropped = self.flywheel.screen_variants(variants, self.train_keys)
        flags = self.flywheel.contaminated(candidates, self.index, self.checker, self.embedder)
        first = int(batch["position"][0]) if len(failures) else -1
        rows: dict[str, list[Any]] = {"json": [], "note": [], "key": [], "contaminated": [], "position": [], "slot": []}
        for slot, (record, key, bad) in enumerate(zip(candidates, keys, flags)):
            for name, value in (("json", _dumps(record)), ("note", None), ("key", key), ("contaminated", bad),
                                ("position", first), ("slot", slot)):
                rows[name].append(value)
        note = _dumps({"dropped": dict(dropped), "skipped": skipped, "variants": len(variants)})
        for name, value in (("json", None), ("note", note), ("key", 0), ("contaminated", False),
                            ("position", first), ("slot", -1)):
            rows[name].append(value)
        return {**rows, "key": np.asarray(rows["key"], dtype=np.uint64),
                "contaminated": np.asarray(rows["contaminated"], dtype=bool),
                "position": np.asarray(rows["position"], dtype=np.int64),
                "slot": np.asarray(rows["slot"], dtype=np.int64)}


def _cross_batch_duplicates(produced: Any) -> tuple[set[tuple[int, int]], int]:
    """``(losers, contaminated winners)``: candidates whose prompt key an earlier candidate (in input
    order: batch position, then slot) already claimed, as ``(position, slot)``; and how many first
    claimants are contaminated. The in-process op removes duplicates before decontaminating, so a
    contaminated first claimant still makes its later duplicates duplicates.

    Only the small columns come to the driver: at most ``max_variants_per_failure`` rows per failure,
    and the failures themselves are already on the driver (they are mined there, then distributed).
    """
    claims = []
    for batch in _stream(produced, ["key", "contaminated", "position", "slot"]):
        for key, bad, position, slot in zip(batch["key"], batch["contaminated"], batch["position"], batch["slot"]):
            if slot >= 0:
                claims.append((int(position), int(slot), int(key), bool(bad)))
    seen: set[int] = set()
    losers: set[tuple[int, int]] = set()
    contaminated = 0
    for position, slot, key, bad in sorted(claims):
        if key in seen:
            losers.add((position, slot))
        else:
            seen.add(key)
            contaminated += bad
    return losers, contaminated


@_cleans_up
def run_flywheel(
    train_inputs: Sequence[str],
    eval_path: str,
    out_dir: str,
    *,
    config: dict[str, Any] | None = None,
    generator: str | None = None,
    judge: Any = None,
    actors: int = 1,
    semantic: bool | None = None,
    embedding_model: str | None = None,
    overwrite: bool = False,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
    progress: bool = True,
    batch_size: int = 16,
) -> dict[str, Any]:
    """One flywheel turn at scale: ``new/`` (the new records), ``train/`` (training records followed
    by the new ones), ``heldout.jsonl`` (the eval part to report on, never mined) and ``report.json``.

    ``batch_size`` failures go to each actor call; duplicate variants across batches are removed
    afterwards (the first in input order is kept), so the new records are those of
    :meth:`DataFlywheel.run`, in the same order."""
    import ray
    import ray.data

    from provenir.core.io import atomic_write_text
    from provenir.data.dataset import JsonlDataset
    from provenir.data.flywheel import DataFlywheel, FlywheelConfig, eval_record_id
    from provenir.distributed.data import map_records, read_records, set_preserve_order, write_jsonl

    resources = actor_resources(actors, cpus_per_actor, gpus_per_actor)
    cfg = FlywheelConfig(**(config or {}))
    flywheel = DataFlywheel(cfg, judge=judge, generator=generator, semantic=semantic, embedding_model=embedding_model)
    eval_ds = JsonlDataset.from_jsonl(eval_path)
    if not len(eval_ds):
        raise DataError(f"{eval_path}: the eval set is empty")
    _prepare_out(out_dir, overwrite, [*train_inputs, eval_path])
    _progress(progress)
    set_preserve_order(True)
    started = time.perf_counter()
    mined, heldout = flywheel.split_eval(eval_ds)
    failures, unscored = flywheel.find_failures(mined)
    train = read_records(train_inputs).materialize()
    keys = set()
    for batch in train.map_batches(_prompt_keys, batch_format="numpy").iter_batches(batch_format="numpy"):
        keys.update(int(k) for k in batch["key"] if k)
    index = flywheel.heldout_index(heldout)
    shared = ray.put({"train_keys": keys, "index": index})
    new_ds = ray.data.from_items([{"failure": _dumps(f), "position": i} for i, f in enumerate(failures)]
                                 or [{"failure": "{}", "position": -1}])
    if not failures:
        new_ds = new_ds.filter(lambda _r: False)
    produced = map_records(
        new_ds, FlywheelActor, batch_size=batch_size, actors=actors, **resources,
        fn_constructor_kwargs={"config": cfg.model_dump(), "generator": generator, "shared": shared,
                               "semantic": semantic, "embedding_model": embedding_model},
    ).materialize()
    losers, contaminated = _cross_batch_duplicates(produced)

    def is_new(row: dict[str, Any]) -> bool:
        return (row["slot"] >= 0 and not row["contaminated"]
                and (int(row["position"]), int(row["slot"])) not in losers)

    new_ds = produced.filter(is_new).select_columns(["json"]).materialize()
    new_parts = write_jsonl(new_ds, os.path.join(out_dir, "new"))
    write_jsonl(train.select_columns(["json"]).union(new_ds), os.path.join(out_dir, "train"))
    atomic_write_text(os.path.join(out_dir, "heldout.jsonl"), "".join(_dumps(r) + "\n" for r in heldout))
    dropped: Counter[str] = Counter()
    skipped: list[Any] = []
    variants = 0
    candidates = False
    for batch in _stream(produced, ["note", "slot"]):
        for note, slot in zip(batch["note"], batch["slot"]):
            candidates |= bool(slot >= 0)
            if _str(note) is not None:
                info = json.loads(note)
                dropped.update(info["dropped"])
                skipped.extend(info["skipped"])
                variants += info["variants"]
    if losers:
        dropped["duplicate_of_train"] += len(losers)
    if candidates and index is not None:
        dropped["contaminated"] += contaminated
    new_records = new_ds.count()
    report = {
        "command": "flywheel", "train": list(train_inputs), "eval": eval_path, "config": cfg.model_dump(),
        "eval_records": len(eval_ds), "mined": len(mined), "heldout": len(heldout),
        "heldout_ids": [eval_record_id(r) for r in heldout], "failures": len(failures), "unscored": unscored,
        "variants": variants, "dropped": dict(dropped), "skipped_failures": skipped, "new_records": new_records,
        "generator": flywheel.generator.identity(), "actors": actors, "gpus_per_actor": gpus_per_actor,
        "new_parts": new_parts, "seconds": round(time.perf_counter() - started, 3),
    }
    report["report"] = _write_report(out_dir, report)
    return report
