"""Every YAML shipped in ray_jobs/ and cluster/ loads and validates.

* ``ray_jobs/*.yaml`` run configs: through ``RunConfig.from_yaml`` (data files must exist);
  ``runtime_env.yaml``: through Ray's own ``RuntimeEnv`` validation;
* ``cluster/*.yaml`` cluster-launcher configs: against Ray's JSON schema and its config check;
* ``cluster/kuberay/*.yaml``: Kubernetes objects with the fields KubeRay needs;
* the commands in ``ray_jobs/README.md`` name files that exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from provenir.core.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
RAY_JOBS = REPO / "ray_jobs"
CLUSTER = REPO / "cluster"
RUN_CONFIGS = sorted(p for p in RAY_JOBS.glob("*.yaml") if p.name != "runtime_env.yaml")
LAUNCHER_CONFIGS = sorted(CLUSTER.glob("*.yaml"))
KUBERAY = sorted((CLUSTER / "kuberay").glob("*.yaml"))


def test_something_is_shipped():
    assert len(RUN_CONFIGS) >= 4 and len(LAUNCHER_CONFIGS) >= 2 and len(KUBERAY) >= 2
    assert {p.name for p in LAUNCHER_CONFIGS} >= {"aws-gpu.yaml", "gcp-gpu.yaml"}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_ray_job_run_configs_validate(path):
    config = RunConfig.from_yaml(path)
    assert config.backend == "trl"
    assert config.distributed is not None and config.distributed.strategy in ("ddp", "fsdp", "deepspeed")
    assert config.distributed.max_failures >= 1, "cluster jobs should survive a lost worker"
    assert config.training.save_steps > 0, "restarts need periodic checkpoints"
    for data_path in (config.data.train_path, config.data.eval_path):
        assert data_path and Path(data_path).is_file(), data_path
    if config.distributed.strategy == "deepspeed":
        assert config.distributed.use_gpu is True


def test_runtime_env_is_valid_for_ray():
    from ray.runtime_env import RuntimeEnv

    raw = yaml.safe_load((RAY_JOBS / "runtime_env.yaml").read_text())
    env = RuntimeEnv(**raw)
    assert env["working_dir"] == "."
    assert ".venv" in raw["excludes"]
    assert all(isinstance(v, str) for v in raw["env_vars"].values())


def test_readme_submit_commands_name_existing_files():
    text = (RAY_JOBS / "README.md").read_text()
    commands, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("ray job submit"):
            command = [line]
            while command[-1].endswith("\\"):
                i += 1
                command.append(lines[i])
            commands.append(" ".join(part.rstrip("\\") for part in command))
    assert len(commands) >= 4
    named = set()
    for command in commands:
        for token in shlex.split(command):
            for piece in re.findall(r"(?:ray_jobs|cluster)/[\w./-]+\.ya?ml", token):
                named.add(piece)
    assert named >= {f"ray_jobs/{p.name}" for p in RUN_CONFIGS} | {"ray_jobs/runtime_env.yaml"}
    for piece in named:
        assert (REPO / piece).is_file(), piece


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_cluster_launcher_configs_validate(path):
    import json

    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "max_workers"):
        assert key in raw, key
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    validate_config(prepare_config(raw))
    assert raw["provider"]["type"] in ("aws", "gcp")
    assert raw["head_node_type"] in raw["available_node_types"]
    gpu_types = {n: t for n, t in raw["available_node_types"].items() if t.get("resources", {}).get("GPU")}
    assert gpu_types, "a GPU worker type is expected"
    for node_type in gpu_types.values():
        assert node_type["min_workers"] == 0 < node_type["max_workers"]  # autoscaling from zero
    assert sum(t["max_workers"] for t in gpu_types.values()) <= raw["max_workers"]


def _k8s_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _check_ray_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"]
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifests_are_well_formed(path):
    docs = _k8s_docs(path)
    assert docs
    for doc in docs:
        for key in ("apiVersion", "kind", "metadata", "spec"):
            assert key in doc, f"{path.name}: {key}"
        assert doc["metadata"]["name"]
        if doc["kind"] == "RayCluster":
            assert doc["apiVersion"] == "ray.io/v1"
            assert doc["spec"]["enableInTreeAutoscaling"] is True
            _check_ray_cluster_spec(doc["spec"])
        elif doc["kind"] == "RayJob":
            assert doc["apiVersion"] == "ray.io/v1"
            entry = shlex.split(doc["spec"]["entrypoint"])
            assert entry[:3] == ["python", "-m", "provenir.cli"] and entry[3] in ("train", "run")
            assert (REPO / entry[4]).is_file()
            RunConfig.from_yaml(REPO / entry[4])
            _check_runtime_env(yaml.safe_load(doc["spec"]["runtimeEnvYAML"]))
            _check_ray_cluster_spec(doc["spec"]["rayClusterSpec"])
        elif doc["kind"] == "RayService":
            assert doc["apiVersion"] == "ray.io/v1"
            _check_serve_config(yaml.safe_load(doc["spec"]["serveConfigV2"]))
            _check_ray_cluster_spec(doc["spec"]["rayClusterConfig"])
            head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
            token = {e["name"]: e for e in head.get("env", [])}["PROVENIR_API_TOKEN"]
            assert "secretKeyRef" in token["valueFrom"], "the API token comes from a Secret, not the manifest"
        else:
            assert doc["kind"] == "PersistentVolumeClaim"


def _check_runtime_env(raw: dict) -> None:
    from ray.runtime_env import RuntimeEnv

    raw = dict(raw)
    working_dir = raw.pop("working_dir", None)  # a path inside the image: checked there, not here
    assert working_dir is None or working_dir.startswith("/")
    RuntimeEnv(**raw)  # Ray's own validation of the rest
    assert all(isinstance(v, str) for v in raw.get("env_vars", {}).values())


def _check_serve_config(raw: dict) -> None:
    """Ray Serve's own schema (what ``serve deploy`` and KubeRay's serveConfigV2 accept), and every
    application's import path resolves to a builder that accepts its args."""
    import importlib

    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(raw) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(raw)
    assert schema.applications
    for app in raw["applications"]:
        module, _, name = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), name)
        assert callable(builder)
        known = {"store_root", "api_token", "audit_dir", "num_replicas", "num_cpus", "ray_address", "max_body_bytes"}
        assert set(app.get("args", {})) <= known, set(app.get("args", {})) - known
        assert "api_token" not in app.get("args", {}), "tokens belong in a Secret, not in the manifest"


def test_serve_config_file_is_valid():
    _check_serve_config(yaml.safe_load((REPO / "serve" / "config.yaml").read_text()))


def test_kuberay_covers_the_main_job_and_the_api():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for path in KUBERAY for doc in _k8s_docs(path)}
    assert {("RayJob", "provenir-main-job"), ("RayService", "provenir-api"), ("RayCluster", "provenir"),
            ("PersistentVolumeClaim", "provenir-storage")} <= kinds, kinds
    main = next(doc for doc in _k8s_docs(CLUSTER / "kuberay" / "rayjob-main.yaml") if doc["kind"] == "RayJob")
    assert shlex.split(main["spec"]["entrypoint"])[3] == "run"
    config = RunConfig.from_yaml(REPO / shlex.split(main["spec"]["entrypoint"])[4])
    assert config.governance.secrets == "block" and config.governance.pii == "mask"
    assert config.curation.decontamination != "off" and config.distributed is not None
    dockerfile = (CLUSTER / "kuberay" / "Dockerfile").read_text()
    assert "ARG RAY_IMAGE=" in dockerfile and "FROM ${RAY_IMAGE}" in dockerfile and "constraints.txt" in dockerfile
