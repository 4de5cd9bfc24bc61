"""Adapter commands: merge, verify-merge, hub push|pull|info|verify."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from provenir._cli._common import JsonOption, console, print_json

hub_app = typer.Typer(help="Push adapters to, and pull models from, a Hugging Face–compatible hub.", no_args_is_help=True)

StoreRecordOption = typer.Option(
    "artifacts", "--store", envvar="PROVENIR_STORE",
    help="Artifact store the step is recorded in as a run (default $PROVENIR_STORE, else ./artifacts).",
)
RecordOption = typer.Option(True, "--record/--no-record", help="Record this step as a run in the store.")

EndpointOption = typer.Option(
    None, "--endpoint", envvar="HF_ENDPOINT", help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)."
)


def merge(
    adapters: list[Path] = typer.Argument(..., help="PEFT LoRA adapter folders (same base model)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the merged adapter."),
    strategy: str = typer.Option("slerp", "--strategy", "-s", help="slerp (two adapters), ties or dare."),
    density: float = typer.Option(0.5, "--density", help="TIES/DARE: fraction of weights kept, in (0, 1]."),
    scale: float = typer.Option(1.0, "--scale", help="Factor applied to the merged update."),
    weight: list[float] = typer.Option([], "--weight", "-w", help="TIES/DARE: one per adapter, in order."),
    t: float = typer.Option(0.5, "--t", help="SLERP: the second adapter's share, in [0, 1]."),
    seed: int = typer.Option(0, "--seed", help="DARE: seed of the random masks."),
    rank: Optional[int] = typer.Option(None, "--rank", help="Output rank (default: sum of input ranks)."),
    dare_variant: str = typer.Option("ties", "--dare-variant", help="DARE then sign election (ties) or sum (linear)."),
    majority_sign: str = typer.Option("total", "--majority-sign", help="TIES sign election: total or frequency."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype (default: the inputs')."),
    device: str = typer.Option("cpu", "--device", help="Where the arithmetic runs (cpu, cuda, …)."),
    no_check_base_model: bool = typer.Option(
        False, "--no-check-base-model", help="Merge adapters whose base_model_name_or_path differ."
    ),
    output: str = typer.Option("adapter", "--output", help="adapter (PEFT LoRA) or model (folded into the base)."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base to fold into for --output model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
    store: str = StoreRecordOption,
    parent: list[str] = typer.Option([], "--parent", help="Further parent run id (the adapters' own runs are found)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the merge run (default merge-STRATEGY)."),
    record: bool = RecordOption,
    json_out: bool = JsonOption,
) -> None:
    """Merge LoRA adapters (SLERP, TIES, DARE) into one PEFT adapter with merge_manifest.json, recorded as a run."""
    from provenir.adapters.merging import ModelMerger, _resolve_config, record_merge_run
    from provenir.core.store import ArtifactStore

    artifact_store = ArtifactStore(store) if record else None
    if artifact_store is not None:
        artifact_store.check_parents(parent)  # before any work: an unknown parent is an error

    config = _resolve_config(
        {
            "strategy": strategy,
            "density": density,
            "scale": scale,
            "weights": list(weight) or None,
            "t": t,
            "seed": seed,
            "rank": rank,
            "dare_variant": dare_variant,
            "majority_sign_method": majority_sign,
            "dtype": dtype,
            "device": device,
            "check_base_model": not no_check_base_model,
            "output": output,
            "base_model": base_model,
        }
    )
    result = ModelMerger().merge(list(adapters), config, out, overwrite=overwrite)
    run = None
    if artifact_store is not None:
        run = record_merge_run(artifact_store, result, config, provenance=parent, name=name, command=sys.argv)
    summary = {
        "output_path": str(result.output_path),
        "strategy": result.strategy,
        "adapters": [str(p) for p in result.adapter_paths],
        "rank": result.rank,
        "merge_id": result.merge_id,
        "files_sha256": result.files_sha256,
        "svd_relative_error_max": result.svd_relative_error_max,
        "run_id": run.run_id if run else None,
        "parents": run.provenance if run else [],
    }
    if json_out:
        print_json(summary)
        return
    console().print(
        f"[green]merged[/] {len(result.adapter_paths)} adapters with {result.strategy} → {result.output_path} "
        f"(rank {result.rank}, svd error ≤ {result.svd_relative_error_max:.3g})"
    )
    if run is not None:
        parents = ", ".join(run.provenance) or "none in this store"
        console().print(f"run [bold]{run.run_id}[/] (kind merge) in {store} · parents: {parents}")
    for name, digest in sorted(result.files_sha256.items()):
        console().print(f"  {name}  {digest}")


def verify_merge_command(
    folder: Path = typer.Argument(..., help="A folder written by `provenir merge`."),
) -> None:
    """Check a merged adapter's files (and its parents, where present) against merge_manifest.json."""
    from provenir.adapters.merging import verify_merge

    problems = verify_merge(folder)
    if problems:
        for problem in problems:
            console().print(f"[bold red]MISMATCH[/] {problem}")
        raise typer.Exit(1)
    console().print(f"{folder}: [bold green]verified[/]")


@hub_app.command("push")
def hub_push(
    adapter: Path = typer.Argument(..., help="Adapter (or model) folder to upload."),
    repo_id: str = typer.Option(..., "--repo-id", "-r", help="namespace/name"),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    revision: str = typer.Option("main", "--revision", help="Branch to commit to (created if missing)."),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="Commit message."),
    endpoint: Optional[str] = EndpointOption,
    store: str = StoreRecordOption,
    record: bool = RecordOption,
    json_out: bool = JsonOption,
) -> None:
    """Upload an adapter folder in one commit, with a provenance model card and Provenir's file record
    (recorded as a publish run). Token: $HF_TOKEN or `hf auth login`."""
    from pydantic import ValidationError

    from provenir.adapters.hub import HubClient, HubConfig, record_publish_run
    from provenir.core.errors import ConfigError
    from provenir.core.store import ArtifactStore

    try:
        config = HubConfig(repo_id=repo_id, private=private, revision=revision, commit_message=message)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    artifact_store = ArtifactStore(store) if record else None
    result = HubClient(endpoint=endpoint).push_adapter(adapter, config)
    run = record_publish_run(artifact_store, result, adapter, command=sys.argv) if artifact_store else None
    if json_out:
        print_json(
            {
                "repo_id": result.repo_id,
                "url": result.url,
                "commit_sha": result.commit_sha,
                "revision": result.revision,
                "pushed_files": result.pushed_files,
                "files_sha256": result.files_sha256,
                "adapter_run_id": result.run_id,
                "run_id": run.run_id if run else None,
            }
        )
        return
    console().print(f"[green]pushed[/] {len(result.pushed_files)} files to {result.url} @ {result.commit_sha}")
    for name in result.pushed_files:
        console().print(f"  {name}")
    if run is not None:
        console().print(f"run [bold]{run.run_id}[/] (kind publish) in {store} · parent: {', '.join(run.provenance) or '-'}")


@hub_app.command("pull")
def hub_pull(
    repo_id: str = typer.Argument(..., help="namespace/name"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to download into (default: the hub cache)."),
    revision: str = typer.Option("main", "--revision", help="Branch, tag or commit."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Hub cache folder (without --out)."),
    endpoint: Optional[str] = EndpointOption,
    store: str = StoreRecordOption,
    record: bool = RecordOption,
) -> None:
    """Download a model or adapter at a revision and verify every file: against the hub's hashes and,
    for a Provenir push, against its file record and run manifest (recorded as a pull run)."""
    from provenir.adapters.hub import HubClient, record_pull_run
    from provenir.core.store import ArtifactStore

    artifact_store = ArtifactStore(store) if record else None
    result = HubClient(endpoint=endpoint, cache_dir=cache_dir).pull(repo_id, out, revision)
    checked = " + ".join(result.verified_against)
    console().print(f"[green]pulled[/] {repo_id}@{result.commit_sha} → {result.path} (verified against {checked})")
    if artifact_store is not None:
        run = record_pull_run(artifact_store, result, command=sys.argv)
        console().print(f"run [bold]{run.run_id}[/] (kind pull) in {store} · parent: {', '.join(run.provenance) or '-'}")
    typer.echo(str(result.path))


@hub_app.command("info")
def hub_info(
    repo_id: str = typer.Argument(..., help="namespace/name"),
    endpoint: Optional[str] = EndpointOption,
    json_out: bool = JsonOption,
) -> None:
    """Show a repo's commit, tags and files (sizes, sha256)."""
    from rich.table import Table

    from provenir.adapters.hub import HubClient

    info = HubClient(endpoint=endpoint).model_info(repo_id)
    if json_out:
        print_json(info)
        return
    table = Table(title=f"{info['id']} @ {info['sha']}" + (" (private)" if info["private"] else ""))
    table.add_column("file")
    table.add_column("size", justify="right")
    table.add_column("sha256 / blob id", overflow="fold")
    for entry in info["files"]:
        table.add_row(entry["path"], str(entry["size"]), entry["sha256"] or entry["blob_id"] or "")
    console().print(table)
    console().print(f"tags: {', '.join(info['tags']) or '-'}")


@hub_app.command("verify")
def hub_verify(
    file: Path = typer.Argument(..., help="A downloaded file."),
    sha256: str = typer.Argument(..., help="The expected sha256 (64 hex characters)."),
) -> None:
    """Check a file's sha256 (streamed); exit 1 if it differs."""
    from provenir.adapters.hub import HubClient

    if HubClient().verify_hash(file, sha256):
        console().print(f"{file}: [bold green]sha256 matches[/]")
        return
    console().print(f"{file}: [bold red]sha256 differs[/]")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
    app.command("verify-merge")(verify_merge_command)
    app.add_typer(hub_app, name="hub")
