"""Training commands: ``train`` (a config, resumable, local or on Ray), ``demo``, ``tiny-model``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from provenir._cli._common import JsonOption, StoreOption, console, parse_overrides, print_json, stopped_exit

#: the demo config that ships with Provenir (in its source tree), what `provenir demo` trains
BUNDLED_DEMO_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def train(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue this stopped or failed run (same config and data) under its own run id."
    ),
    address: Optional[str] = typer.Option(
        None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address for distributed training."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set max_steps=50."),
    parent: list[str] = typer.Option([], "--parent", help="Parent run id (recorded as provenance)."),
    store: Optional[str] = StoreOption,
    quiet: bool = typer.Option(False, "--quiet", help="No per-step progress lines."),
    json_out: bool = JsonOption,
) -> None:
    """Train as CONFIG says (SFT or DPO, stub or trl backend); print the manifest and verification.

    Works the same under `ray job submit -- provenir train CONFIG`. Ctrl-C or SIGTERM stops the
    run (exit 130 or 143) and prints the command that continues it.
    """
    from provenir._cli.core import _print_manifest, _print_verification
    from provenir.core.config import RunConfig
    from provenir.core.store import ArtifactStore
    from provenir.pipeline import run_job
    from provenir.train._stop import TrainingStopped

    cfg = RunConfig.from_yaml(config, overrides=parse_overrides(set_))
    root = store or cfg.store_root
    if not json_out:
        where = f" · ray={address}" if address and cfg.distributed else ""
        what = f"resuming {resume}" if resume else cfg.training.method
        console().print(f"[bold]provenir train[/] {config} · {what} · backend={cfg.backend} · store={root}{where}")
    extra: dict[str, Any] = {"progress": not quiet and not json_out}
    if resume:
        extra["resume_run_id"] = resume
    if address:
        extra["address"] = address
    try:
        result = run_job(cfg, provenance=parent, store=ArtifactStore(root), command=sys.argv, extra=extra)
    except TrainingStopped as stop:
        ray = address if cfg.distributed else None
        raise stopped_exit(stop, _resume_command(config, set_, store, ray, stop.run_id)) from None
    if json_out:
        print_json({"manifest": result.training.manifest.to_dict(), "verification": result.verification.to_dict()})
    else:
        _print_manifest(result.training.manifest)
        _print_verification(result.verification)
    if not result.verification.ok:
        raise typer.Exit(1)


def _resume_command(
    config: Path, overrides: list[str], store: str | None, address: str | None, run_id: str
) -> str:
    """The exact ``provenir train`` command line that continues ``run_id``."""
    words = ["provenir", "train", str(config)]
    for item in overrides:
        words += ["--set", item]
    if store:
        words += ["--store", store]
    if address:
        words += ["--address", address]
    return shlex.join([*words, "--resume", run_id])


def demo(
    config: Optional[Path] = typer.Option(
        None, "--config",
        help="Demo config YAML. Default: the demo config that ships with Provenir (its examples/demo.yaml, "
        "never one in the current folder).",
    ),
    store: Optional[str] = StoreOption,
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set max_steps=100."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-step progress lines."),
    json_out: bool = JsonOption,
) -> None:
    """Build the tiny model, measure exact match, train with LoRA, measure again, verify the run.

    Without --config it always trains the demo that ships with Provenir, wherever it is run from.
    """
    from provenir._cli._common import store_root
    from provenir._cli.core import _print_manifest, _print_verification
    from provenir.core.config import RunConfig
    from provenir.core.errors import ConfigError
    from provenir.core.store import ArtifactStore
    from provenir._demo import run_demo, tiny_model_for_store
    from provenir.train._stop import TrainingStopped

    path = config or BUNDLED_DEMO_CONFIG
    if not path.is_file():
        where = "the demo config" if config else "the bundled demo config (it ships in Provenir's source tree)"
        raise ConfigError(f"{path}: {where} not found; pass --config PATH to a demo config")
    root = store_root(store)
    overrides = parse_overrides(set_)
    probe = RunConfig.from_yaml(path, overrides=overrides)
    if not probe.model_name_or_path:
        overrides["model_name_or_path"] = str(tiny_model_for_store(root, seed=0))
    cfg = RunConfig.from_yaml(path, overrides=overrides)
    out = console()
    if not json_out:
        out.print(f"[bold]provenir demo[/] · config {path} · model {cfg.model_name_or_path} · store {root}")
    try:
        result = run_demo(cfg, store=ArtifactStore(root), command=sys.argv, progress=not quiet and not json_out)
    except TrainingStopped as stop:
        sets = set_ if probe.model_name_or_path else [*set_, f"model_name_or_path={cfg.model_name_or_path}"]
        raise stopped_exit(stop, _resume_command(path, sets, root, None, stop.run_id)) from None
    before, after, job = result["before"], result["after"], result["job"]
    if json_out:
        print_json({
            "run_id": job.run_id,
            "exact_match_before": before.exact_match,
            "exact_match_after": after.exact_match,
            "exact_match_after_ci": [after.ci_lower, after.ci_upper],
            "metrics": job.training.metrics,
            "verification": job.verification.to_dict(),
        })
    else:
        out.print(f"eval exact match before training: [bold]{before.exact_match:.2f}[/] (n={before.n})")
        out.print(
            f"eval exact match after training:  [bold green]{after.exact_match:.2f}[/] "
            f"(95% CI {after.ci_lower:.2f}–{after.ci_upper:.2f}, n={after.n})"
        )
        for instruction, ref, pred in after.examples:
            out.print(f"  {instruction!r} → {pred!r} (expected {ref!r})", markup=False)
        out.print(f"run {job.run_id} · adapter {job.training.adapter_path}")
        _print_manifest(job.training.manifest)
        _print_verification(job.verification)
    if not job.verification.ok:
        raise typer.Exit(1)


def tiny_model(
    output_dir: Path = typer.Argument(..., help="Where to write the model directory."),
    seed: int = typer.Option(0, help="Weight-initialisation seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a folder holding another model."),
) -> None:
    """Build the tiny random-init Llama + local BPE tokenizer used by the demo and tests.

    Building again with the same seed into the same folder reuses it (same bytes)."""
    from provenir.train.tiny import build_tiny_model

    path = build_tiny_model(output_dir, seed=seed, replace=overwrite)
    console().print(f"tiny model ready: {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("demo")(demo)
    app.command("tiny-model")(tiny_model)
