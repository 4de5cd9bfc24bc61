"""PEFT sweeps on Ray Tune: every trial an ordinary run of the store, trained on Ray Train.

``provenir sweep CONFIG`` calls :func:`run_sweep`. What one sweep does:

1. Records the sweep as a run of its own (the *sweep run*: ``sweep.json``, ``sweep_config.yaml``,
   ``best_config.yaml`` and Tune's experiment folder ``tune/``); its id is the sweep id.
2. Runs one Tune trial per configuration (:func:`provenir.core.sweep_config.expand_trials` for grid
   and random search, Ray Tune's ``OptunaSearch`` seeded for optuna). A trial is a *function
   trainable* that records a run (id ``<sweep id>-tNN``, ``provenance = [sweep id]``), builds a
   ``TorchTrainer`` over the caller's training loop (Ray Train V2 runs no trainer directly under
   ``Tuner``), evaluates and checkpoints every ``sweep.eval_steps`` steps, and passes each of those
   reports on to Tune (``TuneReportCallback``), so the scheduler sees the metric at every evaluation.
3. Stops trials early with :class:`~provenir.distributed.sweep_scheduler.OrderedHalving` (ASHA's
   cut, decided in trial order, so the same config and seed give the same decisions however the
   trials interleave), or lets every trial finish (``fifo``).
4. Keeps ``sweep.json`` current after every result (the table ``provenir sweep show`` prints), and
   at the end marks the trials the scheduler stopped as ``stopped`` runs, picks the best completed
   trial (ties: the lowest index) and writes its configuration as ``best_config.yaml``.

A sweep whose driver died continues with ``resume_id``: Tune restores its experiment, trials that
ended are kept as they were, the others start again from scratch (their runs keep their ids).

The training loop is the caller's (``distributed`` never imports ``train``): ``plan_trial(config,
workdir)`` returns a :class:`TrialPlan` for one trial's run config and run folder.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenir.core.config import DistributedConfig, RunConfig
from provenir.core.errors import ConfigError, NotFoundError, ProvenirError
from provenir.core.run import RunRecorder
from provenir.core.store import ArtifactStore
from provenir.core.sweep_config import SweepSpec, expand_trials
from provenir.distributed.cluster import connect
from provenir.distributed.sweep_scheduler import OrderedHalving, rungs, trial_index, tune_scheduler

SWEEP_RECORD = "sweep.json"
SWEEP_CONFIG = "sweep_config.yaml"
BEST_CONFIG = "best_config.yaml"
TUNE_DIR = "tune"
TUNE_NAME = "trials"
#: written into a trial's run folder when the scheduler stops it (and kept: it says why)
STOP_FILE = "sweep_stop.json"
ADAPTER_WEIGHTS = "adapter/adapter_model.safetensors"
#: statuses a trial can end with
ENDED = ("completed", "stopped", "failed")


@dataclass
class TrialPlan:
    """What runs for one trial, from the caller's ``plan_trial(config, workdir)``.

    ``loop`` runs on every Ray Train worker with ``loop_config``; rank 0 writes the adapter into
    ``adapter_dir`` and the final metrics (JSON) into ``metrics_path``; Ray Train checkpoints go
    under ``checkpoint_dir`` (removed when the trial completes).
    """

    loop: Callable[[dict[str, Any]], Any]
    loop_config: dict[str, Any]
    adapter_dir: str
    metrics_path: str
    checkpoint_dir: str


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` returns: the sweep's id and its record (``sweep.json``)."""

    sweep_id: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.record.get("trials", [])

    @property
    def best(self) -> dict[str, Any] | None:
        return self.record.get("best")


def trial_run_id(sweep_id: str, index: int) -> str:
    return f"{sweep_id}-t{index:02d}"


def load_record(store: ArtifactStore, sweep_id: str) -> dict[str, Any]:
    """The sweep record of ``sweep_id``.

    Raises:
        NotFoundError: no such sweep in the store.
    """
    if not store.exists(sweep_id, SWEEP_RECORD):
        raise NotFoundError(f"sweep {sweep_id!r}: no {SWEEP_RECORD} under {store.runs_dir()} "
                            "(is it a sweep id? see `provenir runs list`)")
    return json.loads(store.read_text(sweep_id, SWEEP_RECORD))


def run_sweep(
    spec: SweepSpec,
    *,
    store: ArtifactStore,
    plan_trial: Callable[[RunConfig, Path], TrialPlan],
    dataset_hash: str,
    inputs: dict[str, Any] | None = None,
    max_steps: int,
    command: list[str] | None = None,
    address: str | None = None,
    resume_id: str | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> SweepOutcome:
    """Run (or, with ``resume_id``, continue) the sweep ``spec`` (see the module docstring).

    Args:
        spec: the loaded sweep (:func:`provenir.core.sweep_config.load_sweep`).
        store: a local store (trials' workers write their adapters into it).
        plan_trial: ``(trial run config, run folder) -> TrialPlan``; picklable (a top-level function
            or a ``functools.partial`` of one): it runs in each trial's Tune actor.
        dataset_hash, inputs: what every trial's manifest records as its data.
        max_steps: optimizer steps of a full trial (fixes the scheduler's rungs).
        on_update: called on the driver with the record after every change (a live table);
            picklable, like ``plan_trial``.

    Raises:
        ConfigError: a remote store, or a sweep to resume that is not in the store.
    """
    if not store.is_local:
        raise ConfigError(f"sweep: the store must be a local (or shared) folder; got {store.root}")
    sweep = spec.sweep
    evaluations = math.ceil(max_steps / sweep.eval_steps)
    if resume_id is None:
        recorder = RunRecorder(
            store, spec.base.model_copy(update={"name": f"{spec.name}-sweep"}), dataset_hash=dataset_hash,
            inputs=inputs, command=command,
        )
        sweep_id = recorder.run_id
        store.write_text(sweep_id, SWEEP_CONFIG, spec.to_yaml())
        record = _new_record(spec, sweep_id, max_steps, evaluations)
        _save_record(store, record)
    else:
        record = load_record(store, resume_id)
        sweep_id = resume_id
        recorder = RunRecorder(
            store, spec.base.model_copy(update={"name": f"{spec.name}-sweep"}), dataset_hash=dataset_hash,
            inputs=inputs, command=command, run_id=sweep_id,
        )
        record["status"] = "running"
        record["resumed"] = record.get("resumed", 0) + 1
        _save_record(store, record)
    connect(address)
    tune_path = Path(store.local_run_dir(sweep_id)) / TUNE_DIR  # type: ignore[arg-type]
    context = {
        "spec": spec, "store_root": store.root, "sweep_id": sweep_id, "plan_trial": plan_trial,
        "dataset_hash": dataset_hash, "inputs": inputs or {}, "command": list(command or []),
    }
    # Tune saves its experiment state after every step of its loop: a driver killed right after a
    # trial ended still finds it ended on --resume
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "0"
    try:
        _fit(spec, record, context, tune_path, store, on_update, resume=resume_id is not None)
    except BaseException as exc:
        recorder.finish({"error": f"{type(exc).__name__}: {exc}"}, status="stopped" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    record = load_record(store, sweep_id)
    _finish_trials(store, record)
    _pick_best(spec, store, record)
    record["status"] = "completed"
    _save_record(store, record)
    if on_update is not None:
        on_update(record)
    best = record.get("best") or {}
    recorder.finish({
        "trials": len(record["trials"]),
        **{s: sum(t["status"] == s for t in record["trials"]) for s in ENDED},
        "trial_steps": sum(t.get("steps", 0) for t in record["trials"]),
        "best_run": best.get("run_id"),
        f"best_{sweep.metric}": best.get("value"),
    })
    return SweepOutcome(sweep_id, record)


def _new_record(spec: SweepSpec, sweep_id: str, max_steps: int, evaluations: int) -> dict[str, Any]:
    sweep = spec.sweep
    trials = expand_trials(sweep, spec.seed)
    milestones = rungs(sweep.scheduler.grace_period, sweep.scheduler.reduction_factor, evaluations) \
        if sweep.scheduler.type == "asha" else []
    return {
        "sweep_id": sweep_id,
        "name": spec.name,
        "status": "running",
        "metric": sweep.metric,
        "mode": sweep.mode,
        "search": {"algorithm": sweep.search, "seed": spec.seed, "num_samples": sweep.num_samples},
        "scheduler": {**sweep.scheduler.model_dump(), "rungs_evaluations": milestones,
                      "rungs_steps": [m * sweep.eval_steps for m in milestones]},
        "search_space": sweep.search_space,
        "eval_steps": sweep.eval_steps,
        "max_steps": max_steps,
        "evaluations": evaluations,
        "max_concurrent_trials": sweep.max_concurrent_trials,
        "resources": sweep.resources.model_dump(),
        "trials": [_new_trial(sweep_id, i, p) for i, p in enumerate(trials or [])],
        "best": None,
    }


def _new_trial(sweep_id: str, index: int, params: dict[str, Any]) -> dict[str, Any]:
    return {"index": index, "run_id": trial_run_id(sweep_id, index), "params": params,
            "status": "pending", "steps": 0, "value": None, "history": [], "attempts": 0, "error": None}


def _save_record(store: ArtifactStore, record: dict[str, Any]) -> None:
    store.write_text(record["sweep_id"], SWEEP_RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _fit(spec: SweepSpec, record: dict[str, Any], context: dict[str, Any], tune_path: Path,
         store: ArtifactStore, on_update: Callable[[dict[str, Any]], None] | None, *, resume: bool) -> None:
    from ray import tune

    sweep = spec.sweep
    resources = sweep.resources
    trainable = tune.with_resources(
        tune.with_parameters(_trial, context=context), {"cpu": resources.trainable_cpus}
    )
    if resume:
        if not tune.Tuner.can_restore(str(tune_path / TUNE_NAME)):
            raise ConfigError(f"--resume {record['sweep_id']}: no Tune experiment to continue under {tune_path}")
        tuner = tune.Tuner.restore(str(tune_path / TUNE_NAME), trainable=trainable,
                                   resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        halving = OrderedHalving(list(record["scheduler"]["rungs_steps"]), sweep.scheduler.reduction_factor,
                                 sweep.mode)
        scheduler = tune_scheduler(halving, sweep.metric, prior=functools.partial(_prior, store.root, record["sweep_id"]),
                                   request_stop=functools.partial(_request_stop, store.root, record["sweep_id"],
                                                                  sweep.scheduler.type))
        trials = [t["params"] for t in record["trials"]]
        if sweep.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            param_space = {"params": _tune_domains(sweep)}
            search_alg = OptunaSearch(metric=sweep.metric, mode=sweep.mode, seed=spec.seed)
            num_samples = sweep.num_samples
        else:
            param_space = {"params": tune.grid_search(trials)}
            search_alg, num_samples = None, 1
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=num_samples, max_concurrent_trials=sweep.max_concurrent_trials,
                scheduler=scheduler, search_alg=search_alg, reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=TUNE_NAME, storage_path=str(tune_path), verbose=0,
                callbacks=[_record_callback(store.root, record["sweep_id"], sweep.metric, on_update, scheduler)],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    tuner.fit()


def _tune_domains(sweep: Any) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, dim in sweep.dimensions().items():
        if dim.kind == "choice":
            out[key] = tune.choice(list(dim.values))
        elif dim.kind == "uniform":
            out[key] = tune.uniform(*dim.values)
        elif dim.kind == "loguniform":
            out[key] = tune.loguniform(*dim.values)
        elif dim.kind == "randint":
            out[key] = tune.randint(*dim.values)
        else:  # checked when loading: optuna runs no grid
            raise ConfigError(f"sweep.search_space.{key}: search: optuna samples, it runs no grid")
    return out


def _request_stop(store_root: str, sweep_id: str, by: str, index: int, step: int) -> None:
    """Ask trial ``index`` to stop: its workers look for this file at every optimizer step."""
    ArtifactStore(store_root).write_text(trial_run_id(sweep_id, index), STOP_FILE,
                                         json.dumps({"stopped_by": by, "decided_at_step": step}) + "\n")


def _prior(store_root: str, sweep_id: str) -> dict[int, tuple[list[tuple[int, float]], bool]]:
    """For a resumed sweep's scheduler: the histories of the trials that ended before."""
    record = load_record(ArtifactStore(store_root), sweep_id)
    return {t["index"]: ([(h["step"], h["value"]) for h in t["history"]], True)
            for t in record["trials"] if t["status"] in ENDED}


# -- the trial (runs in a Tune actor) ---------------------------------------------------------------


def _trial(tune_config: dict[str, Any], context: dict[str, Any]) -> None:
    from ray import tune
    from ray.train import CheckpointConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec: SweepSpec = context["spec"]
    index = trial_index(tune.get_context().get_trial_id())
    resources = spec.sweep.resources
    use_gpu = resources.gpus_per_worker > 0
    config = spec.trial_config(tune_config["params"], index).model_copy(update={
        "distributed": DistributedConfig(strategy="ddp", num_gpus=resources.workers, use_gpu=use_gpu),
    })
    store = ArtifactStore(context["store_root"])
    run_id = trial_run_id(context["sweep_id"], index)
    recorder = RunRecorder(
        store, config, dataset_hash=context["dataset_hash"], inputs=context["inputs"],
        provenance=[context["sweep_id"]], command=context["command"], run_id=run_id,
    )
    plan: TrialPlan = context["plan_trial"](config, recorder.workdir)
    # a trial started again (after a resume) starts from scratch: its decisions are then the same
    # as those of a sweep never interrupted
    shutil.rmtree(plan.checkpoint_dir, ignore_errors=True)
    stop_file = recorder.workdir / STOP_FILE
    stop_file.unlink(missing_ok=True)
    Path(plan.adapter_dir).parent.mkdir(parents=True, exist_ok=True)
    loop_config = {
        **plan.loop_config,
        "save_steps": spec.sweep.eval_steps,
        "progress": False,
        "_callbacks": [*plan.loop_config.get("_callbacks", []), EvaluateAtSave(str(stop_file), use_gpu)],
    }
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        plan.loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        run_config=TrainRunConfig(
            name="ray", storage_path=plan.checkpoint_dir, callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
        if result.error is not None:
            raise ProvenirError(f"trial {index}: training failed: {result.error}")
        adapter = Path(plan.adapter_dir)
        if not (adapter / "adapter_config.json").is_file():
            raise ProvenirError(f"trial {index}: training finished but wrote no adapter into {adapter} "
                                "(on a multi-node cluster the store must be a shared folder)")
        metrics_file = Path(plan.metrics_path)
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
        extra: dict[str, Any] = {"sweep": context["sweep_id"], "sweep_trial": index}
        if stop_file.is_file():  # the scheduler stopped it: a stopped run, checkpoints kept
            extra.update(json.loads(stop_file.read_text(encoding="utf-8")))
            recorder.finish({**metrics, **extra}, status="stopped")
            return
        shutil.rmtree(plan.checkpoint_dir, ignore_errors=True)
        recorder.finish({**metrics, **extra})
    except Exception as exc:
        recorder.fail(exc)
        raise


class EvaluateAtSave:
    """A ``transformers`` trainer callback: evaluate whenever a checkpoint is about to be saved, so
    every report to Ray (made at each save) carries the eval metrics of that very step; and end
    training at the first step after the scheduler asked for it (``stop_file`` exists). Every rank
    takes the same decision: the flag is reduced over the process group.

    (A plain class, as :class:`provenir.train.eval_callback.EvalCallback` is: the trainer calls its
    events by name, and it pickles to Ray workers without importing transformers here.)
    """

    def __init__(self, stop_file: str, use_gpu: bool = False) -> None:
        self.stop_file = stop_file
        self.use_gpu = use_gpu

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self._stop_requested():
            control.should_training_stop = True
            control.should_save = False
            return control
        if control.should_save:
            control.should_evaluate = True
        return control

    def _stop_requested(self) -> bool:
        import torch
        import torch.distributed as dist

        flag = os.path.exists(self.stop_file)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = f"cuda:{torch.cuda.current_device()}" if self.use_gpu else "cpu"
            tensor = torch.tensor([int(flag)], device=device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
        return flag

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return _noop
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


# -- the driver: the record, kept current ---------------------------------------------------------


def _record_callback(store_root: str, sweep_id: str, metric: str,
                     on_update: Callable[[dict[str, Any]], None] | None, scheduler: Any) -> Any:
    from ray.tune import Callback

    class _SweepRecorder(Callback):
        """Keeps ``sweep.json`` current: each trial's status, metric history and steps."""

        def __init__(self) -> None:
            self.record: dict[str, Any] | None = None

        def _load(self) -> dict[str, Any]:
            if self.record is None:
                self.record = load_record(ArtifactStore(store_root), sweep_id)
            return self.record

        def _row(self, trial: Any) -> dict[str, Any]:
            record = self._load()
            index = trial_index(trial.trial_id)
            rows = {t["index"]: t for t in record["trials"]}
            if index not in rows:  # optuna: trials appear as they are proposed
                row = _new_trial(sweep_id, index, dict((trial.config or {}).get("params", {})))
                record["trials"].append(row)
                record["trials"].sort(key=lambda t: t["index"])
                return row
            return rows[index]

        def _save(self) -> None:
            record = self._load()
            _save_record(ArtifactStore(store_root), record)
            if on_update is not None:
                try:
                    on_update(record)
                except Exception:  # noqa: BLE001 - the table must never stop the sweep
                    pass

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            row = self._row(trial)
            row.update(status="running", steps=0, value=None, history=[], error=None,
                       trial_id=trial.trial_id, attempts=row.get("attempts", 0) + 1,
                       started=time.time())
            self._save()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if metric not in result or "step" not in result:
                return
            row = self._row(trial)
            step, value = int(result["step"]), float(result[metric])
            stopped_at = scheduler.stopped_at.get(trial_index(trial.trial_id))
            if stopped_at is not None and step > stopped_at:
                return  # reported while it wound down after the scheduler stopped it
            row["history"].append({"step": step, "value": value})
            row.update(steps=step, value=value)
            self._save()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            row = self._row(trial)
            index = trial_index(trial.trial_id)
            row["status"] = "stopped" if index in scheduler.stopped_at else "completed"
            row["ended"] = time.time()
            self._save()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            row = self._row(trial)
            row.update(status="failed", ended=time.time(),
                       error=str(getattr(trial, "error_file", "") or "the trial failed"))
            self._save()

    return _SweepRecorder()


def _finish_trials(store: ArtifactStore, record: dict[str, Any]) -> None:
    """Runs the scheduler stopped (their actors were killed) or that died: close their manifests."""
    for row in record["trials"]:
        try:
            manifest = store.load_manifest(row["run_id"])
        except ProvenirError:
            continue  # never started
        row["run_status"] = manifest.status
        row["steps_run"] = manifest.metrics.get("steps", row["steps"])
        if manifest.status != "running" or row["status"] not in ("stopped", "failed"):
            continue
        manifest.status = row["status"]
        manifest.metrics.update({
            "sweep": record["sweep_id"], "sweep_trial": row["index"], "steps": row["steps"],
            record["metric"]: row["value"],
            **({"stopped_by": record["scheduler"]["type"]} if row["status"] == "stopped" else {}),
        })
        manifest.artifacts = store.hash_artifacts(row["run_id"])
        store.save_manifest(manifest)


def _pick_best(spec: SweepSpec, store: ArtifactStore, record: dict[str, Any]) -> None:
    finished = [t for t in record["trials"] if t["status"] == "completed" and t["value"] is not None]
    if not finished:
        record["best"] = None
        return
    sign = 1 if record["mode"] == "min" else -1
    best = min(finished, key=lambda t: (sign * t["value"], t["index"]))
    manifest = store.load_manifest(best["run_id"])
    record["best"] = {
        "index": best["index"], "run_id": best["run_id"], "params": best["params"], "value": best["value"],
        "adapter_sha256": manifest.artifacts.get(ADAPTER_WEIGHTS), "config": BEST_CONFIG,
    }
    store.write_text(record["sweep_id"], BEST_CONFIG, spec.best_config(best["params"]).to_yaml())


__all__ = ["ADAPTER_WEIGHTS", "BEST_CONFIG", "SWEEP_RECORD", "EvaluateAtSave", "SweepOutcome", "TrialPlan",
           "load_record", "run_sweep", "trial_run_id"]
