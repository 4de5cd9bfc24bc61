"""The main job: config → data → governance → curation → training → manifest → verification.

This is the library call behind ``provenir run``; the CLI only parses and prints.

Before training, the training set goes through, in this order and as ``governance`` and
``curation`` in the config say: the secret gate (a live secret stops the run unless
``secrets: warn``), PII masking (or a report only), the quality filter, and decontamination
against the eval set. What each stage found and removed — counts and types, never values — is
recorded in the manifest under ``inputs.train.prepared`` together with the sha256 of the records
that were actually trained on, and every decision is written to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provenir.core.abstractions import TrainingResult
from provenir.core.config import RunConfig
from provenir.core.errors import ConfigError
from provenir.core.run import VerificationReport, describe_input, verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.data.templates import TEMPLATE_REGISTRY


@dataclass
class PreparedData:
    dataset: JsonlDataset
    report: dict[str, Any]


def prepare_training_data(
    config: RunConfig,
    train: JsonlDataset,
    evaluation: JsonlDataset | None = None,
    *,
    audit: Any = None,
) -> PreparedData:
    """Run the governance and curation stages the config asks for over the training set.

    Raises:
        DataError: live secrets were found and ``governance.secrets`` is ``block``.
    """
    from provenir.core.errors import DataError

    gov, cur = config.governance, config.curation
    source = train.source or "training data"
    if not len(train):
        raise DataError(f"{source}: the dataset is empty (0 records)")
    report: dict[str, Any] = {"records_in": len(train)}

    def log(event: str, **details: Any) -> None:
        if audit is not None:
            audit.log(event, actor="provenir.pipeline", run=config.name, source=source, **details)

    if gov.secrets != "off":
        from provenir.governance.scanners import SecretScanner

        found = SecretScanner().scan(train)
        report["secrets"] = {
            "action": gov.secrets, "live": sum(found.counts.values()), "types": found.secret_types,
            "records": found.records_with_secrets, "placeholders": found.placeholder_count,
        }
        log("data.secret_scan", **report["secrets"])
        if found.has_secrets and gov.secrets == "block":
            rows = sorted({f.record_index for f in found.findings if not f.placeholder})
            where = ", ".join(str(r + 1) for r in rows[:10]) + (" …" if len(rows) > 10 else "")
            raise DataError(
                f"{source}: {found.records_with_secrets} record(s) hold live secrets "
                f"({', '.join(found.secret_types)}) at record(s) {where}; remove them, or set "
                "governance.secrets: warn to train with them masked"
            )
    if gov.pii == "mask":
        from provenir.governance.pii import PIIMasker

        masker = PIIMasker(mode=gov.pii_replacement, mask_secrets=gov.secrets != "off", ner="auto")
        train = masker.mask(train)
        report["pii"] = {"action": "mask", "replacement": gov.pii_replacement,
                         "masked": masker.last_masked_count, "ner_engine": masker.ner.name if masker.ner else None,
                         "ner_note": masker.ner_note}
        log("data.pii_mask", **report["pii"])
    elif gov.pii == "scan":
        from provenir.governance.pii import PIIScanner

        scanned = PIIScanner(ner="auto").scan(train)
        report["pii"] = {"action": "scan", "findings": len(scanned.findings), "counts": scanned.counts,
                         "records": scanned.records_with_pii, "fields": scanned.pii_fields,
                         "ner_engine": scanned.ner_engine, "ner_note": scanned.ner_note}
        log("data.pii_scan", **{k: v for k, v in report["pii"].items() if k != "fields"})

    if cur.quality_threshold is not None:
        from provenir.data.quality import QualityScorer

        before = len(train)
        train = QualityScorer().filter(train, cur.quality_threshold)
        report["quality"] = {"threshold": cur.quality_threshold, "dropped": before - len(train)}
        log("data.quality_filter", **report["quality"])
    if cur.decontamination != "off" and evaluation is not None and len(evaluation):
        from provenir.data.decontamination import SemanticDecontaminationChecker, references_from_records

        references, _skipped = references_from_records(evaluation.records)
        if references:
            checker = SemanticDecontaminationChecker(
                cur.decontamination_threshold, semantic=cur.decontamination == "semantic"
            )
            found = checker.check(train, references)
            dropped = {m["index"] for m in found}
            train = JsonlDataset([r for i, r in enumerate(train.records) if i not in dropped],
                                 source=train.source)
            stages: dict[str, int] = {}
            for match in found:
                stages[match["stage"]] = stages.get(match["stage"], 0) + 1
            report["decontamination"] = {"mode": cur.decontamination, "threshold": cur.decontamination_threshold,
                                         "eval_references": len(references), "dropped": len(dropped),
                                         "by_stage": stages}
            log("data.decontamination", **report["decontamination"])
    if not len(train):
        raise DataError(f"{source}: {_all_removed(report)}")
    report["records_out"] = len(train)
    report["sha256"] = train.hash()
    return PreparedData(train, report)


def _all_removed(report: dict[str, Any]) -> str:
    """One line for a training set every record of which a curation stage removed."""
    reasons, fixes = [], []
    quality = report.get("quality", {})
    if quality.get("dropped"):
        reasons.append(f"{quality['dropped']} below the quality threshold {quality['threshold']}")
        fixes.append("lower curation.quality_threshold")
    contamination = report.get("decontamination", {})
    if contamination.get("dropped"):
        reasons.append(f"{contamination['dropped']} contaminated: they match the eval set")
        fixes.append("check data.eval_path or set curation.decontamination: off")
    count = report["records_in"]
    line = "no records left to train on: curation removed " + (
        "the only record" if count == 1 else f"all {count}"
    )
    if reasons:
        line += " (" + ", ".join(reasons) + ")"
    if fixes:
        line += "; " + "; ".join(fixes)
    return line


@dataclass
class JobResult:
    training: TrainingResult
    verification: VerificationReport

    @property
    def run_id(self) -> str:
        return self.training.manifest.run_id


def run_job(
    config: RunConfig,
    *,
    provenance: list[str] | tuple[str, ...] = (),
    command: list[str] | None = None,
    store: ArtifactStore | None = None,
    extra: dict[str, Any] | None = None,
) -> JobResult:
    """Run the configured job end to end and verify the manifest it wrote.

    ``extra`` is passed to the backend's ``train_sft``/``train_dpo``; with ``resume_run_id`` in
    it the run to continue is checked first (it exists, did not complete, same config and data).

    Raises:
        ConfigError: the config names no training data or an unknown template; the run to resume
            cannot be resumed.
        DataError: the data is missing, malformed, or cannot be formatted (file and line named);
            it is empty, or curation removed every record.
        TrainingStopped: Ctrl-C or SIGTERM stopped training (the run is marked ``stopped``).
    """
    from provenir.train.backends import get_backend

    if not config.data.train_path:
        raise ConfigError("data.train_path: required to run a job (a JSONL file of records)")
    TEMPLATE_REGISTRY.get(config.data.template)  # unknown template: fail before any work
    inputs = {"train": describe_input(config.data.train_path)}
    train = JsonlDataset.from_jsonl(config.data.train_path)
    evaluation = None
    if config.data.eval_path:
        inputs["eval"] = describe_input(config.data.eval_path)
        evaluation = JsonlDataset.from_jsonl(config.data.eval_path)
    store = store or ArtifactStore(config.store_root)
    provenance = store.check_parents(provenance)  # a parent not in the store: refused before any work
    resume_run_id = (extra or {}).get("resume_run_id")
    if resume_run_id:  # an unknown or finished run: refused before any work or audit entry
        from provenir.train._resume import check_resumable

        check_resumable(store, resume_run_id, config, inputs["train"]["sha256"])
    audit = None
    if config.governance.audit:
        from provenir.governance.audit import AuditLogger, default_audit_dir

        audit_dir = config.governance.audit_dir or (
            default_audit_dir(store.root) if store.is_local else default_audit_dir()
        )
        audit = AuditLogger(audit_dir)
    mapped_train = train.map_fields(config.data.fields)
    mapped_eval = evaluation.map_fields(config.data.fields) if evaluation is not None else None
    backend = get_backend(config.backend)
    train_fn = backend.train_dpo if config.training.method == "dpo" else backend.train_sft
    try:
        prepared = prepare_training_data(config, mapped_train, mapped_eval, audit=audit)
        inputs["train"]["prepared"] = prepared.report
        result = train_fn(
            config, prepared.dataset, mapped_eval, inputs=inputs, provenance=provenance, store=store,
            command=command, **(extra or {}),
        )
    except Exception as exc:
        if audit is not None:
            audit.log("run.failed", actor="provenir.pipeline", run=config.name,
                      error=f"{type(exc).__name__}: {exc}")
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the backend marked the run stopped
        if audit is not None:
            audit.log("run.stopped", actor="provenir.pipeline", run=config.name,
                      run_id=getattr(exc, "run_id", None), step=getattr(exc, "step", None))
        raise
    verification = verify_run(store, result.manifest.run_id)
    if audit is not None:
        audit.log("run.completed", actor="provenir.pipeline", run_id=result.manifest.run_id,
                  status=result.manifest.status, verified=verification.ok,
                  config_hash=result.manifest.config_hash, dataset_hash=result.manifest.dataset_hash)
    return JobResult(result, verification)
