"""The demo: a synthetic task the tiny model learns in minutes, evaluated before and after training.

The task (``demo_records``) is to copy a string of four digits: ``"Copy 4071"`` → ``"4071"``. The
tiny tokenizer splits digits one per token, so the rule is the same for every string, and the eval
strings are disjoint from the training strings: exact match measures a learned rule (attend to the
right earlier position, emit its digit), not memorised answers. An untrained model scores 0.

It composes a whole job (:func:`provenir.pipeline.run_job`) with evaluations around it, so it sits
on the pipeline's floor, above ``train``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenir.core.config import RunConfig
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.data.templates import TEMPLATE_REGISTRY

DEMO_TRAIN_RECORDS = 600
DEMO_EVAL_RECORDS = 50
DEMO_DIGITS = 4


def demo_records(
    seed: int = 0, n_train: int = DEMO_TRAIN_RECORDS, n_eval: int = DEMO_EVAL_RECORDS, digits: int = DEMO_DIGITS
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(train, eval)`` copy records; no eval string occurs in training."""
    rng = random.Random(seed)
    space = 10**digits
    if n_train + n_eval > space:
        raise ValueError(f"only {space} distinct {digits}-digit strings exist")
    chosen = rng.sample(range(space), n_train + n_eval)
    records = []
    for value in chosen:
        text = str(value).zfill(digits)
        records.append({"instruction": f"Copy {text}", "output": text})
    return records[n_eval:], records[:n_eval]


@dataclass
class ExactMatchReport:
    exact_match: float
    ci_lower: float
    ci_upper: float
    n: int
    examples: list[tuple[str, str, str]]  # (instruction, reference, prediction), first few


def evaluate_exact_match(
    model_path: str | Path,
    adapter_path: str | Path | None,
    eval_dataset: JsonlDataset,
    *,
    template: str,
    max_new_tokens: int = 12,
    seed: int = 0,
) -> ExactMatchReport:
    """Greedy-generate an answer for every eval record and score exact match (with a bootstrap CI)."""
    from provenir.train._data import prompt_text
    from provenir.train._generate import exact_match, generate, load_for_generation

    tpl = TEMPLATE_REGISTRY.get(template)
    prompts = [prompt_text(tpl, r) for r in eval_dataset.records]
    refs = [str(r.get("output", "")) for r in eval_dataset.records]
    model, tokenizer = load_for_generation(model_path, adapter_path)
    stops = ["<|im_end|>", "<|eot_id|>", "<|end|>", "</s>"]
    predictions = [p.strip() for p in generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                                stop_tokens=stops)]
    try:
        from provenir.eval.harness import MultiMetricEvaluator

        metric = MultiMetricEvaluator(metrics=["exact_match"]).evaluate(eval_dataset, predictions)
        result = metric.metrics["exact_match"]
        mean, low, high = float(result.mean), float(result.ci_lower), float(result.ci_upper)
    except Exception:  # noqa: BLE001 - the evaluator is optional here; plain exact match suffices
        mean = low = high = exact_match(predictions, refs)
    examples = [(str(r.get("instruction", "")), ref, pred)
                for r, ref, pred in zip(eval_dataset.records[:5], refs, predictions, strict=False)]
    return ExactMatchReport(mean, low, high, len(refs), examples)


def tiny_model_for_store(store_root: str, seed: int = 0) -> Path:
    """The tiny model cached under a local store (``<store>/models/tiny-llama``)."""
    from provenir.train.tiny import build_tiny_model

    store = ArtifactStore(store_root)
    base = Path(store_root) if store.is_local else Path.home() / ".cache" / "provenir"
    return build_tiny_model(base / "models" / f"tiny-llama-seed{seed}", seed=seed)


def run_demo(
    config: RunConfig,
    *,
    store: ArtifactStore,
    command: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate the base model, train (``run_job``), evaluate again. Returns what the CLI prints."""
    from provenir.pipeline import run_job

    assert config.data.eval_path and config.model_name_or_path
    eval_ds = JsonlDataset.from_jsonl(config.data.eval_path)
    before = evaluate_exact_match(config.model_name_or_path, None, eval_ds, template=config.data.template)
    job = run_job(config, store=store, command=command, extra={"progress": progress})
    after = evaluate_exact_match(
        config.model_name_or_path, job.training.adapter_path, eval_ds, template=config.data.template
    )
    return {"before": before, "after": after, "job": job}
