"""The optuna search path of `provenir sweep`: the search space the sweep builds goes through Ray
Tune's OptunaSearch (seeded) and proposes trials inside the space, the same ones for the same seed.

The objective here is a cheap function of the proposed values instead of a trl trial (that path is
tests/integration/test_sweep_ray.py): what is tested is the search space and the seeding.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_sweep_config import _write  # noqa: E402

from provenir.core.sweep_config import load_sweep  # noqa: E402
from provenir.distributed.sweep import _tune_domains  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SPACE = ("    training.learning_rate: {loguniform: [0.0001, 0.01]}\n    peft.rank: {choice: [4, 8, 16]}\n"
         "    training.warmup_steps: {randint: [0, 5]}")


def _proposals(spec, storage: Path) -> list[dict]:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def objective(config):
        params = config["params"]
        return {"eval_loss": abs(params["training.learning_rate"] - 0.003) + params["peft.rank"] / 100}

    tuner = tune.Tuner(
        objective,
        param_space={"params": _tune_domains(spec.sweep)},
        tune_config=tune.TuneConfig(num_samples=6, max_concurrent_trials=1,
                                    search_alg=OptunaSearch(metric="eval_loss", mode="min", seed=spec.seed)),
        run_config=tune.RunConfig(name="optuna", storage_path=str(storage), verbose=0),
    )
    grid = tuner.fit()
    return [result.config["params"] for result in grid]


def test_optuna_proposes_inside_the_space_and_repeats_for_a_seed(ray_local, tmp_path):
    path = _write(tmp_path, SPACE, search="optuna")
    spec = load_sweep(path)
    first = _proposals(spec, tmp_path / "a")
    again = _proposals(spec, tmp_path / "b")
    assert len(first) == 6
    key = lambda p: (p["peft.rank"], p["training.learning_rate"], p["training.warmup_steps"])  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, again))  # same seed, same proposals
    for params in first:
        assert 1e-4 <= params["training.learning_rate"] <= 1e-2
        assert params["peft.rank"] in (4, 8, 16) and 0 <= params["training.warmup_steps"] < 5
        spec.trial_config(params, 0)  # every proposal is a valid run config
    assert len({p["training.learning_rate"] for p in first}) > 1
