"""Core commands: run, config validate, data stats, manifest show|verify|lineage, runs list."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from provenir._cli._common import (
    JsonOption,
    StoreOption,
    console,
    parse_overrides,
    print_json,
    store_root,
)

if TYPE_CHECKING:
    from provenir.core.run import VerificationReport

config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
manifest_app = typer.Typer(help="Show, verify and trace run manifests.", no_args_is_help=True)
runs_app = typer.Typer(help="List runs in the artifact store.", no_args_is_help=True)


def _print_verification(report: VerificationReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"verification of {report.run_id}", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        mark = "[green]ok[/]" if check.ok else "[bold red]MISMATCH[/]"
        detail = check.detail
        if not check.ok and (check.expected or check.actual):
            detail = f"{detail} expected={check.expected} actual={check.actual}".strip()
        table.add_row(escape(check.name), mark, escape(detail))
    console().print(table)
    verdict = "[bold green]verified[/]" if report.ok else f"[bold red]{len(report.failures)} check(s) failed[/]"
    console().print(f"{report.run_id}: {verdict}")


def _print_manifest(manifest: Any) -> None:
    from rich.table import Table

    table = Table(title=f"manifest {manifest.run_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in ("run_id", "status", "timestamp", "config_hash", "dataset_hash", "git_sha", "seed"):
        table.add_row(key, str(getattr(manifest, key)))
    table.add_row("provenance", ", ".join(manifest.provenance) or "-")
    table.add_row("backend", str(manifest.config.get("backend")))
    model = manifest.inputs.get("model")
    if isinstance(model, dict):
        where = model.get("path") or model.get("id")
        pin = model.get("sha256") or (f"revision {model['revision']}" if model.get("revision") else "not hashed")
        table.add_row("model", f"{where} ({pin})")
    table.add_row("command", " ".join(manifest.command))
    for key, value in sorted(manifest.metrics.items()):
        table.add_row(f"metric {key}", str(value))
    for rel, digest in sorted(manifest.artifacts.items()):
        table.add_row(f"artifact {rel}", digest)
    console().print(table)


def run(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set peft.rank=16."),
    parent: list[str] = typer.Option([], "--parent", help="Parent run id (recorded as provenance)."),
    store: Optional[str] = typer.Option(
        None,
        "--store",
        envvar="PROVENIR_STORE",
        help="Artifact store root: a folder or an fsspec URI "
        "(default: $PROVENIR_STORE, else the config's storage_root or output_dir).",
    ),
    json_out: bool = JsonOption,
) -> None:
    """Run the job a config describes end to end; print its manifest and verification."""
    from provenir.core.config import RunConfig
    from provenir.core.store import ArtifactStore
    from provenir.pipeline import run_job

    cfg = RunConfig.from_yaml(config, overrides=parse_overrides(set_), check_inputs=True)
    root = store or cfg.store_root
    if not json_out:
        console().print(f"[bold]provenir run[/] {config} · backend={cfg.backend} · store={root}")
    result = run_job(cfg, provenance=parent, store=ArtifactStore(root), command=sys.argv)
    if json_out:
        print_json({"manifest": result.training.manifest.to_dict(), "verification": result.verification.to_dict()})
    else:
        _print_manifest(result.training.manifest)
        _print_verification(result.verification)
    if not result.verification.ok:
        raise typer.Exit(1)


@config_app.command("validate")
def config_validate(
    file: Path = typer.Argument(..., help="Config file (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set peft.rank=16."),
    json_out: bool = JsonOption,
) -> None:
    """Validate a config as `run` would load it: keys and values, the template name, and that the
    local data files exist. Print the resolved config and its hash."""
    from provenir.core.config import RunConfig, config_hash

    cfg = RunConfig.from_yaml(file, overrides=parse_overrides(set_), check_inputs=True)
    if json_out:
        print_json({"valid": True, "config_hash": config_hash(cfg), "config": cfg.model_dump(mode="json")})
        return
    console().print(f"[green]valid[/] {file} · config_hash {config_hash(cfg)}")
    console().print(cfg.to_yaml().rstrip(), markup=False)


@data_app.command("stats")
def data_stats(
    file: str = typer.Argument(..., help="JSONL file (local path or fsspec URI)."),
    bins: int = typer.Option(10, help="Histogram bins."),
    json_out: bool = JsonOption,
) -> None:
    """Records, fields, content hash and a length histogram of a JSONL file (streamed)."""
    from provenir.data.stats import dataset_stats

    stats = dataset_stats(file, bins=bins)
    if json_out:
        print_json(stats)
        return
    from rich.table import Table

    out = console()
    out.print(f"[bold]{file}[/]: {stats['records']} records · sha256 {stats['sha256']}")
    fields = Table(title="fields")
    fields.add_column("field")
    fields.add_column("records", justify="right")
    for name, count in stats["fields"].items():
        fields.add_row(name, str(count))
    out.print(fields)
    lengths = stats["length_chars"]
    out.print(
        f"length (characters of text): min {lengths['min']} · mean {lengths['mean']:.1f} · "
        f"max {lengths['max']}"
    )
    hist = Table(title="length histogram")
    hist.add_column("characters")
    hist.add_column("records", justify="right")
    hist.add_column("")
    peak = max((b["count"] for b in lengths["histogram"]), default=0) or 1
    for bucket in lengths["histogram"]:
        bar = "█" * round(30 * bucket["count"] / peak)
        hist.add_row(f"{bucket['lo']}–{bucket['hi']}", str(bucket["count"]), bar)
    out.print(hist)


@manifest_app.command("show")
def manifest_show(
    run_id: str = typer.Argument(..., help="Run id."),
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Print a run's manifest."""
    from provenir.core.store import ArtifactStore

    manifest = ArtifactStore(store_root(store)).load_manifest(run_id)
    if json_out:
        print_json(manifest.to_dict())
    else:
        _print_manifest(manifest)


@manifest_app.command("verify")
def manifest_verify(
    run_id: str = typer.Argument(..., help="Run id."),
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Recompute config, dataset, model and artifact hashes, check seed, metrics and parents;
    exit 1 naming any mismatch."""
    from provenir.core.errors import NotFoundError
    from provenir.core.run import verify_run
    from provenir.core.store import ArtifactStore, validate_run_id

    st = ArtifactStore(store_root(store))
    if not st.exists(validate_run_id(run_id)):
        raise NotFoundError(f"run {run_id!r} not found under {st.runs_dir()}")
    report = verify_run(st, run_id)
    if json_out:
        print_json(report.to_dict())
    else:
        _print_verification(report)
    if not report.ok:
        raise typer.Exit(1)


@manifest_app.command("lineage")
def manifest_lineage(
    run_id: str = typer.Argument(..., help="Run id."),
    store: Optional[str] = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """A run's ancestors (through provenance) and descendants."""
    from provenir.core.store import ArtifactStore

    st = ArtifactStore(store_root(store))
    st.load_manifest(run_id)  # a clear error for an unknown run
    traced, descendants = st.trace_ancestors(run_id), st.descendants(run_id)
    ancestors = [rid for rid, _ in traced]
    missing = [rid for rid, problem in traced if problem == "missing"]
    unreadable = [rid for rid, problem in traced if problem and problem != "missing"]
    if json_out:
        payload: dict[str, Any] = {"run_id": run_id, "ancestors": ancestors, "descendants": descendants}
        if missing:
            payload["missing"] = missing
        if unreadable:
            payload["unreadable"] = unreadable
        print_json(payload)
        return
    from rich.markup import escape
    from rich.tree import Tree

    tree = Tree(f"[bold]{run_id}[/]")
    up = tree.add("ancestors (nearest first)")
    for rid, problem in traced or [("-", None)]:
        if problem is None:
            up.add(rid)
        else:
            label = "missing" if problem == "missing" else "unreadable"
            note = "not in this store" if label == "missing" else problem
            up.add(f"{escape(rid)} [bold red]({label})[/] [dim]{escape(note)}; its ancestors cannot be traced[/]")
    down = tree.add("descendants")
    for rid in descendants or ["-"]:
        down.add(rid)
    console().print(tree)
    if missing or unreadable:
        console().print(f"[bold red]{len(missing) + len(unreadable)} ancestor(s) cannot be followed:[/] "
                        f"{escape(', '.join(missing + unreadable))}; the lineage above stops at them")


@runs_app.command("list")
def runs_list(store: Optional[str] = StoreOption, json_out: bool = JsonOption) -> None:
    """Every run in the store, oldest first, with status and backend."""
    from provenir.core.errors import ProvenirError
    from provenir.core.store import ArtifactStore

    st = ArtifactStore(store_root(store))
    rows = []
    for rid in st.list_runs():
        try:
            m = st.load_manifest(rid)
            rows.append({
                "run_id": rid, "status": m.status, "backend": m.config.get("backend"),
                "timestamp": m.timestamp, "parents": m.provenance,
            })
        except ProvenirError as exc:
            rows.append({"run_id": rid, "status": f"unreadable: {exc}", "backend": None,
                         "timestamp": None, "parents": []})
    if json_out:
        print_json(rows)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"runs in {st.runs_dir()}")
    for col in ("run_id", "status", "backend", "timestamp", "parents"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["run_id"], escape(row["status"]), row["backend"] or "-", row["timestamp"] or "-",
                      ", ".join(row["parents"]) or "-")
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(config_app, name="config")
    app.add_typer(data_app, name="data")
    app.add_typer(manifest_app, name="manifest")
    app.add_typer(runs_app, name="runs")
