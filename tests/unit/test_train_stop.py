"""SIGTERM while training stops the run like Ctrl-C: an exception in the main thread, raised once."""

from __future__ import annotations

import signal
import threading

import pytest

from provenir.train import TrainingStopped
from provenir.train._stop import signal_name, sigterm_stops_training, stop_metrics


@pytest.fixture()
def previous_handler():
    """A harmless SIGTERM handler standing in for whatever the process had (so a broken
    implementation records the signal instead of killing the test run)."""
    received: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received, signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, original)


def test_sigterm_raises_once_then_the_previous_handler_is_back(previous_handler):
    received, handler = previous_handler
    with pytest.raises(KeyboardInterrupt) as info:
        with sigterm_stops_training():
            try:
                signal.raise_signal(signal.SIGTERM)
            finally:
                signal.raise_signal(signal.SIGTERM)  # while recording the stop: ignored
    assert signal_name(info.value) == "SIGTERM"
    assert stop_metrics(info.value, 7, 5) == {"error": "stopped by SIGTERM", "stopped_at_step": 7,
                                              "resumable_from_step": 5}
    assert received == []
    assert signal.getsignal(signal.SIGTERM) is handler


def test_ctrl_c_is_named_as_such():
    assert signal_name(KeyboardInterrupt()) == "SIGINT"
    assert stop_metrics(KeyboardInterrupt(), None, None) == {"error": "stopped by Ctrl-C"}
    assert TrainingStopped("r", signal_name="SIGINT").exit_code == 130


def test_a_handler_installed_inside_the_block_is_left_in_place(previous_handler):
    def newer(signum, frame):  # ray.init installs its own while a distributed run starts
        pass

    with sigterm_stops_training():
        signal.signal(signal.SIGTERM, newer)
    assert signal.getsignal(signal.SIGTERM) is newer


def test_outside_the_main_thread_nothing_is_installed(previous_handler):
    _, handler = previous_handler
    seen = []

    def body():
        with sigterm_stops_training():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    assert seen == [handler]
