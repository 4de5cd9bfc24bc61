"""The artifact store: ``<root>/runs/<run_id>/{manifest.json, config.yaml, …}``.

``root`` is a local path or an fsspec URI (``s3://bucket/prefix``, ``gs://…``, ``memory://…`` in
tests); the API is the same for both. Local writes are atomic (temp file, fsync, rename); on object
stores a single put is atomic already.

Run ids sort by creation time and are unique: ``20261125T001844123456Z-<name>-<8 hex>``. Every id
read from outside is checked against :data:`RUN_ID_PATTERN`, so no id can reach outside the store.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from provenir.core.abstractions import RunManifest
from provenir.core.errors import ManifestError, NotFoundError, StoreError
from provenir.core.hashing import sha256_bytes
from provenir.core.io import atomic_write_bytes

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MANIFEST_NAME = "manifest.json"
#: The metrics a manifest was saved with, as a hashed artifact beside it (see ``save_manifest``).
METRICS_RECORD_NAME = "manifest_metrics.json"
_SLUG = re.compile(r"[^a-z0-9]+")


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe run id, else raise :class:`StoreError`."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise StoreError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only "
            "(at most 128, no '..', no path separators)"
        )
    return run_id


def _validate_relpath(relpath: str) -> str:
    parts = PurePosixPath(relpath).parts
    if (
        not relpath
        or relpath.startswith("/")
        or "\\" in relpath
        or any(p in ("..", ".", "") for p in parts)
    ):
        raise StoreError(f"invalid artifact path {relpath!r}: must be relative, without '..'")
    return relpath


def new_run_id(name: str = "run") -> str:
    """A unique run id that sorts by creation time."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    slug = _SLUG.sub("-", name.lower()).strip("-")[:40] or "run"
    return f"{stamp}-{slug}-{secrets.token_hex(4)}"


class _LocalBackend:
    def __init__(self, root: str) -> None:
        self.root = Path(root).expanduser()

    def join(self, *parts: str) -> str:
        return str(self.root.joinpath(*parts))

    def write(self, path: str, data: bytes) -> None:
        atomic_write_bytes(path, data)

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def listdir(self, path: str) -> list[str]:
        p = Path(path)
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []

    def walk_files(self, path: str) -> Iterator[str]:
        base = Path(path)
        for file in sorted(base.rglob("*")):
            if file.is_file() and not file.name.endswith(".tmp"):
                yield file.relative_to(base).as_posix()

    def put_file(self, src: str, dst: str) -> None:
        with open(src, "rb") as handle:
            self.write(dst, handle.read())

    def local_path(self, path: str) -> Path | None:
        return Path(path)


class _FsspecBackend:
    def __init__(self, root: str) -> None:
        import fsspec

        self.fs, self.root_path = fsspec.core.url_to_fs(root)
        self.protocol = root.split("://", 1)[0]

    def join(self, *parts: str) -> str:
        return "/".join([self.root_path.rstrip("/"), *parts])

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)  # one put: atomic on object stores

    def read(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def listdir(self, path: str) -> list[str]:
        if not self.fs.exists(path):
            return []
        return sorted(PurePosixPath(p).name for p in self.fs.ls(path, detail=False))

    def walk_files(self, path: str) -> Iterator[str]:
        base = path.rstrip("/")
        for full in sorted(self.fs.find(base)):
            full = full if full.startswith("/") or not base.startswith("/") else "/" + full
            yield full[len(base) + 1 :] if full.startswith(base + "/") else full.rsplit("/", 1)[-1]

    def put_file(self, src: str, dst: str) -> None:
        self.fs.put_file(src, dst)

    def local_path(self, path: str) -> Path | None:
        return None


class ArtifactStore:
    """Runs, their manifests and artifacts under one root.

    Example:
        >>> store = ArtifactStore("memory://doc-store")
        >>> run_id = store.new_run_id("demo")
        >>> store.write_text(run_id, "notes.txt", "hello")
        >>> store.read_text(run_id, "notes.txt")
        'hello'
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)
        is_uri = "://" in self.root and not self.root.startswith("file://")
        local_root = self.root[len("file://") :] if self.root.startswith("file://") else self.root
        self._fs: Any = _FsspecBackend(self.root) if is_uri else _LocalBackend(local_root)
        self.is_local = not is_uri

    # ----- paths -----
    def runs_dir(self) -> str:
        return self._fs.join("runs")

    def run_dir(self, run_id: str) -> str:
        return self._fs.join("runs", validate_run_id(run_id))

    def path(self, run_id: str, relpath: str) -> str:
        return self._fs.join("runs", validate_run_id(run_id), _validate_relpath(relpath))

    def local_run_dir(self, run_id: str) -> Path | None:
        """The run's folder on local disk, or None when the store is remote."""
        return self._fs.local_path(self.run_dir(run_id))

    def new_run_id(self, name: str = "run") -> str:
        return new_run_id(name)

    # ----- files -----
    def write_bytes(self, run_id: str, relpath: str, data: bytes) -> None:
        self._fs.write(self.path(run_id, relpath), data)

    def write_text(self, run_id: str, relpath: str, text: str) -> None:
        self.write_bytes(run_id, relpath, text.encode("utf-8"))

    def read_bytes(self, run_id: str, relpath: str) -> bytes:
        target = self.path(run_id, relpath)
        try:
            return self._fs.read(target)
        except FileNotFoundError:
            raise NotFoundError(f"{target}: not found in the store") from None

    def read_text(self, run_id: str, relpath: str) -> str:
        return self.read_bytes(run_id, relpath).decode("utf-8")

    def exists(self, run_id: str, relpath: str | None = None) -> bool:
        target = self.run_dir(run_id) if relpath is None else self.path(run_id, relpath)
        return self._fs.exists(target)

    def put_file(self, run_id: str, relpath: str, src: str | Path) -> None:
        self._fs.put_file(str(src), self.path(run_id, relpath))

    def put_dir(self, run_id: str, relpath: str, src: str | Path) -> list[str]:
        """Copy a local folder into the run; returns the relative paths written."""
        written = []
        base = Path(src)
        for file in sorted(base.rglob("*")):
            if file.is_file():
                rel = f"{relpath}/{file.relative_to(base).as_posix()}"
                self.put_file(run_id, rel, file)
                written.append(rel)
        return written

    def list_files(self, run_id: str) -> list[str]:
        """Every file of the run, relative to its folder, sorted (temp files excluded)."""
        if not self.exists(run_id):
            raise NotFoundError(f"run {run_id!r} not found under {self.runs_dir()}")
        return list(self._fs.walk_files(self.run_dir(run_id)))

    def hash_artifacts(self, run_id: str, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, str]:
        """{relative path: sha256} of every file of the run except the manifest."""
        hashes: dict[str, str] = {}
        for rel in self.list_files(run_id):
            if rel in exclude:
                continue
            local = self._fs.local_path(self.path(run_id, rel))
            if local is not None:
                from provenir.core.hashing import sha256_file

                hashes[rel] = sha256_file(local)
            else:
                hashes[rel] = sha256_bytes(self.read_bytes(run_id, rel))
        return hashes

    # ----- manifests -----
    def save_manifest(self, manifest: RunManifest) -> None:
        """Write ``manifest.json``, and its metrics as the artifact :data:`METRICS_RECORD_NAME`.

        The metrics record is rewritten on every save and its sha256 is put into
        ``manifest.artifacts`` (the object passed in is updated), so ``verify_run`` can tell a hand
        edit of the manifest's metrics from the metrics the run was saved with.
        """
        text = json.dumps(manifest.metrics, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
        record = text.encode("utf-8")
        self.write_bytes(manifest.run_id, METRICS_RECORD_NAME, record)
        manifest.artifacts[METRICS_RECORD_NAME] = sha256_bytes(record)
        self.write_bytes(manifest.run_id, MANIFEST_NAME, manifest.to_json().encode("utf-8"))

    def load_manifest(self, run_id: str) -> RunManifest:
        if not self.exists(run_id, MANIFEST_NAME):
            raise NotFoundError(f"run {run_id!r} has no manifest under {self.runs_dir()}")
        manifest = RunManifest.loads(
            self.read_text(run_id, MANIFEST_NAME), source=self.path(run_id, MANIFEST_NAME)
        )
        if manifest.run_id != run_id:
            raise ManifestError(
                f"{self.path(run_id, MANIFEST_NAME)}: run_id field {manifest.run_id!r} "
                f"does not match its folder {run_id!r}"
            )
        return manifest

    def list_runs(self) -> list[str]:
        """Run ids with a manifest, oldest first."""
        return [
            name
            for name in self._fs.listdir(self.runs_dir())
            if RUN_ID_PATTERN.match(name) and ".." not in name and self.exists(name, MANIFEST_NAME)
        ]

    # ----- lineage -----
    def check_parents(self, run_ids: Iterable[str]) -> list[str]:
        """The parent run ids to record: validated, duplicates dropped (first order kept), and
        every one present in this store.

        Raises:
            StoreError: an id is not a valid run id.
            NotFoundError: naming every parent that has no manifest in this store.
        """
        parents = list(dict.fromkeys(validate_run_id(rid) for rid in run_ids))
        missing = [rid for rid in parents if not self.exists(rid, MANIFEST_NAME)]
        if missing:
            raise NotFoundError(
                f"parent run(s) not found in the store {self.runs_dir()}: {', '.join(missing)}; "
                "a run's provenance can only name runs of the same store (see `provenir runs list`)"
            )
        return parents

    def trace_ancestors(self, run_id: str) -> list[tuple[str, str | None]]:
        """``(run_id, problem)`` for every ancestor through ``provenance``, nearest first (BFS).

        ``problem`` is None for a run whose manifest was read, ``"missing"`` for one that is not in
        this store and ``"unreadable: …"`` for one whose manifest cannot be read; the ancestors of
        such a run cannot be followed, so the list ends there on that branch.

        Raises:
            StoreError, ManifestError: ``run_id`` itself is invalid, missing or unreadable.
        """
        seen: set[str] = {run_id}
        order: list[tuple[str, str | None]] = []
        index: dict[str, int] = {}
        frontier = [run_id]
        while frontier:
            nxt: list[str] = []
            for current in frontier:
                try:
                    parents = self.load_manifest(current).provenance
                except (StoreError, ManifestError) as exc:
                    if current == run_id:
                        raise
                    problem = "missing" if isinstance(exc, NotFoundError) else f"unreadable: {exc}"
                    order[index[current]] = (current, problem)
                    continue
                for parent in parents:
                    if parent not in seen:
                        seen.add(parent)
                        index[parent] = len(order)
                        order.append((parent, None))
                        nxt.append(parent)
            frontier = nxt
        return order

    def ancestors(self, run_id: str) -> list[str]:
        """Every run this one descends from through ``provenance``, nearest first (BFS).

        Ancestors missing from the store are listed but not followed; :meth:`trace_ancestors`
        says which.
        """
        return [rid for rid, _ in self.trace_ancestors(run_id)]

    def descendants(self, run_id: str) -> list[str]:
        """Every run that has this one among its ancestors, in creation order."""
        validate_run_id(run_id)
        children: dict[str, list[str]] = {}
        for rid in self.list_runs():
            try:
                parents = self.load_manifest(rid).provenance
            except (StoreError, ManifestError):
                continue
            for parent in parents:
                children.setdefault(parent, []).append(rid)
        found: list[str] = []
        seen = {run_id}
        stack = [run_id]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    stack.append(child)
        return sorted(found)
