"""The ``trl`` backend: real training with TRL (SFT, DPO) and PEFT (LoRA, rsLoRA, QLoRA).

What one call does:

1. **Checks, before any work**: the distributed settings Ray Train would refuse (and callbacks,
   which run in process only), the model path exists (or is a hub id), the template exists and
   the tokenizer can serve it, 4/8-bit loading has bitsandbytes support, the data is not empty and
   every record formats (the failing record is named).
2. **Records the run** (:class:`~provenir.core.run.RunRecorder`): run id, ``config.yaml``, a
   ``running`` manifest.
3. **Trains**: :func:`_sft_worker_loop` / :func:`_dpo_worker_loop` build the model, the LoRA
   adapter and TRL's ``SFTTrainer``/``DPOTrainer`` and train. With no ``distributed`` section (or
   ``strategy: none``) the loop runs in this process; otherwise on a Ray Train worker group through
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

Ctrl-C and SIGTERM (how schedulers and ``ray job stop`` end a job) stop a run the same way: its
manifest is marked ``stopped`` with its checkpoints kept, and
:class:`provenir.train.TrainingStopped` (a ``KeyboardInterrupt``) says at which step it
stopped and from which checkpoint ``--resume`` would continue.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provenir.core.abstractions import TrainingResult
from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError, DataError, DependencyError, ProvenirError
from provenir.core.io import atomic_write_text
from provenir.core.run import RunRecorder
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.data.templates import TEMPLATE_REGISTRY
from provenir.train._resume import check_resumable, resumed_provenance
from provenir.train._stop import TrainingStopped, sigterm_stops_training, signal_name, stop_metrics

if TYPE_CHECKING:
    from provenir.data.templates import PromptTemplate

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "train_metrics.json"
#: checkpoints kept while a run trains (older ones are deleted); the latest is what --resume uses,
#: the one before it is kept in case the run was stopped while the latest was being written
CHECKPOINTS_KEPT = 2
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_EVAL_METRICS = ("eval_loss", "eval_mean_token_accuracy", "eval_rewards/accuracies", "eval_rewards/margins")


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

        Raises:
            ConfigError, DataError, DependencyError: before any training starts.
            TrainingStopped: Ctrl-C or SIGTERM stopped the run (marked ``stopped``, checkpoints kept).
        """
        return self._run(
            "sft", config, train_dataset, eval_dataset, inputs=inputs, provenance=provenance,
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
        prepared = prepare(method, config, train, evaluation)
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
        steps = _StepTracker(loop_config["max_steps"])
        with sigterm_stops_training():
            try:
                if distributed:
                    metrics = _launch_distributed(method, config, loop_config, store, recorder, address)
                else:
                    loop = _sft_worker_loop if method == "sft" else _dpo_worker_loop
                    metrics = _run_in_process(loop, loop_config, [*(callbacks or []), steps.callback()])
                if not (adapter_dir / "adapter_config.json").exists() and not any(adapter_dir.glob("*.safetensors")):
                    raise ProvenirError(f"training finished but wrote no adapter into {adapter_dir}")
                if store.is_local:
                    shutil.rmtree(workdir / CHECKPOINT_DIR, ignore_errors=True)  # done: nothing to resume
                manifest = recorder.finish(metrics)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through sigterm_stops_training
                # the checkpoints stay: they are what --resume continues from
                resume_step = _latest_checkpoint_step(workdir / CHECKPOINT_DIR)
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
    from provenir.train import _data

    if method == "sft":
        sample = [_format_or_raise(template, r, train.source, i) for i, r in enumerate(train.records[:16], 1)]
        _data.check_tokenizer_serves(tokenizer, template, sample)
        kwargs = dict(max_length=config.training.max_seq_length,
                      completion_only_loss=config.training.completion_only_loss)
        train_rows: list[Any] = _data.tokenize_sft(
            train.records, template, tokenizer, source=train.source or "training data", **kwargs
        )
        eval_rows = (
            _data.tokenize_sft(evaluation.records, template, tokenizer,
                               source=evaluation.source or "eval data", **kwargs)
            if evaluation is not None else None
        )
    else:
        train_rows = _data.format_dpo(train.records, template, source=train.source or "preferences")
        sample = [r["prompt"] + r["chosen"] for r in train_rows[:16]]
        _data.check_tokenizer_serves(tokenizer, template, sample)
        eval_rows = None
        if evaluation is not None and all("chosen" in r for r in evaluation.records):
            eval_rows = _data.format_dpo(evaluation.records, template, source=evaluation.source or "eval")
    return {"model": model_path, "train": train_rows, "eval": eval_rows, "dataset_hash": train.hash()}


def _format_or_raise(template: PromptTemplate, record: dict[str, Any], source: str | None, index: int) -> str:
    try:
        return template.format(record)
    except DataError as exc:
        raise DataError(f"{source or 'dataset'}: record {index}: {str(exc).removeprefix('record: ')}") from None


def resolve_model_path(name_or_path: str | None) -> str:
    """A local model directory (checked) or a hub id (left to ``from_pretrained``).

    Raises:
        ConfigError: no model is configured, or a path that looks local does not exist or is not
            a model directory.
    """
    if not name_or_path:
        raise ConfigError(
            "model_name_or_path: required by the trl backend (a local model directory or a hub id); "
            "`provenir demo` shows how to build a tiny local one"
        )
    path = Path(name_or_path).expanduser()
    looks_local = (
        path.exists()
        or name_or_path.startswith((".", "/", "~"))
        or not _HUB_ID.match(name_or_path)
        or name_or_path.count("/") > 1
    )
    if not looks_local:
        return name_or_path
    if not path.exists():
        raise ConfigError(
            f"model_name_or_path: {name_or_path} does not exist; give a model directory "
            "(config.json + weights) or a hub id such as org/name"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"model_name_or_path: {path} has no config.json; it is not a model directory")
    return str(path.resolve())


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


def bitsandbytes_unsupported_reason() -> str | None:
    """Why bitsandbytes cannot quantize here, or ``None`` when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        from transformers.utils import is_bitsandbytes_available

        if not is_bitsandbytes_available():
            return "transformers reports bitsandbytes unavailable"
    except Exception as exc:  # noqa: BLE001 - probing must name the cause, not crash
        return f"probing failed: {exc}"
    return None


def load_tokenizer(model_path: str) -> Any:
    """The model's tokenizer (fast), with a pad token.

    Raises:
        ConfigError: it cannot be loaded (hub id offline, missing tokenizer files).
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, use_fast=True)
    except Exception as exc:  # noqa: BLE001 - every loader failure is a config problem here
        raise ConfigError(f"model_name_or_path: cannot load a tokenizer from {model_path}: {exc}") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def planned_steps(num_examples: int, config: RunConfig, world_size: int) -> int:
    """Optimizer steps: ``num_epochs`` over the data, capped by ``max_steps``."""
    per_step = config.batch_size * world_size
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


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-numbered complete ``checkpoint-N`` folder in ``output_dir``, or ``None``."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return str(max(found)[1]) if found else None


def _latest_checkpoint_step(checkpoints: Path) -> int | None:
    """The step of the latest complete checkpoint under a run's ``checkpoints/`` (in process:
    ``hf/checkpoint-N``; on Ray: ``ray/checkpoint-00000N``), or ``None``."""
    found = [latest_checkpoint(checkpoints / sub) for sub in ("hf", "ray")]
    steps = [step for step in (_checkpoint_step(c) for c in found if c) if step is not None]
    return max(steps) if steps else None


def _checkpoint_step(checkpoint: str) -> int | None:
    """The optimizer step a checkpoint folder holds: its ``trainer_state.json``'s ``global_step``,
    else the number in its name (HF's ``checkpoint-4``, Ray's ``checkpoint-000004``)."""
    folder = Path(checkpoint)
    try:
        return int(json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        match = _CHECKPOINT.match(folder.name)
        return int(match.group(1)) if match else None


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
    loop = _sft_worker_loop if method == "sft" else _dpo_worker_loop
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
        _adapter_from_checkpoint(Path(result.checkpoint_path), adapter_dir, loop_config)
    metrics_file = Path(loop_config["metrics_path"])
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text(encoding="utf-8"))
    return {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}


def _adapter_from_checkpoint(checkpoint: Path, adapter_dir: Path, loop_config: dict[str, Any]) -> None:
    adapter_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "config.json"):
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, adapter_dir / name)
    _normalise_adapter_config(adapter_dir)


# -- the worker loops (run in process or on every Ray Train worker) ---------------------------------


def _sft_worker_loop(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Train SFT as ``loop_config`` says; rank 0 saves the adapter. Top level so Ray can pickle it."""
    return _worker_loop(loop_config)


def _dpo_worker_loop(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Train DPO as ``loop_config`` says; rank 0 saves the adapter."""
    return _worker_loop(loop_config)


def _worker_loop(cfg: dict[str, Any]) -> dict[str, Any]:
    import datasets.utils.logging as datasets_logging
    import transformers.utils.logging as transformers_logging

    bars = (datasets_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    datasets_logging.disable_progress_bar()  # per-map bars drown the per-step progress lines
    transformers_logging.disable_progress_bar()
    try:
        return _train_once(cfg)
    finally:
        if bars[0]:
            datasets_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def _train_once(cfg: dict[str, Any]) -> dict[str, Any]:
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
    resumed_from = _checkpoint_step(resume) if resume is not None else None
    tokenizer = load_tokenizer(cfg["model"])
    model = load_model(cfg["model"], peft=cfg["peft"], use_gpu=cfg["use_gpu"], init_adapter=cfg.get("init_adapter"))
    trainer = _build_trainer(cfg, model, tokenizer, strategy_args)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our progress callback prints, or nothing does
    for callback in [*ray_callbacks, *_observer_callbacks(cfg), *cfg.get("_callbacks", [])]:
        trainer.add_callback(callback)
    if cfg.get("progress"):
        trainer.add_callback(_progress_callback(cfg.get("progress_relay")))
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = _collect_metrics(trainer, output)
    if resumed_from is not None:
        metrics["resumed_from_step"] = resumed_from
    if cfg["eval"] is not None:
        evaluation = trainer.evaluate()
        metrics.update({k: float(v) for k, v in evaluation.items() if k in _EVAL_METRICS})
    if trainer.is_world_process_zero():
        save_adapter(trainer.model, tokenizer, Path(cfg["adapter_dir"]))
        atomic_write_text(cfg["metrics_path"], json.dumps(metrics, sort_keys=True, indent=1) + "\n")
    return metrics


def load_model(
    model_path: str, *, peft: dict[str, Any] | None, use_gpu: bool, init_adapter: str | None = None
) -> Any:
    """The base model (quantized for QLoRA), wrapped in a LoRA adapter when ``peft`` is set.

    With ``init_adapter`` the saved adapter is loaded (trainable) instead of a fresh one; without
    ``peft`` (full fine-tuning) the model itself is loaded from that folder.
    """
    if init_adapter is not None and peft is None:
        model_path = init_adapter
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    quantized = bool(peft and (peft.get("load_in_4bit") or peft.get("load_in_8bit")))
    bf16 = use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    kwargs["dtype"] = torch.bfloat16 if bf16 else torch.float32
    if quantized:
        from transformers import BitsAndBytesConfig

        assert peft is not None
        if peft.get("load_in_4bit"):
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=kwargs["dtype"],
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"model_name_or_path: cannot load a causal LM from {model_path}: {exc}") from None
    if peft is None:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if init_adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    targets = peft["target_modules"]
    lora = LoraConfig(
        r=peft["rank"],
        lora_alpha=peft["alpha"],
        lora_dropout=peft["dropout"],
        target_modules="all-linear" if targets == ["all-linear"] else sorted(targets),
        use_rslora=peft["use_rslora"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"peft.target_modules: {exc}") from None


def _build_trainer(cfg: dict[str, Any], model: Any, tokenizer: Any, strategy_args: dict[str, Any]) -> Any:
    from datasets import Dataset

    common: dict[str, Any] = dict(
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
        bf16=bool(cfg["use_gpu"] and _bf16_ok()),
        fp16=False,
        report_to="none",
        disable_tqdm=True,
        gradient_checkpointing=False,  # tiny and LoRA models: speed over memory
        include_num_input_tokens_seen="non_padding",
        max_length=cfg["max_seq_length"],
        **strategy_args,
    )
    train = Dataset.from_list(cfg["train"])
    evaluation = Dataset.from_list(cfg["eval"]) if cfg["eval"] is not None else None
    if cfg["method"] == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, packing=False, shuffle_dataset=False)
        return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                          processing_class=tokenizer)
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common, beta=cfg["dpo_beta"])
    return DPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                      processing_class=tokenizer)


def _bf16_ok() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _collect_metrics(trainer: Any, output: Any) -> dict[str, Any]:
    state = trainer.state
    metrics: dict[str, Any] = {
        "train_loss": float(output.training_loss),
        "steps": int(state.global_step),
        "train_tokens": int(getattr(state, "num_input_tokens_seen", 0) or 0),
    }
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    if losses:
        metrics["final_loss"] = float(losses[-1])
    runtime = (output.metrics or {}).get("train_runtime")
    if runtime:
        metrics["train_runtime_s"] = float(runtime)
        if metrics["train_tokens"]:
            metrics["tokens_per_second"] = metrics["train_tokens"] / float(runtime)
    return metrics


def save_adapter(model: Any, tokenizer: Any, adapter_dir: Path) -> None:
    """Write the adapter (or full model) as safetensors plus the tokenizer, atomically per file."""
    staging = adapter_dir.with_name(f".{adapter_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _normalise_adapter_config(staging)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    staging.rename(adapter_dir)


def _normalise_adapter_config(adapter_dir: Path) -> None:
    """Sort list/set-valued fields PEFT writes in set order (``target_modules`` for all-linear)."""
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("target_modules", "modules_to_save", "layers_to_transform"):
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key], key=str)
    atomic_write_text(path, json.dumps(data, sort_keys=True, indent=2) + "\n")


# -- callbacks ----------------------------------------------------------------------------------


def _progress_callback(relay: Any = None) -> Any:
    """One line per logging step from rank 0: to stderr, or (on Ray workers) to the driver's relay.

    A run that continues from a checkpoint says so once, then prints only the steps after the
    checkpoint's: the steps before it were printed by the run that was stopped.
    """
    from transformers import TrainerCallback

    def emit(line: str) -> None:
        if relay is not None:
            relay.put.remote(line)
        else:
            print(line, file=sys.stderr, flush=True)

    class _Progress(TrainerCallback):
        def __init__(self) -> None:
            self.start_step = 0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            # on_train_begin comes after the checkpoint's trainer state is loaded
            self.start_step = int(state.global_step)
            if state.is_world_process_zero and self.start_step:
                emit(f"continuing after step {self.start_step}/{state.max_steps} (the checkpoint's)")

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            if state.global_step <= self.start_step:
                return
            emit(
                f"step {state.global_step}/{state.max_steps} · loss {logs['loss']:.4f}"
                f" · lr {logs.get('learning_rate', 0.0):.2e}"
            )

    return _Progress()


class _StepTracker:
    """The last optimizer step completed in process, for the message of a stopped run."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.step: int | None = None

    def callback(self) -> Any:
        from transformers import TrainerCallback

        tracker = self

        class _Track(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
                tracker.step = int(state.global_step)

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                tracker.step = int(state.global_step)

        return _Track()


def _observer_callbacks(cfg: dict[str, Any]) -> list[Any]:
    """A callback feeding :class:`provenir.train.observability.TrainingObserver` (rank 0 only).

    Observability must never break training: a missing module or a failing sink only warns.
    """
    obs = cfg.get("observability") or {}
    if obs.get("backend", "none") == "none":
        return []
    try:
        from provenir.train.observability import ObservabilityConfig, TrainingObserver
        from transformers import TrainerCallback
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"observability disabled: {exc}", RuntimeWarning, stacklevel=2)
        return []

    class _Observe(TrainerCallback):
        def __init__(self) -> None:
            self.observer: Any = None

        def _guard(self, what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"observability {what} failed: {exc}", RuntimeWarning, stacklevel=2)

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero:
                return

            def start() -> None:
                kwargs = dict(
                    backend=obs["backend"], project=obs.get("project"), run_name=obs.get("run_name"),
                    log_every_n_steps=max(1, int(args.logging_steps)),
                )
                if "log_dir" in ObservabilityConfig.model_fields and obs.get("log_dir"):
                    kwargs["log_dir"] = obs["log_dir"]  # local sinks write into the run folder
                config = ObservabilityConfig(**kwargs)
                self.observer = TrainingObserver(config).__enter__()

            self._guard("start", start)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if self.observer is None or not logs:
                return
            numbers = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
            if any(k.startswith("eval_") for k in numbers):
                self._guard("log_eval", lambda: self.observer.log_eval(numbers))
            else:
                self._guard("log_step", lambda: self.observer.log_step(int(state.global_step), numbers))

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.observer is not None:
                self._guard("close", lambda: self.observer.__exit__(None, None, None))
                self.observer = None

    return [_Observe()]


__all__ = ["TRLBackend", "build_loop_config", "check_distributed", "latest_checkpoint", "load_model",
           "prepare", "resolve_model_path", "save_adapter"]
