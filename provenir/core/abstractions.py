"""The run manifest and the training-backend protocol.

A :class:`RunManifest` says exactly what went into a run (config hash, dataset hash, git sha, seed,
environment, command line, parent runs) and what came out (artifact hashes, metrics). It is saved
as canonical, sorted JSON; :meth:`RunManifest.load` refuses anything malformed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from provenir.core.errors import ManifestError
from provenir.core.io import atomic_write_bytes

if TYPE_CHECKING:
    from provenir.core.config import RunConfig

MANIFEST_VERSION = 1
RUN_STATUSES = ("created", "running", "completed", "failed", "stopped")
# what made a run: training (any method or backend), a merge of adapters, a push to a hub, a pull
RUN_KINDS = ("train", "merge", "publish", "pull")


@dataclass
class RunManifest:
    """What went into a run and what came out.

    The first seven fields are the public contract; the rest extend it with the resolved config,
    the environment, the command line, status, metrics and ``artifacts`` ({relative path: sha256}).
    """

    run_id: str
    config_hash: str
    dataset_hash: str
    git_sha: str | None
    seed: int
    timestamp: str
    provenance: list[str]  # parent run IDs
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    status: str = "created"
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # {"train": {"path", "sha256", "records"}}
    manifest_version: int = MANIFEST_VERSION
    kind: str = "train"  # one of RUN_KINDS; manifests written before it existed are training runs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    def save(self, path: Path) -> None:
        """Write the manifest atomically as sorted, indented JSON."""
        atomic_write_bytes(Path(path), self.to_json().encode("utf-8"))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<manifest>") -> RunManifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: a manifest must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ManifestError(f"{source}: missing field(s): {', '.join(missing)}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ManifestError(f"{source}: unknown field(s): {', '.join(unknown)}")
        if not isinstance(data["provenance"], list) or not all(
            isinstance(p, str) for p in data["provenance"]
        ):
            raise ManifestError(f"{source}: provenance must be a list of run ids")
        if not isinstance(data["seed"], int):
            raise ManifestError(f"{source}: seed must be an integer")
        if not isinstance(data.get("artifacts", {}), dict):
            raise ManifestError(f"{source}: artifacts must map relative paths to sha256 hex")
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> RunManifest:
        """Read a manifest written by :meth:`save`.

        Raises:
            ManifestError: the file is missing, not JSON, or not a manifest.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: manifest not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
        return cls.loads(text, source=str(path))

    @classmethod
    def loads(cls, text: str, source: str = "<manifest>") -> RunManifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        return cls.from_dict(data, source)


@dataclass
class TrainingResult:
    """What a backend returns: the run's manifest, where the adapter is, and the metrics."""

    manifest: RunManifest
    adapter_path: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    run_dir: str | None = None


@runtime_checkable
class TrainingBackend(Protocol):
    """A way of training: ``stub`` (no torch, for pipelines) and ``trl`` (real training).

    Backends are chosen by name through ``RunConfig.backend`` from the registry in
    :mod:`provenir.train`.
    """

    name: str

    def train_sft(
        self, config: RunConfig, train_dataset: Any, eval_dataset: Any | None = None, **kwargs: Any
    ) -> TrainingResult: ...

    def train_dpo(
        self, config: RunConfig, preference_dataset: Any, eval_dataset: Any | None = None, **kwargs: Any
    ) -> TrainingResult: ...


def utc_timestamp() -> str:
    """Now, UTC, ISO 8601 with microseconds (``2026-11-25T00:18:44.123456Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The working tree's commit, ``+dirty`` when it has uncommitted changes; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = sha.stdout.strip()
    if status.returncode == 0 and status.stdout.strip():
        value += "+dirty"
    return value or None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


_ENV_PACKAGES = ("torch", "transformers", "trl", "peft", "ray", "accelerate", "datasets", "pydantic")


def environment_info() -> dict[str, Any]:
    """Python, key package versions (from metadata, without importing them) and hardware."""
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for name in _ENV_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    from provenir import __version__

    info: dict[str, Any] = {
        "provenir": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "packages": packages,
    }
    torch = sys.modules.get("torch")  # only report CUDA when torch is already loaded
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["cuda"] = torch.version.cuda
                info["gpus"] = [
                    torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
                ]
        except Exception:  # noqa: BLE001 - hardware probing must never break a run
            pass
    return info
