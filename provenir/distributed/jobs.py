"""Jobs on Ray with their state in the artifact store: what ``POST /jobs/{kind}`` submits.

A job is a ``provenir …`` command line, the one a user would type, run as a Ray job
(``ray.job_submission.JobSubmissionClient``) on the cluster the caller is attached to:
``RAY_ADDRESS`` (or ``address=``) when set, else the embedded local Ray, started with its
dashboard, since Ray's job server lives there. Its inputs (a run config, an eval config) are
written into the store first, so the command reads them on whichever node runs it.

Each job has one record, ``<store>/jobs/<job_id>/job.json`` (written atomically), beside its inputs
and, once it has finished, a copy of its log (``log.txt``) and the JSON document its ``--json``
output printed (``result.json``). Any process that reads the same store (another API replica, a
restarted server) answers for every job: it reads the record and asks Ray for the status of those
not finished yet. A record holds::

    job_id, kind, name, status (PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED), submitter,
    config_hash (sha256 of the config text), created_at, updated_at, submission_id (Ray's,
    "provenir-<kind>-<short id>"), entrypoint, ray_address, run_ids (the runs the command
    recorded), run_id (the last of them), verified, error, message, exit_code, log, stop_requested

Ray's ``stop_job`` sends SIGTERM, waits (:data:`STOP_GRACE_S`, through ``RAY_JOB_STOP_WAIT_TIME_S``)
and then kills: ``provenir train`` marks its run ``stopped`` on SIGTERM, keeps its checkpoints and
prints the ``--resume`` command that continues it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from provenir.core.errors import ConfigError, NotFoundError, ProvenirError
from provenir.core.hashing import sha256_bytes

#: What a job may be: one ``provenir`` command each.
JOB_KINDS = ("train", "rlaif", "sweep", "scan", "eval")
PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"
TERMINAL = frozenset({SUCCEEDED, FAILED, STOPPED})
#: Seconds Ray waits after SIGTERM before it kills a stopped job (the run needs them to say ``stopped``).
STOP_GRACE_S = 60
#: Seconds a submission waits for a just-started cluster's job agent ("try again later").
AGENT_WAIT_S = 90
#: Most bytes of a job's log kept in the store (its tail) and sent by one ``logs`` call.
LOG_BYTES_MAX = 16 * 1024 * 1024
JOB_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[a-z]+-[0-9a-f]{8}$")
RECORD_NAME = "job.json"
LOG_NAME = "log.txt"
RESULT_NAME = "result.json"

# Ray's JobStatus values, one for one; anything newer counts as still running
_RAY_STATUS = {"PENDING": PENDING, "RUNNING": RUNNING, "SUCCEEDED": SUCCEEDED, "FAILED": FAILED,
               "STOPPED": STOPPED}


def validate_job_id(job_id: str) -> str:
    """``job_id`` if it has the shape this module gives ids, else :class:`NotFoundError`."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        raise NotFoundError(f"job {job_id!r} not found (job ids look like 20260131T120000123456Z-train-0a1b2c3d)")
    return job_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_job_id(kind: str) -> tuple[str, str]:
    short = secrets.token_hex(4)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{kind}-{short}", short


@dataclass(frozen=True)
class JobSpec:
    """One job to submit: the command's words after ``provenir`` and the files it reads.

    ``args`` may name ``{job_dir}``: the job's folder in the store, filled in at submission.
    ``files`` (name -> text) are written there first; ``config_text`` is what ``config_hash``
    hashes. ``num_cpus`` is what the command's own process asks of the cluster.
    """

    kind: str
    name: str
    args: tuple[str, ...]
    files: dict[str, str]
    config_text: str
    num_cpus: float = 1.0


class JobStore:
    """Job records and inputs under ``<store>/jobs/`` (local folders: shared by every node)."""

    def __init__(self, root: str | Path) -> None:
        from provenir.core.io import local_path

        local = local_path(root)
        self.uri = str(root)
        self.root = Path(local).expanduser().resolve() if local is not None else None
        self.jobs_dir = self.root / "jobs" if self.root is not None else None

    def job_dir(self, job_id: str) -> Path:
        if self.jobs_dir is None:
            raise ConfigError(
                f"store {self.uri}: jobs run `provenir …` on the cluster's nodes, which read their inputs "
                "from the store's jobs/ folder: use a store on a filesystem the nodes share (a local "
                "path or a mount), or submit with `ray job submit -- provenir …` yourself"
            )
        return self.jobs_dir / validate_job_id(job_id)

    def write_file(self, job_id: str, name: str, data: str | bytes) -> Path:
        from provenir.core.io import atomic_write_bytes

        path = self.job_dir(job_id) / name
        atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
        return path

    def save(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        self.write_file(record["job_id"], RECORD_NAME, text)

    def load(self, job_id: str) -> dict[str, Any]:
        path = self.job_dir(job_id) / RECORD_NAME
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"job {job_id!r} not found in {self.jobs_dir}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProvenirError(f"{path}: unreadable job record ({exc})") from None

    def ids(self) -> list[str]:
        """Every job id, oldest first."""
        if self.jobs_dir is None or not self.jobs_dir.is_dir():
            return []
        return sorted(p.name for p in self.jobs_dir.iterdir()
                      if JOB_ID_PATTERN.match(p.name) and (p / RECORD_NAME).is_file())

    def lock(self, job_id: str) -> Any:
        from filelock import FileLock

        return FileLock(str(self.job_dir(job_id) / ".lock"), timeout=60)


def _entrypoint(args: list[str]) -> str:
    import shlex

    return shlex.join(["provenir", *args])


class RayJobs:
    """Submit, follow, stop and read the logs of ``provenir`` commands run as Ray jobs.

    Args:
        store_root: the artifact store (a local folder; see :class:`JobStore`).
        address: the cluster: a Ray address (``host:6379``, ``auto``, ``ray://…``) or the dashboard's
            ``http://host:8265``. Default ``$RAY_ADDRESS``, else the embedded local Ray (started
            here with its dashboard when this process has not started Ray yet).
        client: a ready ``JobSubmissionClient`` (or an object with its methods) to use instead.
        on_finish: called once with a job's record when it is first seen finished.
    """

    def __init__(self, store_root: str | Path, *, address: str | None = None, client: Any = None,
                 on_finish: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = JobStore(store_root)
        self.address = address
        self._client = client
        self._client_given = client is not None
        self._lock = threading.Lock()
        self.on_finish = on_finish

    def __getstate__(self) -> dict[str, Any]:
        # Ray Serve pickles the app for its replicas: each makes its own connection
        state = dict(self.__dict__)
        state["_lock"] = None
        if not self._client_given:
            state["_client"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ----- the cluster -----
    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    self._client = _job_client(self.address)
                except Exception as exc:
                    raise ClusterUnavailable(
                        f"the Ray cluster could not be reached: {explain_ray_error(exc)}") from exc
            return self._client

    def _cluster_address(self) -> str:
        try:
            return str(self.client.get_address())
        except Exception:  # noqa: BLE001 - a stand-in client may not say
            return self.address or os.environ.get("RAY_ADDRESS") or "embedded"

    # ----- submission -----
    def submit(self, spec: JobSpec, *, submitter: str = "anonymous") -> dict[str, Any]:
        """Write the job's inputs and record, submit it to Ray, and return the record (``PENDING``)."""
        if spec.kind not in JOB_KINDS:
            raise ConfigError(f"job kind {spec.kind!r}: expected one of {', '.join(JOB_KINDS)}")
        job_id, short = _new_job_id(spec.kind)
        job_dir = self.store.job_dir(job_id)
        for name, text in spec.files.items():
            self.store.write_file(job_id, name, text)
        args = [a.replace("{job_dir}", str(job_dir)) for a in spec.args]
        entrypoint = _entrypoint(args)
        submission_id = f"provenir-{spec.kind}-{short}"
        now = _now()
        record: dict[str, Any] = {
            "job_id": job_id, "kind": spec.kind, "name": spec.name, "status": PENDING,
            "submitter": submitter, "config_hash": sha256_bytes(spec.config_text.encode()),
            "created_at": now, "updated_at": now, "submission_id": submission_id,
            "entrypoint": entrypoint, "ray_address": None, "run_ids": [], "run_id": None,
            "verified": None, "error": None, "message": None, "exit_code": None,
            "log": f"ray job logs {submission_id}", "stop_requested": False,
        }
        self.store.save(record)  # first: a crash after submit_job still leaves the job findable
        try:
            self._submit_when_ready(
                entrypoint=entrypoint,
                submission_id=submission_id,
                metadata={"job_id": job_id, "kind": spec.kind, "name": spec.name[:200],
                          "submitter": submitter[:200]},
                runtime_env={"env_vars": _job_env()},
                entrypoint_num_cpus=spec.num_cpus,
            )
        except Exception as exc:
            error = str(exc) if isinstance(exc, ClusterUnavailable) else \
                f"the Ray cluster refused the job: {explain_ray_error(exc)}"
            record.update(status=FAILED, updated_at=_now(), error=error)
            self.store.save(record)
            raise ClusterUnavailable(record["error"]) from exc
        record["ray_address"] = self._cluster_address()
        self.store.save(record)
        return record

    def _submit_when_ready(self, **job: Any) -> None:
        """``submit_job``, again while a cluster that has just started has no job agent up yet."""
        import time

        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                self.client.submit_job(**job)
                return
            except Exception as exc:
                if "try again later" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    # ----- following -----
    def get(self, job_id: str) -> dict[str, Any]:
        """The job's record, its status refreshed from Ray while it has not finished."""
        record = self.store.load(validate_job_id(job_id))
        return record if record["status"] in TERMINAL else self._refresh(record)

    def list(self) -> list[dict[str, Any]]:
        """Every job of the store, oldest first, unfinished ones refreshed from Ray."""
        out = []
        for job_id in self.store.ids():
            try:
                out.append(self.get(job_id))
            except ProvenirError:
                continue  # a record being written for the first time, or a broken one: skip it
        return out

    def _refresh(self, record: dict[str, Any]) -> dict[str, Any]:
        if record.get("ray_address") is None and _age_s(record) < AGENT_WAIT_S + 60:
            return record  # its submission is still under way (the record is written first)
        try:
            info = self.client.get_job_info(record["submission_id"])
        except Exception as exc:  # noqa: BLE001 - the cluster's answer, reported, never a 500
            if _is_missing(exc):
                return self._finish(record, FAILED, message=None, exit_code=None, error=(
                    f"the Ray cluster has no job {record['submission_id']}: it was restarted or is not "
                    "the one that ran it; submit the job again"))
            return {**record, "refresh_error": f"{type(exc).__name__}: {exc}"}
        status = _RAY_STATUS.get(str(getattr(info.status, "value", info.status)), RUNNING)
        exit_code = getattr(info, "driver_exit_code", None)
        if status in TERMINAL:
            return self._finish(record, status, message=info.message, exit_code=exit_code)
        if status != record["status"]:
            with self.store.lock(record["job_id"]):
                current = self.store.load(record["job_id"])
                if current["status"] in TERMINAL:
                    return current
                current.update(status=status, updated_at=_now(), message=info.message)
                self.store.save(current)
                return current
        return {**record, "message": info.message}

    def _finish(self, record: dict[str, Any], status: str, *, message: str | None, exit_code: int | None,
                error: str | None = None) -> dict[str, Any]:
        """Record a finished job once: its log and result copied into the store, the runs it made."""
        job_id = record["job_id"]
        with self.store.lock(job_id):
            current = self.store.load(job_id)
            if current["status"] in TERMINAL:
                return current
            log = "" if error else self._logs_text(current)
            if log:
                self.store.write_file(job_id, LOG_NAME, log[-LOG_BYTES_MAX:])
                current["log"] = str(self.store.job_dir(job_id) / LOG_NAME)
            result = last_json_document(log)
            if result is not None:
                self.store.write_file(job_id, RESULT_NAME, json.dumps(result, indent=2, sort_keys=True) + "\n")
            run_ids = self._runs_of(current)
            verified = None
            if isinstance(result, dict) and isinstance(result.get("verification"), dict):
                verified = bool(result["verification"].get("ok"))
            if status == FAILED and error is None:
                error = _failure_line(log) or message
            current.update(status=status, updated_at=_now(), message=message, exit_code=exit_code,
                           run_ids=run_ids, run_id=run_ids[-1] if run_ids else None, verified=verified,
                           error=error if status == FAILED else None)
            self.store.save(current)
        if self.on_finish is not None:
            try:
                self.on_finish(current)
            except Exception:  # noqa: BLE001 - a failing hook must not hide the job's state
                pass
        return current

    def _runs_of(self, record: dict[str, Any]) -> list[str]:
        """Runs whose manifest's command names this job's folder (their config came from it)."""
        from provenir.core.store import ArtifactStore

        store = ArtifactStore(str(self.store.root))
        marker = str(self.store.job_dir(record["job_id"]))
        since = record["job_id"].split("-", 1)[0]
        found = []
        for run_id in store.list_runs():
            if run_id[: len(since)] < since:
                continue  # run ids sort by creation time: older runs cannot be this job's
            try:
                manifest = store.load_manifest(run_id)
            except ProvenirError:
                continue
            if any(marker in str(word) for word in manifest.command):
                found.append(run_id)
        return found

    # ----- stopping and logs -----
    def stop(self, job_id: str) -> dict[str, Any]:
        """Ask Ray to stop the job (SIGTERM, then a kill after :data:`STOP_GRACE_S`)."""
        record = self.get(job_id)
        if record["status"] in TERMINAL:
            raise JobFinished(f"job {job_id} has already finished ({record['status']})")
        self.client.stop_job(record["submission_id"])
        with self.store.lock(job_id):
            current = self.store.load(job_id)
            if current["status"] not in TERMINAL:
                current.update(stop_requested=True, updated_at=_now())
                self.store.save(current)
        return current

    def _logs_text(self, record: dict[str, Any]) -> str:
        try:
            return str(self.client.get_job_logs(record["submission_id"]))
        except Exception:  # noqa: BLE001 - no log is not a reason to lose the job's state
            return ""

    def logs(self, job_id: str) -> str:
        """The job's log so far (its last :data:`LOG_BYTES_MAX` bytes)."""
        record = self.get(job_id)
        saved = self.store.job_dir(job_id) / LOG_NAME
        if record["status"] in TERMINAL and saved.is_file():
            return saved.read_text(encoding="utf-8", errors="replace")
        return self._logs_text(record)[-LOG_BYTES_MAX:]

    async def follow_logs(self, job_id: str, max_bytes: int = LOG_BYTES_MAX) -> AsyncIterator[str]:
        """The log as it grows, until the job finishes or ``max_bytes`` have been sent."""
        record = self.get(job_id)
        saved = self.store.job_dir(job_id) / LOG_NAME
        if record["status"] in TERMINAL:
            text = saved.read_text(encoding="utf-8", errors="replace") if saved.is_file() else ""
            yield text[:max_bytes]
            return
        sent = 0
        async for chunk in self.client.tail_job_logs(record["submission_id"]):
            chunk = chunk[: max_bytes - sent]
            sent += len(chunk)
            yield chunk
            if sent >= max_bytes:
                return


class JobFinished(ProvenirError):
    """A request that needs a running job (``DELETE``) named one that has finished."""


class ClusterUnavailable(ProvenirError):
    """The Ray cluster did not answer, or refused this process (its token, say)."""


def explain_ray_error(exc: BaseException) -> str:
    """An error from Ray, with what to do when the cluster wants its token (``RAY_AUTH_MODE=token``)."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if ("401" in text or "403" in text or "authentication" in lowered or "unauthorized" in lowered) \
            and "RAY_AUTH_TOKEN" not in text:
        text += (" — the cluster uses Ray's token authentication: give this process RAY_AUTH_MODE=token and "
                 "the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    return text


def _age_s(record: dict[str, Any]) -> float:
    try:
        created = datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
    except (KeyError, ValueError, AttributeError):
        return float("inf")
    return (datetime.now(timezone.utc) - created).total_seconds()


def _is_missing(exc: Exception) -> bool:
    text = str(exc).lower()
    return "does not exist" in text or "not found" in text or "404" in text


def _failure_line(log: str) -> str | None:
    """The command's own error line (``Error: …``), else the log's last line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("Error:", "error:")) or "Error:" in line[:40]:
            return line[:2000]
    return lines[-1][:2000] if lines else None


def last_json_document(text: str) -> Any:
    """The last top-level JSON object a ``--json`` command printed in ``text`` (``print_json``
    indents by two, so the document opens with a line ``{`` and closes with a line ``}``)."""
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start] != "{":
            continue
        for end in range(start + 1, len(lines)):
            if lines[end] == "}":
                try:
                    return json.loads("\n".join(lines[start:end + 1]))
                except ValueError:
                    break
    return None


def _job_env() -> dict[str, str]:
    """What a job's process needs beyond the cluster's environment.

    ``provenir`` is looked up on ``PATH``: this interpreter's scripts folder goes first, which on a
    cluster of other machines is a folder that does not exist there (harmless). Ray expands
    ``${PATH}`` to the node's own.
    """
    env = {"PATH": f"{Path(sys.executable).parent}:${{PATH}}",
           "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S), "PYTHONUNBUFFERED": "1"}
    for key in ("PROVENIR_STORE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def _job_client(address: str | None) -> Any:
    """A ``JobSubmissionClient`` for ``address``, ``$RAY_ADDRESS``, the Ray this process is attached
    to, or a new embedded local Ray (with its dashboard: Ray's job server runs in it)."""
    import ray
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        if not ray.is_initialized():
            start_embedded_ray()
        address = ray.get_runtime_context().gcs_address
    return JobSubmissionClient(address)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def start_embedded_ray(num_cpus: int | None = None) -> dict[str, Any]:
    """Start the embedded local Ray with its dashboard (jobs need it), then connect as usual.

    :func:`provenir.distributed.cluster.connect` starts the embedded Ray without a dashboard;
    initialising first with one makes its ``ray.init`` a no-op.
    """
    import ray
    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT as agent_port

    from provenir.distributed.cluster import _QUIET_ENV, connect

    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        if not _port_free(agent_port):
            # ray.init cannot move the agent, and a raylet whose agent fails to start dies with it
            raise ClusterUnavailable(
                f"another Ray instance on this machine holds port {agent_port} (its dashboard agent), so "
                "an embedded Ray here could not run Ray's job server: point RAY_ADDRESS at that cluster, "
                "or at a head of your own (`ray start --head --dashboard-agent-listen-port=PORT`)")
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 namespace="provenir", log_to_driver=False, ignore_reinit_error=True)
    return connect()
