"""Decontamination benchmark: n-gram stage throughput, semantic stage vs plain encode, Ray Data actors.

Synthetic data (seeded): ``--eval`` evaluation items and ``--train`` training records of 20–40 words
drawn from a 6,000-word pseudo-vocabulary, with 1% exact copies and 1% near copies (case and
punctuation changed, a word dropped) of eval items planted in the training set.

Rows printed:

* **n-gram stage** — all training records through :meth:`DecontaminationIndex.ngram_matches`
  (hashed 13-grams, NumPy) against a plain-Python baseline (a ``set`` of 13-gram tuples of the eval
  set, one lookup per n-gram) on the first ``--baseline-records`` records; records/s.
* **semantic stage** — :meth:`DecontaminationIndex.semantic_matches` (embed + similarity search +
  bookkeeping) on ``--semantic-records`` records against ``SentenceTransformer.encode`` of exactly
  the same texts with the same batch size, in the same run (target ratio ≤ 1.15).
* **Ray Data** — ``run_decontaminate`` (read JSONL → actor pool → write) over ``--ray-records``
  records with 1 and with 2 actors (one CPU thread each), against ``--ray-eval`` eval items: the
  actor-pool phase (after the driver builds the index) and end to end.

Usage::

    python benchmarks/decontamination.py                       # 100k train x 5k eval
    python benchmarks/decontamination.py --semantic-records 100000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_vocab(rng: np.random.Generator, size: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "ta", "so", "vu", "pel", "dri", "an", "or", "is", "ne", "qua", "zo", "ful"]
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables, size=int(rng.integers(2, 5)))))
    return sorted(words)


def make_texts(rng: np.random.Generator, vocab: list[str], n: int) -> list[str]:
    vocab_arr = np.asarray(vocab)
    lengths = rng.integers(20, 41, size=n)
    flat = vocab_arr[rng.integers(0, len(vocab), size=int(lengths.sum()))]
    out, pos = [], 0
    for length in lengths:
        words = flat[pos : pos + length]
        pos += length
        out.append(" ".join(words).capitalize() + ".")
    return out


def near_copy(text: str, rng: np.random.Generator) -> str:
    words = text.rstrip(".").split()
    drop = int(rng.integers(0, len(words)))
    words = words[:drop] + words[drop + 1 :] if drop > len(words) - 3 else words  # drop a word near the end
    return (", ".join([" ".join(words[:5]).upper(), " ".join(words[5:])]) + "?!").replace("  ", " ")


def build(args: argparse.Namespace) -> tuple[list[str], list[dict], set[int]]:
    rng = np.random.default_rng(args.seed)
    vocab = make_vocab(rng, 6000)
    evals = make_texts(rng, vocab, args.eval)
    train_texts = make_texts(rng, vocab, args.train)
    planted: set[int] = set()
    n_plant = args.train // 100
    targets = rng.choice(args.train, size=2 * n_plant, replace=False)
    for k, i in enumerate(targets):
        source = evals[int(rng.integers(0, args.eval))]
        train_texts[i] = source if k < n_plant else near_copy(source, rng)
        planted.add(int(i))
    train = [{"instruction": t, "output": "ok."} for t in train_texts]
    return evals, train, planted


def python_baseline(evals: list[str], texts: list[str], n: int) -> float:
    """Records/s of a plain-Python set-of-tuples 13-gram check (the usual hand-written way)."""
    from provenir.data.decontamination import normalize_tokens

    grams = set()
    for ref in evals:
        tokens = normalize_tokens(ref)
        grams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    started = time.perf_counter()
    hits = 0
    for text in texts:
        tokens = normalize_tokens(text)
        if any(tuple(tokens[i : i + n]) in grams for i in range(len(tokens) - n + 1)):
            hits += 1
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--eval", type=int, default=5_000)
    parser.add_argument("--baseline-records", type=int, default=20_000)
    parser.add_argument("--semantic-records", type=int, default=20_000)
    parser.add_argument("--ray-records", type=int, default=2_000,
                        help="records for the Ray rows (the embedder dominates: ~10 records/s per CPU actor)")
    parser.add_argument("--ray-eval", type=int, default=500, help="eval items for the Ray rows' index")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="semantic timings: best of N")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from provenir.data.decontamination import SemanticDecontaminationChecker, record_views
    from provenir.data.embeddings import embed

    rows: list[tuple[str, str, str, str]] = []
    evals, train, planted = build(args)
    print(f"data: {len(train):,} train records ({len(planted):,} planted copies), {len(evals):,} eval items", flush=True)

    # -- n-gram stage --------------------------------------------------------------------------
    ngram_checker = SemanticDecontaminationChecker(semantic=False)
    started = time.perf_counter()
    index = ngram_checker.build_index(evals)
    index_s = time.perf_counter() - started
    texts = ["\n".join(record_views(r)) for r in train]
    started = time.perf_counter()
    found = []
    for start in range(0, len(texts), 4096):
        found.extend(index.ngram_matches(texts[start : start + 4096]))
    ngram_s = time.perf_counter() - started
    flagged = {i for i, m in enumerate(found) if m is not None}
    recall = len(flagged & planted) / len(planted)
    false_pos = len(flagged - planted)
    baseline_rps = python_baseline(evals, texts[: args.baseline_records], 13)
    ngram_rps = len(texts) / ngram_s
    rows.append((f"n-gram stage, {len(texts):,} x {len(evals):,} (index {index_s:.2f} s)",
                 f"{ngram_rps:,.0f} rec/s", f"{baseline_rps:,.0f} rec/s (Python set)", f"{ngram_rps / baseline_rps:.2f}x"))
    print(f"n-gram: {ngram_rps:,.0f} rec/s (Python set baseline {baseline_rps:,.0f} rec/s); planted recall "
          f"{recall:.3f}, other flagged {false_pos}", flush=True)

    # -- semantic stage vs plain encode --------------------------------------------------------
    sem = SemanticDecontaminationChecker(threshold=0.9, device=args.device, batch_size=args.batch_size)
    model = sem.embedder()
    sem_index = sem.build_index(evals)
    subset = train[: args.semantic_records]
    views = [record_views(r, sem.views) for r in subset]
    unique = list(dict.fromkeys(t for v in views for t in v))
    embed(model, unique[: args.batch_size * 2], batch_size=args.batch_size)  # warm-up
    plain_times, stage_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.encode(unique, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True,
                     show_progress_bar=False)
        plain_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        sem_index.semantic_matches(views, model, sem.threshold, batch_size=args.batch_size, search=sem.search)
        stage_times.append(time.perf_counter() - started)
    plain, stage = min(plain_times), min(stage_times)
    rows.append((f"semantic stage, {len(subset):,} records ({len(unique):,} texts) x {len(evals):,}, {args.device}",
                 f"{stage:.2f} s", f"{plain:.2f} s (encode only)", f"{stage / plain:.3f}x"))
    print(f"semantic: stage {stage:.2f} s vs encode {plain:.2f} s", flush=True)

    # -- Ray Data, 1 vs 2 actors ---------------------------------------------------------------
    if not args.skip_ray:
        import ray

        from provenir.distributed.curation import run_decontaminate

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as tmp:
            train_path = Path(tmp) / "train.jsonl"
            eval_path = Path(tmp) / "eval.jsonl"
            train_path.write_text("".join(json.dumps(r) + "\n" for r in train[: args.ray_records]))
            eval_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in evals[: args.ray_eval]))
            timings, pool = {}, {}
            for actors in (1, 2):
                started = time.perf_counter()
                report = run_decontaminate([str(train_path)], [str(eval_path)], f"{tmp}/out{actors}", threshold=0.9,
                                           actors=actors, checker_kwargs={"device": args.device},
                                           batch_size=256, progress=False)
                timings[actors] = time.perf_counter() - started
                pool[actors] = report["seconds"] - report["seconds_index"]  # read → actor pool → write
                print(f"ray: {actors} actor(s) {timings[actors]:.1f} s end to end, {pool[actors]:.1f} s after the "
                      f"index ({report['seconds_index']:.1f} s), contaminated {report['contaminated']}", flush=True)
        ray.shutdown()
        label = f"Ray Data decontaminate, {args.ray_records:,} x {min(args.ray_eval, len(evals)):,}, 2 actors vs 1"
        rows.append((label + ", actor pool", f"{args.ray_records / pool[2]:,.1f} rec/s",
                     f"{args.ray_records / pool[1]:,.1f} rec/s (1 actor)", f"{pool[1] / pool[2]:.2f}x"))
        rows.append((label + ", end to end", f"{timings[2]:.1f} s", f"{timings[1]:.1f} s (1 actor)",
                     f"{timings[1] / timings[2]:.2f}x"))

    width = [max(len(r[i]) for r in rows + [("workload", "provenir", "baseline", "ratio")]) for i in range(4)]
    header = ("workload", "provenir", "baseline", "ratio")
    print()
    for row in [header, tuple("-" * w for w in width), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))


if __name__ == "__main__":
    main()
