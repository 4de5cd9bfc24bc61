"""Asynchronous successive halving (ASHA) whose decisions do not depend on timing.

Ray Tune's ``ASHAScheduler`` judges a trial at a rung against the trials that happened to reach
that rung before it: with two trials running side by side, which one stops depends on which one
reported first. :class:`OrderedHalving` makes the same cut, but judges trial *i* at a rung against
trials ``0 … i-1`` only — their value at that rung, or nothing for one that ended before it — and
holds trial *i*'s result until each of them has reached the rung or ended. Run one at a time, it
decides exactly as ASHA does; run side by side, it decides the same as one at a time. That is what
makes a sweep's table the same on every run of the same config and seed.

The rule at a rung (``grace_period × reduction_factor^k`` evaluations, below the last): keep the
trial when fewer than one earlier trial has a value there, or when its value is at least as good
as the ``1 - 1/reduction_factor`` quantile of theirs (ASHA's cutoff); stop it otherwise.

:class:`OrderedHalving` is plain Python (no Ray); :func:`tune_scheduler` wraps it as a Tune
``TrialScheduler``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

CONTINUE, STOP, WAIT = "continue", "stop", "wait"


def rungs(grace_period: int, reduction_factor: int, max_evaluations: int) -> list[int]:
    """Evaluation counts at which a trial may be stopped (never at the last evaluation)."""
    out, rung = [], grace_period
    while rung < max_evaluations:
        out.append(rung)
        rung *= reduction_factor
    return out


@dataclass
class OrderedHalving:
    """Stop decisions for trials numbered 0, 1, … (see the module docstring).

    ``milestones`` are in the unit results carry (optimizer steps); ``None`` milestones (``fifo``)
    never stop a trial.
    """

    milestones: list[int]
    reduction_factor: int
    mode: str
    #: trial index -> [(step, value)] as reported, in order
    history: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    #: trials that ended (completed, stopped, failed): they will report nothing more
    ended: set[int] = field(default_factory=set)
    #: trial index -> milestones already passed (judged and kept)
    passed: dict[int, set[int]] = field(default_factory=dict)
    #: trial index -> the result held until earlier trials reach the rung
    held: dict[int, tuple[int, float]] = field(default_factory=dict)

    def restart(self, index: int) -> None:
        """Trial ``index`` starts (again, after a resume): forget what it reported before."""
        self.history[index] = []
        self.passed[index] = set()
        self.held.pop(index, None)
        self.ended.discard(index)

    def end(self, index: int) -> None:
        self.ended.add(index)
        self.held.pop(index, None)

    def value_at(self, index: int, milestone: int) -> float | None:
        """Trial ``index``'s value at ``milestone``: that of its first result at or past it."""
        for step, value in self.history.get(index, []):
            if step >= milestone:
                return value
        return None

    def report(self, index: int, step: int, value: float) -> str:
        """Record a result and decide: :data:`CONTINUE`, :data:`STOP` or :data:`WAIT` (hold it and
        ask again with :meth:`decide` once an earlier trial reports or ends)."""
        self.history.setdefault(index, []).append((step, float(value)))
        return self.decide(index, step, value)

    def decide(self, index: int, step: int, value: float) -> str:
        done = self.passed.setdefault(index, set())
        for milestone in self.milestones:
            if milestone > step or milestone in done:
                continue
            peers = []
            for earlier in range(index):
                at = self.value_at(earlier, milestone)
                if at is not None:
                    peers.append(at)
                elif earlier not in self.ended:
                    self.held[index] = (step, value)
                    return WAIT
            cutoff = self.cutoff(peers)
            if cutoff is not None and self._signed(value) < cutoff:
                self.held.pop(index, None)
                return STOP
            done.add(milestone)
        self.held.pop(index, None)
        return CONTINUE

    def cutoff(self, values: list[float]) -> float | None:
        """ASHA's cutoff over ``values`` (signed so that larger is better), or ``None``."""
        signed = sorted(self._signed(v) for v in values if not math.isnan(v))
        if not signed:
            return None
        return _percentile(signed, (1 - 1 / self.reduction_factor) * 100)

    def _signed(self, value: float) -> float:
        return value if self.mode == "max" else -value

    def ready(self) -> list[tuple[int, str]]:
        """Held trials that can now be decided, lowest index first, with the decision."""
        out = []
        for index in sorted(self.held):
            step, value = self.held[index]
            decision = self.decide(index, step, value)
            if decision != WAIT:
                out.append((index, decision))
        return out


def _percentile(sorted_values: list[float], q: float) -> float:
    """numpy's default (linear) percentile, as Tune's ASHA computes its cutoff."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def trial_index(trial_id: str) -> int:
    """The position of a Tune trial in its experiment (Tune's ids end in a running counter)."""
    return int(str(trial_id).rsplit("_", 1)[-1])


def tune_scheduler(halving: OrderedHalving, metric: str, time_attr: str = "step",
                   prior: Any = None, request_stop: Any = None) -> Any:
    """A Ray Tune ``TrialScheduler`` deciding with ``halving``.

    A trial it stops is not killed: ``request_stop(index, step)`` asks it to end (its workers stop
    at their next optimizer step and the trial records its run as ``stopped``); Tune goes on
    reading its results, which the sweep ignores past ``stopped_at[index]``. A killed trial would
    leave its Ray Train worker group's placement group behind wherever Ray's state API is off.

    ``prior()`` (called once, at the first event) returns ``{index: (history, ended)}`` for the
    trials a resumed sweep finished before: Tune restores the trials but not its scheduler.
    """
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class _OrderedScheduler(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.halving = halving
            self.stopped_at: dict[int, int] = {}
            self._loaded = False
            self._held_trials: dict[int, Any] = {}

        def _load(self) -> None:
            if self._loaded:
                return
            self._loaded = True
            for index, (history, ended) in (prior() if prior else {}).items():
                self.halving.history[index] = [(int(s), float(v)) for s, v in history]
                if ended:
                    self.halving.end(index)

        def set_search_properties(self, metric_: Any, mode_: Any, **spec: Any) -> bool:
            return True

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            self._load()

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            self._load()
            index = trial_index(trial.trial_id)
            if metric not in result or time_attr not in result or index in self.stopped_at:
                return TrialScheduler.CONTINUE
            step = int(result[time_attr])
            if self.halving.history.get(index) and step <= self.halving.history[index][-1][0]:
                self.halving.restart(index)  # the trial was started again
            decision = self.halving.report(index, step, float(result[metric]))
            self._release(tune_controller)
            if decision == WAIT:
                self._held_trials[index] = trial
                return TrialScheduler.NOOP
            if decision == STOP:
                self._stop(index, step)
            return TrialScheduler.CONTINUE

        def _stop(self, index: int, step: int) -> None:
            self.stopped_at[index] = step
            self.halving.end(index)  # it reports nothing more that counts: no one waits for it
            if request_stop is not None:
                request_stop(index, step)

        def _end(self, tune_controller: Any, trial: Any) -> None:
            self._load()
            index = trial_index(trial.trial_id)
            self.halving.end(index)
            self._held_trials.pop(index, None)
            self._release(tune_controller)

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
            self._end(tune_controller, trial)

        def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
            self._end(tune_controller, trial)

        def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
            self._end(tune_controller, trial)

        def _release(self, tune_controller: Any) -> None:
            # held results whose earlier trials have now reached the rung: act on them
            for index, decision in self.halving.ready():
                trial = self._held_trials.pop(index, None)
                if trial is None:
                    continue
                if decision == STOP:
                    self._stop(index, self.halving.history[index][-1][0])
                tune_controller._schedule_trial_train(trial)  # what CONTINUE would have done

        def debug_string(self) -> str:
            return f"OrderedHalving: milestones {self.halving.milestones}, stopped {sorted(self.stopped_at)}"

    return _OrderedScheduler()


__all__ = ["CONTINUE", "STOP", "WAIT", "OrderedHalving", "rungs", "trial_index", "tune_scheduler"]
