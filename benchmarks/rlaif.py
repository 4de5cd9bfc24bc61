"""RLAIF benchmark: the judge fan-out and the loop's own overhead.

Rows printed:

* **judge fan-out** — one round's pairing (:meth:`RLAIFPipeline.make_pairs`: every pair of
  distinct candidates judged, ranked, paired) for ``--prompts`` prompts x ``--responses``
  candidates with a judge that waits ``--latency-ms`` per call (an API judge's round trip),
  with ``judge_concurrency`` threads against the same pairing run with one thread (sequential
  calls, the baseline) in the same process. Pairs must be identical in both.
* **loop overhead** — a full ``stub``-backend round (sampling with the stub policy, judging with
  the stub judge, the stub DPO run with its manifest and artifacts, evaluation, the gate) per
  prompt, against the bare ``StubJudge`` comparisons of that round alone (the baseline).

Usage::

    python benchmarks/rlaif.py
    python benchmarks/rlaif.py --prompts 200 --responses 4 --latency-ms 50 --concurrency 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provenir.core.config import RunConfig  # noqa: E402
from provenir.data.dataset import JsonlDataset  # noqa: E402
from provenir.eval.judge import Preference, StubJudge  # noqa: E402
from provenir.train import get_backend  # noqa: E402
from provenir.train.rlaif import RLAIFConfig, RLAIFPipeline, StubPolicy  # noqa: E402


class SlowJudge:
    """The stub judge's verdicts, after a fixed wait (a stand-in for an API round trip)."""

    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self.inner = StubJudge()
        self.identity = f"bench-slow-judge:{latency_s}"

    def score_pairwise(self, prompt: str, a: str, b: str) -> Preference:
        time.sleep(self.latency_s)
        return self.inner.score_pairwise(prompt, a, b)

    def score_rubric(self, prompt: str, response: str, criteria: list[str]) -> dict[str, float]:
        return self.inner.score_rubric(prompt, response, criteria)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--responses", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--loop-prompts", type=int, default=400)
    args = parser.parse_args()

    prompts = [(None, f"Explain step {i} of the proof in plain words") for i in range(args.prompts)]
    candidates = StubPolicy().sample(prompts, n=args.responses, seed=1)
    calls = args.prompts * args.responses * (args.responses - 1) // 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(name="bench", storage_root=tmp)
        timings = {}
        outputs = {}
        for concurrency in (1, args.concurrency):
            pipeline = RLAIFPipeline(
                SlowJudge(args.latency_ms / 1000), get_backend("stub"), config,
                RLAIFConfig(responses_per_prompt=args.responses, judge_concurrency=concurrency),
            )
            start = time.perf_counter()
            outputs[concurrency] = pipeline.make_pairs(prompts, candidates, 1)[0]
            timings[concurrency] = time.perf_counter() - start
        assert outputs[1] == outputs[args.concurrency], "concurrency changed the pairs"
        rows.append((
            f"judge fan-out: {args.prompts} prompts x {args.responses} cand., {calls} calls @ {args.latency_ms:g} ms",
            f"{calls / timings[args.concurrency]:.0f} calls/s ({args.concurrency} threads)",
            f"{calls / timings[1]:.0f} calls/s (sequential)",
            f"{timings[1] / timings[args.concurrency]:.2f}x",
        ))

        records = [{"instruction": f"Copy the code {i:05d} exactly", "output": f"{i:05d}"}
                   for i in range(args.loop_prompts)]
        data = JsonlDataset.from_records(records)
        pipeline = RLAIFPipeline(StubJudge(), get_backend("stub"), config,
                                 RLAIFConfig(n_iterations=1, responses_per_prompt=args.responses))
        start = time.perf_counter()
        pipeline.run(data, data)
        loop_s = time.perf_counter() - start
        judge = StubJudge()
        loop_prompts = [(None, r["instruction"]) for r in records]
        loop_candidates = StubPolicy().sample(loop_prompts, n=args.responses, seed=1)
        start = time.perf_counter()
        for (_, user), texts in zip(loop_prompts, loop_candidates):
            for i in range(len(texts)):
                for j in range(i + 1, len(texts)):
                    judge.score_pairwise(user, texts[i], texts[j])
        bare_s = time.perf_counter() - start
        rows.append((
            f"stub round: {args.loop_prompts} prompts x {args.responses} cand. (sample, judge, DPO run, eval, gate)",
            f"{args.loop_prompts / loop_s:.0f} prompts/s",
            f"{args.loop_prompts / bare_s:.0f} prompts/s (bare judge calls)",
            f"{loop_s / bare_s:.2f}x time",
        ))

    header = ("workload", "provenir", "baseline", "ratio")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
