"""Trainer callbacks of the ``trl`` backend: progress lines, the step a stop came at, observability."""

from __future__ import annotations

import sys
import warnings
from typing import Any


def progress_callback(relay: Any = None) -> Any:
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


class StepTracker:
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


def observer_callbacks(cfg: dict[str, Any]) -> list[Any]:
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


__all__ = ["StepTracker", "observer_callbacks", "progress_callback"]
