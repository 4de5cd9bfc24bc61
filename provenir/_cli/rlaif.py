"""``provenir rlaif``: iterative self-improvement with AI feedback (see :mod:`provenir.train.rlaif`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from provenir._cli._common import JsonOption, StoreOption, console, print_json

#: ``--judge`` name -> how to build it (``model``, ``base_url``).
JUDGES: dict[str, str] = {
    "stub": "provenir.eval.judge:StubJudge",
    "anthropic": "provenir.eval.judge:AnthropicJudge",
    "openai": "provenir.eval.judge:OpenAIJudge",
}


def build_judge(name: str, model: str | None, base_url: str | None, cache_dir: str | None) -> Any:
    """A judge by name, wrapped in ``CachedJudge`` when ``cache_dir`` is given."""
    import importlib

    from provenir.core.errors import ConfigError

    if name not in JUDGES:
        raise ConfigError(f"--judge {name!r}: unknown judge; choose one of {', '.join(JUDGES)}")
    module, cls = JUDGES[name].split(":")
    factory = getattr(importlib.import_module(module), cls)
    if name == "stub":
        judge = factory()
    else:
        if not model:
            raise ConfigError(f"--judge {name}: give the judge's model with --judge-model")
        judge = factory(model, base_url=base_url)
    if cache_dir:
        from provenir.eval.judge import CachedJudge

        judge = CachedJudge(judge, cache_dir)
    return judge


def rlaif(
    config: Path = typer.Argument(..., help="Run config (YAML) each iteration's DPO run uses."),
    judge: str = typer.Option("stub", "--judge", help="stub | anthropic | openai."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The API judge's model name."),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="OpenAI-compatible server URL."),
    judge_cache: Optional[str] = typer.Option(None, "--judge-cache", help="Cache judgements in this folder."),
    train_path: Optional[Path] = typer.Option(None, "--train", help="Prompts (JSONL); default data.train_path."),
    eval_path: Optional[Path] = typer.Option(None, "--eval", help="Eval set (JSONL); default data.eval_path."),
    iterations: int = typer.Option(3, "--iterations", help="Rounds (n_iterations)."),
    responses: int = typer.Option(4, "--responses-per-prompt", help="Candidates sampled per prompt."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="Largest tolerated drop of the primary metric."),
    primary_metric: str = typer.Option("exact_match", "--primary-metric", help="Metric the gate watches."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", help="Drop pairs the judge is less sure of."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Longest sampled completion."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    max_prompts: Optional[int] = typer.Option(None, "--max-prompts", help="Use only the first N prompts."),
    generation_actors: int = typer.Option(0, "--generation-actors", help="Generate on N Ray actors (0: in process)."),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray address for the actor pool."),
    start: Optional[str] = typer.Option(None, "--from", help="Start from this run's adapter (e.g. an SFT run)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set max_steps=50."),
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Generate → judge → DPO → eval → regression gate, repeated; every round a run with lineage."""
    from pydantic import ValidationError

    from provenir._cli._common import parse_overrides
    from provenir.core.config import RunConfig
    from provenir.core.errors import ConfigError
    from provenir.core.store import ArtifactStore
    from provenir.data.dataset import JsonlDataset
    from provenir.train import get_backend
    from provenir.train.rlaif import RLAIFConfig, RLAIFPipeline

    cfg = RunConfig.from_yaml(config, overrides=parse_overrides(set_))
    try:
        rlaif_config = RLAIFConfig(
            n_iterations=iterations, responses_per_prompt=responses, regression_tolerance=tolerance,
            primary_metric=primary_metric, min_confidence=min_confidence, max_new_tokens=max_new_tokens,
            temperature=temperature, max_prompts=max_prompts, generation_actors=generation_actors,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"rlaif: {first['msg'].removeprefix('Value error, ')}") from None
    train_file = train_path or (Path(cfg.data.train_path) if cfg.data.train_path else None)
    eval_file = eval_path or (Path(cfg.data.eval_path) if cfg.data.eval_path else None)
    if train_file is None or eval_file is None:
        raise ConfigError(f"{config}: RLAIF needs prompts and an eval set: set data.train_path and "
                          "data.eval_path, or pass --train and --eval")
    root = store or cfg.store_root
    the_judge = build_judge(judge, judge_model, judge_base_url, judge_cache)
    if generation_actors and address:
        from provenir.distributed.cluster import connect

        connect(address)
    out = console()

    def report(it: Any) -> None:
        if json_out:
            return
        score = it.eval_result.metrics[rlaif_config.primary_metric].mean
        verdict = "[red]regressed, not adopted[/]" if it.regressed else "adopted"
        out.print(f"iteration {it.iteration}: {it.preference_count} pairs · {rlaif_config.primary_metric} "
                  f"{score:.4f} (best before {it.best_before:.4f}) · {verdict} · run {it.manifest.run_id}")

    if not json_out:
        out.print(f"[bold]provenir rlaif[/] {config} · backend={cfg.backend} · judge={judge} · store={root}")
    pipeline = RLAIFPipeline(
        the_judge, get_backend(cfg.backend), cfg, rlaif_config, store=ArtifactStore(root),
        start_run_id=start, on_iteration=report,
    )
    results = pipeline.run(JsonlDataset.from_jsonl(train_file), JsonlDataset.from_jsonl(eval_file))
    if json_out:
        print_json({
            "baseline": pipeline.baseline.to_dict() if pipeline.baseline else None,
            "iterations": [
                {"iteration": it.iteration, "run_id": it.manifest.run_id, "provenance": it.manifest.provenance,
                 "preference_count": it.preference_count, "dropped": it.dropped, "regressed": it.regressed,
                 "generation_seed": it.generation_seed, "adapter_path": it.adapter_path,
                 "eval": it.eval_result.to_dict()}
                for it in results
            ],
        })
    elif results and results[-1].regressed:
        out.print("stopped: the last iteration regressed; the policy is the previous iteration's adapter")


def register(app: typer.Typer) -> None:
    app.command("rlaif")(rlaif)
