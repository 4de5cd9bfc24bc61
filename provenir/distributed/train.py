"""Ray Train hosting: run a training loop on a ``TorchTrainer`` worker group.

``distributed`` never imports ``provenir.train``: the training loop is a callable (a top-level
function, so Ray can pickle it) that each worker runs with ``loop_config``. The loop builds its own
``transformers``/TRL trainer and adds :func:`ray_report_callback` to it; on a restart it resumes
from :func:`resume_checkpoint_dir`.

What makes a restart bit-identical to an uninterrupted run:

* every checkpoint carries the adapter, optimizer, scheduler, trainer state (the data position) and
  **each rank's** RNG state (``rng_state_<rank>.pth``); the callback has every rank upload the
  files it wrote itself, so workers on other nodes contribute their RNG files too, and no two
  workers copy the same file;
* the callback reports *exactly* the folder of the step being saved (never "the newest folder in
  ``output_dir``", which after a restart can be a stale one from the failed attempt), after a
  barrier, so no copy races a write;
* the loop resumes with ``trainer.train(resume_from_checkpoint=resume_checkpoint_dir())``, which
  restores all of the above and skips the batches already seen.

Example (the loop runs on every worker)::

    def loop(config):
        trainer = build_my_trainer(config, callbacks=[ray_report_callback()],
                                   **strategy_training_args("ddp", 2, use_gpu=False))
        trainer.train(resume_from_checkpoint=resume_checkpoint_dir())

    result = launch(loop, {"seed": 0}, num_workers=2, use_gpu=False,
                    storage_path="/data/runs", name="run-123", max_failures=2)
    result.checkpoint_path   # local folder of the last reported checkpoint
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provenir.core.config import STRATEGIES
from provenir.core.errors import ConfigError
from provenir.distributed.cluster import connect, run_on_cluster

if TYPE_CHECKING:
    import transformers

#: Strategies that run on a Ray Train worker group (``none`` trains in process).
LAUNCH_STRATEGIES: tuple[str, ...] = tuple(s for s in STRATEGIES if s != "none")

#: Checkpoint folder names as the HF Trainer writes them and as they are reported to Ray.
CHECKPOINT_PREFIX = "checkpoint-"

# Files inside a checkpoint folder that belong to one data-parallel rank: HF's per-rank RNG state,
# DeepSpeed ZeRO partitions, FSDP sharded (distcp) state. Everything else is written by rank 0.
_RANK_FILE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?:^|/)rng_state_(\d+)\.pth$"),
    re.compile(r"(?:^|/)(?:bf16_|fp16_)?zero_pp_rank_(\d+)_"),
    re.compile(r"(?:^|/)__(\d+)_\d+\.distcp$"),
)


@dataclass
class LaunchResult:
    """What a :func:`launch` returns.

    Attributes:
        checkpoint_path: a local folder holding the last reported checkpoint (downloaded when the
            storage is remote), or ``None`` when none was reported.
        metrics: the metrics rank 0 reported with the last checkpoint (or last report).
        error: the exception that ended the run, or ``None`` when it finished.
        storage_uri: where the run's checkpoints live (``storage_path/name``).
    """

    checkpoint_path: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    storage_uri: str | None = None
    # Ray's Checkpoint, handed from the driver task to the caller (which sets checkpoint_path)
    checkpoint: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def launch(
    train_loop: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    *,
    num_workers: int,
    use_gpu: bool,
    storage_path: str,
    name: str,
    max_failures: int = 0,
    strategy: str = "ddp",
    address: str | None = None,
    resources_per_worker: dict[str, float] | None = None,
    num_to_keep: int | None = None,
    download_to: str | None = None,
    storage_filesystem: Any = None,
) -> LaunchResult:
    """Run ``train_loop(loop_config)`` on every worker of a Ray Train ``TorchTrainer``.

    A run is identified by ``storage_path/name``: launching again with the same pair continues
    from the latest checkpoint registered there (Ray Train restores its checkpoint snapshot), which
    is what ``provenir train --resume RUN_ID`` does. ``max_failures`` restarts a failed worker
    group from the latest checkpoint (``-1``: without limit).

    Args:
        train_loop: a picklable (top-level) function run on every worker.
        loop_config: its only argument.
        num_workers: workers in the group (``num_gpus × num_nodes`` for a GPU run).
        use_gpu: one GPU per worker, NCCL; otherwise CPU workers over gloo.
        storage_path: local folder or object-storage URI (``s3://…``, ``gs://…``) for
            checkpoints; on a multi-node cluster a local folder must be shared (NFS, EFS, …).
        name: the run's folder under ``storage_path``.
        max_failures: worker-group restarts before the run fails.
        strategy: ``ddp``, ``fsdp`` or ``deepspeed``, checked here; the loop applies it through
            :func:`strategy_training_args`. The process group is gloo on CPU, NCCL on GPU.
        address: a Ray address (``None``: ``RAY_ADDRESS`` or an embedded instance).
        resources_per_worker: overrides Ray's default (1 CPU, plus 1 GPU with ``use_gpu``).
        num_to_keep: checkpoints kept in storage (``None``: all).
        download_to: where to put the final checkpoint when storage is remote (default: a temp dir).
        storage_filesystem: a ``pyarrow.fs`` filesystem for ``storage_path`` (an S3-compatible
            store at a custom endpoint, say). Default: :func:`storage_filesystem_from_env`, so an
            ``s3://`` path honours ``AWS_ENDPOINT_URL`` and the ``AWS_*`` keys of the launching
            process on every worker (MinIO, Ceph, a local test server), not only where they are set.

    Raises:
        ConfigError: an unknown strategy, ``num_workers < 1``, DeepSpeed or FSDP without GPUs.
    """
    check_launch(strategy, num_workers, use_gpu, max_failures)
    if storage_filesystem is None:
        storage_path = _normalise_storage(storage_path)
        storage_filesystem = storage_filesystem_from_env(storage_path)
    else:  # a path inside the given filesystem, never a local folder of this machine
        storage_path = storage_path.rstrip("/")
    storage_uri = f"{storage_path}/{name}"
    if storage_filesystem is not None and "://" in storage_path:
        storage_path = storage_path.split("://", 1)[1]  # Ray wants the bare path with a filesystem
    connect(address)
    # Through Ray Client the trainer runs in a driver task on the cluster; the final checkpoint is
    # fetched here, on the caller's side, so checkpoint_path is a folder the caller can read.
    result = run_on_cluster(
        _fit,
        train_loop,
        loop_config,
        num_workers=num_workers,
        use_gpu=use_gpu,
        storage_path=storage_path,
        name=name,
        max_failures=max_failures,
        resources_per_worker=resources_per_worker,
        num_to_keep=num_to_keep,
        storage_filesystem=storage_filesystem,
        num_cpus=0.1,
    )
    checkpoint, result.checkpoint = result.checkpoint, None
    result.storage_uri = storage_uri
    result.checkpoint_path = _local_copy(checkpoint, download_to)
    return result


def check_launch(strategy: str, num_workers: int, use_gpu: bool, max_failures: int) -> None:
    """What :func:`launch` refuses, checked without Ray (callers check before any work starts).

    Raises:
        ConfigError: an unknown strategy, ``num_workers < 1``, ``max_failures < -1``, DeepSpeed
            or FSDP without GPUs.
    """
    if strategy not in LAUNCH_STRATEGIES:
        raise ConfigError(
            f"distributed.strategy: {strategy!r} cannot be launched on Ray Train; use one of "
            f"{', '.join(LAUNCH_STRATEGIES)} (or 'none' to train in process)"
        )
    if num_workers < 1:
        raise ConfigError(f"num_workers: must be >= 1 (got {num_workers})")
    if max_failures < -1:
        raise ConfigError(f"distributed.max_failures: must be >= -1 (got {max_failures})")
    if strategy == "deepspeed" and not use_gpu:
        raise ConfigError(
            "distributed.strategy: 'deepspeed' needs GPUs (set distributed.use_gpu: true on a GPU "
            "cluster), or use 'ddp' to train on CPU workers"
        )
    if strategy == "fsdp" and not use_gpu:
        # accelerate applies an FSDP plugin only on accelerators; CPU workers would silently get DDP
        raise ConfigError(
            "distributed.strategy: 'fsdp' needs GPUs (on CPU workers the trainer would quietly fall "
            "back to DDP); set distributed.use_gpu: true on a GPU cluster, or use 'ddp' on CPU workers"
        )


def storage_filesystem_from_env(storage_path: str) -> Any:
    """For an ``s3://`` storage path when ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) is set:
    a ``pyarrow.fs.S3FileSystem`` for that endpoint with the ``AWS_*`` credentials of this process,
    which Ray pickles to every worker; ``None`` otherwise (Ray resolves the URI on each node)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not storage_path.startswith("s3://") or not endpoint:
        return None
    import pyarrow.fs

    scheme, _, host = endpoint.partition("://")
    if not host:
        scheme, host = "https", endpoint
    kwargs: dict[str, Any] = {"endpoint_override": host.rstrip("/"), "scheme": scheme}
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                      session_token=os.environ.get("AWS_SESSION_TOKEN"))
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pyarrow.fs.S3FileSystem(**kwargs)


def _normalise_storage(storage_path: str) -> str:
    if "://" in storage_path:
        return storage_path.rstrip("/")
    path = Path(storage_path).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _fit(
    train_loop: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    *,
    num_workers: int,
    use_gpu: bool,
    storage_path: str,
    name: str,
    max_failures: int,
    resources_per_worker: dict[str, float] | None,
    num_to_keep: int | None,
    storage_filesystem: Any = None,
) -> LaunchResult:
    """Build and fit the trainer; the result keeps Ray's final ``Checkpoint`` in ``.checkpoint``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
        ),
    )
    storage_uri = f"{storage_path}/{name}"
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - TrainingFailedError and friends: report, don't raise
        return LaunchResult(None, {}, exc, storage_uri)
    metrics = dict(result.metrics or {})
    return LaunchResult(None, metrics, result.error, storage_uri, result.checkpoint)


def _local_copy(checkpoint: Any, download_to: str | None) -> str | None:
    import pyarrow.fs

    if checkpoint is None:
        return None
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return str(checkpoint.path)  # on a remote cluster: a path on its shared storage
    target = download_to or tempfile.mkdtemp(prefix="provenir-ckpt-")
    return str(checkpoint.to_directory(target))


def _is_local(checkpoint: Any) -> bool:
    import pyarrow.fs

    return isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem) and os.path.isdir(
        checkpoint.path
    )


def in_ray_worker() -> bool:
    """True inside a Ray Train worker (cheap: False without importing Ray when Ray isn't loaded)."""
    if "ray" not in sys.modules:
        return False
    try:
        from ray.train.v2._internal.util import _in_ray_train_worker

        return bool(_in_ray_train_worker())
    except Exception:  # noqa: BLE001 - other Ray layouts: no train worker API
        return False


def resume_checkpoint_dir() -> str | None:
    """Inside a worker: the local folder of the checkpoint to resume from, or ``None``.

    That is the latest checkpoint registered for this run: after a worker-group restart, or when
    the run is launched again with the same ``storage_path``/``name``. Remote checkpoints are
    downloaded into a temporary folder under their own name (``…/checkpoint-000004``); local ones
    are read in place.
    """
    if not in_ray_worker():
        return None
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    if _is_local(checkpoint):
        return str(checkpoint.path)
    name = os.path.basename(str(checkpoint.path).rstrip("/")) or "checkpoint"
    return str(checkpoint.to_directory(os.path.join(tempfile.mkdtemp(prefix="provenir-resume-"), name)))


def checkpoint_rank(relative_path: str) -> int | None:
    """The data-parallel rank a checkpoint file belongs to, or ``None`` for shared files."""
    for pattern in _RANK_FILE_PATTERNS:
        match = pattern.search(relative_path.replace(os.sep, "/"))
        if match:
            return int(match.group(1))
    return None


def files_for_rank(folder: str | Path, rank: int) -> list[str]:
    """Relative paths in ``folder`` that ``rank`` uploads: its rank files (rank 0: also shared)."""
    folder = Path(folder)
    chosen = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        owner = checkpoint_rank(rel)
        if owner == rank or (owner is None and rank == 0):
            chosen.append(rel)
    return chosen


_CALLBACK_CLASS: type | None = None


def ray_report_callback() -> transformers.TrainerCallback:
    """A ``transformers.TrainerCallback`` that registers each saved checkpoint with Ray Train.

    On every save it waits at a barrier (all ranks have finished writing ``checkpoint-<step>``),
    then each rank uploads the files of exactly that folder that it owns (rank 0: the shared files
    and its RNG state; rank k: ``rng_state_k.pth`` and its ZeRO/FSDP shards) under the Ray
    checkpoint name ``checkpoint-<step>``, with rank 0's logged metrics.
    """
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        _CALLBACK_CLASS = _build_callback_class()
    return _CALLBACK_CLASS()


def _build_callback_class() -> type:
    from transformers import TrainerCallback

    class RayCheckpointReportCallback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 - HF signature
            import ray.train
            import torch.distributed as dist

            step = int(state.global_step)
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{step}"
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            rank = int(args.process_index)
            metrics = _flat_metrics(state.log_history)
            metrics["step"] = step
            with tempfile.TemporaryDirectory(prefix="provenir-report-") as staging:
                files = files_for_rank(folder, rank) if folder.is_dir() else []
                for rel in files:
                    target = Path(staging) / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(folder / rel, target)
                checkpoint = ray.train.Checkpoint.from_directory(staging) if files else None
                ray.train.report(
                    metrics,
                    checkpoint=checkpoint,
                    checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{step:06d}",
                )

    return RayCheckpointReportCallback


def _flat_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            merged[key] = value
    return merged


def strategy_training_args(
    strategy: str, deepspeed_stage: int = 2, use_gpu: bool = False
) -> dict[str, Any]:
    """Extra ``transformers.TrainingArguments`` (or TRL config) kwargs for a strategy.

    * ``none``: nothing.
    * ``ddp``: the process-group backend (gloo on CPU, NCCL on GPU); unused-parameter search off
      (LoRA trains a fixed set of parameters).
    * ``fsdp``: FSDP2 through accelerate: full sharding (``reshard_after_forward``), transformer
      block auto-wrap, full state dicts in checkpoints (rank 0 writes them, so resume needs no
      re-sharding).
    * ``deepspeed``: the ZeRO config of :func:`deepspeed_config` for ``deepspeed_stage``.

    Transformers 5 deprecates the legacy ``fsdp="full_shard auto_wrap"`` string; ``fsdp=True`` with
    the same meaning spelled in ``fsdp_config`` is the current form.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"distributed.strategy: unknown {strategy!r}; allowed: {', '.join(STRATEGIES)}"
        )
    if strategy == "none":
        return {}
    backend = "nccl" if use_gpu else "gloo"
    args: dict[str, Any] = {"ddp_backend": backend}
    if strategy == "ddp":
        args["ddp_find_unused_parameters"] = False
    elif strategy == "fsdp":
        args["fsdp"] = True
        args["fsdp_config"] = fsdp_config()
    else:
        args["deepspeed"] = deepspeed_config(deepspeed_stage)
    return args


def fsdp_config(
    *, cpu_offload: bool = False, activation_checkpointing: bool = False
) -> dict[str, Any]:
    """The ``fsdp_config`` for ``TrainingArguments``: FSDP2, full shard, transformer auto-wrap."""
    return {
        "version": 2,
        "reshard_after_forward": True,  # full_shard
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "state_dict_type": "FULL_STATE_DICT",
        "cpu_ram_efficient_loading": False,
        "cpu_offload": cpu_offload,
        "activation_checkpointing": activation_checkpointing,
    }


def deepspeed_config(
    stage: int,
    *,
    offload: bool = False,
    bucket_size: int | str = "auto",
    gradient_clipping: float | str = "auto",
) -> dict[str, Any]:
    """A DeepSpeed ZeRO config for the HF integration (``"auto"`` values are filled by the Trainer).

    Args:
        stage: ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also parameters.
        offload: put optimizer states (stage ≥ 1) and parameters (stage 3) in CPU memory.
        bucket_size: reduce/prefetch bucket size in elements (``"auto"``: from the hidden size).
        gradient_clipping: ``"auto"`` follows ``max_grad_norm``.

    Raises:
        ConfigError: a stage other than 1, 2 or 3.
    """
    if stage not in (1, 2, 3):
        raise ConfigError(f"distributed.deepspeed_stage: must be 1, 2 or 3 (got {stage!r})")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": bucket_size,
    }
    if stage == 2:
        zero.update(allgather_partitions=True, allgather_bucket_size=int(5e8), reduce_scatter=True)
    if stage == 3:
        zero.update(
            stage3_prefetch_bucket_size=bucket_size,
            stage3_param_persistence_threshold="auto",
            stage3_max_live_parameters=int(1e9),
            stage3_max_reuse_distance=int(1e9),
            stage3_gather_16bit_weights_on_model_save=True,
            sub_group_size=int(1e9),
        )
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": gradient_clipping,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "steps_per_print": 2**31 - 1,  # the Trainer logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }


__all__ = [
    "LAUNCH_STRATEGIES",
    "LaunchResult",
    "check_launch",
    "checkpoint_rank",
    "deepspeed_config",
    "files_for_rank",
    "fsdp_config",
    "in_ray_worker",
    "launch",
    "ray_report_callback",
    "resume_checkpoint_dir",
    "storage_filesystem_from_env",
    "strategy_training_args",
]
