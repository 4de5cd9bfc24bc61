"""The REST API (FastAPI): health, training jobs, manifests, evaluation, adapters, the audit log.

``create_app()`` reads its settings from the environment when not given: ``PROVENIR_STORE`` (the
artifact store root, default ``artifacts``), ``PROVENIR_API_TOKEN`` (when set, every endpoint but
``/health`` needs ``Authorization: Bearer <token>``), ``PROVENIR_AUDIT_DIR`` (default
``<store>/audit``; the local ``artifacts/audit`` for a URI store) and ``PROVENIR_MAX_BODY_BYTES``
(the largest request body, default 4 MiB). Start it with ``provenir serve`` (which refuses to
listen beyond loopback without a token), ``uvicorn provenir.server.app:create_app --factory``, or
on Ray Serve (:mod:`provenir.server.serve`).

A client mistake is a 4xx, never a 500: a body over the size limit is a ``413`` (counted while it
streams in); ``NaN``/``Infinity``, invalid UTF-8 or a lone surrogate in a JSON body is a ``422``
naming the field (:mod:`provenir.server._edge`); query parameters are typed and bounded
(``GET /audit?limit=1..10000&since=<ISO-8601>``).

Jobs (``POST /jobs/train``, ``/jobs/rlaif``, ``/jobs/scan``, ``/jobs/eval``) run on Ray, never
inside the API process: each is the ``provenir …`` command a user would type, submitted as a Ray job
to the cluster at ``RAY_ADDRESS`` (or ``ray_address=``), else to the embedded local Ray. Its record
lives in the artifact store (``<store>/jobs/<job_id>/job.json``, see :mod:`provenir.distributed.jobs`),
so any replica and a restarted server answer ``GET /jobs`` and ``GET /jobs/{job_id}``;
``GET /jobs/{job_id}/logs`` streams its log and ``DELETE /jobs/{job_id}`` stops it (SIGTERM: a
training run is marked ``stopped`` and continues with ``provenir train --resume``).
"""



import hmac
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from provenir.core.errors import ProvenirError
from provenir.server._jobs import (  # noqa: F401 - the job request models, importable from here as before
    EvalJobRequest,
    RLAIFJobRequest,
    ScanJobRequest,
    TrainJobRequest,
)

if TYPE_CHECKING:
    from fastapi import FastAPI  # noqa: F401

TOKEN_ENV = "PROVENIR_API_TOKEN"
MAX_BODY_ENV = "PROVENIR_MAX_BODY_BYTES"
#: Most audit entries one ``GET /audit`` returns.
AUDIT_LIMIT_MAX = 10_000


class ErrorResponse(BaseModel):
    """A refused request: what was wrong."""

    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route gives besides the ``422`` FastAPI documents."""
    described = {400: "Bad request", 401: "Missing or invalid bearer token", 404: "Not found",
                 409: "The job has already finished", 413: "Request body too large",
                 503: "The Ray cluster could not be reached"}
    return {code: {"model": ErrorResponse, "description": described[code]} for code in codes}


def parse_since(value: Any) -> datetime | None:
    """An ISO-8601 date or time (``2026-01-31``, ``2026-01-31T12:00:00Z``) as an aware datetime,
    UTC when it names no offset. Unix seconds and other forms are a ``ValueError``."""
    if value is None or isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        if text[-1:] in ("z", "Z"):  # Python 3.10's fromisoformat does not read the Z suffix
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                "expected an ISO-8601 date or time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
            ) from None
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _entry_time(entry: dict[str, Any]) -> datetime | None:
    try:
        return parse_since(entry.get("ts"))
    except (ValueError, TypeError):
        return None


def _max_body_bytes(value: int | None) -> int:
    from provenir.core.errors import ConfigError
    from provenir.server._edge import MAX_BODY_BYTES

    if value is None:
        raw = os.environ.get(MAX_BODY_ENV, "").strip()
        if not raw:
            return MAX_BODY_BYTES
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"${MAX_BODY_ENV}={raw!r}: expected a number of bytes") from None
    if value < 1:
        raise ConfigError(f"max_body_bytes / ${MAX_BODY_ENV}: must be at least 1 (got {value})")
    return value


class EvalRequest(BaseModel):
    """Records (with their references) and one prediction per record."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]]
    predictions: list[str]
    metrics: list[str] | None = None
    reference_field: str | None = None


def create_app(
    store_root: str | None = None,
    *,
    api_token: str | None = None,
    audit_dir: str | None = None,
    job_workers: int = 1,
    max_body_bytes: int | None = None,
    ray_address: str | None = None,
    job_client: Any = None,
) -> "FastAPI":
    """Build the FastAPI application.

    Args:
        store_root: artifact store root (default ``$PROVENIR_STORE`` or ``artifacts``).
        api_token: bearer token required on every endpoint but ``/health``
            (default ``$PROVENIR_API_TOKEN``; no token means no authentication — loopback only).
        audit_dir: audit log folder (default: :func:`~provenir.governance.audit.default_audit_dir`).
        job_workers: kept for callers of earlier versions; jobs now run on Ray, which schedules them.
        max_body_bytes: largest request body; a larger one is answered ``413`` before it is read
            whole (default ``$PROVENIR_MAX_BODY_BYTES`` or 4 MiB).
        ray_address: the Ray cluster jobs are submitted to (default ``$RAY_ADDRESS``, else the
            embedded local Ray, started on the first job).
        job_client: a ``ray.job_submission.JobSubmissionClient`` (or an object with its methods)
            to submit through instead of connecting to ``ray_address``.
    """
    from typing import Annotated

    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from pydantic import BeforeValidator

    from provenir import __version__
    from provenir.core.errors import NotFoundError, ProvenirError
    from provenir.core.store import ArtifactStore, validate_run_id
    from provenir.distributed.jobs import (
        LOG_BYTES_MAX,
        ClusterUnavailable,
        JobFinished,
        RayJobs,
        explain_ray_error,
        validate_job_id,
    )
    from provenir.governance.audit import default_audit_dir
    from provenir.server import _jobs
    from provenir.server._edge import RequestGuard

    root = store_root or os.environ.get("PROVENIR_STORE") or "artifacts"
    token = (api_token if api_token is not None else os.environ.get(TOKEN_ENV)) or None
    audit_root = audit_dir or str(default_audit_dir(root))  # a URI store keeps its log on local disk
    store = ArtifactStore(root)
    del job_workers
    jobs = RayJobs(root, address=ray_address, client=job_client,
                   on_finish=lambda record: _audit_finished(audit_root, record))
    job_store_root = str(jobs.store.root or root)  # absolute: the job's command runs in another folder
    body_limit = _max_body_bytes(max_body_bytes)

    app = FastAPI(
        title="Provenir",
        version=__version__,
        description="Reproducible, provenance-tracked LLM post-training.",
    )
    app.state.store = store
    app.state.jobs = jobs
    app.add_middleware(RequestGuard, max_body_bytes=body_limit)

    def authenticate(request: Request) -> None:
        request.state.principal = "anonymous"
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = "api-token"  # the one principal a shared bearer token names

    auth = [Depends(authenticate)]
    reads = _errors(400, 401, 404)  # what every authenticated route may answer besides 2xx/422
    writes = _errors(400, 401, 404, 413)
    submits = _errors(400, 401, 404, 413, 503)

    def invalid(loc: tuple[Any, ...], errors: list[dict[str, Any]]) -> RequestValidationError:
        """A 422 in FastAPI's shape for errors found below ``loc`` in the body."""
        return RequestValidationError([
            {"type": e.get("type", "value_error"), "loc": (*loc, *e.get("loc", ())),
             "msg": e.get("msg", ""), "input": e.get("input")} for e in errors])

    @app.exception_handler(ProvenirError)
    async def _provenir_error(_request: Request, exc: ProvenirError) -> JSONResponse:
        status = (404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, JobFinished)
                  else 503 if isinstance(exc, ClusterUnavailable) else 400)
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    from fastapi.exception_handlers import http_exception_handler
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.routing import Match

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 405:  # Starlette names one route's methods; a path may have several routes
            matching = [r for r in app.router.routes if getattr(r, "methods", None)
                        and r.matches(request.scope)[0] is not Match.NONE]
            allowed = {m for r in matching if r.path == matching[0].path for m in r.methods} if matching else set()
            exc = StarletteHTTPException(405, exc.detail, headers={"Allow": ", ".join(sorted(allowed))})
        return await http_exception_handler(request, exc)

    def validated(model: Any, data: dict[str, Any], loc: tuple[Any, ...]) -> Any:
        from pydantic import ValidationError

        try:
            return model.model_validate(data)
        except ValidationError as exc:  # a client error: 422 naming the config's field
            raise invalid(loc, exc.errors(include_url=False, include_context=False)) from None

    def run_config(data: dict[str, Any]) -> Any:
        from provenir.core.config import RunConfig

        return validated(RunConfig, data, ("body", "config"))

    def parents(run_ids: list[str], field: str = "provenance") -> list[str]:
        try:  # a parent must be a run of this store: refused now, not when the job gets to it
            return store.check_parents(run_ids)
        except NotFoundError as exc:
            raise HTTPException(status_code=400, detail=f"{field}: {exc}") from None

    def submit(request: Request, spec: Any) -> dict[str, Any]:
        try:
            record = jobs.submit(spec, submitter=request.state.principal)
        except ProvenirError:
            raise
        except Exception as exc:  # connecting to Ray failed: the cluster, not the client, is at fault
            raise ClusterUnavailable(f"the Ray cluster could not be reached: {explain_ray_error(exc)}") from None
        _audit(audit_root, "server.job.submit", job_id=record["job_id"], kind=record["kind"],
               submitter=record["submitter"], config_hash=record["config_hash"],
               submission_id=record["submission_id"])
        return record

    def refreshed(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ProvenirError:
            raise
        except Exception as exc:  # noqa: BLE001 - the cluster's failure, never a 500
            raise ClusterUnavailable(f"the Ray cluster could not be reached: {explain_ray_error(exc)}") from None

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok", "version": __version__}

    @app.post("/jobs/train", dependencies=auth, status_code=202, responses=submits)
    def submit_train(request: Request, body: _jobs.TrainJobRequest) -> dict[str, Any]:
        """Validate a run config and submit ``provenir train`` as a Ray job; follow it at
        ``/jobs/{job_id}``."""
        config = run_config(body.config)
        provenance = parents(body.provenance)
        if body.resume is not None:
            try:
                validate_run_id(body.resume)
            except ProvenirError as exc:
                raise HTTPException(status_code=400, detail=f"resume: {exc}") from None
            parents([body.resume], "resume")
        return submit(request, _jobs.train_spec(config, body, job_store_root, provenance))

    @app.post("/jobs/rlaif", dependencies=auth, status_code=202, responses=submits)
    def submit_rlaif(request: Request, body: _jobs.RLAIFJobRequest) -> dict[str, Any]:
        """Submit ``provenir rlaif`` (generate → judge → DPO → eval → gate, repeated) as a Ray job."""
        config = run_config(body.config)
        if body.start is not None:
            parents([body.start], "start")
        return submit(request, _jobs.rlaif_spec(config, body, job_store_root))

    @app.post("/jobs/scan", dependencies=auth, status_code=202, responses=submits)
    def submit_scan(request: Request, body: _jobs.ScanJobRequest) -> dict[str, Any]:
        """Submit ``provenir scan`` (PII and secrets; the report and masked copy in the job's folder)."""
        if not body.pii and not body.secrets:
            raise invalid(("body",), [{"type": "value_error", "loc": ("secrets",),
                                      "msg": "pii and secrets both false leave nothing to scan"}])
        return submit(request, _jobs.scan_spec(body))

    @app.post("/jobs/eval", dependencies=auth, status_code=202, responses=submits)
    def submit_eval(request: Request, body: _jobs.EvalJobRequest) -> dict[str, Any]:
        """Submit ``provenir eval`` (metrics with bootstrap confidence intervals) as a Ray job."""
        from provenir.eval._config import EvalConfig

        return submit(request, _jobs.eval_spec(validated(EvalConfig, body.config, ("body", "config"))))

    @app.post("/jobs/sweep", dependencies=auth, status_code=202, responses=submits)
    def submit_sweep(request: Request, body: _jobs.SweepJobRequest) -> dict[str, Any]:
        """Validate a sweep (a run config with its ``sweep:`` section) and submit ``provenir sweep``
        as a Ray job: every trial a trl run on Ray Train, ASHA stopping the laggards."""
        import tempfile
        from pathlib import Path

        from provenir.core.errors import ConfigError
        from provenir.core.sweep_config import load_sweep

        section = body.config.get("sweep")
        if not isinstance(section, dict):
            raise invalid(("body", "config", "sweep"), [{"type": "missing", "loc": (),
                                                         "msg": "a sweep needs a `sweep:` mapping beside the run's keys"}])
        config = run_config({k: v for k, v in body.config.items() if k != "sweep"})
        if body.resume is not None:
            try:
                validate_run_id(body.resume)
            except ProvenirError as exc:
                raise HTTPException(status_code=400, detail=f"resume: {exc}") from None
            parents([body.resume], "resume")
        with tempfile.TemporaryDirectory(prefix="provenir-sweep-check-") as folder:
            path = Path(folder) / "sweep.yaml"
            path.write_text(_jobs.sweep_yaml(config, section), encoding="utf-8")
            try:  # the section's own rules (search space against the run, scheduler, metric)
                load_sweep(path, check_inputs=False)
            except ConfigError as exc:
                message = str(exc).split(": ", 1)[-1] if str(exc).startswith(str(path)) else str(exc)
                raise invalid(("body", "config", "sweep"), [{"type": "value_error", "loc": (), "msg": message}]) from None
        return submit(request, _jobs.sweep_spec(config, section, body, job_store_root))

    @app.get("/jobs", dependencies=auth, responses={**reads, **_errors(503)})
    def list_jobs() -> list[dict[str, Any]]:
        """Every job of the store, oldest first; unfinished ones with their status from Ray."""
        return refreshed(jobs.list)

    @app.get("/jobs/{job_id}", dependencies=auth, responses={**reads, **_errors(503)})
    def get_job(job_id: str) -> dict[str, Any]:
        return refreshed(jobs.get, validate_job_id(job_id))

    @app.delete("/jobs/{job_id}", dependencies=auth, status_code=202,
                responses={**reads, **_errors(409, 503)})
    def stop_job(request: Request, job_id: str) -> dict[str, Any]:
        """Stop a job: Ray sends SIGTERM (a training run is marked ``stopped``, resumable)."""
        record = refreshed(jobs.stop, validate_job_id(job_id))
        _audit(audit_root, "server.job.stop", job_id=job_id, submission_id=record["submission_id"],
               by=request.state.principal)
        return record

    @app.get("/jobs/{job_id}/logs", dependencies=auth, response_class=StreamingResponse, responses={
        **reads, **_errors(503), 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                        "description": "The job's log (stdout and stderr)"}})
    def job_logs(
        job_id: str,
        follow: Annotated[bool, Query(description="Keep streaming until the job finishes.")] = False,
        max_bytes: Annotated[int, Query(ge=1, le=LOG_BYTES_MAX, description=(
            "Most characters to send."))] = LOG_BYTES_MAX,
    ) -> StreamingResponse:
        """The job's log: what it has written so far, or (``follow=true``) as it is written."""
        validate_job_id(job_id)
        if not follow:
            text = refreshed(jobs.logs, job_id)
            return StreamingResponse(iter([text[-max_bytes:]]), media_type="text/plain; charset=utf-8")
        refreshed(jobs.get, job_id)  # a 404 now, not a broken stream later

        async def chunks() -> Any:
            try:
                async for chunk in jobs.follow_logs(job_id, max_bytes):
                    yield chunk
            except Exception as exc:  # noqa: BLE001 - the stream has begun: say so in it
                yield f"\n[provenir: log stream ended: {type(exc).__name__}: {exc}]\n"

        return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")

    @app.get("/manifests", dependencies=auth, responses=reads)
    def list_manifests() -> list[str]:
        """Every run id in the store, oldest first."""
        return store.list_runs()

    @app.get("/manifests/{run_id}", dependencies=auth, responses=reads)
    def get_manifest(run_id: str) -> dict[str, Any]:
        return store.load_manifest(validate_run_id(run_id)).to_dict()

    @app.get("/manifests/{run_id}/verify", dependencies=auth, responses=reads)
    def verify_manifest(run_id: str) -> dict[str, Any]:
        from provenir.core.run import verify_run

        store.load_manifest(validate_run_id(run_id))
        return verify_run(store, run_id).to_dict()

    @app.post("/eval", dependencies=auth, responses=writes)
    def evaluate(request: EvalRequest) -> dict[str, Any]:
        """Score predictions against the records' references, with bootstrap confidence intervals."""
        from provenir.data.dataset import JsonlDataset
        from provenir.eval.harness import MultiMetricEvaluator

        if len(request.records) != len(request.predictions):
            raise invalid(("body", "predictions"), [{"type": "length_mismatch", "msg": (
                f"{len(request.records)} records but {len(request.predictions)} predictions: "
                "give one prediction per record")}])
        kwargs: dict[str, Any] = {}
        if request.metrics is not None:
            kwargs["metrics"] = request.metrics
        if request.reference_field is not None:
            kwargs["reference_field"] = request.reference_field
        result = MultiMetricEvaluator(**kwargs).evaluate(
            JsonlDataset.from_records(request.records), request.predictions
        )
        return {
            "metrics": {
                name: {"mean": m.mean, "ci_lower": m.ci_lower, "ci_upper": m.ci_upper, "n": m.n}
                for name, m in result.metrics.items()
            }
        }

    @app.get("/adapters", dependencies=auth, responses=reads)
    def list_adapters() -> list[dict[str, Any]]:
        """Runs that produced an adapter, with the adapter files' sha256."""
        out = []
        for run_id in store.list_runs():
            try:
                manifest = store.load_manifest(run_id)
            except ProvenirError:
                continue
            files = {k: v for k, v in manifest.artifacts.items() if k.startswith("adapter/")}
            if files:
                out.append({
                    "run_id": run_id,
                    "name": manifest.config.get("name"),
                    "base_model": manifest.config.get("model_name_or_path"),
                    "status": manifest.status,
                    "path": store.path(run_id, "adapter"),
                    "files": files,
                    "provenance": manifest.provenance,
                })
        return out

    since_type = Annotated[datetime | None, BeforeValidator(parse_since)]

    @app.get("/audit", dependencies=auth, response_class=PlainTextResponse, responses={
        **reads, 200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                       "description": "Audit entries as JSON lines, oldest first"}})
    def audit_log(
        limit: Annotated[int, Query(ge=1, le=AUDIT_LIMIT_MAX, description=(
            "Most entries to return (the oldest that match first)."))] = AUDIT_LIMIT_MAX,
        since: Annotated[since_type, Query(description=(
            "Only entries at or after this ISO-8601 date or time (UTC when no offset), "
            "e.g. 2026-01-31T12:00:00Z."))] = None,
    ) -> PlainTextResponse:
        """The audit log as JSONL: at most ``limit`` entries, from ``since`` on when given."""
        import json

        entries = _read_audit(audit_root)
        if since is not None:
            entries = [e for e in entries if (t := _entry_time(e)) is not None and t >= since]
        entries = entries[:limit]
        body = "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries)
        return PlainTextResponse(body, media_type="application/x-ndjson")

    return app


def _audit_finished(audit_dir: str, record: dict[str, Any]) -> None:
    """One audit event when a job is first seen finished (``server.train`` for training jobs)."""
    _audit(audit_dir, "server.job.finish", job_id=record["job_id"], kind=record["kind"],
           status=record["status"], run_ids=record["run_ids"], exit_code=record["exit_code"])
    if record["kind"] == "train" and record["run_id"]:
        _audit(audit_dir, "server.train", run_id=record["run_id"], verified=record["verified"],
               job_id=record["job_id"])


def _audit(audit_dir: str, event: str, **details: Any) -> None:
    from provenir.governance.audit import AuditLogger

    AuditLogger(audit_dir).log(event, actor="provenir-server", **details)


def _read_audit(audit_dir: str) -> list[dict[str, Any]]:
    from provenir.governance.audit import AuditLogger

    if not os.path.isdir(audit_dir):
        return []
    return AuditLogger(audit_dir).read()
