"""Evaluation commands: ``provenir eval`` (metrics with confidence intervals) and ``provenir bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from provenir._cli._common import JsonOption, console, print_json


def _validated(model: Any, data: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from provenir.core.errors import ConfigError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        flag = _FLAGS.get(where)
        where = f"{flag} / {where}" if flag else where
        raise ConfigError(f"{where}: {first['msg']} (got {first.get('input')!r})") from None


# The eval config's fields and the options that set them, so an error names what the user typed.
_FLAGS = {"n_resamples": "--resamples", "confidence": "--confidence", "seed": "--seed",
          "metrics": "--metric", "reference_field": "--reference-field",
          "prediction_field": "--prediction-field", "dataset": "--dataset", "predictions": "--predictions",
          "baseline": "--baseline"}


def _print_eval(result: Any, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column(f"{result.confidence:.0%} CI", justify="right")
    table.add_column("n", justify="right")
    for name, r in result.metrics.items():
        table.add_row(name, f"{r.mean:.4f}", f"[{r.ci_lower:.4f}, {r.ci_upper:.4f}]", str(r.n))
    console().print(table)
    console().print(f"percentile bootstrap: {result.n_resamples} resamples, seed {result.seed}")


def _print_comparison(comparison: Any) -> None:
    from rich.table import Table

    table = Table(title="paired comparison: predictions (B) vs baseline (A)")
    for column in ("metric", "A", "B", "B - A", f"{comparison.confidence:.0%} CI", "p", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for name, d in comparison.metrics.items():
        verdict = "B better" if d.b_better else "A better" if d.a_better else "no significant difference"
        table.add_row(
            name, f"{d.mean_a:.4f}", f"{d.mean_b:.4f}", f"{d.difference:+.4f}",
            f"[{d.ci_lower:+.4f}, {d.ci_upper:+.4f}]", f"{d.p_value:.4f}", verdict,
        )
    console().print(table)


def eval_command(
    config: Optional[Path] = typer.Argument(None, help="Eval config YAML (dataset, predictions, metrics, …)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="JSONL records holding the references."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Predictions: .jsonl, .json or text lines."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Baseline predictions: adds a paired comparison."),
    metric: list[str] = typer.Option([], "--metric", help="Metric name or regex:PATTERN (repeatable)."),
    reference_field: Optional[str] = typer.Option(None, "--reference-field", help="Record field with the reference."),
    prediction_field: Optional[str] = typer.Option(None, "--prediction-field", help="Field of .jsonl predictions."),
    resamples: Optional[int] = typer.Option(None, "--resamples", help="Bootstrap resamples (default 1000)."),
    confidence: Optional[float] = typer.Option(None, "--confidence", help="Interval level (default 0.95)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Bootstrap seed (default 0)."),
    per_example: bool = typer.Option(False, "--per-example", help="With --json: include per-example scores."),
    json_out: bool = JsonOption,
) -> None:
    """Score predictions against a dataset: every metric with its bootstrap confidence interval."""
    from provenir.core.errors import ConfigError
    from provenir.data.dataset import JsonlDataset
    from provenir.eval._config import EvalConfig, load_eval_config, read_predictions
    from provenir.eval.harness import MultiMetricEvaluator

    if config is not None:
        cfg = load_eval_config(config)
    elif dataset is not None and predictions is not None:
        cfg = EvalConfig(dataset=str(dataset), predictions=str(predictions))
    else:
        raise ConfigError("provenir eval: give a CONFIG file, or both --dataset and --predictions")
    overrides: dict[str, Any] = {
        "dataset": str(dataset) if dataset and config else None,
        "predictions": str(predictions) if predictions and config else None,
        "baseline": str(baseline) if baseline else None,
        "metrics": list(metric) or None,
        "reference_field": reference_field,
        "prediction_field": prediction_field,
        "n_resamples": resamples,
        "confidence": confidence,
        "seed": seed,
    }
    cfg = _validated(EvalConfig, {**cfg.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})

    records = JsonlDataset.from_jsonl(cfg.dataset)
    evaluator = MultiMetricEvaluator(
        metrics=cfg.metrics, reference_field=cfg.reference_field,
        n_resamples=cfg.n_resamples, confidence=cfg.confidence, seed=cfg.seed,
    )
    preds = read_predictions(cfg.predictions, cfg.prediction_field)
    result = evaluator.evaluate(records, preds)
    comparison = None
    if cfg.baseline:
        comparison = evaluator.compare(records, read_predictions(cfg.baseline, cfg.prediction_field), preds)
    if json_out:
        out: dict[str, Any] = {"dataset": cfg.dataset, "predictions": cfg.predictions, **result.to_dict(per_example)}
        if comparison is not None:
            out["comparison"] = {"baseline": cfg.baseline, **comparison.to_dict()}
        print_json(out)
        return
    _print_eval(result, f"{Path(cfg.predictions).name} on {Path(cfg.dataset).name}")
    if comparison is not None:
        _print_comparison(comparison)


def bench_command(
    model: Path = typer.Argument(..., help="Model folder, or a PEFT adapter folder."),
    task: list[str] = typer.Option(..., "--task", help="Benchmark name (repeatable): mmlu, arc_easy, provenir_arith, …"),
    num_fewshot: int = typer.Option(0, "--num-fewshot", help="Few-shot examples."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many examples per task."),
    batch_size: int = typer.Option(8, "--batch-size"),
    device: str = typer.Option("cpu", "--device"),
    task_dir: list[Path] = typer.Option([], "--task-dir", help="Folder of your own lm-eval task YAMLs."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model of an adapter (overrides its config)."),
    json_out: bool = JsonOption,
) -> None:
    """Run lm-eval benchmarks on a local model or adapter (shipped offline tasks: provenir_arith, provenir_copy)."""
    from provenir.eval.benchmarks import BenchmarkConfig, BenchmarkEvaluator

    evaluator = BenchmarkEvaluator(device=device, batch_size=batch_size, task_dirs=list(task_dir), base_model=base_model)
    configs = [
        _validated(BenchmarkConfig, {"benchmark": name, "num_fewshot": num_fewshot, "limit": limit}) for name in task
    ]
    results = evaluator.run_suite(model, configs)
    if json_out:
        print_json({"model": str(model), "results": [r.to_dict() for r in results]})
        return
    from rich.table import Table

    table = Table(title=f"benchmarks: {model}")
    for column in ("benchmark", "metric", "score", "± stderr", "n", "shots"):
        table.add_column(column, justify="left" if column in ("benchmark", "metric") else "right")
    for r in results:
        stderr = f"{r.stderr:.4f}" if r.stderr is not None else "-"
        table.add_row(r.benchmark, r.metric, f"{r.score:.4f}", stderr, str(r.num_examples), str(r.config.num_fewshot))
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("bench")(bench_command)
