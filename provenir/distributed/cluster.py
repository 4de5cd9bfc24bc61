"""Connecting to Ray: the embedded local instance by default, a cluster when an address is given.

``connect()`` with no address and no ``RAY_ADDRESS`` starts (or reuses) a local Ray instance; an
address (``auto``, ``host:6379``, ``ray://host:10001``) connects to a cluster. No code path exists
only for the laptop: everything above calls :func:`connect` and then uses Ray the same way.

Through Ray Client (``ray://``) a Ray Data pipeline run from the client-side driver fails, so
:func:`run_on_cluster` runs such work inside a task on the cluster; on a local or directly attached
driver it simply calls the function.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    namespace: str = "provenir",
    runtime_env: dict[str, Any] | None = None,
    log_to_driver: bool = False,
) -> dict[str, Any]:
    """Initialise Ray once per process and return the cluster's resources.

    Args:
        address: a Ray address; ``None`` uses ``RAY_ADDRESS`` or starts an embedded instance.
        num_cpus: CPUs for an embedded instance (ignored when connecting to a cluster).
    """
    import ray

    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {
            "namespace": namespace,
            "log_to_driver": log_to_driver,
            "ignore_reinit_error": True,
        }
        if runtime_env:
            kwargs["runtime_env"] = runtime_env
        if address is None:
            kwargs.update(num_cpus=num_cpus, include_dashboard=False)
        ray.init(address=address, **kwargs)
    return {"resources": ray.cluster_resources(), "client_mode": is_client_mode()}


def is_client_mode() -> bool:
    """True when this driver talks to the cluster through Ray Client (``ray://``)."""
    try:
        from ray.util.client import ray as client_ray

        return bool(client_ray.is_connected())
    except Exception:  # noqa: BLE001 - older/newer Ray layouts
        return False


def run_on_cluster(fn: Callable[..., T], *args: Any, num_cpus: float = 0.5, **kwargs: Any) -> T:
    """Call ``fn`` here, or inside a task on the cluster when connected through Ray Client."""
    if not is_client_mode():
        return fn(*args, **kwargs)
    import ray

    return ray.get(ray.remote(num_cpus=num_cpus)(fn).remote(*args, **kwargs))


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
