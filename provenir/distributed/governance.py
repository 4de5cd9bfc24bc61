"""Governance on Ray Data: the same per-batch op as in process, over any amount of JSONL/Parquet.

JSONL files (local paths or fsspec URIs) are cut into byte-range shards aligned to line ends, with
exact line numbers (:func:`provenir.distributed.data.plan_shards` and one newline-count pass); an
actor pool of ``workers`` reads, parses and scans whole shards with
:class:`provenir.governance._files.BatchOp` (the engine is compiled once per actor), through
:func:`~provenir.distributed.data.map_records`. Parquet goes through
:func:`~provenir.distributed.data.read_records` rows (``file``, ``line``, ``json``, ``error``) and
the same op. A datasink then writes, from the workers, the masked
records (``mask_dir/part-*.jsonl``, in input order) and the findings (``findings_dir/part-*.jsonl``)
and returns one small summary per write task; the driver only adds those summaries up. No record
ever passes through the driver.

Example (needs Ray)::

    from provenir.distributed.governance import scan_files
    report = scan_files(["data/"], mask_dir="out/masked", findings_dir="out/findings", workers=2)
    print(report.secrets, report.pii)
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Sequence
from typing import Any

from provenir.governance._files import BatchOp, ScanReport, new_summary

__all__ = ["GovernanceActor", "GovernanceShardActor", "scan_files"]

DEFAULT_GOVERNANCE_SHARD_BYTES = 4 << 20


class GovernanceActor:
    """Ray Data actor over rows ``(file, line, json, error)`` (the Parquet path): one compiled engine
    (and NER model, if any) per worker."""

    def __init__(self, **op_kwargs: Any):
        self.op = BatchOp(**op_kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        files = [str(f) for f in batch["file"]]
        lines = [int(n) for n in batch["line"]]
        texts = [t if isinstance(t, str) else None for t in batch["json"]]
        errors = [e if isinstance(e, str) else None for e in batch["error"]]  # missing arrives as NaN
        masked, finding_lines, summary = self.op.run(files, lines, texts, errors)
        n = len(files)
        # the batch's findings and summary ride on its first row; the rest carry None
        return {
            "masked": [None if m is None else m + "\n" for m in masked],
            "findings": (["\n".join(finding_lines) if finding_lines else None] + [None] * (n - 1)) if n else [],
            "summary": ([json.dumps(summary)] + [None] * (n - 1)) if n else [],
        }


class GovernanceShardActor:
    """Ray Data actor over JSONL byte-range shards: reads, parses, scans and masks a whole shard, and
    writes the shard's masked records and findings itself (``part-<shard index>.jsonl``, so the
    parts keep input order by name).

    Reading and writing inside the actor pool (instead of a row-per-record read stage and a separate
    write stage) lets the I/O scale with the workers, keeps per-record work out of Ray Data's row
    machinery, and moves no record text through the object store: one small summary row comes back
    per shard.
    """

    def __init__(self, batch_size: int = 1024, mask_dir: str | None = None, findings_dir: str | None = None,
                 **op_kwargs: Any):
        self.op = BatchOp(**op_kwargs)
        self.batch_size = batch_size
        self.mask_dir = mask_dir
        self.findings_dir = findings_dir

    def _scan_shard(self, file: str, start: int, end: int, first_line: int) -> tuple[list[str], list[str], dict]:
        from provenir.distributed.data import _read_range
        from provenir.governance._files import BATCH_BYTES, merge_summary, parse_line

        data = _read_range(file, start, end)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        summary = new_summary()
        masked_parts: list[str] = []
        finding_parts: list[str] = []
        rows: list[tuple[str, int, str | None, str | None]] = []

        def flush() -> None:
            if not rows:
                return
            files, numbers, texts, errors = zip(*rows)
            masked, finding_lines, part = self.op.run(files, numbers, texts, errors)
            merge_summary(summary, part)
            masked_parts.extend(f"{m}\n" for m in masked if m is not None)
            finding_parts.extend(finding_lines)
            rows.clear()

        held = 0
        for offset, raw in enumerate(lines):
            number = first_line + offset
            parsed = parse_line(raw, file, number)
            if parsed is not None:
                rows.append((file, number, parsed[0], parsed[1]))
                held += len(raw)
                if len(rows) >= self.batch_size or held >= BATCH_BYTES:
                    flush()
                    held = 0
        flush()
        return masked_parts, finding_parts, summary

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"summary": [], "bytes": []}
        for index, file, start, end, first_line in zip(batch["index"], batch["file"], batch["start"], batch["end"],
                                                       batch["first_line"]):
            masked, findings, summary = self._scan_shard(str(file), int(start), int(end), int(first_line))
            name = f"part-{int(index):06d}.jsonl"
            for folder, text in ((self.mask_dir if self.op.mask_mode else None, "".join(masked)),
                                 (self.findings_dir, "".join(f"{f}\n" for f in findings))):
                if folder and text:
                    _write_part(folder, name, text)
            out["summary"].append(json.dumps(summary))
            out["bytes"].append(int(end) - int(start))
        return out


def _write_part(folder: str, name: str, text: str) -> None:
    from provenir.distributed.data import _fs_and_path

    fs, root = _fs_and_path(folder)
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root.rstrip('/')}/{name}", "wb") as handle:
        handle.write(text.encode("utf-8"))


def _jsonl_shards(files: list[str], shard_bytes: int) -> tuple[Any, int]:
    """Shards with exact first line numbers (one newline-count pass, one integer per shard back), and
    their total bytes."""
    import ray.data

    from provenir.distributed.data import default_min_shards, number_shards, plan_shards, shard_size

    shard_bytes = shard_size(files, shard_bytes, default_min_shards())
    shards = [s for path in files for s in plan_shards(path, shard_bytes)]
    if not shards:
        return None, 0
    for index, shard in enumerate(shards):
        shard["index"] = index
    total = sum(s["end"] - s["start"] for s in shards)
    return ray.data.from_items(number_shards(shards), override_num_blocks=len(shards)), total


def _governance_datasink(mask_dir: str | None, findings_dir: str | None) -> Any:
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    from provenir.distributed.data import _fs_and_path
    from provenir.governance._files import merge_summary

    class GovernanceDatasink(Datasink):
        """Writes masked records and findings from the workers; returns per-task summaries."""

        def write(self, blocks: Any, ctx: Any) -> dict[str, Any]:
            summary = new_summary()
            masked_parts: list[str] = []
            finding_parts: list[str] = []
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                if mask_dir:
                    masked_parts.extend(m for m in table.column("masked").to_pylist() if m)
                finding_parts.extend(f"{f}\n" for f in table.column("findings").to_pylist() if f)
                for raw in table.column("summary").to_pylist():
                    if raw:
                        merge_summary(summary, json.loads(raw))
            name = f"part-{ctx.task_idx:06d}.jsonl"
            for folder, parts in ((mask_dir, masked_parts), (findings_dir, finding_parts)):
                if folder and parts:
                    fs, root = _fs_and_path(folder)
                    fs.makedirs(root, exist_ok=True)
                    with fs.open(f"{root.rstrip('/')}/{name}", "wb") as handle:
                        handle.write("".join(parts).encode("utf-8"))
            return summary

        def on_write_complete(self, write_result: Any) -> None:
            self.summaries = list(write_result.write_returns)

        @property
        def supports_distributed_writes(self) -> bool:
            return True

    return GovernanceDatasink()


def scan_files(
    paths: Sequence[str], *, mask_dir: str | None = None, findings_dir: str | None = None,
    workers: int = 2, batch_size: int = 1024, address: str | None = None, overwrite: bool = False,
    pii: bool = True, secrets: bool = True, mask_mode: str = "placeholder", salt: bytes = b"",
    phone_regions: Sequence[str] = ("US",), ner: str | None = None, ner_model: str | None = None,
    shard_bytes: int | None = None, progress: Any = None, keep_examples: bool = False,
) -> ScanReport:
    """Scan (and, with ``mask_dir``, mask) JSONL/Parquet files on Ray Data.

    Args:
        paths: files, folders or globs; local or fsspec URIs (all JSONL or all Parquet).
        mask_dir: where masked records go (``part-*.jsonl``, input order); ``None`` scans only.
        findings_dir: where finding lines go (``part-*.jsonl``); ``None`` keeps only counts.
        workers: actor-pool size (one CPU each).
        address: Ray address; ``None`` uses ``RAY_ADDRESS`` or an embedded local Ray.
        progress: ``progress(bytes_done, bytes_total)``, called on the driver as each JSONL shard
            completes (the CLI draws a rich bar with it).
        overwrite: replace existing output folders.
        keep_examples: leave documented example values (``placeholder=True`` findings) unmasked.

    Returns:
        A :class:`ScanReport` built from per-task summaries (no record reaches the driver).
    """
    from provenir.core.errors import DataError
    from provenir.distributed.cluster import connect, run_on_cluster
    from provenir.distributed.data import _fs_and_path, expand_paths

    connect(address)
    files = expand_paths(paths)
    if len({f.endswith(".parquet") for f in files}) > 1:
        raise DataError("mix of Parquet and JSONL inputs; scan them separately")
    from provenir.core.io import check_output_outside_inputs

    for option, folder in (("--mask", mask_dir), ("--report (findings)", findings_dir)):
        if folder:  # all checked before any existing output is removed
            check_output_outside_inputs(folder, [*paths, *files], option)
    targets = {}
    for name, folder in (("mask_dir", mask_dir), ("findings_dir", findings_dir)):
        if folder:
            fs, root = _fs_and_path(folder)
            if fs.exists(root):
                if not overwrite:
                    raise DataError(f"{folder}: output already exists; remove it or pass --overwrite (overwrite=True)")
                fs.rm(root, recursive=True)
            local = "://" not in folder or folder.startswith("file://")
            targets[name] = (folder, folder.rstrip("/") + f".tmp-{uuid.uuid4().hex[:8]}" if local else folder)
    op_kwargs = dict(pii=pii, secrets=secrets, mask_mode=mask_mode if mask_dir else None, salt=salt,
                     phone_regions=tuple(phone_regions), ner=ner, ner_model=ner_model,
                     keep_examples=keep_examples)
    probe = BatchOp(**op_kwargs)  # validates options (and finds the NER engine) before any Ray work
    started = time.perf_counter()

    def pipeline(report_progress: Any = None) -> list[dict[str, Any]]:
        import ray

        from provenir.distributed.data import map_records, read_records, set_preserve_order

        set_preserve_order(True)
        # leave one CPU to the other stages, or a pool as wide as the cluster starves them
        cpus = float(ray.cluster_resources().get("CPU", workers + 1))
        per_actor = max(0.1, min(1.0, (cpus - 1.0) / workers))
        mask_target = targets.get("mask_dir", (None, None))[1]
        findings_target = targets.get("findings_dir", (None, None))[1]
        if all(f.endswith(".parquet") for f in files):
            sink = _governance_datasink(mask_target, findings_target)
            ds = read_records(files)
            ds = map_records(ds, GovernanceActor, batch_size=batch_size, actors=workers, num_cpus=per_actor,
                             fn_constructor_kwargs=op_kwargs)
            ds.write_datasink(sink)
            return sink.summaries
        ds, total = _jsonl_shards(files, shard_bytes or DEFAULT_GOVERNANCE_SHARD_BYTES)
        if ds is None:
            return []
        ds = map_records(ds, GovernanceShardActor, batch_size=1, actors=workers, num_cpus=per_actor,
                         tasks_per_actor=2,
                         fn_constructor_kwargs={**op_kwargs, "batch_size": batch_size, "mask_dir": mask_target,
                                                "findings_dir": findings_target})
        summaries, done = [], 0
        for row in ds.iter_rows():
            summaries.append(json.loads(row["summary"]))
            done += int(row["bytes"])
            if report_progress is not None:
                report_progress(done, total)
        return summaries

    try:
        from provenir.distributed.cluster import is_client_mode

        # through Ray Client the pipeline runs in a task on the cluster: no callback into this process
        summaries = run_on_cluster(pipeline, None if is_client_mode() else progress)
        for final, tmp in targets.values():
            if tmp != final:
                fs, tmp_root = _fs_and_path(tmp)
                fs.makedirs(tmp_root, exist_ok=True)
                fs.mv(tmp_root, _fs_and_path(final)[1], recursive=True)
    except BaseException:
        for final, tmp in targets.values():
            if tmp != final:
                shutil.rmtree(_fs_and_path(tmp)[1], ignore_errors=True)
        raise
    report = ScanReport(inputs=files, executor=f"ray-data ({workers} workers)",
                        mask_mode=op_kwargs["mask_mode"], ner_note=probe.ner_note,
                        ner_engine=probe.ner.name if probe.ner else None)
    for summary in summaries:
        report.add_counts(summary)
    report.errors.sort(key=lambda e: (e["file"], e["line"]))
    if mask_dir:
        fs, root = _fs_and_path(mask_dir)
        report.masked_outputs = sorted(p for p in fs.find(root) if p.endswith(".jsonl"))
    report.findings_path = findings_dir
    report.seconds = round(time.perf_counter() - started, 3)
    return report
