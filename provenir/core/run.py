"""A run's life in the store (start, finish, fail) and its verification.

:class:`RunRecorder` is what every backend uses: it allocates the run id, writes ``config.yaml``
and a ``running`` manifest, gives the backend a local working folder, and on :meth:`finish` hashes
every artifact into the manifest. :func:`verify_run` recomputes the config, dataset and artifact
hashes and names each mismatch.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenir.core.abstractions import RunManifest, environment_info, git_sha, utc_timestamp
from provenir.core.config import RunConfig, config_hash
from provenir.core.errors import DataError, ManifestError, ProvenirError
from provenir.core.hashing import sha256_bytes
from provenir.core.jsonl import hash_jsonl
from provenir.core.store import MANIFEST_NAME, ArtifactStore, validate_run_id

CONFIG_NAME = "config.yaml"


def describe_input(path: str | Path) -> dict[str, Any]:
    """``{"path", "sha256", "records"}`` for a JSONL file, hashed while streaming."""
    digest, count = hash_jsonl(path)
    return {"path": str(path), "sha256": digest, "records": count}


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
        for parent in provenance:
            validate_run_id(parent)
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
            inputs=dict(inputs or {}),
        )
        store.write_text(self.run_id, CONFIG_NAME, config.to_yaml())
        store.save_manifest(self.manifest)

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
    ``config.yaml`` holds that config; each recorded input file still hashes to its recorded
    sha256 and ``dataset_hash`` is the training input's; every artifact's sha256 matches and no
    file is missing or unrecorded.
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
        stored_yaml = store.read_text(run_id, CONFIG_NAME)
        import yaml

        same = yaml.safe_load(stored_yaml) == manifest.config
        report.checks.append(
            Check("config.yaml", same, detail="" if same else "differs from the manifest's config")
        )
    except Exception as exc:  # noqa: BLE001
        report.checks.append(Check("config.yaml", False, detail=str(exc)))

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
        path = info.get("path")
        name = f"input:{role}"
        if not path:
            continue
        try:
            digest, _ = hash_jsonl(path)
            report.checks.append(Check(name, digest == info.get("sha256"), info.get("sha256"), digest, path))
        except DataError as exc:
            report.checks.append(Check(name, False, info.get("sha256"), None, str(exc)))

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


def manifest_digest(manifest: RunManifest) -> str:
    """SHA-256 of a manifest's JSON as saved (handy for citing a run in reports)."""
    return sha256_bytes(manifest.to_json().encode("utf-8"))


__all__ = [
    "CONFIG_NAME",
    "MANIFEST_NAME",
    "Check",
    "ManifestError",
    "RunRecorder",
    "VerificationReport",
    "describe_input",
    "manifest_digest",
    "verify_run",
]
