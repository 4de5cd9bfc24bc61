"""Hyper-parameter sweeps on Ray Tune, each trial a Ray Train run.

Ray Train V2 no longer runs a ``TorchTrainer`` directly under ``Tuner`` ("Improper 'run'"); the
supported shape is a Tune *function trainable* that builds and fits a ``TorchTrainer`` and reports
its final metrics. The trainable itself needs almost no CPU (``trainable_cpus``), the workers take
the rest.

Example::

    result = sweep(train_loop, {"max_steps": 50}, {"learning_rate": [1e-4, 3e-4, 1e-3]},
                   metric="loss", mode="min", storage_path="/data/sweeps", name="lr")
    result.best_config["learning_rate"], result.best_metrics["loss"]

Search spaces: a list is a grid (``tune.grid_search``); Tune's own domains (``tune.loguniform``,
``tune.choice``, …) pass through; anything else is a constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provenir.core.errors import ConfigError
from provenir.distributed.cluster import connect, run_on_cluster
from provenir.distributed.train import _fit, _normalise_storage, check_launch


@dataclass
class SweepResult:
    """What :func:`sweep` returns: every trial's config and final metrics, and the best one."""

    metric: str
    mode: str
    #: one per trial: {"config", "metrics", "checkpoint_path" (local path or storage URI), "error"}
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok_trials(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["error"] is None and self.metric in t["metrics"]]

    @property
    def best(self) -> dict[str, Any] | None:
        candidates = self.ok_trials
        if not candidates:
            return None
        pick = min if self.mode == "min" else max
        return pick(candidates, key=lambda t: t["metrics"][self.metric])

    @property
    def best_config(self) -> dict[str, Any] | None:
        return self.best["config"] if self.best else None

    @property
    def best_metrics(self) -> dict[str, Any] | None:
        return self.best["metrics"] if self.best else None


def sweep(
    train_loop: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    search_space: dict[str, Any],
    *,
    metric: str,
    mode: str = "min",
    num_samples: int = 1,
    num_workers: int = 1,
    use_gpu: bool = False,
    storage_path: str,
    name: str,
    max_failures: int = 0,
    strategy: str = "ddp",
    max_concurrent_trials: int | None = None,
    trainable_cpus: float = 0.1,
    resources_per_worker: dict[str, float] | None = None,
    address: str | None = None,
) -> SweepResult:
    """Run one Ray Train run per point of ``search_space`` (merged over ``loop_config``).

    Each trial's checkpoints go to ``storage_path/<name>-<trial id>``; the sweep's own records to
    ``storage_path/name``. A failing trial is recorded with its error; the sweep goes on.

    Raises:
        ConfigError: ``mode`` is not min/max, an empty search space, or bad launch settings.
    """
    if mode not in ("min", "max"):
        raise ConfigError(f"sweep mode: must be 'min' or 'max' (got {mode!r})")
    if not search_space:
        raise ConfigError("sweep search_space: name at least one parameter to vary")
    if num_samples < 1:
        raise ConfigError(f"sweep num_samples: must be >= 1 (got {num_samples})")
    check_launch(strategy, num_workers, use_gpu, max_failures)
    storage_path = _normalise_storage(storage_path)
    connect(address)
    return run_on_cluster(
        _run_sweep,
        train_loop,
        loop_config,
        search_space,
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        launch_kwargs={
            "num_workers": num_workers,
            "use_gpu": use_gpu,
            "storage_path": storage_path,
            "max_failures": max_failures,
            "resources_per_worker": resources_per_worker,
            "num_to_keep": None,
        },
        storage_path=storage_path,
        name=name,
        max_concurrent_trials=max_concurrent_trials,
        trainable_cpus=trainable_cpus,
        num_cpus=0.1,
    )


def param_space(search_space: dict[str, Any]) -> dict[str, Any]:
    """Tune's ``param_space`` for a plain search space: lists become grid searches."""
    from ray import tune

    return {
        k: tune.grid_search(list(v)) if isinstance(v, list | tuple) else v
        for k, v in search_space.items()
    }


def _run_sweep(
    train_loop: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    search_space: dict[str, Any],
    *,
    metric: str,
    mode: str,
    num_samples: int,
    launch_kwargs: dict[str, Any],
    storage_path: str,
    name: str,
    max_concurrent_trials: int | None,
    trainable_cpus: float,
) -> SweepResult:
    from ray import tune

    def trainable(trial_config: dict[str, Any]) -> None:
        trial_id = tune.get_context().get_trial_id()
        merged = {**loop_config, **trial_config}
        result = _fit(train_loop, merged, name=f"{name}-{trial_id}", **launch_kwargs)
        metrics = {
            k: v
            for k, v in result.metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        tune.report(
            {
                **metrics,
                "provenir_checkpoint_path": _checkpoint_uri(result.checkpoint),
                "provenir_error": repr(result.error) if result.error is not None else "",
            }
        )

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": trainable_cpus}),
        param_space=param_space(search_space),
        tune_config=tune.TuneConfig(
            num_samples=num_samples, max_concurrent_trials=max_concurrent_trials
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0),
    )
    grid = tuner.fit()
    out = SweepResult(metric=metric, mode=mode)
    for trial in grid:
        metrics = dict(trial.metrics or {})
        checkpoint_path = metrics.pop("provenir_checkpoint_path", "") or None
        error = metrics.pop("provenir_error", "") or (repr(trial.error) if trial.error else None)
        config = {k: trial.config[k] for k in search_space if k in (trial.config or {})}
        metrics = {k: v for k, v in metrics.items() if k in _user_keys(metrics)}
        out.trials.append(
            {"config": config, "metrics": metrics, "checkpoint_path": checkpoint_path,
             "error": error}
        )
    return out


def _checkpoint_uri(checkpoint: Any) -> str:
    """Where a trial's final checkpoint lives: a local path or an ``s3://``/``gs://`` URI."""
    if checkpoint is None:
        return ""
    scheme = {"S3FileSystem": "s3", "GcsFileSystem": "gs"}.get(type(checkpoint.filesystem).__name__)
    return f"{scheme}://{checkpoint.path}" if scheme else str(checkpoint.path)


_TUNE_BOOKKEEPING = {
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config",
    "time_since_restore",
    "iterations_since_restore", "experiment_tag",
}


def _user_keys(metrics: dict[str, Any]) -> set[str]:
    return {k for k in metrics if k not in _TUNE_BOOKKEEPING}


__all__ = ["SweepResult", "param_space", "sweep"]
