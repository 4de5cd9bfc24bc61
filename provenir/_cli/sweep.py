"""``provenir sweep``: PEFT sweeps on Ray Tune (see :mod:`provenir.distributed.sweep`).

``provenir sweep CONFIG`` runs one; ``provenir sweep --resume SWEEP_ID`` continues one whose driver
died; ``provenir sweep show SWEEP_ID`` prints its table (``--json``: the record).
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from provenir._cli._common import JsonOption, StoreOption, console, err_console, parse_overrides, print_json, store_root


def sweep(
    target: Optional[str] = typer.Argument(None, help="Sweep config (YAML), or `show` followed by a sweep id."),
    sweep_id: Optional[str] = typer.Argument(None, help="With `show`: the sweep to print."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue this sweep (its driver died or was stopped)."),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address."),
    set_: list[str] = typer.Option([], "--set", help="Override a key of the base run: --set max_steps=50."),
    store: Optional[str] = StoreOption,
    quiet: bool = typer.Option(False, "--quiet", help="No live table of trials."),
    json_out: bool = JsonOption,
) -> None:
    """Sweep PEFT settings on Ray Tune: each trial a trl run on Ray Train, stopped early by ASHA.

    Prints a live table of trials (status, steps, metric) while it runs, and the best trial at the
    end; `provenir sweep show SWEEP_ID` prints the table again. Works the same under
    `ray job submit -- provenir sweep CONFIG`.
    """
    from provenir.core.errors import ConfigError

    if target == "show":
        if not sweep_id:
            raise ConfigError("provenir sweep show: name the sweep: provenir sweep show SWEEP_ID")
        _show(sweep_id, store, json_out)
        return
    if sweep_id is not None:
        raise ConfigError(f"provenir sweep: unexpected argument {sweep_id!r} (to print a sweep: provenir sweep show ID)")
    if target is None and resume is None:
        raise ConfigError("provenir sweep: name a sweep config (provenir sweep CONFIG) or --resume SWEEP_ID")
    _run(target, resume, address, parse_overrides(set_), store, quiet, json_out)


def _run(target: str | None, resume: str | None, address: str | None, overrides: dict[str, Any],
         store: str | None, quiet: bool, json_out: bool) -> None:
    from provenir.core.errors import ConfigError
    from provenir.core.store import ArtifactStore
    from provenir.core.sweep_config import load_sweep
    from provenir.distributed.sweep import SWEEP_CONFIG, load_record, run_sweep

    root = str(Path(store_root(store)).resolve()) if "://" not in store_root(store) else store_root(store)
    artifacts = ArtifactStore(root)
    if resume:
        load_record(artifacts, resume)  # an unknown sweep: refused before anything else
        path = target or artifacts.path(resume, SWEEP_CONFIG)
    else:
        path = target
    spec = load_sweep(path, overrides)
    data = _prepare(spec)
    if resume:
        recorded = artifacts.load_manifest(resume).dataset_hash
        if recorded != data["dataset_hash"]:
            raise ConfigError(f"--resume {resume}: the training data changed since the sweep started "
                              f"(sha256 {recorded[:12]} vs {data['dataset_hash'][:12]}); resume with the same data")
    if not json_out:
        what = f"resuming {resume}" if resume else f"{spec.sweep.search} search"
        console().print(f"[bold]provenir sweep[/] {path} · {what} · metric {spec.sweep.metric} ({spec.sweep.mode}) · "
                        f"scheduler {spec.sweep.scheduler.type} · store {root}")
    on_update = None if (quiet or json_out) else functools.partial(_live_table, state={})
    outcome = run_sweep(
        spec, store=artifacts, plan_trial=functools.partial(_plan_trl_trial, prepared=data["prepared"],
                                                            method=spec.base.training.method),
        dataset_hash=data["dataset_hash"], inputs=data["inputs"], max_steps=data["max_steps"],
        command=sys.argv, address=address, resume_id=resume, on_update=on_update,
    )
    if json_out:
        print_json(outcome.record)
        return
    _print_table(outcome.record)
    _print_best(outcome.record, artifacts)


def _prepare(spec: Any) -> dict[str, Any]:
    """The data every trial trains on: governance and curation as `provenir train` applies them,
    then tokenized once (trials vary no key that changes it)."""
    from provenir.core.config import DistributedConfig
    from provenir.core.run import describe_input
    from provenir.data.dataset import JsonlDataset
    from provenir.pipeline import prepare_training_data
    from provenir.train.backends.trl import check_quantization, planned_steps, prepare

    base = spec.base
    inputs = {"train": describe_input(base.data.train_path), "eval": describe_input(base.data.eval_path)}
    train = JsonlDataset.from_jsonl(base.data.train_path).map_fields(base.data.fields)
    evaluation = JsonlDataset.from_jsonl(base.data.eval_path).map_fields(base.data.fields)
    check_quantization(base)
    curated = prepare_training_data(base, train, evaluation)
    inputs["train"]["prepared"] = curated.report
    # prepare() maps the fields itself: hand it the records under their canonical names already
    plain = base.model_copy(update={"data": base.data.model_copy(update={"fields": {}})})
    prepared = prepare(base.training.method, plain, curated.dataset, evaluation)
    workers = spec.sweep.resources.workers
    trial = base.model_copy(update={"distributed": DistributedConfig(strategy="ddp", num_gpus=workers)})
    return {"prepared": prepared, "inputs": inputs, "dataset_hash": inputs["train"]["sha256"],
            "max_steps": planned_steps(len(prepared["train"]), trial, workers)}


def _plan_trl_trial(config: Any, workdir: Path, *, prepared: dict[str, Any], method: str) -> Any:
    """One trial as the trl backend trains it on Ray Train: its worker loop and loop config."""
    from provenir.distributed.sweep import TrialPlan
    from provenir.train.backends._trl import dpo, sft
    from provenir.train.backends._trl.outputs import ADAPTER_DIR, CHECKPOINT_DIR, METRICS_FILE
    from provenir.train.backends.trl import build_loop_config

    workdir = Path(workdir)
    loop_config = build_loop_config(
        method, config, prepared, output_dir=str(workdir / CHECKPOINT_DIR / "hf"),
        adapter_dir=str(workdir / ADAPTER_DIR), metrics_path=str(workdir / METRICS_FILE),
    )
    loop_config["init_adapter"] = None
    loop = {"sft": sft.worker_loop, "dpo": dpo.worker_loop}[method]
    return TrialPlan(loop, loop_config, adapter_dir=str(workdir / ADAPTER_DIR),
                     metrics_path=str(workdir / METRICS_FILE), checkpoint_dir=str(workdir / CHECKPOINT_DIR / "ray"))


# -- output ---------------------------------------------------------------------------------------


def rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The table of a sweep record: one row per trial (index, params, status, steps, metric)."""
    best = (record.get("best") or {}).get("index")
    out = []
    for trial in record["trials"]:
        out.append({
            "trial": trial["index"], **{k: trial["params"].get(k) for k in record["search_space"]},
            "status": trial["status"], "steps": trial["steps"],
            "evaluations": len(trial["history"]), record["metric"]: trial["value"],
            "best": trial["index"] == best, "run_id": trial["run_id"],
        })
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bool):
        return "★" if value else ""
    return "-" if value is None else str(value)


def _print_table(record: dict[str, Any], stream: Any = None) -> None:
    from rich.table import Table

    table = Table(title=f"sweep {record['sweep_id']} · {record['status']}")
    columns = ["trial", *record["search_space"], "status", "steps", record["metric"], "best", "run_id"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows(record):
        steps = f"{row['steps']}/{record['max_steps']}"
        table.add_row(*[steps if c == "steps" else _cell(row[c]) for c in columns])
    (stream or console()).print(table)


def _print_best(record: dict[str, Any], store: Any) -> None:
    best = record.get("best")
    out = console()
    if not best:
        out.print("[yellow]no trial completed: no best configuration[/]")
        return
    saved = (record.get("scheduler") or {}).get("rungs_steps")
    total = sum(t["steps"] for t in record["trials"])
    full = record["max_steps"] * len(record["trials"])
    out.print(f"best trial {best['index']}: {record['metric']} {best['value']:.4g} · run {best['run_id']}")
    out.print(f"  params {best['params']} · adapter sha256 {best.get('adapter_sha256')}")
    out.print(f"  trial-steps {total}/{full} of the full grid" + (f" (ASHA rungs at steps {saved})" if saved else ""))
    out.print(f"  best config: {store.path(record['sweep_id'], best['config'])}")
    out.print(f"  continue: provenir rlaif CONFIG --from {best['run_id']} · "
              f"provenir merge {store.path(best['run_id'], 'adapter')} OTHER_ADAPTER --out MERGED")


def _live_table(record: dict[str, Any], state: dict[str, Any]) -> None:
    """On the driver: a line per new evaluation, the whole table when a trial starts or ends."""
    out = err_console()
    statuses = {t["index"]: t["status"] for t in record["trials"]}
    seen = state.setdefault("seen", {})
    for trial in record["trials"]:
        count = len(trial["history"])
        if count > seen.get(trial["index"], 0):
            last = trial["history"][-1]
            out.print(f"trial {trial['index']:>2} · step {last['step']}/{record['max_steps']} · "
                      f"{record['metric']} {last['value']:.4f}", highlight=False)
        seen[trial["index"]] = count
    if statuses != state.get("statuses") and time.monotonic() - state.get("printed", 0.0) >= 0.0:
        state["statuses"], state["printed"] = statuses, time.monotonic()
        _print_table(record, out)


def _show(sweep_id: str, store: str | None, json_out: bool) -> None:
    from provenir.core.store import ArtifactStore
    from provenir.distributed.sweep import load_record

    artifacts = ArtifactStore(store_root(store))
    record = load_record(artifacts, sweep_id)
    if json_out:
        print_json({**record, "table": rows(record)})
        return
    _print_table(record)
    if record["status"] == "completed":
        _print_best(record, artifacts)
    else:
        console().print(f"[yellow]sweep {record['status']}[/]: continue it with provenir sweep --resume {sweep_id}")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
