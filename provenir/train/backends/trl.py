"""The ``trl`` backend: real training with TRL (SFT, DPO, GRPO) and PEFT (LoRA, rsLoRA, QLoRA).

What one call does:

1. **Checks, before any work**: the distributed settings Ray Train would refuse (and callbacks,
   which run in process only), the model path exists (or is a hub id), the template exists and
   the tokenizer can serve it, 4/8-bit loading has bitsandbytes support, the data is not empty and
   every record formats (the failing record is named).
2. **Records the run** (:class:`~provenir.core.run.RunRecorder`): run id, ``config.yaml``, a
   ``running`` manifest.
3. **Trains**: the method's worker loop (``_trl/sft.py``, ``_trl/dpo.py``, ``_trl/grpo.py``, over
   the loop they share in ``_trl/loop.py``) builds the model, the LoRA adapter and TRL's
   ``SFTTrainer``/``DPOTrainer``/``GRPOTrainer`` and trains. With no ``distributed`` section (or ``strategy: none``) the loop runs in this
   process; otherwise on a Ray Train worker group through
   :func:`provenir.distributed.train.launch` (DDP, FSDP or DeepSpeed).
4. **Saves** the adapter as safetensors (``adapter/``), with the tokenizer, and finishes the
   manifest: every artifact's sha256, the environment, the metrics.

With ``deterministic: true`` (the default) every worker seeds Python, NumPy and torch, turns on
deterministic algorithms, and the trainer seeds the data order (``seed``, ``data_seed``,
``full_determinism``, no dataloader workers): the same config, data and seed on the same machine
give bit-identical adapter files. Checkpoints (``checkpoints/``, the latest
:data:`CHECKPOINTS_KEPT` of them) carry the optimizer, scheduler, trainer state and every rank's
RNG state, and resuming skips the batches already seen, so a run resumed after a stop ends with
the same bytes as one never stopped; the metrics of a run that resumed (``--resume``, or a worker
group restarted after a failure) name the checkpoint's step as ``resumed_from_step``.

This module is the backend's driver side: the checks, the run record, and where the loop runs.
What differs per method is in one module each under :mod:`provenir.train.backends._trl`
(:data:`_METHODS` names them); loading, the shared loop, outputs and callbacks sit beside them.

Ctrl-C and SIGTERM (how schedulers and ``ray job stop`` end a job) stop a run the same way: its
manifest is marked ``stopped`` with its checkpoints kept, and
:class:`provenir.train.TrainingStopped` (a ``KeyboardInterrupt``) says at which step it
stopped and from which checkpoint ``--resume`` would continue.
"""


from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provenir.core.abstractions import TrainingResult
from provenir.core.config import REWARDS_WITH_REFERENCE, RunConfig
from provenir.core.errors import ConfigError, DataError, DependencyError, ProvenirError
from provenir.core.run import RunRecorder
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.data.templates import TEMPLATE_REGISTRY
from provenir.train._resume import check_resumable, resumed_provenance
from provenir.train._stop import TrainingStopped, sigterm_stops_training, signal_name, stop_metrics
from provenir.train.backends._trl import dpo, grpo, sft
from provenir.train.backends._trl.callbacks import StepTracker
from provenir.train.backends._trl.loading import (
    bitsandbytes_unsupported_reason,
    load_model,
    load_tokenizer,
    resolve_model_path,
)
from provenir.train.backends._trl.outputs import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    CHECKPOINTS_KEPT,
    METRICS_FILE,
    adapter_from_checkpoint,
    latest_checkpoint,
    latest_checkpoint_step,
    save_adapter,
)

if TYPE_CHECKING:
    from types import ModuleType

#: the training methods by name: each module's ``prepare_rows`` runs on the driver, its top-level
#: ``worker_loop`` in process or on every Ray Train worker (see :mod:`provenir.train.backends._trl`)
_METHODS: dict[str, ModuleType] = {"sft": sft, "dpo": dpo, "grpo": grpo}


class TRLBackend:
    """Real training with TRL + PEFT. See the module docstring."""

    name = "trl"

    # -- public API -------------------------------------------------------------------------------

    def train_sft(
        self,
        config: RunConfig,
        train_dataset: JsonlDataset,
        eval_dataset: JsonlDataset | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        provenance: list[str] | tuple[str, ...] = (),
        store: ArtifactStore | None = None,
        command: list[str] | None = None,
        resume_run_id: str | None = None,
        callbacks: list[Any] | None = None,
        progress: bool = False,
        address: str | None = None,
        init_adapter: str | None = None,
        **_: Any,
    ) -> TrainingResult:
        """Supervised fine-tuning on ``train_dataset`` formatted by ``config.data.template``.

        Args:
            config: the run config (``backend: trl``, ``model_name_or_path`` required).
            train_dataset: records of any shape the template registry reads.
            eval_dataset: optional; its loss is reported as ``eval_loss``.
            inputs: ``{"train": {"path", "sha256", "records"}, …}`` for the manifest.
            provenance: parent run ids.
            store: the artifact store (default: ``config.store_root``).
            command: the command line recorded in the manifest.
            resume_run_id: continue this stopped or failed run from its latest checkpoint (same
                run id, its recorded provenance kept).
            callbacks: extra ``transformers.TrainerCallback`` objects; in-process training only
                (with a distributed strategy they raise :class:`ConfigError`).
            progress: print one line per logging step to stderr.
            address: Ray address for distributed training (default: ``RAY_ADDRESS`` or local).
            init_adapter: a saved LoRA adapter folder to continue training from (instead of a
                fresh adapter); RLAIF passes the previous iteration's adapter.

        A config with ``training.method: grpo`` trains GRPO instead (see :meth:`train_grpo`), so
        ``provenir train`` and :func:`provenir.pipeline.run_job` run every method through here.

        Raises:
            ConfigError, DataError, DependencyError: before any training starts.
            TrainingStopped: Ctrl-C or SIGTERM stopped the run (marked ``stopped``, checkpoints kept).
        """
        return self._run(
            "grpo" if config.training.method == "grpo" else "sft", config, train_dataset, eval_dataset, inputs=inputs, provenance=provenance,
            store=store, command=command, resume_run_id=resume_run_id, callbacks=callbacks,
            progress=progress, address=address, init_adapter=init_adapter,
        )

    def train_dpo(
        self,
        config: RunConfig,
        preference_dataset: JsonlDataset,
        eval_dataset: JsonlDataset | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        provenance: list[str] | tuple[str, ...] = (),
        store: ArtifactStore | None = None,
        command: list[str] | None = None,
        resume_run_id: str | None = None,
        callbacks: list[Any] | None = None,
        progress: bool = False,
        address: str | None = None,
        init_adapter: str | None = None,
        **_: Any,
    ) -> TrainingResult:
        """DPO on ``{"prompt", "chosen", "rejected"}`` pairs (TRL's DPOTrainer, LoRA reference =
        the base model with the adapter disabled). Arguments as for :meth:`train_sft`; an
        ``eval_dataset`` of pairs reports ``eval_loss`` and reward accuracies."""
        return self._run(
            "dpo", config, preference_dataset, eval_dataset, inputs=inputs, provenance=provenance,
            store=store, command=command, resume_run_id=resume_run_id, callbacks=callbacks,
            progress=progress, address=address, init_adapter=init_adapter,
        )

    def train_grpo(
        self,
        config: RunConfig,
        prompt_dataset: JsonlDataset,
        eval_dataset: JsonlDataset | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        provenance: list[str] | tuple[str, ...] = (),
        store: ArtifactStore | None = None,
        command: list[str] | None = None,
        resume_run_id: str | None = None,
        callbacks: list[Any] | None = None,
        progress: bool = False,
        address: str | None = None,
        init_adapter: str | None = None,
        **_: Any,
    ) -> TrainingResult:
        """GRPO (TRL's ``GRPOTrainer``) on the prompts of ``prompt_dataset``: each record's
        template prompt, ``training.num_generations`` sampled completions per prompt scored by
        ``training.rewards``. The manifest's ``inputs`` record every reward function (name, spec,
        code hash) under ``rewards`` and the prompt set's hash under ``prompts``. Arguments as for
        :meth:`train_sft`; ``eval_dataset`` is not used."""
        return self._run(
            "grpo", config, prompt_dataset, None, inputs=inputs, provenance=provenance,
            store=store, command=command, resume_run_id=resume_run_id, callbacks=callbacks,
            progress=progress, address=address, init_adapter=init_adapter,
        )

    # -- the run ----------------------------------------------------------------------------------

    def _run(
        self,
        method: str,
        config: RunConfig,
        train: JsonlDataset,
        evaluation: JsonlDataset | None,
        *,
        inputs: dict[str, Any] | None,
        provenance: list[str] | tuple[str, ...],
        store: ArtifactStore | None,
        command: list[str] | None,
        resume_run_id: str | None,
        callbacks: list[Any] | None,
        progress: bool,
        address: str | None,
        init_adapter: str | None = None,
    ) -> TrainingResult:
        check_distributed(config, callbacks)
        if method == "grpo" and config.training.method != "grpo":
            config = config.model_copy(update={"training": config.training.model_copy(update={"method": "grpo"})})
        check_method(method, config)
        prepared = prepare(method, config, train, evaluation)
        if method == "grpo":
            inputs = {**(inputs or {}), **prepared["inputs"]}
        if init_adapter is not None and not Path(init_adapter).is_dir():
            raise ConfigError(f"init_adapter: {init_adapter} is not an adapter folder")
        store = store or ArtifactStore(config.store_root)
        dataset_hash = (inputs or {}).get("train", {}).get("sha256") or prepared["dataset_hash"]
        resume_from: str | None = None
        if resume_run_id:
            previous = check_resumable(store, resume_run_id, config, dataset_hash)
            provenance = resumed_provenance(previous, provenance)
        distributed = config.distributed is not None and config.distributed.strategy != "none"
        if resume_run_id and not distributed:
            local = store.local_run_dir(resume_run_id)
            resume_from = latest_checkpoint(Path(local) / CHECKPOINT_DIR / "hf") if local is not None else None
            if resume_from is None:  # refused before the run is touched: it stays as it was
                raise ConfigError(
                    f"--resume {resume_run_id}: the run has no checkpoint under "
                    f"{CHECKPOINT_DIR}/; set training.save_steps so runs can be resumed"
                )
        recorder = RunRecorder(
            store, config, dataset_hash=dataset_hash, inputs=inputs, provenance=provenance,
            command=command, run_id=resume_run_id,
        )
        workdir = recorder.workdir
        hf_output = workdir / CHECKPOINT_DIR / "hf"
        adapter_dir = workdir / ADAPTER_DIR
        loop_config = build_loop_config(
            method, config, prepared, output_dir=str(hf_output), adapter_dir=str(adapter_dir),
            metrics_path=str(workdir / METRICS_FILE), progress=progress, resume_from=resume_from,
        )
        loop_config["init_adapter"] = str(init_adapter) if init_adapter is not None else None
        steps = StepTracker(loop_config["max_steps"])
        with sigterm_stops_training():
            try:
                if distributed:
                    metrics = _launch_distributed(method, config, loop_config, store, recorder, address)
                else:
                    loop = _METHODS[method].worker_loop
                    metrics = _run_in_process(loop, loop_config, [*(callbacks or []), steps.callback()])
                if not (adapter_dir / "adapter_config.json").exists() and not any(adapter_dir.glob("*.safetensors")):
                    raise ProvenirError(f"training finished but wrote no adapter into {adapter_dir}")
                if store.is_local:
                    shutil.rmtree(workdir / CHECKPOINT_DIR, ignore_errors=True)  # done: nothing to resume
                manifest = recorder.finish(metrics)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through sigterm_stops_training
                # the checkpoints stay: they are what --resume continues from
                resume_step = latest_checkpoint_step(workdir / CHECKPOINT_DIR)
                recorder.finish(stop_metrics(exc, steps.step, resume_step), status="stopped")
                raise TrainingStopped(
                    recorder.run_id, signal_name=signal_name(exc), step=steps.step,
                    max_steps=loop_config["max_steps"], resume_step=resume_step,
                ) from exc
            except BaseException as exc:
                recorder.fail(exc)
                raise
        return TrainingResult(
            manifest=manifest,
            adapter_path=str(adapter_dir) if store.is_local else store.path(manifest.run_id, ADAPTER_DIR),
            metrics=metrics,
            run_dir=store.run_dir(manifest.run_id),
        )


# -- preparation (driver side, before any work) -----------------------------------------------------


def check_distributed(config: RunConfig, callbacks: list[Any] | None = None) -> None:
    """What Ray Train would reject, checked before tokenizing and before a run is recorded.

    Raises:
        ConfigError: a distributed setting :func:`provenir.distributed.train.launch` refuses
            (DeepSpeed without GPUs, say), or trainer callbacks with a distributed strategy: they
            would run as copies on the workers and their state would never come back to the caller.
    """
    dist = config.distributed
    if dist is None or dist.strategy == "none":
        return
    from provenir.distributed.train import check_launch

    check_launch(dist.strategy, dist.num_workers, _use_gpu(config), dist.max_failures)
    if callbacks:
        raise ConfigError(
            "callbacks: trainer callbacks run only when training in process, and "
            f"distributed.strategy is {dist.strategy!r} (Ray Train workers); drop the callbacks, or "
            "set distributed.strategy: none to train in this process with them"
        )


def prepare(
    method: str, config: RunConfig, train: JsonlDataset, evaluation: JsonlDataset | None
) -> dict[str, Any]:
    """Check everything that can be checked without training and tokenize/format the data.

    Returns ``{"model", "train", "eval", "dataset_hash"}`` where ``train``/``eval`` are
    pre-tokenized SFT examples or formatted DPO triples.
    """
    template = TEMPLATE_REGISTRY.get(config.data.template)
    model_path = resolve_model_path(config.model_name_or_path)
    check_quantization(config)
    if len(train) == 0:
        raise DataError(f"{train.source or 'training data'}: empty dataset; nothing to train on")
    if evaluation is not None and len(evaluation) == 0:
        evaluation = None
    train = train.map_fields(config.data.fields)
    if evaluation is not None:
        evaluation = evaluation.map_fields(config.data.fields)
    tokenizer = load_tokenizer(model_path)
    references = tuple(sorted({r.reference_field for r in config.training.rewards
                               if r.name in REWARDS_WITH_REFERENCE}))
    train_rows, eval_rows = _METHODS[method].prepare_rows(
        train, evaluation, template, tokenizer,
        max_length=config.training.max_seq_length, completion_only_loss=config.training.completion_only_loss,
        reference_fields=references,
    )
    prepared: dict[str, Any] = {"model": model_path, "train": train_rows, "eval": eval_rows,
                                "dataset_hash": train.hash(), "inputs": {}}
    if method == "grpo":
        from provenir.rewards import build_rewards, describe_rewards

        specs = reward_specs(config)
        build_rewards(specs)  # a reward that does not import or build fails here, not on a worker
        prepared["inputs"] = {
            "prompts": {"sha256": grpo.prompts_hash(train_rows), "records": len(train_rows)},
            "rewards": {"functions": describe_rewards(specs)},
        }
    elif config.training.packing:
        prepared["train"] = sft.pack_rows(train_rows, config.training.max_seq_length)
    return prepared


def check_generation(config: RunConfig) -> None:
    """``training.generation.backend: vllm`` needs vLLM installed and CUDA GPUs.

    Raises:
        DependencyError: vllm is not installed.
        ConfigError: the run would train on CPUs.
    """
    if config.training.generation.backend != "vllm":
        return
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise DependencyError(
            "training.generation.backend: vllm needs vLLM on the machines that train: "
            "pip install 'provenir[vllm]' (CUDA), or set training.generation.backend: hf"
        )
    if not _use_gpu(config):
        raise ConfigError(
            "training.generation.backend: vllm runs on CUDA GPUs and this run trains on CPUs; "
            "set training.generation.backend: hf (transformers' generate) here"
        )


def reward_specs(config: RunConfig) -> list[dict[str, Any]]:
    """The ``training.rewards`` entries as plain dicts (what workers build the rewards from)."""
    return [r.model_dump(mode="json") for r in config.training.rewards]


def check_method(method: str, config: RunConfig) -> None:
    """What the method needs of the rest of the config, checked before any work.

    Raises:
        ConfigError: GRPO without rewards, or a batch that does not split into whole groups of
            ``num_generations`` completions; packing for a method other than SFT.
    """
    t = config.training
    if method == "grpo":
        if not t.rewards:
            raise ConfigError("training.rewards: GRPO needs at least one reward (e.g. rewards: [exact_match])")
        dist = config.distributed if config.distributed and config.distributed.strategy != "none" else None
        world = dist.num_workers if dist else 1
        completions = config.batch_size * world * t.gradient_accumulation_steps
        if completions % t.num_generations:
            raise ConfigError(
                f"batch_size: {config.batch_size} completions per device x {world} worker(s) x "
                f"{t.gradient_accumulation_steps} accumulation step(s) = {completions} is not a multiple of "
                f"training.num_generations ({t.num_generations}); GRPO scores whole groups, so make "
                "batch_size a multiple of num_generations"
            )
        check_generation(config)
    if t.packing and method != "sft":
        raise ConfigError(f"training.packing: packing is for SFT only, not {method}; set packing: false")


def check_quantization(config: RunConfig) -> None:
    """4/8-bit loading needs bitsandbytes (with a backend for this machine).

    Raises:
        DependencyError: bitsandbytes is missing or transformers cannot use it here.
    """
    peft = config.peft
    if peft is None or not (peft.load_in_4bit or peft.load_in_8bit):
        return
    which = "peft.load_in_4bit" if peft.load_in_4bit else "peft.load_in_8bit"
    reason = bitsandbytes_unsupported_reason()
    if reason:
        raise DependencyError(
            f"{which}: QLoRA needs bitsandbytes support on this machine ({reason}); "
            "pip install 'provenir[train]' bitsandbytes on a supported platform, or set "
            f"{which}: false"
        )


def planned_steps(num_examples: int, config: RunConfig, world_size: int) -> int:
    """Optimizer steps: ``num_epochs`` over the data, capped by ``max_steps``. For GRPO a batch
    holds ``batch_size`` completions, ``num_generations`` of each prompt; with packing an example
    is a packed row (``num_examples`` counts rows)."""
    per_step = config.batch_size * world_size
    if config.training.method == "grpo":
        per_step = max(1, per_step // config.training.num_generations)
    batches = math.ceil(num_examples / per_step)
    per_epoch = max(1, batches // config.training.gradient_accumulation_steps)
    return max(1, min(config.max_steps, math.ceil(config.training.num_epochs * per_epoch)))


def build_loop_config(
    method: str,
    config: RunConfig,
    prepared: dict[str, Any],
    *,
    output_dir: str,
    adapter_dir: str,
    metrics_path: str,
    progress: bool = False,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """The plain, picklable dict each worker loop reads (configs stop at the edge)."""
    dist = config.distributed if config.distributed and config.distributed.strategy != "none" else None
    world = dist.num_workers if dist else 1
    use_gpu = _use_gpu(config)
    t = config.training
    peft = config.peft.model_dump() if config.peft else None
    return {
        "method": method,
        "model": prepared["model"],
        "train": prepared["train"],
        "eval": prepared["eval"],
        "seed": config.seed,
        "deterministic": config.deterministic,
        "max_steps": planned_steps(len(prepared["train"]), config, world),
        "batch_size": config.batch_size,
        "learning_rate": t.learning_rate,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_seq_length": t.max_seq_length,
        "warmup_steps": t.warmup_steps,
        "lr_scheduler": t.lr_scheduler,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "dpo_beta": t.dpo_beta,
        "packing": t.packing,
        "grpo": {
            "num_generations": t.num_generations,
            "beta": t.beta,
            "max_completion_length": t.max_completion_length,
            "temperature": t.temperature,
            "rewards": reward_specs(config),
            "generation": t.generation.model_dump(mode="json"),
        } if method == "grpo" else None,
        "logging_steps": t.logging_steps,
        "save_steps": t.save_steps,
        "peft": peft,
        "strategy": dist.strategy if dist else "none",
        "deepspeed_stage": dist.deepspeed_stage if dist else 2,
        "use_gpu": use_gpu,
        "output_dir": output_dir,
        "adapter_dir": adapter_dir,
        "metrics_path": metrics_path,
        "progress": progress,
        "resume_from": resume_from,
        "observability": {
            "backend": config.observability_backend,
            "project": config.observability_project,
            "run_name": config.name,
            "log_dir": str(Path(metrics_path).parent / "logs"),
        },
    }


def _use_gpu(config: RunConfig) -> bool:
    dist = config.distributed
    if dist is not None and dist.use_gpu is not None:
        return bool(dist.use_gpu)
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


# -- executors --------------------------------------------------------------------------------------


def _run_in_process(loop: Any, loop_config: dict[str, Any], callbacks: list[Any] | None) -> dict[str, Any]:
    from provenir.train._determinism import determinism_scope

    with determinism_scope():
        return loop({**loop_config, "_callbacks": list(callbacks or [])})


def _launch_distributed(
    method: str,
    config: RunConfig,
    loop_config: dict[str, Any],
    store: ArtifactStore,
    recorder: RunRecorder,
    address: str | None,
) -> dict[str, Any]:
    from contextlib import nullcontext

    from provenir.distributed.cluster import connect, relay_lines
    from provenir.distributed.train import launch

    dist = config.distributed
    assert dist is not None
    storage = str(recorder.workdir / CHECKPOINT_DIR) if store.is_local else store.path(recorder.run_id, CHECKPOINT_DIR)
    loop = _METHODS[method].worker_loop
    progress = bool(loop_config.get("progress"))
    # up before launch() (which reuses the connection): the relay actor needs Ray, and ray.init
    # installs its own SIGTERM handler, which the stop handler entered below takes over from
    connect(address)
    # rank 0's progress lines travel through a relay actor: worker stdout never reaches the driver
    with sigterm_stops_training(), relay_lines() if progress else nullcontext() as relay:
        result = launch(
            loop, {**loop_config, "progress_relay": relay}, num_workers=dist.num_workers,
            use_gpu=loop_config["use_gpu"], storage_path=storage, name="ray",
            max_failures=dist.max_failures, strategy=dist.strategy, address=address,
            num_to_keep=CHECKPOINTS_KEPT,
        )
    if result.error is not None:
        raise ProvenirError(f"distributed training failed: {result.error}") from (
            result.error if isinstance(result.error, BaseException) else None
        )
    adapter_dir = Path(loop_config["adapter_dir"])
    if not adapter_dir.is_dir() and result.checkpoint_path:  # workers on other nodes
        adapter_from_checkpoint(Path(result.checkpoint_path), adapter_dir, loop_config)
    metrics_file = Path(loop_config["metrics_path"])
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text(encoding="utf-8"))
    return {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}


__all__ = ["TRLBackend", "build_loop_config", "check_distributed", "latest_checkpoint", "load_model",
           "prepare", "resolve_model_path", "save_adapter"]
