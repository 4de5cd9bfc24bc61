"""The worker loop every ``trl`` method shares, in process or on each Ray Train worker.

Seeds (:func:`provenir.train._determinism.seed_everything`), loads the model and tokenizer, builds
the method's trainer over the shared arguments, adds the callbacks, trains (from a checkpoint when
resuming), evaluates, and has rank 0 save the adapter and the metrics. Only the trainer differs per
method: each method module passes its ``build_trainer``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provenir.core.io import atomic_write_text
from provenir.train.backends._trl.callbacks import observer_callbacks, progress_callback
from provenir.train.backends._trl.loading import bf16_ok, load_model, load_tokenizer
from provenir.train.backends._trl.outputs import CHECKPOINTS_KEPT, checkpoint_step, save_adapter

#: ``build_trainer(cfg, model, tokenizer, arguments, train, evaluation)`` -> a ``transformers.Trainer``
BuildTrainer = Callable[[dict[str, Any], Any, Any, dict[str, Any], Any, Any], Any]

EVAL_METRICS = ("eval_loss", "eval_mean_token_accuracy", "eval_rewards/accuracies", "eval_rewards/margins")


def run_worker(cfg: dict[str, Any], build_trainer: BuildTrainer) -> dict[str, Any]:
    """Train as ``cfg`` (the loop config) says, the trainer built by the method's ``build_trainer``;
    rank 0 saves the adapter and the metrics. Returns the metrics."""
    import datasets.utils.logging as datasets_logging
    import transformers.utils.logging as transformers_logging

    bars = (datasets_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    datasets_logging.disable_progress_bar()  # per-map bars drown the per-step progress lines
    transformers_logging.disable_progress_bar()
    try:
        return _train_once(cfg, build_trainer)
    finally:
        if bars[0]:
            datasets_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def _train_once(cfg: dict[str, Any], build_trainer: BuildTrainer) -> dict[str, Any]:
    from provenir.train._determinism import seed_everything

    seed_everything(cfg["seed"], cfg["deterministic"])
    ray_callbacks: list[Any] = []
    resume = cfg.get("resume_from")
    strategy_args: dict[str, Any] = {}
    if cfg["strategy"] != "none":
        from provenir.distributed.train import (
            in_ray_worker,
            ray_report_callback,
            resume_checkpoint_dir,
            strategy_training_args,
        )

        strategy_args = strategy_training_args(cfg["strategy"], cfg["deepspeed_stage"], cfg["use_gpu"])
        if in_ray_worker():
            ray_callbacks.append(ray_report_callback())
            resume = resume_checkpoint_dir()
    resumed_from = checkpoint_step(resume) if resume is not None else None
    tokenizer = load_tokenizer(cfg["model"])
    model = load_model(cfg["model"], peft=cfg["peft"], use_gpu=cfg["use_gpu"], init_adapter=cfg.get("init_adapter"))
    arguments = training_arguments(cfg, strategy_args)
    from datasets import Dataset

    train_set = Dataset.from_list(cfg["train"])
    eval_set = Dataset.from_list(cfg["eval"]) if cfg["eval"] is not None else None
    trainer = build_trainer(cfg, model, tokenizer, arguments, train_set, eval_set)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our progress callback prints, or nothing does
    for callback in [*ray_callbacks, *observer_callbacks(cfg), *cfg.get("_callbacks", [])]:
        trainer.add_callback(callback)
    if cfg.get("progress"):
        trainer.add_callback(progress_callback(cfg.get("progress_relay")))
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = collect_metrics(trainer, output)
    if cfg.get("packing"):
        metrics["packed_rows"] = len(trainer.train_dataset)  # rows of packed examples
    if resumed_from is not None:
        metrics["resumed_from_step"] = resumed_from
    if cfg["eval"] is not None:
        evaluation = trainer.evaluate()
        metrics.update({k: float(v) for k, v in evaluation.items() if k in EVAL_METRICS})
    if trainer.is_world_process_zero():
        save_adapter(trainer.model, tokenizer, Path(cfg["adapter_dir"]))
        atomic_write_text(cfg["metrics_path"], json.dumps(metrics, sort_keys=True, indent=1) + "\n")
    return metrics


def training_arguments(cfg: dict[str, Any], strategy_args: dict[str, Any]) -> dict[str, Any]:
    """The trainer arguments every method shares (TRL's ``SFTConfig``/``DPOConfig`` take them all)."""
    return dict(
        output_dir=cfg["output_dir"],
        max_steps=cfg["max_steps"],
        per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
        learning_rate=cfg["learning_rate"],
        lr_scheduler_type=cfg["lr_scheduler"],
        warmup_steps=cfg["warmup_steps"],
        weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["max_grad_norm"],
        logging_steps=cfg["logging_steps"],
        # save_steps 0: no checkpoints in process (the adapter is saved at the end anyway); on Ray
        # the final checkpoint is what the driver falls back on when workers sit on other nodes
        save_strategy="steps" if cfg["save_steps"] or cfg["strategy"] != "none" else "no",
        save_steps=cfg["save_steps"] or cfg["max_steps"],
        save_total_limit=CHECKPOINTS_KEPT,
        eval_strategy="no",
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        full_determinism=cfg["deterministic"],
        dataloader_num_workers=0,
        use_cpu=not cfg["use_gpu"],
        bf16=bool(cfg["use_gpu"] and bf16_ok()),
        fp16=False,
        report_to="none",
        disable_tqdm=True,
        gradient_checkpointing=False,  # tiny and LoRA models: speed over memory
        include_num_input_tokens_seen="non_padding",
        max_length=cfg["max_seq_length"],
        **strategy_args,
    )


def collect_metrics(trainer: Any, output: Any) -> dict[str, Any]:
    """Loss, steps, tokens and throughput from a finished ``trainer.train()``."""
    state = trainer.state
    metrics: dict[str, Any] = {
        "train_loss": float(output.training_loss),
        "steps": int(state.global_step),
        "train_tokens": int(getattr(state, "num_input_tokens_seen", 0) or 0),
    }
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    if losses:
        metrics["final_loss"] = float(losses[-1])
    rewards = [float(entry["reward"]) for entry in state.log_history if "reward" in entry]
    if rewards:  # GRPO: the mean reward of the first and the last quarter of the logged steps
        window = max(1, len(rewards) // 4)
        metrics["reward_mean_first"] = sum(rewards[:window]) / window
        metrics["reward_mean_last"] = sum(rewards[-window:]) / window
    runtime = (output.metrics or {}).get("train_runtime")
    if runtime:
        metrics["train_runtime_s"] = float(runtime)
        if metrics["train_tokens"]:
            metrics["tokens_per_second"] = metrics["train_tokens"] / float(runtime)
    return metrics


__all__ = ["EVAL_METRICS", "BuildTrainer", "collect_metrics", "run_worker", "training_arguments"]
