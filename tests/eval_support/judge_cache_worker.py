"""One process hammering a shared CachedJudge directory (run as a script by the cache test).

Usage: python judge_cache_worker.py CACHE_DIR N_KEYS SEED ROUNDS
Every process uses the same keys (in its own shuffled order) and, besides ordinary cached calls,
rewrites every entry each round, so reads race with renames. Prints its stats as JSON.
"""

from __future__ import annotations

import json
import random
import sys

from provenir.eval.judge import CachedJudge, StubJudge


def main() -> None:
    cache_dir, n_keys, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    judge = CachedJudge(inner=StubJudge(), cache_dir=cache_dir)
    keys = list(range(n_keys))
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(keys)
        for k in keys:
            pref = judge.score_pairwise(f"prompt {k}", f"answer {k} prompt", "other")
            assert pref.preferred == "a", pref
            rubric = judge.score_rubric(f"prompt {k}", f"answer {k}", ["clarity", "prompt"])
            assert set(rubric) == {"clarity", "prompt"}
            key = judge.key("score_pairwise", {"prompt": f"prompt {k}", "response_a": f"answer {k} prompt", "response_b": "other"})
            judge._store(key, "score_pairwise", {"preferred": pref.preferred, "confidence": pref.confidence, "rationale": pref.rationale})
    print(json.dumps(judge.stats()))


if __name__ == "__main__":
    main()
