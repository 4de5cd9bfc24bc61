"""RLAIF generation on a Ray actor pool gives the same candidates as in process."""

from __future__ import annotations

import pytest

from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError
from provenir.data.dataset import JsonlDataset
from provenir.distributed.generation import GenerationPool, chunk_seed
from provenir.eval.judge import StubJudge
from provenir.train import get_backend
from provenir.train.rlaif import PREFERENCES_FILE, RLAIFConfig, RLAIFPipeline, StubPolicy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

TRAIN = [{"instruction": f"Copy the number {i:04d} exactly", "output": f"{i:04d}"} for i in range(7)]
EVAL = [{"instruction": f"Copy {i}", "output": str(i)} for i in range(100, 105)]


def _pairs(root, actors):
    config = RunConfig(name="pool", seed=3, storage_root=str(root))
    settings = RLAIFConfig(n_iterations=2, responses_per_prompt=3, generation_actors=actors, generation_chunk_size=3,
                            generation_actor_cpus=0.5)
    pipeline = RLAIFPipeline(StubJudge(), get_backend("stub"), config, settings)
    iterations = pipeline.run(JsonlDataset.from_records(TRAIN), JsonlDataset.from_records(EVAL))
    return [pipeline.store.read_text(it.manifest.run_id, PREFERENCES_FILE) for it in iterations], pipeline


def test_actor_pool_and_in_process_generation_agree(ray_local, tmp_path):
    in_process, _ = _pairs(tmp_path / "a", 0)
    pooled, pipeline = _pairs(tmp_path / "b", 2)
    assert pooled == in_process and len(in_process) == 2
    assert pipeline.baseline.metrics["exact_match"].mean == 1.0  # predict ran on the pool too


def test_pool_results_do_not_depend_on_the_number_of_actors(ray_local):
    prompts = [(None, f"Name {i} things") for i in range(5)]
    with GenerationPool(StubPolicy, num_actors=1, chunk_size=2, num_cpus=0.5) as one:
        first = one.sample(prompts, n=3, seed=9)
    with GenerationPool(StubPolicy, num_actors=2, chunk_size=2, num_cpus=0.5) as two:
        second = two.sample(prompts, n=3, seed=9)
        assert two.predict(prompts) == ["things"] * 5
    assert first == second and len(first) == 5
    expected = StubPolicy().sample(prompts[2:4], n=3, seed=chunk_seed(9, 1))
    assert first[2:4] == expected


def test_pool_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="num_actors"):
        GenerationPool(StubPolicy, num_actors=0)


def test_a_dead_actor_is_restarted_and_its_chunk_redone(ray_local, tmp_path):
    import functools

    # defined here so Ray pickles it by value (workers cannot import this test module)
    class _DiesOnce(StubPolicy):
        """Kills its actor's process the first time it sees the prompt naming ``die`` (a marker file
        says it happened, so the restarted actor answers)."""

        def __init__(self, marker: str):
            super().__init__()
            self.marker = marker

        def sample(self, prompts, *, n, seed):
            import os
            from pathlib import Path

            if any("die" in user for _, user in prompts) and not Path(self.marker).exists():
                Path(self.marker).write_text("died")
                os._exit(1)  # the process goes away mid-task, as a crash or a lost node does
            return super().sample(prompts, n=n, seed=seed)

    prompts = [(None, f"Name {i} things" + (" and die" if i == 3 else "")) for i in range(6)]
    reference = []
    for i in range(0, 6, 2):
        reference += StubPolicy().sample(prompts[i:i + 2], n=3, seed=chunk_seed(4, i // 2))
    marker = tmp_path / "died"
    builder = functools.partial(_DiesOnce, str(marker))
    with GenerationPool(builder, num_actors=2, chunk_size=2, num_cpus=0.5, max_restarts=2) as pool:
        got = pool.sample(prompts, n=3, seed=4)
    assert marker.exists(), "the actor did not die: the test proves nothing"
    assert got == reference  # nothing lost, nothing duplicated, same order
