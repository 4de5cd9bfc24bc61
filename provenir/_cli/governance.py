"""Governance commands: ``provenir scan`` (PII + secrets, masking) and ``provenir audit show|verify``."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any, Optional

import typer

from provenir._cli._common import JsonOption, console, err_console, print_json

audit_app = typer.Typer(help="Show and verify the tamper-evident audit log.", no_args_is_help=True)

EXIT_SECRETS = 3

AuditDirOption = typer.Option(
    None, "--audit-dir",
    help="Audit log folder (default: $PROVENIR_AUDIT_DIR, else <$PROVENIR_STORE or artifacts>/audit).",
)


def _audit_dir(value: Optional[str]) -> str | Path:
    from provenir.governance.audit import default_audit_dir

    return value if value else default_audit_dir()  # a string: AuditLogger refuses a URI by its "://"


def _log_dir(log_dir: Optional[str], audit_dir: Optional[str]) -> str | Path:
    """The audit folder of ``audit show|verify``: the LOG_DIR argument or ``--audit-dir``."""
    if log_dir and audit_dir and Path(log_dir) != Path(audit_dir):
        from provenir.core.errors import ConfigError

        raise ConfigError(f"audit folder given twice ({log_dir} and --audit-dir {audit_dir}); "
                          "pass LOG_DIR or --audit-dir, not both")
    return _audit_dir(log_dir or audit_dir)


def _actor() -> str:
    try:
        return os.environ.get("PROVENIR_ACTOR") or getpass.getuser()
    except Exception:  # noqa: BLE001
        return "cli"


def _summary_table(report: Any) -> Any:
    from rich.table import Table

    table = Table(title="governance scan")
    table.add_column("kind")
    table.add_column("type")
    table.add_column("findings", justify="right")
    for kind, counts, style in (("secret", report.secrets, "bold red"), ("pii", report.pii, "yellow"),
                                ("placeholder", report.placeholders, "dim")):
        for etype, count in sorted(counts.items()):
            table.add_row(f"[{style}]{kind}[/]", etype, str(count))
    if not (report.secrets or report.pii or report.placeholders):
        table.add_row("[green]clean[/]", "-", "0")
    return table


def _run_scan(data: list[str], *, mask: Optional[str], report: Optional[Path], address: Optional[str],
              on_ray: bool, workers: int, overwrite: bool, json_out: bool, options: dict[str, Any]) -> Any:
    """Run the scan in process or on Ray Data, with a progress bar; returns the ScanReport."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    def progress_bar() -> Progress:
        return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                        TimeRemainingColumn(), console=err_console(), disable=json_out, transient=True)

    if on_ray:
        import logging

        from provenir.distributed.cluster import connect
        from provenir.distributed.governance import scan_files

        import ray.data

        connect(address)
        ray.data.DataContext.get_current().enable_progress_bars = False  # keep the summary readable
        logging.getLogger("ray.data").setLevel(logging.WARNING)

        findings_dir = str(report) + ".findings" if report else None
        if not json_out:
            console().print(f"[bold]provenir scan[/] on Ray Data ({workers} workers) · {len(data)} input(s)")
        options["mask_mode"] = options["mask_mode"] or "placeholder"
        with progress_bar() as bar:
            task = bar.add_task(f"scanning ({workers} workers)", total=None)
            return scan_files(data, mask_dir=mask, findings_dir=findings_dir, workers=workers,
                              address=address, overwrite=overwrite,
                              progress=lambda done, total: bar.update(task, completed=done, total=total or None),
                              **options)
    from provenir.governance._files import scan_files_local

    findings_path = str(report) + ".findings.jsonl" if report else None
    with progress_bar() as bar:
        task = bar.add_task("scanning", total=None)
        return scan_files_local(
            data, mask_dir=mask, findings_path=findings_path, overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total or None),
            **options,
        )


def scan(
    data: list[str] = typer.Argument(..., help="JSONL/Parquet files or folders (local or fsspec URIs)."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Write masked records to this folder."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report here "
                                          "(findings go next to it: REPORT.findings.jsonl, or a folder on Ray)."),
    address: Optional[str] = typer.Option(None, "--address", help="Run on this Ray cluster (Ray Data)."),
    use_ray: bool = typer.Option(False, "--ray", help="Run on Ray Data even without --address (local Ray)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray Data workers (with --ray/--address)."),
    pseudonym: bool = typer.Option(False, "--pseudonym", help="Mask with consistent salted pseudonyms."),
    salt: Optional[str] = typer.Option(None, "--salt", envvar="PROVENIR_PSEUDONYM_SALT",
                                       help="Pseudonym salt (default: $PROVENIR_PSEUDONYM_SALT or random)."),
    allow_secrets: bool = typer.Option(False, "--allow-secrets", help="Exit 0 even when secrets are found."),
    no_pii: bool = typer.Option(False, "--no-pii", help="Skip PII."),
    no_secrets: bool = typer.Option(False, "--no-secrets", help="Skip secrets."),
    ner: str = typer.Option("auto", "--ner", help="NER engine for PERSON/LOCATION: auto, presidio, none."),
    region: list[str] = typer.Option(["US"], "--region", help="Phone regions for numbers without +country."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --mask folder."),
    keep_examples: bool = typer.Option(False, "--keep-examples",
                                       help="Leave documented example values (test card numbers, AWS's "
                                            "AKIAIOSFODNN7EXAMPLE; placeholder findings) unmasked."),
    audit_dir: Optional[str] = AuditDirOption,
    json_out: bool = JsonOption,
) -> None:
    """Scan datasets for PII and secrets; optionally mask them. Exit 3 when live secrets are found.

    Every scan writes one ``governance.scan`` audit event, a failed one too (``status="failed"``
    and the error, redacted like every detail).
    """
    from rich.markup import escape

    from provenir.core.errors import ConfigError, ProvenirError
    from provenir.core.io import atomic_write_text
    from provenir.governance.audit import AuditLogger

    audit = AuditLogger(_audit_dir(audit_dir))
    on_ray = bool(address or use_ray)
    try:
        if no_pii and no_secrets:
            raise ConfigError("--no-pii and --no-secrets together leave nothing to scan; drop one")
        if ner not in ("auto", "presidio", "none"):
            raise ConfigError(f"--ner {ner}: expected auto, presidio or none")
        salt_bytes = (salt or "").encode() or os.urandom(16)
        options: dict[str, Any] = dict(pii=not no_pii, secrets=not no_secrets,
                                       mask_mode=("pseudonym" if pseudonym else "placeholder") if mask else None,
                                       salt=salt_bytes, phone_regions=tuple(region),
                                       ner=None if ner == "none" else ner, keep_examples=keep_examples)
        result = _run_scan(data, mask=mask, report=report, address=address, on_ray=on_ray, workers=workers,
                           overwrite=overwrite, json_out=json_out, options=options)
    except Exception as exc:
        error = str(exc) if isinstance(exc, ProvenirError) else f"{type(exc).__name__}: {exc}"
        audit.log("governance.scan", _actor(), status="failed", error=error, inputs=list(data),
                  executor=f"ray-data ({workers} workers)" if on_ray else "in-process", masked_to=mask,
                  report=str(report) if report else None, exit_code=getattr(exc, "exit_code", 1))
        raise
    out = console()
    exit_code = EXIT_SECRETS if result.has_secrets and not allow_secrets else 0
    payload = result.to_dict()
    payload["exit_code"] = exit_code
    if report:
        import json

        atomic_write_text(report, json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    audit.log(
        "governance.scan", _actor(), status="ok", inputs=result.inputs, executor=result.executor,
        records=result.records, malformed=result.malformed, pii=result.pii, secrets=result.secrets,
        placeholders=result.placeholders,
        masked_to=mask, mask_mode=result.mask_mode, report=str(report) if report else None,
        ner_engine=result.ner_engine, exit_code=exit_code,
    )
    if json_out:
        print_json(payload)
    else:
        out.print(_summary_table(result))
        out.print(f"{result.records} records · {result.records_with_pii} with PII · "
                  f"{result.records_with_secrets} with live secrets · {result.malformed} malformed · "
                  f"{result.seconds:.2f} s ({result.executor})")
        if result.ner_engine:
            out.print(f"NER engine: {result.ner_engine}")
        elif not no_pii:
            out.print(f"[dim]{escape(result.ner_note or '')}[/]")
        for error in result.errors[:10]:
            out.print(f"[yellow]malformed[/] {escape(error['message'])}", soft_wrap=True)
        if len(result.errors) > 10:
            out.print(f"[yellow]… {result.malformed - 10} more malformed records (see the report)[/]")
        if result.masked_outputs:
            out.print(f"masked records → {mask}")
        if report:
            out.print(f"report → {report}")
        if exit_code == EXIT_SECRETS and result.masked_outputs:
            err_console().print(f"[bold red]live secrets found[/] (exit 3) in the inputs; the masked copy in "
                                f"{escape(str(mask))} has them replaced. Train on that copy, remove them from "
                                "the source, or pass --allow-secrets", soft_wrap=True)
        elif exit_code == EXIT_SECRETS:
            err_console().print("[bold red]live secrets found[/] (exit 3); remove them, mask with --mask, "
                                "or pass --allow-secrets")
    if exit_code:
        raise typer.Exit(exit_code)


@audit_app.command("show")
def audit_show(
    log_dir: Optional[str] = typer.Argument(None, help="Audit log folder (same as --audit-dir)."),
    limit: int = typer.Option(50, "--limit", help="Show the last N entries (0: all)."),
    audit_dir: Optional[str] = AuditDirOption,
    json_out: bool = JsonOption,
) -> None:
    """Print the audit log's entries, newest last."""
    from provenir.governance.audit import AuditLogger

    folder = _log_dir(log_dir, audit_dir)
    entries = AuditLogger(folder).read()
    if limit:
        entries = entries[-limit:]
    if json_out:
        print_json(entries)
        return
    from rich.table import Table

    table = Table(title=f"audit log {folder}")
    for col in ("seq", "time", "event", "actor", "details"):
        table.add_column(col, overflow="fold")
    import json

    for entry in entries:
        table.add_row(str(entry.get("seq")), str(entry.get("ts")), str(entry.get("event")),
                      str(entry.get("actor")), json.dumps(entry.get("details"), sort_keys=True)[:200])
    console().print(table)


@audit_app.command("verify")
def audit_verify(
    log_dir: Optional[str] = typer.Argument(None, help="Audit log folder (same as --audit-dir)."),
    expected_head: Optional[str] = typer.Option(None, "--expected-head",
                                                help="A head kept earlier (all 64 hex digits); the log must still hold it."),
    audit_dir: Optional[str] = AuditDirOption,
    json_out: bool = JsonOption,
) -> None:
    """Check the hash chain; exit 1 naming the first broken, missing or torn entry (or a missing log)."""
    from provenir.governance.audit import AuditLogger

    result = AuditLogger(_log_dir(log_dir, audit_dir)).verify(expected_head=expected_head)
    if json_out:
        print_json(result.to_dict())
    elif result.ok:
        anchored = ""
        if result.expected_head_seq is not None:
            later = result.entries - 1 - result.expected_head_seq
            anchored = f" · expected head at seq {result.expected_head_seq}"
            if later:
                anchored += f", {later} {'entry' if later == 1 else 'entries'} after it"
        console().print(f"[bold green]intact[/]: {result.entries} entries · head {result.head}{anchored}",
                        soft_wrap=True)
    else:
        from rich.markup import escape

        where = f" after {result.entries} valid entries" if result.entries else ""
        console().print(f"[bold red]broken[/]{where}: {escape(result.reason)}", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
    app.add_typer(audit_app, name="audit")
