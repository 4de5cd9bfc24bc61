"""TrainingObserver: each sink logs for real and is read back; a failing sink warns once, never raises."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from provenir.core.errors import ConfigError
from provenir.train.observability import (
    SINK_REGISTRY,
    ObservabilityConfig,
    TrainingObserver,
    observer_callback,
    register_sink,
)

pytestmark = pytest.mark.timeout(120)


def _log_run(config: ObservabilityConfig, steps: int = 6) -> TrainingObserver:
    with TrainingObserver(config, rank=0) as observer:
        for step in range(1, steps + 1):
            observer.log_step(step, {"loss": 1.0 / step, "lr": 0.01, "note": "text", "nan": float("nan")})
        observer.log_eval({"eval_accuracy": 0.75})
    return observer


def test_config_contract_defaults_and_validation():
    config = ObservabilityConfig()
    assert (config.backend, config.project, config.run_name, config.log_every_n_steps, config.tags) == (
        "none", None, None, 10, ()
    )
    with pytest.raises(ValueError, match="unknown observability backend 'neptune'"):
        ObservabilityConfig(backend="neptune")
    with pytest.raises(ValueError, match=">= 1"):
        ObservabilityConfig(log_every_n_steps=0)
    with pytest.raises(ValueError):
        ObservabilityConfig(colour="red")
    assert set(SINK_REGISTRY) >= {"none", "wandb", "mlflow", "tensorboard"}


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = ObservabilityConfig(
        backend="tensorboard", run_name="tb-run", log_every_n_steps=2, log_dir=str(tmp_path), tags=("a",)
    )
    observer = _log_run(config)
    assert observer.failure is None
    events = EventAccumulator(str(tmp_path / "tensorboard" / "tb-run"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["eval/accuracy", "loss", "lr"]
    loss = [(e.step, round(e.value, 6)) for e in events.Scalars("loss")]
    assert loss == [(2, 0.5), (4, 0.25), (6, round(1 / 6, 6))]
    assert [(e.step, e.value) for e in events.Scalars("eval/accuracy")] == [(6, 0.75)]


def test_mlflow_sqlite_store_by_default(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = ObservabilityConfig(
        backend="mlflow", project="exp-1", run_name="ml-run", log_every_n_steps=3,
        log_dir=str(tmp_path), tags=("team=post-training", "lora"),
    )
    observer = _log_run(config)
    assert observer.failure is None
    db = tmp_path / "mlflow.db"
    assert db.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("exp-1")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "ml-run"
    assert run.info.status == "FINISHED"
    assert run.data.tags["team"] == "post-training" and run.data.tags["lora"] == "true"
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    assert history == [(3, pytest.approx(1 / 3)), (6, pytest.approx(1 / 6))]
    assert run.data.metrics["eval/accuracy"] == 0.75
    assert "note" not in run.data.metrics and "nan" not in run.data.metrics


def test_mlflow_any_tracking_uri(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    _log_run(ObservabilityConfig(backend="mlflow", tracking_uri=uri, log_every_n_steps=1, run_name="r"))
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("provenir").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 6


def _wandb_records(run_file: Path):
    """Parse a W&B transaction log (LevelDB log format: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left_in_block = block - pos % block
        if left_in_block < 7:
            pos += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            pos += left_in_block
            continue
        if pos + 7 + length > len(data):
            break  # a record still being written
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.slow
def test_wandb_offline_run_files_hold_the_history(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    config = ObservabilityConfig(
        backend="wandb", project="proj", run_name="wb-run", log_every_n_steps=2,
        log_dir=str(tmp_path), tags=("x",),
    )
    observer = _log_run(config)
    assert observer.failure is None
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # wandb-core writes the transaction log from its own process and may still be flushing it when
    # finish() returns on a loaded machine: wait (bounded) for the final ``exit`` record.
    deadline = time.monotonic() + 60
    records = list(_wandb_records(run_file))
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.5)
        records = list(_wandb_records(run_file))
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds, f"the run file was never completed: {kinds}"
    history, run_info = [], None
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "run":
            run_info = record.run
    assert run_info.project == "proj" and run_info.display_name == "wb-run" and list(run_info.tags) == ["x"]
    losses = [(h["_step"], h["loss"]) for h in history if "loss" in h]
    assert losses == [(2, 0.5), (4, 0.25), (6, pytest.approx(1 / 6))]
    assert any(h.get("eval/accuracy") == 0.75 for h in history)


class _Exploding:
    calls = 0

    def __init__(self, config):
        pass

    def log(self, step, metrics):
        type(self).calls += 1
        raise RuntimeError("disk full")

    def close(self):
        raise OSError("still broken")


def test_sink_raising_while_logging_warns_once_and_training_goes_on():
    register_sink("exploding", _Exploding)
    try:
        observer = TrainingObserver(ObservabilityConfig(backend="exploding", log_every_n_steps=1), rank=0)
        with pytest.warns(RuntimeWarning, match="'exploding' failed while logging .*disk full.*continues") as seen:
            with observer:
                for step in range(1, 6):
                    observer.log_step(step, {"loss": 1.0})
                observer.log_eval({"acc": 1.0})
        assert len([w for w in seen if issubclass(w.category, RuntimeWarning)]) == 1
        assert _Exploding.calls == 1
        assert not observer.active and "disk full" in observer.failure
    finally:
        SINK_REGISTRY.pop("exploding")


def test_unreachable_tracking_uri_warns_and_training_goes_on(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    config = ObservabilityConfig(backend="mlflow", tracking_uri=f"http://127.0.0.1:{port}", log_every_n_steps=1)
    with pytest.warns(RuntimeWarning, match="'mlflow' could not start"):
        with TrainingObserver(config, rank=0) as observer:
            for step in range(1, 4):
                observer.log_step(step, {"loss": 1.0})
    assert observer.failure is not None and not observer.active


def test_non_zero_rank_and_none_backend_log_nothing(tmp_path, monkeypatch):
    calls = []

    class Recording:
        def __init__(self, config):
            calls.append("open")

        def log(self, step, metrics):
            calls.append((step, metrics))

        def close(self):
            calls.append("close")

    register_sink("recording", Recording)
    try:
        monkeypatch.setenv("RANK", "1")
        with TrainingObserver(ObservabilityConfig(backend="recording", log_every_n_steps=1)) as observer:
            observer.log_step(1, {"loss": 1.0})
        assert calls == [] and not observer.active
        monkeypatch.setenv("RANK", "0")
        with TrainingObserver(ObservabilityConfig(backend="recording", log_every_n_steps=5)) as observer:
            for step in range(1, 11):
                observer.log_step(step, {"loss": float(step), "flag": True})
            observer.log_step(11, {"train_runtime": 3.0}, force=True)
            observer.log_eval({"eval_loss": 0.5, "eval/bleu": 20.0})
        assert calls == [
            "open", (5, {"loss": 5.0}), (10, {"loss": 10.0}), (11, {"train_runtime": 3.0}),
            (11, {"eval/loss": 0.5, "eval/bleu": 20.0}), "close",
        ]
    finally:
        SINK_REGISTRY.pop("recording")
    with TrainingObserver(ObservabilityConfig()) as observer:
        observer.log_step(10, {"loss": 1.0})
    assert not observer.active and observer.failure is None


def test_unknown_backend_in_observer_is_a_config_error():
    config = ObservabilityConfig.model_construct(backend="nope")
    with pytest.raises(ConfigError, match="observability_backend: unknown 'nope'"):
        TrainingObserver(config)


@pytest.mark.slow
def test_observer_callback_forwards_trainer_logs():
    from transformers import TrainerControl, TrainerState

    calls = []

    class Recording:
        def __init__(self, config):
            pass

        def log(self, step, metrics):
            calls.append((step, metrics))

        def close(self):
            pass

    register_sink("recording2", Recording)
    try:
        args = None  # the callback reads only the state
        with TrainingObserver(ObservabilityConfig(backend="recording2", log_every_n_steps=2), rank=0) as observer:
            callback = observer_callback(observer)
            state = TrainerState()
            for step, logs in [(1, {"loss": 3.0}), (2, {"loss": 2.0, "learning_rate": 1e-3}),
                               (2, {"eval_loss": 1.5}), (3, {"train_runtime": 9.0, "train_loss": 2.5})]:
                state.global_step = step
                callback.on_log(args, state, TrainerControl(), logs=logs)
        assert calls == [
            (2, {"train/loss": 2.0, "train/learning_rate": 1e-3}),
            (2, {"eval/loss": 1.5}),
            (3, {"train/train_runtime": 9.0, "train/train_loss": 2.5}),
        ]
    finally:
        SINK_REGISTRY.pop("recording2")
