"""The REST API (FastAPI): health, training jobs, manifests, evaluation, adapters, the audit log.

``create_app()`` reads its settings from the environment when not given: ``PROVENIR_STORE`` (the
artifact store root, default ``artifacts``), ``PROVENIR_API_TOKEN`` (when set, every endpoint but
``/health`` needs ``Authorization: Bearer <token>``) and ``PROVENIR_AUDIT_DIR`` (default
``<store>/audit``; the local ``artifacts/audit`` for a URI store). Start it with ``provenir serve`` (which refuses to listen beyond loopback
without a token), ``uvicorn provenir.server.app:create_app --factory``, or on Ray Serve
(:mod:`provenir.server.serve`).

Training jobs run the same library call as ``provenir run`` (:func:`provenir.pipeline.run_job`) on a
small worker pool; ``GET /jobs/{job_id}`` follows them.
"""



import hmac
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fastapi import FastAPI  # noqa: F401

TOKEN_ENV = "PROVENIR_API_TOKEN"


class TrainJobRequest(BaseModel):
    """A training job: a full run config (as the YAML would give it) and optional parent runs."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any]
    provenance: list[str] = Field(default_factory=list)


class EvalRequest(BaseModel):
    """Records (with their references) and one prediction per record."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]]
    predictions: list[str]
    metrics: list[str] | None = None
    reference_field: str | None = None


class _Jobs:
    """In-memory job table; the pool runs one job at a time by default (training is heavy)."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="provenir-job")
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray Serve ships the app to its replicas by pickling: each replica gets a fresh table
        return (_Jobs, (self._workers,))

    def submit(self, fn: Any, **info: Any) -> dict[str, Any]:
        job_id = uuid.uuid4().hex
        job = {"job_id": job_id, "status": "queued", "run_id": None, "error": None, **info}
        with self._lock:
            self._jobs[job_id] = job

        def run() -> None:
            self._update(job_id, status="running")
            try:
                run_id, verified = fn()
                self._update(job_id, status="completed", run_id=run_id, verified=verified)
            except Exception as exc:  # noqa: BLE001 - reported to the client, never raised
                self._update(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")

        self._pool.submit(run)
        return dict(job)

    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            self._jobs[job_id].update(fields)

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return dict(job) if job else None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(j) for j in self._jobs.values()]


def create_app(
    store_root: str | None = None,
    *,
    api_token: str | None = None,
    audit_dir: str | None = None,
    job_workers: int = 1,
) -> "FastAPI":
    """Build the FastAPI application.

    Args:
        store_root: artifact store root (default ``$PROVENIR_STORE`` or ``artifacts``).
        api_token: bearer token required on every endpoint but ``/health``
            (default ``$PROVENIR_API_TOKEN``; no token means no authentication — loopback only).
        audit_dir: audit log folder (default: :func:`~provenir.governance.audit.default_audit_dir`).
        job_workers: training jobs run at once.
    """
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    from provenir import __version__
    from provenir.core.errors import NotFoundError, ProvenirError
    from provenir.core.store import ArtifactStore, validate_run_id
    from provenir.governance.audit import default_audit_dir

    root = store_root or os.environ.get("PROVENIR_STORE") or "artifacts"
    token = (api_token if api_token is not None else os.environ.get(TOKEN_ENV)) or None
    audit_root = audit_dir or str(default_audit_dir(root))  # a URI store keeps its log on local disk
    store = ArtifactStore(root)
    jobs = _Jobs(job_workers)

    app = FastAPI(
        title="Provenir",
        version=__version__,
        description="Reproducible, provenance-tracked LLM post-training.",
    )
    app.state.store = store
    app.state.jobs = jobs

    def authenticate(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authenticate)]

    @app.exception_handler(ProvenirError)
    async def _provenir_error(_request: Request, exc: ProvenirError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 400
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok", "version": __version__}

    @app.post("/jobs/train", dependencies=auth, status_code=202)
    def submit_train(request: TrainJobRequest) -> dict[str, Any]:
        """Validate a run config and queue the job; follow it at ``/jobs/{job_id}``."""
        from provenir.core.config import RunConfig

        try:
            config = RunConfig.model_validate(request.config)
        except Exception as exc:  # pydantic's ValidationError: a client error
            raise HTTPException(status_code=422, detail=str(exc)) from None
        try:  # a parent must be a run of this store: refused now, not when the job gets to it
            provenance = store.check_parents(request.provenance)
        except NotFoundError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

        def work() -> tuple[str, bool]:
            from provenir.pipeline import run_job

            result = run_job(config, provenance=provenance, store=store,
                             command=["provenir-server", "POST /jobs/train"])
            _audit(audit_root, "server.train", run_id=result.run_id, verified=result.verification.ok)
            return result.run_id, result.verification.ok

        return jobs.submit(work, name=config.name)

    @app.get("/jobs", dependencies=auth)
    def list_jobs() -> list[dict[str, Any]]:
        return jobs.list()

    @app.get("/jobs/{job_id}", dependencies=auth)
    def get_job(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        return job

    @app.get("/manifests", dependencies=auth)
    def list_manifests() -> list[str]:
        """Every run id in the store, oldest first."""
        return store.list_runs()

    @app.get("/manifests/{run_id}", dependencies=auth)
    def get_manifest(run_id: str) -> dict[str, Any]:
        return store.load_manifest(validate_run_id(run_id)).to_dict()

    @app.get("/manifests/{run_id}/verify", dependencies=auth)
    def verify_manifest(run_id: str) -> dict[str, Any]:
        from provenir.core.run import verify_run

        store.load_manifest(validate_run_id(run_id))
        return verify_run(store, run_id).to_dict()

    @app.post("/eval", dependencies=auth)
    def evaluate(request: EvalRequest) -> dict[str, Any]:
        """Score predictions against the records' references, with bootstrap confidence intervals."""
        from provenir.data.dataset import JsonlDataset
        from provenir.eval.harness import MultiMetricEvaluator

        if len(request.records) != len(request.predictions):
            raise HTTPException(status_code=422, detail=(
                f"{len(request.records)} records but {len(request.predictions)} predictions"))
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

    @app.get("/adapters", dependencies=auth)
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

    @app.get("/audit", dependencies=auth, response_class=PlainTextResponse)
    def audit_log() -> PlainTextResponse:
        """The whole audit log as JSONL."""
        import json

        entries = _read_audit(audit_root)
        body = "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries)
        return PlainTextResponse(body, media_type="application/x-ndjson")

    return app


def _audit(audit_dir: str, event: str, **details: Any) -> None:
    from provenir.governance.audit import AuditLogger

    AuditLogger(audit_dir).log(event, actor="provenir-server", **details)


def _read_audit(audit_dir: str) -> list[dict[str, Any]]:
    from provenir.governance.audit import AuditLogger

    if not os.path.isdir(audit_dir):
        return []
    return AuditLogger(audit_dir).read()
