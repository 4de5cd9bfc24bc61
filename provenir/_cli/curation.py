"""Curation commands: quality, decontaminate, rag-generate, flywheel (Ray Data pipelines)."""

from __future__ import annotations

import getpass
import os
from typing import Any, Optional

import typer

from provenir._cli._common import JsonOption, StoreOption, console, print_json

AddressOption = typer.Option(None, "--address", help="Ray address (default: $RAY_ADDRESS or an embedded local Ray).")
OutOption = typer.Option(..., "--out", "-o", help="Output folder (JSONL part files + report.json).")
OverwriteOption = typer.Option(False, "--overwrite", help="Replace an existing output folder.")
ActorsOption = typer.Option(1, "--actors", min=1, help="Actors in the model pool (each loads the model once).")
CpusOption = typer.Option(
    None, "--cpus-per-actor", min=0.01, help="CPUs Ray reserves for each actor (default: 1, fewer on a small machine)."
)
GpusOption = typer.Option(
    0.0, "--gpus-per-actor", min=0.0,
    help="GPUs Ray reserves for each actor (e.g. 1, or 0.5 to share one); the model then runs on it.",
)
ProgressOption = typer.Option(True, "--progress/--no-progress", help="Show Ray Data progress bars.")
GeneratorOption = typer.Option(
    None, "--generator",
    help="extractive (default), transformers:PATH, openai:MODEL[@BASE_URL] or anthropic:MODEL.",
)
JudgeOption = typer.Option(
    None, "--judge", help="stub, anthropic:MODEL or openai:MODEL[@BASE_URL] (rubric filter / scoring)."
)
JudgeCacheOption = typer.Option(None, "--judge-cache", help="Cache judge calls in this folder.")


def _actor() -> str:
    try:
        return os.environ.get("PROVENIR_ACTOR") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database entry in some containers
        return "provenir"


def _audit(store: str | None, event: str, **details: Any) -> None:
    from provenir.governance.audit import AuditLogger, default_audit_dir

    AuditLogger(default_audit_dir(store)).log(event, _actor(), **details)


def _build_judge(spec: str | None, cache_dir: str | None) -> Any:
    if spec is None:
        return None
    from provenir.core.errors import ConfigError
    from provenir.eval import judge as judges

    kind, _, arg = spec.partition(":")
    if kind == "stub":
        judge: Any = judges.StubJudge()
    elif kind == "anthropic" and arg:
        judge = judges.AnthropicJudge(model=arg)
    elif kind == "openai" and arg:
        model, _, base_url = arg.partition("@")
        judge = judges.OpenAIJudge(model, base_url=base_url or None)
    else:
        raise ConfigError(f"--judge {spec!r}: use stub, anthropic:MODEL or openai:MODEL[@BASE_URL]")
    return judges.CachedJudge(inner=judge, cache_dir=cache_dir) if cache_dir else judge


def _parse_weights(items: list[str]) -> dict[str, float]:
    from provenir.core.errors import ConfigError

    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--weight {item!r}: expected NAME=NUMBER, e.g. --weight repetition=2")
    return weights


def _check_options(model: Any, config: dict[str, Any], command: str) -> None:
    """Validate CLI options against the library's config model; a bad one is a one-line ConfigError."""
    from pydantic import ValidationError

    from provenir.core.errors import ConfigError

    try:
        model(**config)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{command} option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _summary(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    for key, value in rows:
        table.add_row(key, str(value))
    console().print(table)


def quality(
    inputs: list[str] = typer.Argument(..., help="JSONL/Parquet files or folders."),
    out: str = OutOption,
    threshold: float = typer.Option(0.5, "--threshold", help="Keep records scoring at least this (0-1)."),
    weight: list[str] = typer.Option([], "--weight", help="Component weight NAME=NUMBER (repeatable)."),
    min_chars: int = typer.Option(1, "--min-chars", help="Shortest acceptable response (characters)."),
    max_chars: int = typer.Option(10_000, "--max-chars", help="Longest acceptable response (characters)."),
    annotate: bool = typer.Option(False, "--annotate", help="Write each kept record's score and components."),
    overwrite: bool = OverwriteOption,
    address: Optional[str] = AddressOption,
    progress: bool = ProgressOption,
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Score records by heuristic quality; keep those at or above --threshold."""
    from provenir.distributed.cluster import connect, run_on_cluster
    from provenir.distributed.curation import run_quality

    connect(address)
    scorer = {"weights": _parse_weights(weight) or None, "min_chars": min_chars, "max_chars": max_chars}
    report = run_on_cluster(run_quality, inputs, out, threshold=threshold, scorer_kwargs=scorer,
                            annotate=annotate, overwrite=overwrite, progress=progress)
    _audit(store, "data.quality_filtered", inputs=inputs, out=out, threshold=threshold,
           records=report["records"], kept=report["kept"], rejected=report["rejected"])
    if json_out:
        print_json(report)
        return
    _summary(f"quality → {out}", [
        ("records", report["records"]), ("kept", report["kept"]), ("rejected", report["rejected"]),
        ("malformed lines", report["malformed"]), ("mean score", report["mean_score"]),
        ("rejection reasons", ", ".join(f"{k} {v}" for k, v in report["rejection_reasons"].items()) or "-"),
        ("report", report["report"]),
    ])


def decontaminate(
    train: list[str] = typer.Argument(..., help="Training JSONL/Parquet files or folders."),
    eval_paths: list[str] = typer.Option(..., "--eval", help="Eval set: JSONL records or .txt (one reference a line)."),
    out: str = OutOption,
    threshold: float = typer.Option(0.90, "--threshold", help="Cosine similarity that counts as a paraphrase."),
    ngram_size: int = typer.Option(13, "--ngram-size", help="Word n-gram size of the exact-overlap stage."),
    model: Optional[str] = typer.Option(None, "--model", help="sentence-transformers model id or path."),
    semantic: bool = typer.Option(True, "--semantic/--no-semantic", help="Embedding stage (else substring)."),
    device: Optional[str] = typer.Option(None, "--device", help="Embedding device (cpu, cuda)."),
    batch_size: int = typer.Option(1024, "--batch-size", help="Records per batch."),
    actors: int = ActorsOption,
    cpus_per_actor: Optional[float] = CpusOption,
    gpus_per_actor: float = GpusOption,
    overwrite: bool = OverwriteOption,
    address: Optional[str] = AddressOption,
    progress: bool = ProgressOption,
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Find training records that copy, reword or paraphrase eval items; write the clean rest."""
    from provenir.data.embeddings import embeddings_available
    from provenir.distributed.cluster import connect, run_on_cluster
    from provenir.distributed.curation import run_decontaminate

    connect(address)
    kwargs = {"ngram_size": ngram_size, "model": model, "device": device,
              "semantic": semantic and embeddings_available()}
    report = run_on_cluster(run_decontaminate, train, eval_paths, out, threshold=threshold, actors=actors,
                            cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, checker_kwargs=kwargs, overwrite=overwrite, batch_size=batch_size, progress=progress)
    _audit(store, "data.decontaminated", train=train, eval=eval_paths, out=out, threshold=threshold,
           records=report["records"], contaminated=report["contaminated"], by_stage=report["by_stage"])
    if json_out:
        print_json(report)
        return
    _summary(f"decontaminate → {out}", [
        ("records", report["records"]), ("contaminated", report["contaminated"]),
        ("by stage", ", ".join(f"{k} {v}" for k, v in report["by_stage"].items()) or "-"),
        ("clean", report["clean"]), ("references", report["references"]),
        ("second stage", report["second_stage"]), ("malformed lines", report["malformed"]),
        ("report", report["report"]),
    ])


def rag_generate(
    docs: list[str] = typer.Argument(..., help=".txt/.md files (one document each), JSONL files, or folders."),
    out: str = OutOption,
    questions_per_chunk: int = typer.Option(3, "--questions-per-chunk", min=1),
    max_chunk_length: int = typer.Option(512, "--max-chunk-length", min=1, help="Characters."),
    min_chunk_length: int = typer.Option(50, "--min-chunk-length", min=0, help="Characters."),
    quality_threshold: float = typer.Option(0.5, "--quality-threshold", help="Judge rubric mean to keep a pair."),
    text_field: str = typer.Option("text", "--text-field", help="Document field of JSONL inputs."),
    generator: Optional[str] = GeneratorOption,
    judge: Optional[str] = JudgeOption,
    judge_cache: Optional[str] = JudgeCacheOption,
    actors: int = ActorsOption,
    cpus_per_actor: Optional[float] = CpusOption,
    gpus_per_actor: float = GpusOption,
    overwrite: bool = OverwriteOption,
    address: Optional[str] = AddressOption,
    progress: bool = ProgressOption,
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Chunk documents and generate QA training pairs (with document hash and chunk index)."""
    from provenir.distributed.cluster import connect, run_on_cluster
    from provenir.distributed.curation import run_rag_generate

    from provenir.data.rag_generator import RAGGeneratorConfig

    config = {"questions_per_chunk": questions_per_chunk, "max_chunk_length": max_chunk_length,
              "min_chunk_length": min_chunk_length, "quality_filter_threshold": quality_threshold}
    _check_options(RAGGeneratorConfig, config, "rag-generate")
    judge_obj = _build_judge(judge, judge_cache)
    connect(address)
    report = run_on_cluster(run_rag_generate, docs, out, config=config, generator=generator, judge=judge_obj,
                            actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                            text_field=text_field, overwrite=overwrite, progress=progress)
    _audit(store, "data.rag_generated", inputs=docs, out=out, documents=report["documents"],
           pairs=report["pairs"], generator=report["generator"], judge=report["judge"])
    if report["documents"] and not report["pairs"]:
        from provenir._cli._common import err_console

        why = (f"every generated pair scored below --quality-threshold {quality_threshold} with the "
               f"{report['judge']} judge; lower the threshold or use another judge") if report["judge"] else (
               "the generator produced no question for any chunk; see the report's skipped reasons")
        err_console().print(f"[yellow]warning[/]: no training pairs from {report['documents']} document(s): {why}",
                            soft_wrap=True)
    if json_out:
        print_json(report)
        return
    _summary(f"rag-generate → {out}", [
        ("documents", report["documents"]), ("pairs", report["pairs"]),
        ("documents without pairs", report["skipped_count"]), ("generator", report["generator"]),
        ("judge", report["judge"] or "-"), ("report", report["report"]),
    ])


def flywheel(
    train: list[str] = typer.Argument(..., help="Training JSONL/Parquet files or folders."),
    eval_path: str = typer.Option(..., "--eval", help="Eval JSONL with a 'score' (or 'prediction') per record."),
    out: str = OutOption,
    min_score: float = typer.Option(0.7, "--min-score", help="Eval records scoring below this are failures."),
    max_variants: int = typer.Option(3, "--max-variants", min=1, help="Variants per failure."),
    quality_threshold: float = typer.Option(0.5, "--quality-threshold", help="Quality score to keep a variant."),
    holdout_fraction: float = typer.Option(0.2, "--holdout-fraction", help="Eval share never mined."),
    decontamination_threshold: float = typer.Option(0.90, "--decontamination-threshold"),
    semantic: bool = typer.Option(True, "--semantic/--no-semantic", help="Embedding stage of decontamination."),
    generator: Optional[str] = GeneratorOption,
    judge: Optional[str] = JudgeOption,
    judge_cache: Optional[str] = JudgeCacheOption,
    actors: int = ActorsOption,
    cpus_per_actor: Optional[float] = CpusOption,
    gpus_per_actor: float = GpusOption,
    overwrite: bool = OverwriteOption,
    address: Optional[str] = AddressOption,
    progress: bool = ProgressOption,
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """One flywheel turn: eval failures → variants → quality filter → decontaminated new records."""
    from provenir.data.embeddings import embeddings_available
    from provenir.data.flywheel import FlywheelConfig
    from provenir.distributed.cluster import connect, run_on_cluster
    from provenir.distributed.curation import run_flywheel

    config = {"min_score_threshold": min_score, "max_variants_per_failure": max_variants,
              "quality_filter_threshold": quality_threshold, "holdout_fraction": holdout_fraction,
              "decontamination_threshold": decontamination_threshold}
    _check_options(FlywheelConfig, config, "flywheel")
    judge_obj = _build_judge(judge, judge_cache)
    connect(address)
    report = run_on_cluster(run_flywheel, train, eval_path, out, config=config, generator=generator,
                            judge=judge_obj, actors=actors, cpus_per_actor=cpus_per_actor,
                            gpus_per_actor=gpus_per_actor, semantic=semantic and embeddings_available(),
                            overwrite=overwrite, progress=progress)
    _audit(store, "data.flywheel", train=train, eval=eval_path, out=out, failures=report["failures"],
           new_records=report["new_records"], heldout=report["heldout"], generator=report["generator"])
    if json_out:
        print_json(report)
        return
    _summary(f"flywheel → {out}", [
        ("eval records", report["eval_records"]), ("held out (report on these)", report["heldout"]),
        ("failures", report["failures"]), ("unscored", len(report["unscored"])),
        ("variants", report["variants"]),
        ("dropped", ", ".join(f"{k} {v}" for k, v in report["dropped"].items()) or "-"),
        ("new records", report["new_records"]), ("report", report["report"]),
    ])


def register(app: typer.Typer) -> None:
    app.command("quality")(quality)
    app.command("decontaminate")(decontaminate)
    app.command("rag-generate")(rag_generate)
    app.command("flywheel")(flywheel)
