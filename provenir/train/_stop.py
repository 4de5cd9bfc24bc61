"""Stopping a run on purpose: Ctrl-C (SIGINT) and SIGTERM end training the same way.

SIGTERM is how schedulers, ``kill`` and ``ray job stop`` end a job. Python's default for it is to
die on the spot, which would leave the run's manifest saying ``running``. While a backend trains,
:func:`sigterm_stops_training` turns SIGTERM into an exception raised in the main thread, like
Ctrl-C's ``KeyboardInterrupt``, so the backend can mark the run ``stopped``, keep its checkpoints
and raise :class:`TrainingStopped`, which tells the caller where it stopped and how to continue.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Terminated(KeyboardInterrupt):
    """SIGTERM received while training (raised by the handler, caught by the backend)."""


class TrainingStopped(KeyboardInterrupt):
    """A run was stopped by Ctrl-C or SIGTERM; its manifest says ``stopped``.

    A ``KeyboardInterrupt``, so code that already handles Ctrl-C keeps working.

    Attributes:
        run_id: the stopped run.
        signal_name: ``"SIGINT"`` (Ctrl-C) or ``"SIGTERM"``.
        step: the last optimizer step completed, when known.
        max_steps: the planned number of steps, when known.
        resume_step: the step of the latest complete checkpoint (what ``--resume`` continues
            from), or ``None`` when the run has none.
    """

    def __init__(
        self,
        run_id: str,
        *,
        signal_name: str = "SIGINT",
        step: int | None = None,
        max_steps: int | None = None,
        resume_step: int | None = None,
    ) -> None:
        super().__init__(f"run {run_id} stopped by {signal_name}")
        self.run_id = run_id
        self.signal_name = signal_name
        self.step = step
        self.max_steps = max_steps
        self.resume_step = resume_step

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + int(signal.Signals[self.signal_name])

    def describe(self, resume_command: str | None = None) -> str:
        """One line: how and where the run stopped, and how to continue it."""
        how = _how(self.signal_name)
        where = ""
        if self.step is not None:
            where = f" at step {self.step}" + (f"/{self.max_steps}" if self.max_steps else "")
        line = f"stopped by {how}{where}: run {self.run_id} is marked stopped; "
        if self.resume_step is None:
            return line + "it has no checkpoint to continue from (set training.save_steps to make runs resumable)"
        command = resume_command or f"provenir train CONFIG --resume {self.run_id}"
        return line + f"continue from its checkpoint at step {self.resume_step} with: {command}"


def stop_metrics(exc: BaseException, step: int | None, resume_step: int | None) -> dict[str, Any]:
    """What a stopped run's manifest records under ``metrics``."""
    metrics: dict[str, Any] = {"error": f"stopped by {_how(signal_name(exc))}"}
    if step is not None:
        metrics["stopped_at_step"] = step
    if resume_step is not None:
        metrics["resumable_from_step"] = resume_step
    return metrics


def _how(name: str) -> str:
    return "Ctrl-C" if name == "SIGINT" else name


def signal_name(exc: BaseException) -> str:
    """``"SIGTERM"`` for a stop raised by :func:`sigterm_stops_training`, else ``"SIGINT"``."""
    if isinstance(exc, TrainingStopped):
        return exc.signal_name
    return "SIGTERM" if isinstance(exc, _Terminated) else "SIGINT"


@contextmanager
def sigterm_stops_training() -> Iterator[None]:
    """While inside: SIGTERM raises (once) in the main thread, as Ctrl-C does.

    Further SIGTERMs are ignored until the block exits, so the backend can finish recording the
    stop. The previous handler is restored on exit, unless another was installed meanwhile (Ray's,
    when ``ray.init`` ran inside the block). Outside the main thread (signal handlers can only be
    set there) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _on_sigterm(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        # a handler installed meanwhile (ray.init installs one) stays: it is the newer owner
        if signal.getsignal(signal.SIGTERM) in (_on_sigterm, signal.SIG_IGN):
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


__all__ = ["TrainingStopped", "sigterm_stops_training", "signal_name", "stop_metrics"]
