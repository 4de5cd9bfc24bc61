"""Ray Tune sweep: a function trainable per trial that fits a TorchTrainer (Train V2 shape)."""

from __future__ import annotations

import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def _quadratic_loop(config: dict) -> None:
    """Reports a loss whose minimum sits at learning_rate = 0.003; rank 0 checkpoints a note."""
    import tempfile
    from pathlib import Path

    import ray.train

    loss = (config["learning_rate"] - 0.003) ** 2 * 1e6 + config["offset"]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "note.txt").write_text(f"lr={config['learning_rate']}")
        ray.train.report({"loss": loss}, checkpoint=ray.train.Checkpoint.from_directory(folder))


@pytest.fixture()
def picklable_loop():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield _quadratic_loop
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_grid_sweep_finds_the_best_learning_rate(ray_local, picklable_loop, tmp_path):
    from pathlib import Path

    from provenir.distributed.tune import sweep

    result = sweep(
        picklable_loop, {"offset": 1.0}, {"learning_rate": [0.001, 0.003]},
        metric="loss", mode="min", num_workers=1, storage_path=str(tmp_path), name="lr",
        max_concurrent_trials=1,
    )
    assert len(result.trials) == 2
    assert sorted(t["config"]["learning_rate"] for t in result.trials) == [0.001, 0.003]
    assert all(t["error"] is None for t in result.trials), result.trials
    assert result.best_config == {"learning_rate": 0.003}
    assert result.best_metrics["loss"] == pytest.approx(1.0)
    worst = max(result.trials, key=lambda t: t["metrics"]["loss"])
    assert worst["metrics"]["loss"] == pytest.approx(5.0)
    assert (Path(result.best["checkpoint_path"]) / "note.txt").read_text() == "lr=0.003"
