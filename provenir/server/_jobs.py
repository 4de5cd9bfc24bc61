"""What each ``POST /jobs/{kind}`` body says, and the ``provenir`` command line it becomes.

Every kind is parsed and checked here, at the edge (a bad field is a 422 naming it, before anything
is submitted); what runs on Ray is the command a user would type, reading its inputs from the job's
folder in the store (:mod:`provenir.distributed.jobs`). Relative paths in a body are taken from the
server's working folder, as they were when jobs ran inside the API process.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from provenir.distributed.jobs import JobSpec

_Path = Annotated[str, Field(min_length=1, max_length=512)]


class TrainJobRequest(BaseModel):
    """A training job: a full run config (as the YAML would give it) and optional parent runs.

    ``resume`` continues a stopped or failed run of the same config and data under its own id
    (``provenir train --resume``).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    config: dict[str, Any]
    provenance: list[str] = Field(default_factory=list)
    resume: str | None = Field(default=None, max_length=200)


class SweepJobRequest(BaseModel):
    """A sweep (``provenir sweep``): a run config with its ``sweep:`` section, as the YAML would give
    it; ``resume`` continues a sweep whose driver died, without rerunning its ended trials."""

    model_config = ConfigDict(extra="forbid", strict=True)

    config: dict[str, Any]
    resume: str | None = Field(default=None, max_length=200)


class RLAIFJobRequest(BaseModel):
    """An RLAIF job (``provenir rlaif``): each iteration's DPO run config and the loop's settings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    config: dict[str, Any]
    judge: Literal["stub", "anthropic", "openai"] = "stub"
    judge_model: str | None = Field(default=None, max_length=200)
    judge_base_url: str | None = Field(default=None, max_length=2000)
    iterations: int = Field(default=3, ge=1, le=100)
    responses_per_prompt: int = Field(default=4, ge=2, le=64)
    tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    primary_metric: str = Field(default="exact_match", max_length=200)
    max_prompts: int | None = Field(default=None, ge=1, le=1_000_000)
    start: str | None = Field(default=None, max_length=200, description="Start from this run's adapter.")


class ScanJobRequest(BaseModel):
    """A PII and secret scan (``provenir scan``) of files or folders the cluster's nodes can read.

    The report goes to the job's folder (``report.json``); with ``mask`` the masked copy too
    (``masked/``).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    data: list[_Path] = Field(min_length=1, max_length=256)
    mask: bool = False
    pseudonym: bool = False
    allow_secrets: bool = False
    pii: bool = True
    secrets: bool = True
    ner: Literal["auto", "presidio", "none"] = "auto"
    region: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(default_factory=lambda: ["US"], min_length=1,
                                                                     max_length=50)
    ray: bool = Field(default=False, description="Scan on Ray Data (the job's own cluster).")
    workers: int = Field(default=2, ge=1, le=256)
    keep_examples: bool = False


class EvalJobRequest(BaseModel):
    """An evaluation job (``provenir eval``): an eval config as the YAML would give it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    config: dict[str, Any]


def _absolute(path: str | None) -> str | None:
    """A relative local path made absolute against the server's working folder; URIs unchanged."""
    if not path or "://" in path or os.path.isabs(path):
        return path
    return os.path.abspath(path)


def _run_config_data(config: Any) -> dict[str, Any]:
    """A run config as the job's YAML: data paths, and a model folder here, made absolute."""
    data = config.model_dump(mode="json")
    for key in ("train_path", "eval_path"):
        data["data"][key] = _absolute(data["data"].get(key))
    model = data.get("model_name_or_path")
    if model and os.path.exists(model):
        data["model_name_or_path"] = _absolute(model)
    return data


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True)


def train_spec(config: Any, request: TrainJobRequest, store_root: str, provenance: list[str]) -> JobSpec:
    """``provenir train {job_dir}/config.yaml --store STORE --json --quiet [--parent …] [--resume …]``."""
    text = _yaml(_run_config_data(config))
    args = ["train", "{job_dir}/config.yaml", "--store", store_root, "--json", "--quiet"]
    for parent in provenance:
        args += ["--parent", parent]
    if request.resume:
        args += ["--resume", request.resume]
    return JobSpec("train", config.name, tuple(args), {"config.yaml": text}, text)


def sweep_yaml(config: Any, section: dict[str, Any]) -> str:
    """The sweep file a job runs: the base run (paths made absolute) and its ``sweep:`` section."""
    return _yaml(_run_config_data(config) | {"sweep": section})


def sweep_spec(config: Any, section: dict[str, Any], request: SweepJobRequest, store_root: str) -> JobSpec:
    """``provenir sweep {job_dir}/sweep.yaml --store STORE --json --quiet [--resume SWEEP_ID]``."""
    text = sweep_yaml(config, section)
    args = ["sweep", "{job_dir}/sweep.yaml", "--store", store_root, "--json", "--quiet"]
    if request.resume:
        args += ["--resume", request.resume]
    return JobSpec("sweep", config.name, tuple(args), {"sweep.yaml": text}, text, num_cpus=0.1)


def rlaif_spec(config: Any, request: RLAIFJobRequest, store_root: str) -> JobSpec:
    """``provenir rlaif {job_dir}/config.yaml --store STORE --json --judge … --iterations …``."""
    text = _yaml(_run_config_data(config))
    args = ["rlaif", "{job_dir}/config.yaml", "--store", store_root, "--json", "--judge", request.judge,
            "--iterations", str(request.iterations), "--responses-per-prompt", str(request.responses_per_prompt),
            "--tolerance", repr(request.tolerance), "--primary-metric", request.primary_metric]
    for flag, value in (("--judge-model", request.judge_model), ("--judge-base-url", request.judge_base_url),
                        ("--max-prompts", request.max_prompts), ("--from", request.start)):
        if value is not None:
            args += [flag, str(value)]
    return JobSpec("rlaif", config.name, tuple(args), {"config.yaml": text}, text)


def scan_spec(request: ScanJobRequest) -> JobSpec:
    """``provenir scan DATA… --report {job_dir}/report.json --json [--mask {job_dir}/masked] …``."""
    data = [_absolute(d) or d for d in request.data]
    args = ["scan", *data, "--report", "{job_dir}/report.json", "--json", "--ner", request.ner,
            "--workers", str(request.workers)]
    for region in request.region:
        args += ["--region", region]
    for flag, on in (("--pseudonym", request.pseudonym), ("--allow-secrets", request.allow_secrets),
                     ("--no-pii", not request.pii), ("--no-secrets", not request.secrets),
                     ("--ray", request.ray), ("--keep-examples", request.keep_examples)):
        if on:
            args.append(flag)
    if request.mask:
        args += ["--mask", "{job_dir}/masked"]
    text = _yaml(request.model_dump(mode="json") | {"data": data})
    return JobSpec("scan", "scan", tuple(args), {"scan.yaml": text}, text)


def eval_spec(config: Any) -> JobSpec:
    """``provenir eval {job_dir}/eval.yaml --json``."""
    data = config.model_dump(mode="json")
    for key in ("dataset", "predictions", "baseline"):
        data[key] = _absolute(data.get(key))
    text = _yaml(data)
    return JobSpec("eval", "eval", ("eval", "{job_dir}/eval.yaml", "--json"), {"eval.yaml": text}, text,
                   num_cpus=0.5)
