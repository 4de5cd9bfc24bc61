"""A Ray actor pool that holds a policy model and generates, for prompt sets too large for one process.

Each actor builds the policy once (``policy_builder()``, e.g. loading a base model and an adapter)
and then answers chunks of prompts. Chunks are seeded by their position, not by the actor that
runs them: the same prompts, ``n`` and seed give the same candidates with one actor or eight.

The pool only needs an object with ``sample(prompts, *, n, seed)`` and ``predict(prompts)``; it
never imports the training layer (the builder is whatever the caller passes, pickled by Ray).

Example:
    >>> from provenir.distributed.generation import chunk_seed
    >>> chunk_seed(7, 0) == chunk_seed(7, 0) != chunk_seed(7, 1)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from provenir.core.errors import ConfigError
from provenir.core.hashing import sha256_json

__all__ = ["GenerationActor", "GenerationPool", "chunk_seed"]


def chunk_seed(seed: int, chunk: int) -> int:
    """The sampling seed of chunk ``chunk`` of a call seeded with ``seed``."""
    return int(sha256_json({"seed": seed, "chunk": chunk})[:8], 16)


class GenerationActor:
    """One pool member (shown under this name in the Ray dashboard)."""

    def __init__(self, builder: Callable[[], Any]):
        self.policy = builder()

    def sample(self, prompts: list[Any], n: int, seed: int) -> list[list[str]]:
        return self.policy.sample(prompts, n=n, seed=seed)

    def predict(self, prompts: list[Any]) -> list[str]:
        return self.policy.predict(prompts)


class GenerationPool:
    """``num_actors`` Ray actors, each holding the policy ``policy_builder()`` returns.

    Args:
        policy_builder: a picklable zero-argument callable that returns the policy.
        num_actors: actors in the pool (>= 1).
        chunk_size: prompts per task; also the unit of seeding (see :func:`chunk_seed`).
        num_cpus / num_gpus: resources of each actor.
        address: Ray address (default: ``RAY_ADDRESS`` or an embedded instance).
        max_restarts: times Ray restarts an actor that died (its process crashed, its node went away);
            the chunk it was answering is run again on the restarted actor (``max_task_retries``).
            Chunks are seeded by position, so a redone chunk gives the same candidates: nothing is
            lost or duplicated.

    Use as a context manager (or call :meth:`shutdown`) so the actors and their models go away.
    """

    def __init__(
        self,
        policy_builder: Callable[[], Any],
        *,
        num_actors: int = 2,
        chunk_size: int = 32,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        address: str | None = None,
        max_restarts: int = 3,
    ):
        if num_actors < 1 or chunk_size < 1:
            raise ConfigError(f"GenerationPool: num_actors ({num_actors}) and chunk_size ({chunk_size}) must be >= 1")
        import ray

        from provenir.distributed.cluster import connect

        connect(address)
        if max_restarts < 0:
            raise ConfigError(f"GenerationPool: max_restarts ({max_restarts}) must be >= 0")
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                            max_task_retries=max_restarts)(GenerationActor)
        self._actors = [remote.remote(policy_builder) for _ in range(num_actors)]
        self.chunk_size = chunk_size

    def _map(self, method: str, chunks: list[tuple[Any, ...]]) -> list[Any]:
        from ray.util import ActorPool

        pool = ActorPool(self._actors)
        return list(pool.map(lambda actor, args: getattr(actor, method).remote(*args), chunks))

    def _chunks(self, prompts: list[Any]) -> list[list[Any]]:
        return [prompts[i : i + self.chunk_size] for i in range(0, len(prompts), self.chunk_size)]

    def sample(self, prompts: list[Any], *, n: int, seed: int) -> list[list[str]]:
        """``n`` candidates per prompt, in prompt order; chunk ``i`` is seeded ``chunk_seed(seed, i)``."""
        chunks = [(chunk, n, chunk_seed(seed, i)) for i, chunk in enumerate(self._chunks(prompts))]
        return [row for part in self._map("sample", chunks) for row in part]

    def predict(self, prompts: list[Any]) -> list[str]:
        """One greedy answer per prompt, in prompt order."""
        return [row for part in self._map("predict", [(c,) for c in self._chunks(prompts)]) for row in part]

    def shutdown(self) -> None:
        """Kill the actors (idempotent)."""
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def __enter__(self) -> GenerationPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
