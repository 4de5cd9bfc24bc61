"""Push adapters to, and pull models from, a Hugging Face–compatible hub, keeping provenance.

Built on ``huggingface_hub`` (``pip install 'provenir[hub]'``):

* :meth:`HubClient.push_adapter` creates the repo if needed (honouring ``private``), creates the
  branch if ``revision`` is not ``main``, and uploads the adapter folder **in one commit** together
  with a model card (``README.md``; a folder's own card, such as the one PEFT writes, is kept and
  the provenance section appended) that records the provenance:
  run id, base model, dataset and config hashes, parent runs, merge parents, and every file's
  sha256. A Provenir run manifest beside the adapter (``manifest.json`` in the folder above) is
  uploaded as ``provenir_run_manifest.json``. It returns the commit sha and the files pushed.
* :meth:`HubClient.pull_model` resolves ``revision`` to a commit, downloads that snapshot into
  ``output_dir`` (or the hub cache) and verifies every file against the hub's record: sha256 for
  LFS files, the git blob id for the others. A mismatch is an error, never a silent success.
* :meth:`HubClient.model_info` returns a plain dict (id, sha, private, tags, files with sizes and
  hashes); :meth:`HubClient.verify_hash` streams a file through sha256.

The token comes from ``HubConfig.token`` (or the client's ``token``), else ``HF_TOKEN``, else the
token saved by ``hf auth login``. It is never logged, never shown in ``repr``, and scrubbed from
error messages. Hub failures become :class:`~provenir.core.errors.ProvenirError` messages that say
what went wrong (repository not found, authentication refused, network unreachable) and what to do.

Example:
    >>> from provenir.adapters.hub import HubClient, HubConfig
    >>> HubClient().push_adapter(Path("merged"), HubConfig(repo_id="me/my-adapter"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from provenir.core.errors import ConfigError, ProvenirError, require
from provenir.core.hashing import sha256_file

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["HubClient", "HubConfig", "HubPullResult", "HubPushResult", "HubError", "record_publish_run", "record_pull_run"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
RUN_MANIFEST_IN_REPO = "provenir_run_manifest.json"
# Provenir's own record of a push: every pushed file's sha256 (the card included), the run the
# adapter came from. A pull checks the files against it — not only against the hub's own hashes,
# which a hub that was tampered with would rewrite too.
PUSH_RECORD_IN_REPO = "provenir_files.json"
PUSH_RECORD_FORMAT = "provenir.push"


class HubError(ProvenirError):
    """A hub operation failed (not found, authentication, network); the message says which and why."""


def _check_repo_id(value: str) -> str:
    if not _REPO_ID.match(value) or ".." in value or value.endswith((".git", ".")):
        raise ValueError(
            f"repo_id {value!r} must look like 'namespace/name' (letters, digits, '.', '_', '-')"
        )
    return value


class HubConfig(BaseModel):
    """Where and how to push.

    Attributes:
        repo_id: ``"namespace/name"``.
        private: create the repo private (an existing repo keeps its visibility).
        revision: the branch to commit to (created from ``main`` if missing).
        token: a hub token; default ``HF_TOKEN`` or the saved login. Never shown in ``repr``.
        commit_message: the commit's summary (default names the adapter and its run).
    """

    model_config = ConfigDict(extra="forbid")

    repo_id: str
    private: bool = False
    revision: str = "main"
    token: str | None = Field(default=None, repr=False)
    commit_message: str | None = None

    @field_validator("repo_id")
    @classmethod
    def _repo_id_shape(cls, value: str) -> str:
        return _check_repo_id(value)

    @field_validator("revision")
    @classmethod
    def _revision_shape(cls, value: str) -> str:
        if not value or value.startswith(("/", "-")) or ".." in value or any(c.isspace() for c in value):
            raise ValueError(f"revision {value!r} is not a valid branch name")
        return value


@dataclass
class HubPushResult:
    """What a push created. The first four fields are the public contract."""

    repo_id: str
    url: str
    commit_sha: str | None = None
    pushed_files: list[str] = field(default_factory=list)
    revision: str = "main"
    files_sha256: dict[str, str] = field(default_factory=dict)
    commit_url: str | None = None
    run_id: str | None = None  # the run the pushed adapter came from, when its manifest was beside it


@dataclass
class HubPullResult:
    """What a verified pull brought: the folder, the commit, each file's sha256, and — when the repo
    holds Provenir's push record — the run the adapter came from and what was checked against it."""

    repo_id: str
    revision: str
    commit_sha: str
    path: Path
    files_sha256: dict[str, str] = field(default_factory=dict)
    pushed_run_id: str | None = None
    verified_against: list[str] = field(default_factory=list)  # "hub", "provenir_files.json", "run manifest"


def _git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content (``sha1("blob <size>\\0" + content)``), streamed."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class HubClient:
    """Talks to a Hugging Face–compatible hub through ``huggingface_hub``.

    Args:
        endpoint: the hub's base URL (default ``HF_ENDPOINT`` at call time, else huggingface.co).
        token: a default token for every call (a :class:`HubConfig` token wins for pushes).
        cache_dir: the download cache used by :meth:`pull_model` without ``output_dir``.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._default_token = token
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def __repr__(self) -> str:
        return f"HubClient(endpoint={self.endpoint!r})"

    # plumbing ----------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._endpoint:
            return self._endpoint
        env = os.environ.get("HF_ENDPOINT")
        if env:
            return env.rstrip("/")
        try:
            from huggingface_hub import constants
        except ImportError:
            return "https://huggingface.co"
        return str(constants.ENDPOINT).rstrip("/")

    def _token(self, token: str | None = None) -> str | None:
        return token or self._default_token or os.environ.get("HF_TOKEN") or None

    def _api(self, token: str | None) -> HfApi:
        require("huggingface_hub", feature="HubClient", extra="hub")
        from huggingface_hub import HfApi, constants

        if constants.is_offline_mode():
            raise HubError(
                f"cannot reach the hub at {self.endpoint}: HF_HUB_OFFLINE is set; unset it (or set "
                "HF_HUB_OFFLINE=0) to push or pull"
            )
        from provenir import __version__

        return HfApi(endpoint=self.endpoint, token=token, library_name="provenir", library_version=__version__)

    @contextlib.contextmanager
    def _errors(self, action: str, repo_id: str, token: str | None, revision: str | None = None) -> Iterator[None]:
        """Turn ``huggingface_hub``/network failures into :class:`HubError` with the token scrubbed."""
        from huggingface_hub import errors as hf_errors

        try:
            yield
        except ProvenirError:
            raise
        except hf_errors.RevisionNotFoundError:
            message = (
                f"{action}: revision {revision!r} not found in {repo_id} at {self.endpoint}; "
                "check the branch, tag or commit"
            )
        except hf_errors.GatedRepoError:
            message = f"{action}: {repo_id} is gated; accept its conditions on the hub with this account first"
        except hf_errors.RepositoryNotFoundError:
            message = (
                f"{action}: repository {repo_id} not found at {self.endpoint} (or it is private and "
                "the token cannot see it); check the id, or set HubConfig.token / HF_TOKEN"
            )
        except hf_errors.RemoteEntryNotFoundError as exc:
            message = f"{action}: a file of {repo_id} was not found on the hub ({_first_line(exc)})"
        except hf_errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                message = (
                    f"{action}: the hub refused the credentials (HTTP {status}) for {repo_id}; "
                    "check HubConfig.token / HF_TOKEN and that it has write access"
                    f" ({_server_message(exc)})"
                )
            else:
                message = f"{action}: the hub answered HTTP {status} for {repo_id} ({_server_message(exc)})"
        except hf_errors.OfflineModeIsEnabled:
            message = f"{action}: HF_HUB_OFFLINE is set; unset it to reach {self.endpoint}"
        except (ConnectionError, TimeoutError) as exc:
            message = f"{action}: cannot reach the hub at {self.endpoint} ({type(exc).__name__}: {_first_line(exc)})"
        except OSError as exc:  # local disk: permissions, space, a file in the way
            message = f"{action}: {type(exc).__name__}: {exc}"
        except Exception as exc:
            if _is_transport_error(exc):
                message = (
                    f"{action}: cannot reach the hub at {self.endpoint} ({type(exc).__name__}: "
                    f"{_first_line(exc)}); check the endpoint and the network"
                )
            else:
                raise
        else:
            return
        raise HubError(_scrub(message, token)) from None

    # API ---------------------------------------------------------------------------------------
    def push_adapter(self, adapter_path: Path, config: HubConfig) -> HubPushResult:
        """Upload an adapter (or model) folder to ``config.repo_id`` in one commit.

        Raises:
            ConfigError: the folder is missing or holds no safetensors weights, or its README.md
                has hostile YAML front matter.
            HubError: the hub refused or could not be reached.
        """
        from provenir.adapters._card import render_model_card
        from provenir.adapters._lora import find_run_manifest, provenance_summary

        folder = Path(adapter_path)
        files = self._collect(folder)
        token = self._token(config.token)
        api = self._api(token)
        from huggingface_hub import CommitOperationAdd

        hashes = {rel: sha256_file(path) for rel, path in files.items()}
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in files.items()]
        run = provenance_summary(folder.resolve())
        found = find_run_manifest(folder.resolve())
        if found is not None and found[0].parent != folder.resolve():
            operations.append(CommitOperationAdd(path_in_repo=RUN_MANIFEST_IN_REPO, path_or_fileobj=str(found[0])))
            hashes[RUN_MANIFEST_IN_REPO] = sha256_file(found[0])
        existing = None
        readme = files.pop("README.md", None)
        if readme is not None:
            existing = readme.read_text(encoding="utf-8", errors="replace")
            operations = [op for op in operations if op.path_in_repo != "README.md"]
            del hashes["README.md"]
        card = render_model_card(config.repo_id, folder, hashes, run, existing,
                                 existing_source=str(readme or "README.md")).encode("utf-8")
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
        hashes["README.md"] = hashlib.sha256(card).hexdigest()
        operations = [op for op in operations if op.path_in_repo != PUSH_RECORD_IN_REPO]
        hashes.pop(PUSH_RECORD_IN_REPO, None)
        record = {"format": PUSH_RECORD_FORMAT, "version": 1, "run_id": run.get("run_id"),
                  "files": dict(sorted(hashes.items()))}
        record_bytes = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")
        operations.append(CommitOperationAdd(path_in_repo=PUSH_RECORD_IN_REPO, path_or_fileobj=record_bytes))
        hashes[PUSH_RECORD_IN_REPO] = hashlib.sha256(record_bytes).hexdigest()
        message = config.commit_message or (
            f"Provenir: push {folder.name}" + (f" (run {run['run_id']})" if run.get("run_id") else "")
        )

        with self._errors("push", config.repo_id, token, config.revision):
            repo_url = api.create_repo(config.repo_id, private=config.private, exist_ok=True, repo_type="model")
            if config.revision != "main":
                api.create_branch(config.repo_id, branch=config.revision, exist_ok=True, repo_type="model")
            # the revision holds exactly this folder afterwards: files of an earlier push that this one
            # does not have (a run manifest, a removed shard) would otherwise be pulled with it
            from huggingface_hub import CommitOperationDelete

            pushing = {op.path_in_repo for op in operations}
            stale = [name for name in api.list_repo_files(config.repo_id, revision=config.revision, repo_type="model")
                     if name not in pushing and not name.startswith(".")]
            operations += [CommitOperationDelete(path_in_repo=name) for name in sorted(stale)]
            info = api.create_commit(
                config.repo_id,
                operations=operations,
                commit_message=message,
                revision=config.revision,
                repo_type="model",
            )
        pushed = sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd))
        return HubPushResult(
            repo_id=config.repo_id,
            url=str(getattr(repo_url, "url", None) or f"{self.endpoint}/{config.repo_id}"),
            commit_sha=info.oid,
            pushed_files=pushed,
            revision=config.revision,
            files_sha256=dict(sorted(hashes.items())),
            commit_url=info.commit_url,
            run_id=run.get("run_id"),
        )

    @staticmethod
    def _collect(folder: Path) -> dict[str, Path]:
        if not folder.exists():
            raise ConfigError(f"{folder}: folder not found")
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder; push the folder an adapter was saved to")
        files: dict[str, Path] = {}
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue  # hidden files, temp folders, the hub client's own .cache
            if path.is_file():
                files[rel.as_posix()] = path
        if not any(name.endswith(".safetensors") for name in files):
            pickled = [name for name in files if name.endswith((".bin", ".pt", ".pth"))]
            hint = f" (found {', '.join(pickled)}: re-save with safe_serialization=True)" if pickled else ""
            raise ConfigError(f"{folder}: no .safetensors weights to push{hint}")
        return files

    def pull_model(self, repo_id: str, output_dir: Path | None = None, revision: str = "main") -> Path:
        """Download ``repo_id`` at ``revision`` and verify it; returns the folder (see :meth:`pull`)."""
        return self.pull(repo_id, output_dir, revision).path

    def pull(self, repo_id: str, output_dir: Path | None = None, revision: str = "main") -> HubPullResult:
        """Download ``repo_id`` at ``revision`` and verify every file against the hub's hashes.

        Args:
            repo_id: ``"namespace/name"``.
            output_dir: where to put the files (default: the hub cache's snapshot folder).
            revision: branch, tag or commit; resolved to a commit first, so the files all come
                from that one commit.

        Returns:
            The folder holding the files.

        Raises:
            HubError: not found, refused, unreachable, or a downloaded file does not match.
        """
        repo_id = self._valid_repo_id(repo_id)
        token = self._token()
        api = self._api(token)
        from huggingface_hub import snapshot_download

        with self._errors("pull", repo_id, token, revision):
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
            folder = snapshot_download(
                repo_id=repo_id,
                repo_type="model",
                revision=info.sha,
                local_dir=str(output_dir) if output_dir is not None else None,
                cache_dir=str(self.cache_dir) if self.cache_dir is not None else None,
                endpoint=self.endpoint,
                token=token,
                library_name="provenir",
            )
        folder_path = Path(folder)
        problems = []
        for sibling in info.siblings or []:
            path = folder_path / sibling.rfilename
            if not path.is_file():
                problems.append(f"{sibling.rfilename}: missing after download")
                continue
            if sibling.lfs is not None:
                expected, actual = sibling.lfs.sha256, sha256_file(path)
            elif sibling.blob_id:
                expected, actual = sibling.blob_id, _git_blob_sha1(path)
            else:
                continue
            if expected != actual:
                problems.append(f"{sibling.rfilename}: hash {actual} does not match the hub's {expected}")
                if output_dir is not None:
                    path.unlink()  # never leave a corrupt file that looks complete
        if problems:
            raise HubError(f"pull {repo_id}@{info.sha}: " + "; ".join(problems))
        files = {p.relative_to(folder_path).as_posix(): sha256_file(p) for p in sorted(folder_path.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder_path).parts)}
        result = HubPullResult(repo_id, revision, info.sha, folder_path, files, verified_against=["hub"])
        problems = self._check_push_record(folder_path, files, result)
        if problems:
            if output_dir is not None:
                for name in problems:
                    (folder_path / name).unlink(missing_ok=True)
            raise HubError(f"pull {repo_id}@{info.sha}: " + "; ".join(problems.values()))
        return result

    @staticmethod
    def _check_push_record(folder: Path, files: dict[str, str], result: HubPullResult) -> dict[str, str]:
        """Check the pulled files against Provenir's push record and the run manifest pushed with them."""
        record_path = folder / PUSH_RECORD_IN_REPO
        if not record_path.is_file():
            return {}  # not pushed by Provenir: the hub's own hashes are all there is
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {PUSH_RECORD_IN_REPO: f"{PUSH_RECORD_IN_REPO}: unreadable ({exc})"}
        recorded = record.get("files") if isinstance(record, dict) else None
        if not isinstance(recorded, dict):
            return {PUSH_RECORD_IN_REPO: f"{PUSH_RECORD_IN_REPO}: not a Provenir push record"}
        problems: dict[str, str] = {}
        for name, expected in sorted(recorded.items()):
            got = files.get(name)
            if got is None:
                problems[name] = f"{name}: in the push record but not in the repo"
            elif got != expected:
                problems[name] = f"{name}: sha256 {got} differs from the push record's {expected}"
        for name in sorted(set(files) - set(recorded) - {PUSH_RECORD_IN_REPO}):
            problems[name] = f"{name}: not in the push record (added after the push)"
        result.verified_against.append(PUSH_RECORD_IN_REPO)
        run_id = record.get("run_id")
        result.pushed_run_id = run_id if isinstance(run_id, str) else None
        manifest_path = folder / RUN_MANIFEST_IN_REPO
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                manifest = {}
            artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
            for rel, expected in sorted((artifacts or {}).items()):
                name = rel.split("/", 1)[1] if rel.startswith("adapter/") else None
                if name and name in files and name != "README.md" and files[name] != expected:
                    problems[name] = f"{name}: sha256 {files[name]} differs from run {run_id}'s manifest ({expected})"
            if artifacts:
                result.verified_against.append("run manifest")
        return problems

    def model_info(self, repo_id: str) -> dict[str, Any]:
        """The repo's id, commit sha, visibility, tags, card metadata and files (size, sha256)."""
        repo_id = self._valid_repo_id(repo_id)
        token = self._token()
        api = self._api(token)
        with self._errors("model info", repo_id, token):
            info = api.model_info(repo_id, files_metadata=True)
        files = []
        for sibling in info.siblings or []:
            files.append(
                {
                    "path": sibling.rfilename,
                    "size": sibling.size,
                    "sha256": sibling.lfs.sha256 if sibling.lfs is not None else None,
                    "blob_id": sibling.blob_id,
                    "lfs": sibling.lfs is not None,
                }
            )
        card = info.card_data.to_dict() if info.card_data is not None else None
        return {
            "id": info.id,
            "sha": info.sha,
            "private": info.private,
            "tags": sorted(info.tags or []),
            "last_modified": info.last_modified.isoformat() if info.last_modified else None,
            "card_data": card,
            "files": sorted(files, key=lambda f: f["path"]),
        }

    def verify_hash(self, file_path: Path, expected_sha256: str) -> bool:
        """Whether ``file_path``'s sha256 (streamed in 1 MiB chunks) is ``expected_sha256``."""
        if not isinstance(expected_sha256, str) or not _SHA256.match(expected_sha256):
            raise ConfigError(f"expected_sha256 must be 64 hex characters, got {expected_sha256!r}")
        path = Path(file_path)
        if not path.is_file():
            raise ProvenirError(f"{path}: file not found")
        return sha256_file(path) == expected_sha256.lower()

    @staticmethod
    def _valid_repo_id(repo_id: str) -> str:
        try:
            return _check_repo_id(str(repo_id))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _server_message(exc: Any) -> str:
    server = getattr(exc, "server_message", None)
    return (server or _first_line(exc)).strip().replace("\n", " ")[:300]


def _is_transport_error(exc: BaseException) -> bool:
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        if isinstance(exc, module.TransportError):
            return True
    return False


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return re.sub(r"(Bearer\s+)[^\s'\"]+", r"\1***", text)


def record_publish_run(store: Any, result: HubPushResult, adapter_path: Path, *, command: list[str] | None = None) -> Any:
    """Record a push as a run (``kind = "publish"``): its parent is the run the adapter came from
    (when that run is in ``store``), its input the pushed folder (hashed file by file), and the hub,
    repo, revision, commit and every pushed file's sha256 in ``inputs["hub"]``."""
    from provenir.core.config import RunConfig
    from provenir.core.hashing import sha256_json
    from provenir.core.run import RunRecorder, describe_model

    parents = [result.run_id] if result.run_id and store.exists(result.run_id) else []
    inputs = {
        "adapter": describe_model(str(Path(adapter_path).resolve())),
        "hub": {"repo_id": result.repo_id, "url": result.url, "revision": result.revision,
                "commit_sha": result.commit_sha, "files": result.files_sha256},
    }
    name = "publish-" + result.repo_id.replace("/", "-")
    recorder = RunRecorder(store, RunConfig(name=name[:64]), dataset_hash=sha256_json(result.files_sha256),
                           inputs=inputs, provenance=parents, command=command)
    recorder.manifest.kind = "publish"
    return recorder.finish({"files": len(result.files_sha256)})


def record_pull_run(store: Any, result: HubPullResult, *, command: list[str] | None = None) -> Any:
    """Record a verified pull as a run (``kind = "pull"``): its parent is the run that was pushed
    (when known and in ``store``), its input the pulled folder (``verify_run`` re-hashes it)."""
    from provenir.core.config import RunConfig
    from provenir.core.hashing import sha256_json
    from provenir.core.run import RunRecorder, describe_model

    pushed = result.pushed_run_id
    parents = [pushed] if pushed and store.exists(pushed) else []
    if parents:  # the store's own record of the pushed run: what the hub holds cannot rewrite it
        artifacts = store.load_manifest(pushed).artifacts
        changed = sorted(rel.split("/", 1)[1] for rel, digest in artifacts.items()
                         if rel.startswith("adapter/") and rel.split("/", 1)[1] in result.files_sha256
                         and rel.split("/", 1)[1] != "README.md" and result.files_sha256[rel.split("/", 1)[1]] != digest)
        if changed:
            raise HubError(f"pull {result.repo_id}@{result.commit_sha}: {', '.join(changed)} differ from run "
                           f"{pushed} in the store (the files on the hub were changed after the push)")
        result.verified_against.append(f"store run {pushed}")
    inputs = {
        "pulled": describe_model(str(result.path.resolve())),
        "hub": {"repo_id": result.repo_id, "revision": result.revision, "commit_sha": result.commit_sha,
                "pushed_run_id": pushed, "verified_against": result.verified_against, "files": result.files_sha256},
    }
    name = "pull-" + result.repo_id.replace("/", "-")
    recorder = RunRecorder(store, RunConfig(name=name[:64]), dataset_hash=sha256_json(result.files_sha256),
                           inputs=inputs, provenance=parents, command=command)
    recorder.manifest.kind = "pull"
    return recorder.finish({"files": len(result.files_sha256)})
