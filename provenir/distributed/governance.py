"""Governance on Ray Data: the same per-batch op as in process, over any amount of JSONL/Parquet.

Rows come from :func:`provenir.distributed.data.read_records` (``file``, ``line``, ``json``,
``error``; local paths or fsspec URIs); an actor pool of ``workers`` runs
:class:`provenir.governance._files.BatchOp` (the engine is compiled once per actor) through
:func:`~provenir.distributed.data.map_records`. A datasink then writes, from the workers, the masked
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

__all__ = ["GovernanceActor", "scan_files"]


class GovernanceActor:
    """Ray Data actor: one compiled engine (and NER model, if any) per worker."""

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
            "masked": masked,
            "findings": (["\n".join(finding_lines) if finding_lines else None] + [None] * (n - 1)) if n else [],
            "summary": ([json.dumps(summary)] + [None] * (n - 1)) if n else [],
        }


def _governance_datasink(mask_dir: str | None, findings_dir: str | None) -> Any:
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    from provenir.distributed.data import _fs_and_path

    class GovernanceDatasink(Datasink):
        """Writes masked records and findings from the workers; returns per-task summaries."""

        def write(self, blocks: Any, ctx: Any) -> dict[str, Any]:
            summary = new_summary()
            masked_parts: list[str] = []
            finding_parts: list[str] = []
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                if mask_dir:
                    masked_parts.extend(f"{m}\n" for m in table.column("masked").to_pylist() if m is not None)
                finding_parts.extend(f"{f}\n" for f in table.column("findings").to_pylist() if f)
                for raw in table.column("summary").to_pylist():
                    if raw:
                        part = json.loads(raw)
                        for key in ("records", "malformed", "records_with_pii", "records_with_secrets"):
                            summary[key] += part[key]
                        for key in ("pii", "secrets", "placeholders"):
                            for etype, count in part[key].items():
                                summary[key][etype] = summary[key].get(etype, 0) + count
                        summary["errors"].extend(part["errors"][:1000])
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
    shard_bytes: int | None = None,
) -> ScanReport:
    """Scan (and, with ``mask_dir``, mask) JSONL/Parquet files on Ray Data.

    Args:
        paths: files, folders or globs; local or fsspec URIs (all JSONL or all Parquet).
        mask_dir: where masked records go (``part-*.jsonl``, input order); ``None`` scans only.
        findings_dir: where finding lines go (``part-*.jsonl``); ``None`` keeps only counts.
        workers: actor-pool size (one CPU each).
        address: Ray address; ``None`` uses ``RAY_ADDRESS`` or an embedded local Ray.
        overwrite: replace existing output folders.

    Returns:
        A :class:`ScanReport` built from per-task summaries (no record reaches the driver).
    """
    from provenir.core.errors import DataError
    from provenir.distributed.cluster import connect, run_on_cluster
    from provenir.distributed.data import DEFAULT_SHARD_BYTES, _fs_and_path, expand_paths

    connect(address)
    files = expand_paths(paths)
    targets = {}
    for name, folder in (("mask_dir", mask_dir), ("findings_dir", findings_dir)):
        if folder:
            fs, root = _fs_and_path(folder)
            if fs.exists(root):
                if not overwrite:
                    raise DataError(f"{folder}: output already exists; remove it or pass overwrite")
                fs.rm(root, recursive=True)
            local = "://" not in folder or folder.startswith("file://")
            targets[name] = (folder, folder.rstrip("/") + f".tmp-{uuid.uuid4().hex[:8]}" if local else folder)
    op_kwargs = dict(pii=pii, secrets=secrets, mask_mode=mask_mode if mask_dir else None, salt=salt,
                     phone_regions=tuple(phone_regions), ner=ner, ner_model=ner_model)
    probe = BatchOp(**op_kwargs)  # validates options (and finds the NER engine) before any Ray work
    started = time.perf_counter()

    def pipeline() -> list[dict[str, Any]]:
        from provenir.distributed.data import map_records, read_records, set_preserve_order

        import ray

        set_preserve_order(True)
        ds = read_records(files, shard_bytes=shard_bytes or DEFAULT_SHARD_BYTES)
        # leave one CPU to the read tasks, or a pool as wide as the cluster starves them
        cpus = float(ray.cluster_resources().get("CPU", workers + 1))
        per_actor = max(0.1, min(1.0, (cpus - 1.0) / workers))
        ds = map_records(ds, GovernanceActor, batch_size=batch_size, actors=workers, num_cpus=per_actor,
                         fn_constructor_kwargs=op_kwargs)
        sink = _governance_datasink(targets.get("mask_dir", (None, None))[1],
                                    targets.get("findings_dir", (None, None))[1])
        ds.write_datasink(sink)
        return sink.summaries

    try:
        summaries = run_on_cluster(pipeline)
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
