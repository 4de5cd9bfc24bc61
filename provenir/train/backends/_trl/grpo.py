"""GRPO with TRL's ``GRPOTrainer``: the prompt rows (formatted on the driver) and the trainer.

Each record becomes one prompt (the template's generation prompt: the record without its answer)
plus its scalar columns, which TRL hands to every reward function as keyword lists (the
``reference_field`` of a reward is one of them). The reward functions are built on each worker
from their specs (:func:`provenir.rewards.build_rewards`), their weights go to TRL's
``reward_weights``.

Sampling is seeded per optimizer step: before each step every process reseeds torch from
``(seed, step, rank)`` (:func:`step_seed`), so the completions step N samples depend on nothing
but the config, and a run resumed from a checkpoint samples what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from provenir.core.errors import DataError
from provenir.core.hashing import sha256_json
from provenir.train.backends._trl.loop import run_worker

if TYPE_CHECKING:
    from provenir.data.dataset import JsonlDataset
    from provenir.data.templates import PromptTemplate

#: the column TRL reads the prompt from
PROMPT = "prompt"


def prepare_rows(
    train: JsonlDataset,
    evaluation: JsonlDataset | None,
    template: PromptTemplate,
    tokenizer: Any,
    *,
    reference_fields: tuple[str, ...] = (),
    **_: Any,
) -> tuple[list[Any], None]:
    """``[{"prompt": text, **scalar columns}]`` for GRPO (an eval set is not used).

    Raises:
        DataError: a record does not format to a prompt, or lacks a reward's reference column
            (named by its number).
        ConfigError: the tokenizer cannot serve the template's markup.
    """
    from provenir.train import _data

    source = train.source or "prompts"
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(train.records, start=1):
        try:
            prompt = _data.prompt_text(template, record)
        except DataError as exc:
            raise DataError(f"{source}: record {index}: {str(exc).removeprefix('record: ')}") from None
        for field in reference_fields:
            value = record.get(field)
            if value is None or isinstance(value, (dict, list)):
                raise DataError(
                    f"{source}: record {index}: a reward compares with the {field!r} column, which this "
                    f"record {'lacks' if value is None else 'holds as a ' + type(value).__name__}; "
                    "set the reward's reference_field, or map the column with data.fields"
                )
        row = {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool)) and k != PROMPT}
        row[PROMPT] = prompt
        rows.append(row)
    _data.check_tokenizer_serves(tokenizer, template, [r[PROMPT] for r in rows[:16]])
    return rows, None


def prompts_hash(rows: list[dict[str, Any]]) -> str:
    """sha256 of the canonical JSON of the prompt rows (prompt texts and the columns rewards see)."""
    return sha256_json(rows)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed for optimizer step ``step`` on process ``rank`` (63 bits of a sha256)."""
    digest = hashlib.sha256(f"provenir-grpo/{seed}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def step_seed_callback(seed: int) -> Any:
    """Reseed torch before every optimizer step (generation happens inside the step)."""
    from transformers import TrainerCallback

    class _StepSeed(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            import torch

            torch.manual_seed(step_seed(seed, int(state.global_step), int(args.process_index)))

    return _StepSeed()


def grpo_arguments(cfg: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments: the shared ones (less ``max_length``: GRPO bounds the
    completion instead) and the GRPO ones from the loop config."""
    args = {k: v for k, v in arguments.items() if k != "max_length"}
    g = cfg["grpo"]
    args.update(
        num_generations=g["num_generations"],
        beta=g["beta"],
        max_completion_length=g["max_completion_length"],
        temperature=g["temperature"],
        reward_weights=[float(spec.get("weight", 1.0)) for spec in g["rewards"]],
        shuffle_dataset=True,  # seeded by ``seed`` (TRL's RepeatSampler), the same on every rank
        log_completions=False,
        # GRPO's batches are prompts plus generated ids, no input_ids: the counter only warns
        include_num_input_tokens_seen="no",
        **generation_arguments(g.get("generation") or {}),
    )
    return args


def generation_arguments(generation: dict[str, Any]) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments for ``training.generation``: nothing for ``hf`` (TRL's
    default, transformers' ``generate``), TRL's vLLM switches for ``vllm``."""
    if generation.get("backend", "hf") != "vllm":
        return {}
    args: dict[str, Any] = {
        "use_vllm": True,
        "vllm_mode": generation.get("mode", "colocate"),
        "vllm_gpu_memory_utilization": generation.get("gpu_memory_utilization", 0.3),
        "vllm_tensor_parallel_size": generation.get("tensor_parallel_size", 1),
        "vllm_enable_sleep_mode": bool(generation.get("enable_sleep_mode", False)),
    }
    if generation.get("max_model_length") is not None:
        args["vllm_max_model_length"] = generation["max_model_length"]
    if args["vllm_mode"] == "server":
        args["vllm_server_base_url"] = generation["server_base_url"]
    return args


def build_trainer(
    cfg: dict[str, Any], model: Any, tokenizer: Any, arguments: dict[str, Any], train: Any, evaluation: Any
) -> Any:
    """TRL's ``GRPOTrainer`` with the config's rewards, sampling reseeded before every step."""
    from trl import GRPOConfig, GRPOTrainer

    from provenir.rewards import build_rewards

    args = GRPOConfig(**grpo_arguments(cfg, arguments))
    trainer = GRPOTrainer(model=model, reward_funcs=build_rewards(cfg["grpo"]["rewards"]), args=args,
                          train_dataset=train, processing_class=tokenizer)
    trainer.add_callback(step_seed_callback(cfg["seed"]))
    return trainer


def worker_loop(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Train GRPO as ``loop_config`` says; rank 0 saves the adapter. Top level so Ray can pickle it."""
    return run_worker(loop_config, build_trainer)


__all__ = ["build_trainer", "generation_arguments", "grpo_arguments", "prepare_rows", "prompts_hash", "step_seed", "worker_loop"]
