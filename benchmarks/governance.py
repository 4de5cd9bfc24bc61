"""Governance throughput and accuracy: Provenir vs presidio-analyzer patterns vs detect-secrets.

Workloads (synthetic, seeded):
  * ordinary: instruction records (Alpaca and chat shapes), ~3% carrying PII or a secret;
  * digit-heavy: the same, with half the fields full of dates, versions, order numbers and
    ``key=value`` prose (the text that makes pattern scanners slow and noisy).

Measured in the same run: Provenir in process (PII and secrets together, one core); Provenir on
Ray Data with 1 and 2 workers (JSONL file in, findings out); presidio-analyzer's pattern recognizers
(email, phone, card, SSN, IBAN, IP, URL) and plain detect-secrets (default plugins, line by line) on
a subsample (they are slow). Accuracy per type — recall, precision and masking leak (labelled values
still present after masking) — is measured for all three on the format-derived corpus
tests/data/governance/formats/formats.jsonl (built from published format documents, with hard
negatives), and micro precision/recall on tests/data/governance/corpus.jsonl. Runs offline.

    .venv/bin/python benchmarks/governance.py                 # 200k records
    .venv/bin/python benchmarks/governance.py --records 20000 --no-ray
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the of and to in is model data train learn explain write summarize python function list value "
         "error result system user answer question step reason because simple example output input clear "
         "first second then finally return loop class method test review describe compare").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _digit_prose(rng: random.Random) -> str:
    return (f"Order {rng.randint(10000, 99999999)} shipped {rng.randint(2015, 2030)}-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d} at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}; build v{rng.randint(1, 9)}."
            f"{rng.randint(0, 40)}.{rng.randint(0, 200)} (rev {rng.randint(1000, 99999)}); retries={rng.randint(1, 9)} "
            f"timeout={rng.randint(5, 120)} seed={rng.randint(0, 9999)} lr=0.000{rng.randint(1, 9)} "
            f"max_tokens={rng.choice([256, 512, 1024])}; invoice INV-{rng.randint(2015, 2030)}{rng.randint(1000, 9999)} "
            f"total {rng.randint(1, 9)},{rng.randint(100, 999)}.{rng.randint(10, 99)} on {rng.randint(1, 12)}/"
            f"{rng.randint(1, 28)}/{rng.randint(2015, 2030)}, ISBN 978-{rng.randint(0, 1)}-{rng.randint(100, 999)}-"
            f"{rng.randint(10000, 99999)}-{rng.randint(0, 9)}, python {rng.randint(2, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}")


SENSITIVE = [
    lambda rng: f"mail me at {rng.choice(['ann', 'bo', 'cy'])}.{rng.randint(1, 999)}@example.org",
    lambda rng: f"call (415) 555-{rng.randint(1000, 9999)}",
    lambda rng: "card 4111 1111 1111 1111",
    lambda rng: f"aws_access_key_id = AKIA{''.join(rng.choice('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567') for _ in range(16))}",
    lambda rng: f"password = \"Hx{rng.randint(1000, 9999)}!pq\"",
    lambda rng: f"server 10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
]


def make_records(n: int, *, digit_heavy: bool, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        def text(words: int) -> str:
            if digit_heavy and rng.random() < 0.5:
                return _digit_prose(rng)
            return _sentence(rng, words)
        if i % 2:
            record = {"instruction": text(12), "input": text(8) if i % 3 else "",
                      "output": " ".join(text(10) for _ in range(3))}
            field = "output"
        else:
            record = {"messages": [{"role": "system", "content": text(6)}, {"role": "user", "content": text(14)},
                                   {"role": "assistant", "content": " ".join(text(10) for _ in range(2))}]}
            field = None
        if rng.random() < 0.03:
            extra = rng.choice(SENSITIVE)(rng)
            if field:
                record[field] += " " + extra
            else:
                record["messages"][1]["content"] += " " + extra
        out.append(record)
    return out


# -- runners --------------------------------------------------------------------------------------
def _clock(cpu: bool):
    return time.process_time if cpu else time.perf_counter


def provenir_in_process(records: list[dict], cpu: bool = False) -> tuple[float, int]:
    from provenir.governance._batch import findings_of, scan_batch
    from provenir.governance._engine import PII_TYPES, SECRET_TYPES, Engine

    engine = Engine(PII_TYPES, SECRET_TYPES)
    engine.scan(records[:2000])  # warm the DFA cache, as a long scan would
    found = 0
    clock = _clock(cpu)
    start = clock()
    for offset in range(0, len(records), 1024):
        for index, scan in enumerate(scan_batch(records[offset:offset + 1024], engine), start=offset):
            if scan.hits:
                found += len(findings_of(scan, index))
    return clock() - start, found


def _leaves(record: dict) -> list[str]:
    from provenir.governance._records import leaves

    return leaves(record)[0]


def _offline_tldextract() -> None:
    """presidio's e-mail recognizer calls ``tldextract.extract``, whose default extractor fetches the
    public suffix list over the network on every fresh run (tracebacks offline). Point it at the
    snapshot tldextract ships: ``suffix_list_urls=()`` means "no fetch, use the bundled list"."""
    import tldextract

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    tldextract.extract = offline
    tldextract.tldextract.TLD_EXTRACTOR = offline


def _presidio_recognizers() -> list:
    _offline_tldextract()
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    return [EmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer(), UsSsnRecognizer(), IbanRecognizer(),
            IpRecognizer(), UrlRecognizer()]


def presidio_patterns(records: list[dict], cpu: bool = False) -> tuple[float, int]:
    recognizers = _presidio_recognizers()
    for rec in recognizers:  # warm-up (tldextract's bundled suffix list, see _offline_tldextract)
        rec.analyze("mail a@b.com https://x.org", rec.supported_entities, None)
    found = 0
    clock = _clock(cpu)
    start = clock()
    for record in records:
        for text in _leaves(record):
            for rec in recognizers:
                found += len(rec.analyze(text, rec.supported_entities, None))
    return clock() - start, found


def _detect_secrets_lines(text: str) -> list:
    from detect_secrets.core.scan import scan_line

    out = []
    for line in text.splitlines() or [text]:
        out.extend(scan_line(line))
    return out


def detect_secrets_plain(records: list[dict], cpu: bool = False) -> tuple[float, int]:
    from detect_secrets.settings import default_settings

    found = 0
    with default_settings():
        _detect_secrets_lines("password = 'warm-up'")
        clock = _clock(cpu)
        start = clock()
        for record in records:
            for text in _leaves(record):
                found += len(_detect_secrets_lines(text))
        return clock() - start, found


def provenir_ray(path: str, workers: int, out_dir: str) -> float:
    from provenir.distributed.governance import scan_files

    start = time.perf_counter()
    scan_files([path], findings_dir=os.path.join(out_dir, f"findings-{workers}-{time.time_ns()}"),
               workers=workers, batch_size=2048, shard_bytes=4 << 20)
    return time.perf_counter() - start


def _scan_shards(path: str, part: int, parts: int) -> float:
    """One process's share of the Ray workers' job, without Ray: read, parse, scan shards."""
    from provenir.distributed.data import plan_shards
    from provenir.distributed.governance import GovernanceShardActor

    actor = GovernanceShardActor(batch_size=2048)
    shards = plan_shards(path, 4 << 20)[part::parts]
    start = time.perf_counter()
    for shard in shards:
        actor._scan_shard(shard["file"], shard["start"], shard["end"], 1)
    return time.perf_counter() - start


def processes_ceiling(path: str) -> tuple[float, float]:
    """Wall seconds for 1 and for 2 plain processes doing the same per-shard work (no Ray): what this
    machine's cores give when two processes run at once (fresh processes, like new Ray workers)."""
    from multiprocessing import get_context

    ctx = get_context("spawn")
    timings = []
    for parts in (1, 2):
        with ctx.Pool(parts) as pool:
            start = time.perf_counter()
            pool.starmap(_scan_shards, [(path, k, parts) for k in range(parts)])
            timings.append(time.perf_counter() - start)
    return timings[0], timings[1]


# -- accuracy on the labelled corpus -------------------------------------------------------------------
_PRESIDIO_TYPES = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
                   "US_SSN": "US_SSN", "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP_ADDRESS"}


def _corpus() -> list[dict]:
    path = ROOT / "tests" / "data" / "governance" / "corpus.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _resolve(record: dict, path: str):
    import re

    node = record
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        node = node[int(index)] if index else node[key]
    return node


def _prf(expected: list[tuple], got: list[tuple]) -> tuple[float, float]:
    """Overlap matching: (record, field, type, start, end); type None matches any type."""
    def hit(a, b):
        return a[0] == b[0] and a[1] == b[1] and (a[2] is None or b[2] is None or a[2] == b[2]) \
            and a[3] < b[4] and b[3] < a[4]
    tp_r = sum(any(hit(e, g) for g in got) for e in expected)
    tp_p = sum(any(hit(g, e) for e in expected) for g in got)
    return (tp_r / len(expected) if expected else 1.0), (tp_p / len(got) if got else 1.0)


def accuracy() -> dict[str, tuple[float, float]]:
    from provenir.governance._engine import PII_TYPES, SECRET_TYPES, Engine
    from provenir.governance._records import leaf_paths

    rows = _corpus()
    comparable_pii = set(_PRESIDIO_TYPES.values())
    exp_pii, exp_sec = [], []
    for i, row in enumerate(rows):
        for lab in row["labels"]:
            text = _resolve(row["record"], lab["field"])
            start = text.find(lab["value"])
            key = (i, lab["field"], lab["type"], start, start + len(lab["value"]))
            if lab["kind"] == "pii" and lab["type"] in comparable_pii:
                exp_pii.append(key)
            elif lab["kind"] == "secret" and not lab["placeholder"]:
                exp_sec.append(key[:2] + (None,) + key[3:])
    engine = Engine(PII_TYPES, SECRET_TYPES)
    prov_pii, prov_sec, pres, ds = [], [], [], []
    recognizers = _presidio_recognizers()
    from detect_secrets.settings import default_settings

    with default_settings():
        for i, row in enumerate(rows):
            scan = engine.scan([row["record"]])[0]
            paths = leaf_paths(row["record"])
            for h in scan.hits:
                if h.kind == "pii" and h.entity_type in comparable_pii:
                    prov_pii.append((i, paths[h.leaf], h.entity_type, h.start, h.end))
                elif h.kind == "secret" and not h.placeholder:
                    prov_sec.append((i, paths[h.leaf], None, h.start, h.end))
            for path, text in zip(paths, scan.values):
                for rec in recognizers:
                    for r in rec.analyze(text, rec.supported_entities, None):
                        if r.entity_type in _PRESIDIO_TYPES:
                            pres.append((i, path, _PRESIDIO_TYPES[r.entity_type], r.start, r.end))
                for secret in _detect_secrets_lines(text):
                    value = secret.secret_value or ""
                    start = text.find(value) if value else -1
                    if start >= 0:
                        ds.append((i, path, None, start, start + len(value)))
    return {
        "provenir PII": _prf(exp_pii, prov_pii), "presidio patterns PII": _prf(exp_pii, pres),
        "provenir secrets": _prf(exp_sec, prov_sec), "detect-secrets": _prf(exp_sec, ds),
    }


# -- per type, on the format-derived corpus (tests/data/governance/formats) ------------------------------
def format_accuracy() -> tuple[str, dict]:
    """Per-type recall / precision / masking leak of Provenir, presidio's pattern recognizers and
    detect-secrets on the same format-derived corpus, in this run."""
    from detect_secrets.settings import default_settings

    from provenir.data.dataset import JsonlDataset
    from provenir.governance._records import leaf_paths, leaves
    from provenir.governance.accuracy import (
        Span,
        format_table,
        label_spans,
        load_labelled,
        mask_spans,
        masking_leaks,
        provenir_spans,
        score,
    )
    from provenir.governance.pii import PIIMasker

    rows = load_labelled(ROOT / "tests" / "data" / "governance" / "formats" / "formats.jsonl")
    labels = label_spans(rows)
    ours = score(labels, provenir_spans(rows))
    maskers: dict[tuple, PIIMasker] = {}
    masked = []
    for row in rows:
        regions = tuple(row.get("phone_regions") or ("US",))
        masker = maskers.setdefault(regions, PIIMasker(ner=None, phone_regions=regions))
        masked.append(masker.mask(JsonlDataset([row["record"]])).records[0])
    masking_leaks(rows, masked, ours)

    comparable = set(_PRESIDIO_TYPES.values())
    recognizers = _presidio_recognizers()
    pres: list = []
    dsec: list = []
    with default_settings():
        for i, row in enumerate(rows):
            values = leaves(row["record"])[0]
            for path, text in zip(leaf_paths(row["record"]), values):
                for rec in recognizers:
                    for r in rec.analyze(text, rec.supported_entities, None):
                        if r.entity_type in _PRESIDIO_TYPES:
                            pres.append(Span(i, path, _PRESIDIO_TYPES[r.entity_type], "pii", r.start, r.end))
                for secret in _detect_secrets_lines(text):
                    value = secret.secret_value or ""
                    start = text.find(value) if value else -1
                    if start >= 0:
                        dsec.append(Span(i, path, None, "secret", start, start + len(value)))
    pres_labels = [lab for lab in labels if lab.kind == "pii" and lab.type in comparable]
    sec_labels = [lab for lab in labels if lab.kind == "secret"]
    pres_table = score(pres_labels, pres)
    ds_table = score(sec_labels, dsec, typed=False)
    for table, found in ((pres_table, pres), (ds_table, dsec)):
        by_row: dict[int, list] = {}
        for span in found:
            by_row.setdefault(span.row, []).append(span)
        masking_leaks(rows, [mask_spans(row["record"], by_row.get(i, ())) for i, row in enumerate(rows)], table)
    # presidio's total leak: only the PII types it has (URL credentials are not one of them)
    pres_table[("pii", "*")].leaks = sum(t.leaks or 0 for (k, e), t in pres_table.items() if k == "pii" and e != "*")
    text = format_table({"provenir": ours, "presidio-analyzer patterns": pres_table,
                         "detect-secrets (untyped)": ds_table})
    return text, {"provenir": ours, "presidio": pres_table, "detect-secrets": ds_table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--baseline-records", type=int, default=2000, help="subsample for presidio")
    parser.add_argument("--detect-secrets-records", type=int, default=500, help="subsample for detect-secrets")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--ray-cpus", type=int, default=3, help="CPUs of the embedded Ray (workers + 1 for reads)")
    parser.add_argument("--ray-records", type=int, default=1_000_000,
                        help="records for the Ray rows (startup, ~3 s, amortises over a real-sized file)")
    parser.add_argument("--repeats", type=int, default=2, help="Ray and process timings: best of N")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    rows: list[tuple[str, str, float, float | None, str]] = []
    tmp = tempfile.mkdtemp(prefix="provenir-bench-")
    ray_started = False
    for variant in ("ordinary", "digit-heavy"):
        records = make_records(args.records, digit_heavy=variant == "digit-heavy")
        sub = records[: args.baseline_records]
        sub_ds = records[: args.detect_secrets_records]
        for cpu in (False, True):
            clock = "CPU s" if cpu else "wall s"
            seconds, found = provenir_in_process(records, cpu)
            ours = len(records) / seconds
            presidio = len(sub) / presidio_patterns(sub, cpu)[0]
            detect = len(sub_ds) / detect_secrets_plain(sub_ds, cpu)[0]
            rows.append((variant, f"provenir in process, 1 core [per {clock}]", ours, None, f"{found} findings"))
            rows.append((variant, f"presidio-analyzer patterns [per {clock}]", presidio, ours / presidio,
                         f"{len(sub)} records"))
            rows.append((variant, f"detect-secrets default plugins [per {clock}]", detect, ours / detect,
                         f"{len(sub_ds)} records"))
        if not args.no_ray:
            import ray

            if not ray_started:
                ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
                ray_started = True
            path = os.path.join(tmp, f"{variant}.jsonl")
            n_ray = 0
            with open(path, "w", encoding="utf-8") as handle:
                while n_ray < args.ray_records:  # the same records, repeated up to --ray-records
                    for record in records[: args.ray_records - n_ray]:
                        handle.write(json.dumps(record) + "\n")
                        n_ray += 1
            provenir_ray(path, 1, tmp)  # warm-up: worker processes, imports
            one = n_ray / min(provenir_ray(path, 1, tmp) for _ in range(args.repeats))
            two = n_ray / min(provenir_ray(path, 2, tmp) for _ in range(args.repeats))
            ceilings = [processes_ceiling(path) for _ in range(args.repeats)]
            p1, p2 = min(c[0] for c in ceilings), min(c[1] for c in ceilings)
            rows.append((variant, "provenir on Ray Data, 1 worker", one, None,
                         f"{n_ray:,} records, JSONL file → findings"))
            rows.append((variant, "provenir on Ray Data, 2 workers", two, two / one, "ratio = vs 1 worker"))
            rows.append((variant, "plain processes, 1 (same shard work, no Ray)", n_ray / p1, None,
                         "what one core does"))
            rows.append((variant, "plain processes, 2 (same shard work, no Ray)", n_ray / p2, p1 / p2,
                         "ratio = this machine's 2-core ceiling"))
        print(f"[{variant}] done", file=sys.stderr)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nGovernance scan throughput ({args.records} records per workload, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; 'per CPU s' divides by this process's CPU time)")
    print(f"{'workload':12} {'scanner':46} {'records/s':>12} {'provenir x':>11}  note")
    for variant, name, rate, ratio, note in rows:
        ratio_text = (f"{ratio:10.2f}x" if ratio < 10 else f"{ratio:10.1f}x") if ratio else " " * 11
        print(f"{variant:12} {name:46} {rate:12,.0f} {ratio_text}  {note}")
    table, _ = format_accuracy()
    print("\nPer type on the format-derived corpus tests/data/governance/formats/formats.jsonl "
          "(overlap matching; leak = labelled values still present after masking; detect-secrets types "
          "nothing, so it is scored on any secret, and presidio only on the PII types it has)")
    print(table)
    print("\nAccuracy on tests/data/governance/corpus.jsonl (micro recall / precision, overlap matching)")
    for name, (recall, precision) in accuracy().items():
        print(f"  {name:24} recall {recall:.3f}  precision {precision:.3f}")


if __name__ == "__main__":
    main()
