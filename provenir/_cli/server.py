"""``provenir serve``: the REST API on uvicorn (default) or Ray Serve."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Optional

import typer

from provenir._cli._common import StoreOption, console, store_root


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port."),
    store: Optional[str] = StoreOption,
    api_token: Optional[str] = typer.Option(
        None, "--api-token", envvar="PROVENIR_API_TOKEN", show_default=False,
        help="Bearer token required by every endpoint but /health ($PROVENIR_API_TOKEN).",
    ),
    ray_serve: bool = typer.Option(False, "--ray-serve", help="Run on Ray Serve instead of uvicorn."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray address (with --ray-serve)."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="Ray Serve replicas of the API (with --ray-serve)."),
    max_body_bytes: Optional[int] = typer.Option(
        None, "--max-body-bytes", min=1, envvar="PROVENIR_MAX_BODY_BYTES",
        help="Largest request body accepted; larger ones get 413 (default 4 MiB).",
    ),
) -> None:
    """Serve the REST API (docs at /docs). Refuses to listen beyond loopback without a token."""
    from provenir.core.errors import ConfigError

    if not is_loopback(host) and not api_token:
        raise ConfigError(
            f"--host {host} accepts connections from other machines; set an API token "
            "(--api-token or PROVENIR_API_TOKEN) or listen on 127.0.0.1"
        )
    root = store_root(store)
    if "://" not in root:
        root = os.path.abspath(root)  # the replicas and the jobs run in other folders
    if api_token:
        os.environ["PROVENIR_API_TOKEN"] = api_token
    if ray_serve:
        from ray import serve as ray_serve_mod

        from provenir.distributed.cluster import connect
        from provenir.distributed.jobs import start_embedded_ray
        from provenir.server.serve import build_deployment

        if address or os.environ.get("RAY_ADDRESS"):
            connect(address)
        else:
            start_embedded_ray()  # with its dashboard: the replicas submit jobs through Ray's job server
        ray_serve_mod.start(http_options={"host": host, "port": port})
        ray_serve_mod.run(build_deployment(root, api_token=api_token, num_replicas=replicas,
                                           max_body_bytes=max_body_bytes), name="provenir", blocking=True)
        return
    import uvicorn

    from provenir.server.app import create_app

    console().print(f"serving on http://{host}:{port} (docs at /docs) · store={root}")
    uvicorn.run(create_app(root, api_token=api_token, max_body_bytes=max_body_bytes), host=host, port=port,
                log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
