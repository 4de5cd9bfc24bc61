"""The REST API as a Ray Serve deployment: the same FastAPI app, replicated by Ray.

Ray Serve has no authentication of its own: the app's bearer token (``PROVENIR_API_TOKEN`` or
``api_token``) is what protects it. Start it with ``serve run serve/config.yaml`` or
``provenir serve --ray-serve``.
"""

from __future__ import annotations

from typing import Any


def build_deployment(
    store_root: str | None = None,
    *,
    api_token: str | None = None,
    audit_dir: str | None = None,
    num_replicas: int = 1,
    num_cpus: float = 0.5,
    ray_address: str | None = None,
    max_body_bytes: int | None = None,
) -> Any:
    """A bound Ray Serve application wrapping :func:`provenir.server.app.create_app`.

    Every replica reads and writes the same job records in the store, so any of them answers for
    any job; jobs go to ``ray_address`` (default ``$RAY_ADDRESS``), else to the cluster the
    replicas run on.
    """
    from ray import serve

    from provenir.server.app import create_app

    api = create_app(store_root, api_token=api_token, audit_dir=audit_dir, ray_address=ray_address,
                     max_body_bytes=max_body_bytes)

    @serve.deployment(num_replicas=num_replicas, ray_actor_options={"num_cpus": num_cpus})
    @serve.ingress(api)
    class ProvenirAPI:
        """Provenir's REST API on Ray Serve."""

    return ProvenirAPI.bind()


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point for ``serve run``/``serve deploy`` configs (``import_path: provenir.server.serve:app_builder``)."""
    return build_deployment(
        args.get("store_root"),
        api_token=args.get("api_token"),
        audit_dir=args.get("audit_dir"),
        num_replicas=int(args.get("num_replicas", 1)),
        num_cpus=float(args.get("num_cpus", 0.5)),
        ray_address=args.get("ray_address"),
        max_body_bytes=int(args["max_body_bytes"]) if args.get("max_body_bytes") is not None else None,
    )
