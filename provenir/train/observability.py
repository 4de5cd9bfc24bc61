"""Where training metrics go: Weights & Biases, MLflow, TensorBoard, or nowhere.

:class:`TrainingObserver` sends step and eval metrics to one sink chosen by name from
:data:`SINK_REGISTRY`. A sink that fails — cannot connect, raises while logging, cannot close —
warns once and is switched off; it never ends a training run.

* ``wandb``: ``wandb.init`` in the mode ``WANDB_MODE`` names (offline when it is unset and no
  ``WANDB_API_KEY`` is configured), files under ``log_dir``.
* ``mlflow``: any tracking URI (``tracking_uri``, else ``MLFLOW_TRACKING_URI``); by default a local
  SQLite store ``log_dir/mlflow.db`` (MLflow 3 refuses plain ``file://`` stores unless
  ``MLFLOW_ALLOW_FILE_STORE=true``).
* ``tensorboard``: event files under ``log_dir/tensorboard/<run_name>``.
* ``none``: nothing.

Only one process of a distributed run logs: the observer is inert where ``RANK`` is set and not 0.

Example::

    config = ObservabilityConfig(backend="tensorboard", run_name="demo", log_dir="logs")
    with TrainingObserver(config) as observer:
        for step in range(1, 101):
            observer.log_step(step, {"loss": 1.0 / step})
        observer.log_eval({"accuracy": 0.9})

With a ``transformers``/TRL trainer, add ``observer_callback(observer)`` to its callbacks.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

from provenir.core.errors import ConfigError

if TYPE_CHECKING:
    import transformers

logger = logging.getLogger(__name__)


class ObservabilityConfig(BaseModel):
    """Which sink receives training metrics, and how often.

    Attributes:
        backend: a name in :data:`SINK_REGISTRY` (``wandb``, ``mlflow``, ``tensorboard``, ``none``).
        project: W&B project / MLflow experiment (default ``provenir``).
        run_name: the run's display name (W&B, MLflow) and TensorBoard sub-folder.
        log_every_n_steps: :meth:`TrainingObserver.log_step` forwards steps divisible by this.
        tags: W&B tags; MLflow tags (``key=value`` or a bare ``key``).
        log_dir: where local files go (W&B run files, TensorBoard events, the MLflow SQLite store).
        tracking_uri: MLflow tracking URI (overrides ``MLFLOW_TRACKING_URI``).
    """

    model_config = ConfigDict(extra="forbid")

    backend: str = "none"  # "wandb" | "mlflow" | "tensorboard" | "none"
    project: str | None = None
    run_name: str | None = None
    log_every_n_steps: int = 10
    tags: tuple[str, ...] = ()
    log_dir: str | None = None
    tracking_uri: str | None = None

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in SINK_REGISTRY:
            allowed = ", ".join(SINK_REGISTRY)
            raise ValueError(f"unknown observability backend {v!r}; allowed: {allowed}")
        return v

    @field_validator("log_every_n_steps")
    @classmethod
    def _every(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v


class _Sink:
    """One destination for metrics. Subclasses open in ``__init__`` and may raise anywhere."""

    def __init__(self, config: ObservabilityConfig) -> None:
        self.config = config

    def log(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release; called once."""


def _log_dir(config: ObservabilityConfig) -> Path:
    path = Path(config.log_dir) if config.log_dir else Path.cwd() / "provenir-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _project(config: ObservabilityConfig) -> str:
    return config.project or "provenir"


class _WandbSink(_Sink):
    def __init__(self, config: ObservabilityConfig) -> None:
        super().__init__(config)
        from provenir.core.errors import require

        wandb = require("wandb", feature="observability_backend='wandb'", extra="observability")
        default_mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        mode = os.environ.get("WANDB_MODE") or default_mode
        self.run = wandb.init(
            project=_project(config),
            name=config.run_name,
            tags=list(config.tags) or None,
            dir=str(_log_dir(config)),
            mode=mode,
            reinit="create_new",
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class _MlflowSink(_Sink):
    def __init__(self, config: ObservabilityConfig) -> None:
        super().__init__(config)
        from provenir.core.errors import require

        require("mlflow", feature="observability_backend='mlflow'", extra="observability")
        from mlflow.tracking import MlflowClient

        uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = f"sqlite:///{(_log_dir(config) / 'mlflow.db').resolve()}"
        self.tracking_uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(_project(config))
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            experiment_id = self.client.create_experiment(_project(config))
        tags = dict(tag.split("=", 1) if "=" in tag else (tag, "true") for tag in config.tags)
        run = self.client.create_run(experiment_id, run_name=config.run_name, tags=tags)
        self.run_id = run.info.run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(_mlflow_key(k), v, now, step) for k, v in metrics.items()]
        )

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _mlflow_key(key: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / : only
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in key)


class _TensorBoardSink(_Sink):
    def __init__(self, config: ObservabilityConfig) -> None:
        super().__init__(config)
        from torch.utils.tensorboard import SummaryWriter

        self.path = _log_dir(config) / "tensorboard" / (config.run_name or "run")
        self.writer = SummaryWriter(log_dir=str(self.path))
        if config.tags:
            self.writer.add_text("tags", ", ".join(config.tags), 0)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _NullSink(_Sink):
    def log(self, step: int, metrics: dict[str, float]) -> None:
        return None


#: backend name -> sink factory. Add one with :func:`register_sink`.
SINK_REGISTRY: dict[str, Callable[[ObservabilityConfig], _Sink]] = {
    "none": _NullSink,
    "wandb": _WandbSink,
    "mlflow": _MlflowSink,
    "tensorboard": _TensorBoardSink,
}


def register_sink(name: str, factory: Callable[[ObservabilityConfig], Any]) -> None:
    """Make ``factory`` available as ``ObservabilityConfig(backend=name)``.

    The factory receives the config and returns an object with ``log(step, metrics)`` and
    ``close()``; it may raise (the observer then warns and carries on without it).
    """
    SINK_REGISTRY[name] = factory


class TrainingObserver:
    """Sends training metrics to the configured sink; a failing sink never stops training.

    Use as a context manager: the sink opens on ``__enter__`` and closes on ``__exit__``.

    Args:
        config: the sink and its settings.
        rank: this process's global rank (default: ``RANK`` from the environment, else 0); only
            rank 0 logs.
    """

    def __init__(self, config: ObservabilityConfig, *, rank: int | None = None):
        if config.backend not in SINK_REGISTRY:
            raise ConfigError(
                f"observability_backend: unknown {config.backend!r}; "
                f"allowed: {', '.join(SINK_REGISTRY)}"
            )
        self.config = config
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self._sink: Any = None
        self._failed: str | None = None
        self._last_step = 0

    @property
    def active(self) -> bool:
        """True while a sink is open and has not failed."""
        return self._sink is not None

    @property
    def failure(self) -> str | None:
        """Why the sink was switched off, if it was."""
        return self._failed

    def __enter__(self) -> TrainingObserver:
        if self.rank == 0 and self.config.backend != "none" and self._sink is None:
            try:
                self._sink = SINK_REGISTRY[self.config.backend](self.config)
            except Exception as exc:  # noqa: BLE001 - a sink must never kill training
                self._disable("could not start", exc)
        return self

    def __exit__(self, *args: Any) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001
                self._disable("could not close", exc)

    def log_step(self, step: int, metrics: dict[str, float], *, force: bool = False) -> None:
        """Log ``metrics`` at ``step`` if it is a multiple of ``log_every_n_steps`` (or ``force``).

        Non-numeric and non-finite values are dropped.
        """
        self._last_step = max(self._last_step, int(step))
        if not force and step % self.config.log_every_n_steps:
            return
        self._send(int(step), _numeric(metrics))

    def log_eval(self, metrics: dict[str, float]) -> None:
        """Log evaluation metrics under ``eval/`` at the latest step seen."""
        values = {
            (key if key.startswith("eval/") else f"eval/{key.removeprefix('eval_')}"): value
            for key, value in _numeric(metrics).items()
        }
        self._send(self._last_step, values)

    def _send(self, step: int, metrics: dict[str, float]) -> None:
        if self._sink is None or not metrics:
            return
        try:
            self._sink.log(step, metrics)
        except Exception as exc:  # noqa: BLE001 - a sink must never kill training
            self._disable("failed while logging", exc)

    def _disable(self, what: str, exc: BaseException) -> None:
        sink, self._sink = self._sink, None
        if self._failed is not None:
            return
        self._failed = f"{type(exc).__name__}: {exc}"
        message = (
            f"observability backend {self.config.backend!r} {what} ({self._failed}); "
            "training continues without it"
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        if sink is not None:
            try:
                sink.close()
            except Exception:  # noqa: BLE001, S110 - already reported
                pass


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[str(key)] = float(value)
    return out


def observer_callback(observer: TrainingObserver) -> transformers.TrainerCallback:
    """A ``transformers.TrainerCallback`` that forwards the trainer's logs to ``observer``.

    Training logs go to :meth:`TrainingObserver.log_step` at ``state.global_step`` (prefixed
    ``train/``); ``eval_*`` logs go to :meth:`TrainingObserver.log_eval`; the end-of-training
    summary (``train_runtime``, ``train_loss``, …) is always logged. Only the world's process zero
    logs. The observer's lifetime stays with the caller (``with TrainingObserver(...)``).
    """
    from transformers import TrainerCallback

    class ObserverCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - HF signature
            if not logs or not state.is_world_process_zero:
                return
            evals = {k: v for k, v in logs.items() if k.startswith("eval_")}
            if evals:
                observer.log_eval(evals)
            rest = {f"train/{k}": v for k, v in logs.items() if not k.startswith("eval_")}
            if rest:
                summary = "train_runtime" in logs
                observer.log_step(int(state.global_step), rest, force=summary)

    return ObserverCallback()


__all__ = [
    "SINK_REGISTRY",
    "ObservabilityConfig",
    "TrainingObserver",
    "observer_callback",
    "register_sink",
]
