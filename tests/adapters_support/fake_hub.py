"""A loopback server that speaks enough of the Hugging Face Hub HTTP API for ``huggingface_hub``.

It binds 127.0.0.1 on a free port, serves on a daemon thread, and is stopped by the test that
started it (use it as a context manager). Bodies are bounded (``max_body`` bytes), sockets time out.

Endpoints implemented (model repos only):

* ``POST /api/repos/create`` — create a repo (``name``, ``organization``, ``visibility`` or ``private``); 409 (with ``url``) if it exists.
* ``POST /api/validate-yaml`` — checks a model card's YAML front matter (400 if it does not parse).
* ``GET  /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}`` — model info: ``id``,
  ``sha``, ``private``, ``tags``, ``siblings`` (``rfilename``; with ``?blobs=true`` also ``size``,
  ``blobId`` and ``lfs: {sha256, size, pointerSize}``), ``cardData``, ``lastModified``.
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]`` — the file listing ``list_repo_tree`` reads.
* ``POST /api/models/{repo}/branch/{branch}`` — create a branch at the head of ``main``.
* ``POST /api/models/{repo}/preupload/{rev}`` — upload modes: ``lfs`` for ``*.safetensors``,
  ``*.bin`` and files over 10 MB, ``regular`` otherwise.
* ``POST /{repo}.git/info/lfs/objects/batch`` — LFS batch API, ``basic`` transfer; answers with an
  upload action pointing at ``PUT /lfs-upload/{oid}`` (nothing to do for objects it already has).
* ``PUT  /lfs-upload/{oid}`` — stores the object after checking its sha256 and size.
* ``POST /api/models/{repo}/commit/{rev}`` — NDJSON commit (header, ``file`` base64, ``lfsFile``,
  ``deletedFile``); refuses an ``lfsFile`` whose object was never uploaded; answers ``commitOid``
  and ``commitUrl``.
* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` — file download with ``X-Repo-Commit``, ``ETag``
  (git blob sha1, or the sha256 for LFS files), ``X-Linked-Etag``/``X-Linked-Size`` for LFS files.

Auth: writes need ``Authorization: Bearer <token>`` with a token in ``tokens``; a wrong token gets
401 "Invalid credentials in Authorization header" (the hub's wording); reading a private repo
without a valid token gets 401 with ``X-Error-Code: RepoNotFound``; unknown repos 404
``RepoNotFound``, unknown revisions 404 ``RevisionNotFound``, unknown files 404 ``EntryNotFound``.
``corrupt`` lets a test serve different bytes for a path (to check hash verification), and
``echo_auth_in_errors`` makes 401 bodies repeat the Authorization header (to check that clients
scrub tokens from error messages).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<repo>[A-Za-z0-9._-]+/[A-Za-z0-9._-]+)"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
REGULAR_LIMIT = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    lfs_sha256: str | None  # set for LFS files (content in FakeHub.lfs_objects)
    content: bytes | None  # set for regular files
    size: int


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))


class FakeHub:
    """The server's state plus its lifecycle. ``with FakeHub(tokens={"t"}) as hub: hub.endpoint``."""

    def __init__(self, tokens: set[str] | None = None, *, max_body: int = 64 * 1024 * 1024) -> None:
        self.tokens = set(tokens or ())
        self.max_body = max_body
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []
        self.corrupt: dict[tuple[str, str], bytes] = {}
        self.echo_auth_in_errors = False
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # helpers for tests -------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        sha = repo.branches.get(revision, revision)
        return {
            path: (self.lfs_objects[f.lfs_sha256] if f.lfs_sha256 else f.content or b"")
            for path, f in repo.commits[sha].items()
        }

    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.repos[repo_id].branches[branch]


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.extra = extra or {}


class _Handler(BaseHTTPRequestHandler):
    state: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # keep test output quiet

    # dispatch ----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        raw_path, query = parts.path, parse_qs(parts.query)
        self.state.requests.append((method, raw_path))
        self.state.auth_headers.append(self.headers.get("Authorization"))
        routes = [
            ("POST", r"^/api/repos/create$", self._create_repo),
            ("POST", r"^/api/validate-yaml$", self._validate_yaml),
            ("GET", rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$", self._model_info),
            ("GET", rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$", self._tree),
            ("POST", rf"^/api/models/{_REPO}/branch/(?P<branch>[^/]+)$", self._create_branch),
            ("POST", rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$", self._preupload),
            ("POST", rf"^/{_REPO}\.git/info/lfs/objects/batch$", self._lfs_batch),
            ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", self._lfs_upload),
            ("POST", rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$", self._commit),
            ("GET", rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self._resolve),
            ("HEAD", rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self._resolve),
        ]
        try:
            body = self._read_body()
            for route_method, pattern, handler in routes:
                match = re.match(pattern, raw_path)
                if match and route_method == method:
                    params = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    with self.state.lock:
                        handler(method=method, body=body, query=query, **params)
                    return
            raise _HTTPError(404, f"no route for {method} {raw_path}")
        except _HTTPError as exc:
            headers = dict(exc.headers)
            if exc.code:
                headers["X-Error-Code"] = exc.code
            message = exc.message
            if exc.status == 401 and self.state.echo_auth_in_errors:
                message = f"{message} (you sent {self.headers.get('Authorization')!r})"
            self._send_json(exc.status, {**exc.extra, "error": message}, headers=headers, method=method)

    # plumbing ----------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.state.max_body:
            raise _HTTPError(413, f"body of {length} bytes exceeds the test server's limit")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > self.state.max_body:
                    raise _HTTPError(413, "chunked body exceeds the test server's limit")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None, method: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None, method: str = "GET") -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers, method)

    def _token(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        if not header:
            return None
        if not header.startswith("Bearer "):
            raise _HTTPError(401, "Invalid credentials in Authorization header", headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        token = header[len("Bearer ") :]
        if token not in self.state.tokens:
            raise _HTTPError(401, "Invalid credentials in Authorization header", headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        return token

    def _require_write(self) -> None:
        if self._token() is None:
            raise _HTTPError(401, "You must be authenticated to write", headers={"X-Error-Message": "Invalid credentials in Authorization header"})

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        token = self._token()
        repo = self.state.repos.get(repo_id)
        if repo is None:
            raise _HTTPError(404, "Repository not found", code="RepoNotFound")
        if repo.private and token is None:
            raise _HTTPError(401, "Repository not found", code="RepoNotFound")
        if write and token is None:
            self._require_write()
        return repo

    @staticmethod
    def _commit_of(repo: Repo, rev: str) -> str:
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.commits:
            return rev
        raise _HTTPError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")

    # handlers ----------------------------------------------------------------------------------
    def _create_repo(self, *, method: str, body: bytes, query: dict, **_: Any) -> None:
        self._require_write()
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise _HTTPError(400, f"the test hub only holds model repos, not {repo_type!r}")
        name, organization = payload.get("name"), payload.get("organization")
        if not name or not organization:
            raise _HTTPError(400, "name and organization are required")
        repo_id = f"{organization}/{name}"
        url = f"{self.state.endpoint}/{repo_id}"
        if repo_id in self.state.repos:
            raise _HTTPError(409, "You already created this model repo", extra={"url": url})
        initial = hashlib.sha1(f"init:{repo_id}".encode()).hexdigest()  # noqa: S324
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self.state.repos[repo_id] = Repo(
            repo_id=repo_id,
            private=bool(payload.get("private")) or payload.get("visibility") in ("private", "protected"),
            commits={initial: {".gitattributes": StoredFile(None, gitattributes, len(gitattributes))}},
            branches={"main": initial},
        )
        self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, *, method: str, body: bytes, query: dict, **_: Any) -> None:
        payload = json.loads(body or b"{}")
        try:
            _front_matter(str(payload.get("content", "")))
        except Exception as exc:  # noqa: BLE001 - any YAML problem is the client's error
            raise _HTTPError(400, f"invalid YAML metadata: {exc}") from exc
        self._send_json(200, {"errors": [], "warnings": []})

    def _sibling(self, path: str, stored: StoredFile, with_blobs: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": path}
        if with_blobs:
            if stored.lfs_sha256:
                pointer = lfs_pointer(stored.lfs_sha256, stored.size)
                entry.update(
                    size=stored.size,
                    blobId=git_blob_sha1(pointer),
                    lfs={"sha256": stored.lfs_sha256, "size": stored.size, "pointerSize": len(pointer)},
                )
            else:
                entry.update(size=stored.size, blobId=git_blob_sha1(stored.content or b""))
        return entry

    def _model_info(self, *, method: str, body: bytes, query: dict, repo: str, rev: str | None, **_: Any) -> None:
        stored = self._repo(repo)
        sha = self._commit_of(stored, rev or "main")
        files = stored.commits[sha]
        with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
        card = files.get("README.md")
        card_data = _front_matter(card.content.decode("utf-8", "replace")) if card and card.content else None
        tags = ["provenir-test-hub"] + (card_data or {}).get("tags", []) if card_data else ["provenir-test-hub"]
        payload = {
            "_id": hashlib.md5(repo.encode()).hexdigest()[:24],  # noqa: S324
            "id": repo,
            "modelId": repo,
            "sha": sha,
            "private": stored.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "cardData": card_data,
            "createdAt": stored.created_at,
            "lastModified": stored.created_at,
            "siblings": [self._sibling(p, f, with_blobs) for p, f in sorted(files.items())],
        }
        self._send_json(200, payload)

    def _tree(self, *, method: str, body: bytes, query: dict, repo: str, rev: str, sub: str | None, **_: Any) -> None:
        stored = self._repo(repo)
        sha = self._commit_of(stored, rev)
        prefix = (sub or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for path, f in sorted(stored.commits[sha].items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if "/" in rest and not recursive:
                folders.add((prefix + "/" if prefix else "") + rest.split("/", 1)[0])
                continue
            entry: dict[str, Any] = {"type": "file", "path": path, "size": f.size}
            if f.lfs_sha256:
                pointer = lfs_pointer(f.lfs_sha256, f.size)
                entry["oid"] = git_blob_sha1(pointer)
                entry["lfs"] = {"oid": f.lfs_sha256, "size": f.size, "pointerSize": len(pointer)}
            else:
                entry["oid"] = git_blob_sha1(f.content or b"")
            entries.append(entry)
        entries += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in sorted(folders)]
        self._send_json(200, entries)

    def _create_branch(self, *, method: str, body: bytes, query: dict, repo: str, branch: str, **_: Any) -> None:
        stored = self._repo(repo, write=True)
        payload = json.loads(body or b"{}")
        if branch in stored.branches:
            raise _HTTPError(409, f"Reference already exists: {branch}")
        start = payload.get("startingPoint") or "main"
        stored.branches[branch] = self._commit_of(stored, start)
        self._send_json(200, {})

    def _preupload(self, *, method: str, body: bytes, query: dict, repo: str, rev: str, **_: Any) -> None:
        stored = self._repo(repo, write=True)
        self._commit_of(stored, rev)
        payload = json.loads(body or b"{}")
        files = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            lfs = path.endswith(LFS_SUFFIXES) or size > REGULAR_LIMIT
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        self._send_json(200, {"files": files, "commitOid": stored.branches.get(rev)})

    def _lfs_batch(self, *, method: str, body: bytes, query: dict, repo: str, **_: Any) -> None:
        self._repo(repo, write=True)
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload":
            raise _HTTPError(400, "the test hub only supports LFS uploads through the batch API")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise _HTTPError(400, "the test hub only supports the basic LFS transfer")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size}
            if oid not in self.state.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.state.endpoint}/lfs-upload/{oid}", "header": {}}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), "application/vnd.git-lfs+json", None, method)

    def _lfs_upload(self, *, method: str, body: bytes, query: dict, oid: str, **_: Any) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HTTPError(400, "uploaded content does not match its sha256")
        self.state.lfs_objects[oid] = body
        self._send(200, b"", "text/plain", None, method)

    def _commit(self, *, method: str, body: bytes, query: dict, repo: str, rev: str, **_: Any) -> None:
        stored = self._repo(repo, write=True)
        parent = self._commit_of(stored, rev)
        if rev not in stored.branches:
            raise _HTTPError(400, f"can only commit to a branch, not {rev}")
        files = dict(stored.commits[parent])
        summary = ""
        for line in body.decode("utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                expected_parent = value.get("parentCommit")
                if expected_parent and expected_parent != parent:
                    raise _HTTPError(412, "parent commit is not the head of the branch")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise _HTTPError(400, "only base64 file content is supported")
                content = base64.b64decode(value["content"])
                files[value["path"]] = StoredFile(None, content, len(content))
            elif key == "lfsFile":
                oid = value["oid"]
                if oid not in self.state.lfs_objects:
                    raise _HTTPError(400, f"LFS object {oid} was never uploaded")
                files[value["path"]] = StoredFile(oid, None, len(self.state.lfs_objects[oid]))
            elif key in ("deletedFile", "deletedFolder"):
                prefix = value["path"].rstrip("/")
                for path in [p for p in files if p == prefix or p.startswith(prefix + "/")]:
                    del files[path]
            else:
                raise _HTTPError(400, f"unsupported commit operation {key!r}")
        sha = hashlib.sha1(parent.encode() + body).hexdigest()  # noqa: S324
        stored.commits[sha] = files
        stored.branches[rev] = sha
        self._send_json(
            200,
            {
                "commitUrl": f"{self.state.endpoint}/{repo}/commit/{sha}",
                "commitOid": sha,
                "commitMessage": summary,
                "pullRequestUrl": None,
            },
        )

    def _resolve(self, *, method: str, body: bytes, query: dict, repo: str, rev: str, file: str, **_: Any) -> None:
        stored = self._repo(repo)
        sha = self._commit_of(stored, rev)
        entry = stored.commits[sha].get(file)
        if entry is None:
            raise _HTTPError(404, "Entry not found", code="EntryNotFound")
        content = self.state.lfs_objects[entry.lfs_sha256] if entry.lfs_sha256 else entry.content or b""
        content = self.state.corrupt.get((repo, file), content)
        headers = {"X-Repo-Commit": sha}
        if entry.lfs_sha256:
            headers["ETag"] = f'"{entry.lfs_sha256}"'
            headers["X-Linked-Etag"] = f'"{entry.lfs_sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        else:
            headers["ETag"] = f'"{git_blob_sha1(content)}"'
        self._send(200, content, "application/octet-stream", headers, method)


def _front_matter(text: str) -> dict[str, Any] | None:
    """The YAML front matter of a model card (what the hub serves as ``cardData``)."""
    import yaml

    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    data = yaml.safe_load(text[3:end])
    return data if isinstance(data, dict) else None
