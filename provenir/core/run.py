"""A run's life in the store (start, finish, fail) and its verification.

:class:`RunRecorder` is what every backend uses: it checks the parent runs, hashes the base model
into ``inputs["model"]``, allocates the run id, writes ``config.yaml`` and a ``running`` manifest,
gives the backend a local working folder, and on :meth:`finish` hashes every artifact into the
manifest. :func:`verify_run` recomputes the config, dataset, model and artifact hashes, checks the
parents, the seed and the metrics, and names each mismatch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenir.core.abstractions import RunManifest, environment_info, git_sha, utc_timestamp
from provenir.core.config import RunConfig, config_hash
from provenir.core.errors import ConfigError, DataError, ManifestError, NotFoundError, ProvenirError
from provenir.core.hashing import sha256_bytes, sha256_file, sha256_tree
from provenir.core.jsonl import hash_jsonl
from provenir.core.store import MANIFEST_NAME, METRICS_RECORD_NAME, ArtifactStore, validate_run_id

CONFIG_NAME = "config.yaml"
#: Metrics files backends write into the run folder (trl: ``train_metrics.json``; stub:
#: ``metrics.json``, its loss curve). Keys they share with the manifest's metrics must agree.
BACKEND_METRICS_FILES = ("train_metrics.json", "metrics.json")
#: Per-file hashes are kept in ``inputs["model"]["file_sha256"]`` up to this many files.
MODEL_FILE_HASHES_MAX = 1000
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def describe_input(path: str | Path) -> dict[str, Any]:
    """``{"path", "sha256", "records"}`` for a JSONL file, hashed while streaming."""
    digest, count = hash_jsonl(path)
    return {"path": str(path), "sha256": digest, "records": count}


def _hub_cache_dir() -> Path:
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return Path(os.environ[key]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hub_cache_revision(repo_id: str) -> str | None:
    """The commit the local Hugging Face cache resolves ``repo_id`` to (``refs/main``), if cached."""
    if not _HUB_ID.match(repo_id) or ".." in repo_id:
        return None
    ref = _hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    try:
        revision = ref.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None


def describe_model(name_or_path: str) -> dict[str, Any]:
    """What ``inputs["model"]`` records about a run's base model.

    A local folder (resolved against the working directory, as the backends load it) is recorded
    with its absolute ``path`` and a ``sha256`` over its files (:func:`~provenir.core.hashing.sha256_tree`),
    the file count, the bytes and, up to :data:`MODEL_FILE_HASHES_MAX` files, each file's sha256;
    ``verify_run`` recomputes it. A local file is hashed as it is. Anything else is a hub id
    (``sha256`` null): the commit the local Hugging Face cache resolves it to is recorded as
    ``revision`` when the model is cached, and ``note`` says what was and was not pinned.

    Example:
        >>> describe_model("org/not-cached")["sha256"] is None
        True
    """
    path = Path(name_or_path).expanduser()
    try:
        return _describe_local_model(name_or_path, path)
    except OSError as exc:
        raise ConfigError(f"model_name_or_path: cannot hash {path} ({exc})") from None


def _describe_local_model(name_or_path: str, path: Path) -> dict[str, Any]:
    if path.is_dir():
        digest, files, size = sha256_tree(path)
        info: dict[str, Any] = {
            "kind": "local_dir", "name": name_or_path, "path": str(path.resolve()), "sha256": digest,
            "files": len(files), "bytes": size,
        }
        if len(files) <= MODEL_FILE_HASHES_MAX:
            info["file_sha256"] = files
        return info
    if path.is_file():
        return {
            "kind": "local_file", "name": name_or_path, "path": str(path.resolve()),
            "sha256": sha256_file(path), "files": 1, "bytes": path.stat().st_size,
        }
    revision = hub_cache_revision(name_or_path)
    note = (
        f"hub id resolved from the local Hugging Face cache at commit {revision}; weights not hashed"
        if revision
        else "not a local folder and not in the local Hugging Face cache: recorded by id only, "
        "not verifiable; use a local model folder to have it hashed"
    )
    return {"kind": "hub", "id": name_or_path, "revision": revision, "sha256": None, "note": note}


def _model_changes(recorded: dict[str, str], actual: dict[str, str]) -> str:
    parts = []
    for label, names in (
        ("changed", sorted(k for k in recorded.keys() & actual.keys() if recorded[k] != actual[k])),
        ("added", sorted(actual.keys() - recorded.keys())),
        ("removed", sorted(recorded.keys() - actual.keys())),
    ):
        if names:
            shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _check_model(name: str, info: dict[str, Any]) -> Check:
    kind, path, expected = info.get("kind"), info.get("path"), info.get("sha256")
    if kind == "hub" or expected is None:
        revision = info.get("revision")
        detail = f"hub model {info.get('id')}" + (f" at commit {revision}" if revision else "")
        return Check(name, True, detail=f"{detail}: not hashed locally, nothing to recompute")
    target = Path(str(path))
    if not target.exists():
        what = "folder" if kind == "local_dir" else "file"
        return Check(name, False, expected, None,
                     f"{path}: the model {what} no longer exists; restore it to verify this run")
    try:
        if kind == "local_file":
            digest, files = sha256_file(target), None
        else:
            digest, files, _ = sha256_tree(target)
    except OSError as exc:
        return Check(name, False, expected, None, f"{path}: cannot hash the model ({exc})")
    if digest == expected:
        return Check(name, True, expected, digest, path)
    changes = _model_changes(info["file_sha256"], files) if files is not None and isinstance(
        info.get("file_sha256"), dict) else ""
    return Check(name, False, expected, digest,
                 f"{path}: the base model changed since the run" + (f" ({changes})" if changes else ""))


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _metric_differences(manifest: dict[str, Any], recorded: dict[str, Any], *, both_ways: bool) -> list[str]:
    names = manifest.keys() | recorded.keys() if both_ways else manifest.keys() & recorded.keys()
    out = []
    for key in sorted(names):
        if key not in recorded:
            out.append(f"{key} (manifest {manifest[key]!r}, not recorded)")
        elif key not in manifest:
            out.append(f"{key} (missing from the manifest, recorded {recorded[key]!r})")
        elif not _same(manifest[key], recorded[key]):
            out.append(f"{key} (manifest {manifest[key]!r}, recorded {recorded[key]!r})")
    return out


def _check_metrics(store: ArtifactStore, manifest: RunManifest) -> list[Check]:
    if not isinstance(manifest.metrics, dict):
        return [Check("metrics", False, detail="the manifest's metrics are not a {name: value} object")]
    checks = []
    sources = [(METRICS_RECORD_NAME, True)] + [(rel, False) for rel in BACKEND_METRICS_FILES]
    for rel, both_ways in sources:
        if rel not in manifest.artifacts or not store.exists(manifest.run_id, rel):
            continue  # missing files are named by the artifact checks
        name = f"metrics:{rel}"
        try:
            recorded = json.loads(store.read_text(manifest.run_id, rel))
        except (ProvenirError, ValueError) as exc:
            checks.append(Check(name, False, detail=f"cannot read {rel} ({exc})"))
            continue
        if not isinstance(recorded, dict):
            continue  # not a {name: value} metrics file: nothing to compare
        diffs = _metric_differences(manifest.metrics, recorded, both_ways=both_ways)
        if diffs:
            detail = f"the manifest's metrics differ from {rel}: " + "; ".join(diffs)
        elif both_ways or manifest.metrics.keys() & recorded.keys():
            detail = f"the manifest's metrics match {rel}"
        else:
            detail = f"{rel} shares no metric names with the manifest: nothing to compare"
        checks.append(Check(name, not diffs, detail=detail))
    return checks


class RunRecorder:
    """Records one run in an :class:`ArtifactStore`.

    Example:
        >>> from provenir.core.config import RunConfig
        >>> rec = RunRecorder(ArtifactStore("memory://doc-runs"), RunConfig(name="doc"),
        ...                   dataset_hash="0" * 64)
        >>> _ = (rec.workdir / "weights.txt").write_text("w")
        >>> rec.finish({"loss": 0.5}).status
        'completed'
    """

    def __init__(
        self,
        store: ArtifactStore,
        config: RunConfig,
        *,
        dataset_hash: str,
        inputs: dict[str, Any] | None = None,
        provenance: list[str] | tuple[str, ...] = (),
        command: list[str] | None = None,
        run_id: str | None = None,
    ) -> None:
        provenance = store.check_parents(provenance)
        if run_id is not None and validate_run_id(run_id) in provenance:
            raise ConfigError(f"provenance: run {run_id} cannot be its own parent")
        inputs = dict(inputs or {})
        if config.model_name_or_path and "model" not in inputs:
            inputs["model"] = describe_model(config.model_name_or_path)
        if run_id is not None and "model" in inputs:
            self._check_same_model(store, run_id, inputs["model"])
        self.store = store
        self.config = config
        self.run_id = validate_run_id(run_id) if run_id else store.new_run_id(config.name)
        local = store.local_run_dir(self.run_id)
        self._staging = local is None
        self.workdir = Path(tempfile.mkdtemp(prefix="provenir-run-")) if local is None else local
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.manifest = RunManifest(
            run_id=self.run_id,
            config_hash=config_hash(config),
            dataset_hash=dataset_hash,
            git_sha=git_sha(),
            seed=config.seed,
            timestamp=utc_timestamp(),
            provenance=list(provenance),
            config=config.model_dump(mode="json"),
            environment=environment_info(),
            command=list(command if command is not None else sys.argv),
            status="running",
            inputs=inputs,
        )
        store.write_text(self.run_id, CONFIG_NAME, config.to_yaml())
        store.save_manifest(self.manifest)

    @staticmethod
    def _check_same_model(store: ArtifactStore, run_id: str, model: dict[str, Any]) -> None:
        """A resumed run must continue from the base model it started with."""
        try:
            before = store.load_manifest(run_id).inputs.get("model")
        except ProvenirError:
            return  # a new run under a given id, or one the backend's own checks reject
        if isinstance(before, dict) and before.get("sha256") and before.get("sha256") != model.get("sha256"):
            raise ConfigError(
                f"run {run_id}: the base model changed since the run started (sha256 "
                f"{str(before['sha256'])[:12]} vs {str(model.get('sha256'))[:12]}); "
                "resume with the same model"
            )

    def _sync(self) -> None:
        if self._staging:
            for file in sorted(self.workdir.rglob("*")):
                if file.is_file():
                    self.store.put_file(self.run_id, file.relative_to(self.workdir).as_posix(), file)

    def finish(self, metrics: dict[str, Any] | None = None, status: str = "completed") -> RunManifest:
        """Upload staged files (remote stores), hash every artifact, save the final manifest."""
        self._sync()
        self.manifest.metrics.update(metrics or {})
        self.manifest.status = status
        self.manifest.artifacts = self.store.hash_artifacts(self.run_id)
        self.store.save_manifest(self.manifest)
        if self._staging:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.manifest

    def fail(self, error: BaseException) -> RunManifest:
        """Mark the run failed (the error's message goes into its metrics as ``error``)."""
        return self.finish({"error": f"{type(error).__name__}: {error}"}, status="failed")


@dataclass
class Check:
    """One verification check: what was recorded, what was found, and whether they agree."""

    name: str
    ok: bool
    expected: str | None = None
    actual: str | None = None
    detail: str = ""


@dataclass
class VerificationReport:
    run_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "checks": [c.__dict__ for c in self.checks],
        }


def verify_run(store: ArtifactStore, run_id: str) -> VerificationReport:
    """Recompute every hash a manifest records and compare.

    Checks: the manifest parses and names its own run; ``config_hash`` matches the recorded config;
    ``config.yaml`` holds that config; ``seed`` is the config's seed; each direct parent in
    ``provenance`` is in the store; each recorded input file still hashes to its recorded sha256
    (a local base model folder is re-hashed file by file) and ``dataset_hash`` is the training
    input's; the metrics equal those in the run's metrics files (the manifest's own record,
    :data:`~provenir.core.store.METRICS_RECORD_NAME`, and the keys shared with a backend's
    :data:`BACKEND_METRICS_FILES`); every artifact's sha256 matches and no file is missing or
    unrecorded.
    """
    report = VerificationReport(run_id)
    try:
        manifest = store.load_manifest(run_id)
    except ProvenirError as exc:
        report.checks.append(Check("manifest", False, detail=str(exc)))
        return report
    report.checks.append(Check("manifest", True, detail="parsed"))

    try:
        recomputed = config_hash(manifest.config)
        report.checks.append(
            Check("config_hash", recomputed == manifest.config_hash, manifest.config_hash, recomputed)
        )
    except Exception as exc:  # noqa: BLE001 - a tampered config may not even validate
        report.checks.append(Check("config_hash", False, manifest.config_hash, None, str(exc)))

    try:
        from provenir.core.yaml_safe import load_yaml

        stored_yaml = store.read_text(run_id, CONFIG_NAME)
        same = load_yaml(stored_yaml, source=f"{run_id}/{CONFIG_NAME}") == manifest.config
        report.checks.append(
            Check("config.yaml", same, detail="" if same else "differs from the manifest's config")
        )
    except Exception as exc:  # noqa: BLE001
        report.checks.append(Check("config.yaml", False, detail=str(exc)))

    config_seed = manifest.config.get("seed") if isinstance(manifest.config, dict) else None
    report.checks.append(
        Check("seed", _same(manifest.seed, config_seed), str(config_seed), str(manifest.seed),
              "the manifest's seed is the recorded config's seed")
    )
    for parent in manifest.provenance:
        report.checks.append(_check_parent(store, parent))

    train = manifest.inputs.get("train")
    if train is not None:
        report.checks.append(
            Check(
                "dataset_hash",
                train.get("sha256") == manifest.dataset_hash,
                manifest.dataset_hash,
                train.get("sha256"),
                "the manifest's dataset_hash is the training input's sha256",
            )
        )
    for role, info in sorted(manifest.inputs.items()):
        if not isinstance(info, dict):
            continue
        path = info.get("path")
        name = f"input:{role}"
        if info.get("kind") in ("local_dir", "local_file", "hub"):
            report.checks.append(_check_model(name, info))
            continue
        if not path:
            continue
        try:
            digest, _ = hash_jsonl(path)
            report.checks.append(Check(name, digest == info.get("sha256"), info.get("sha256"), digest, path))
        except DataError as exc:
            report.checks.append(Check(name, False, info.get("sha256"), None, str(exc)))

    report.checks.extend(_check_metrics(store, manifest))

    try:
        actual = store.hash_artifacts(run_id)
    except ProvenirError as exc:
        report.checks.append(Check("artifacts", False, detail=str(exc)))
        return report
    for rel, expected in sorted(manifest.artifacts.items()):
        got = actual.get(rel)
        detail = "missing" if got is None else ("" if got == expected else "content changed")
        report.checks.append(Check(f"artifact:{rel}", got == expected, expected, got, detail))
    for rel in sorted(set(actual) - set(manifest.artifacts)):
        report.checks.append(Check(f"artifact:{rel}", False, None, actual[rel], "not in the manifest"))
    return report


def _check_parent(store: ArtifactStore, parent: str) -> Check:
    name = f"parent:{parent}"
    try:
        store.load_manifest(validate_run_id(parent))
    except NotFoundError:
        return Check(name, False, detail=f"parent run missing from the store {store.runs_dir()}")
    except ProvenirError as exc:
        return Check(name, False, detail=f"parent run unreadable: {exc}")
    return Check(name, True, detail="in the store")


def manifest_digest(manifest: RunManifest) -> str:
    """SHA-256 of a manifest's JSON as saved (handy for citing a run in reports)."""
    return sha256_bytes(manifest.to_json().encode("utf-8"))


__all__ = [
    "BACKEND_METRICS_FILES",
    "CONFIG_NAME",
    "MANIFEST_NAME",
    "METRICS_RECORD_NAME",
    "Check",
    "ManifestError",
    "RunRecorder",
    "VerificationReport",
    "describe_input",
    "describe_model",
    "hub_cache_revision",
    "manifest_digest",
    "verify_run",
]
