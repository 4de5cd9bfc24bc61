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
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}

#: how many times a Ray Client (``ray://``) connection is tried: the cluster's proxy starts a
#: per-driver client server for every connection, and on a loaded head that start can fail once
#: ("Starting Ray client server failed") while the next one succeeds
CLIENT_CONNECT_ATTEMPTS = 3


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
        _init(ray, address, kwargs)
    return {"resources": ray.cluster_resources(), "client_mode": is_client_mode()}


def _init(ray: Any, address: str | None, kwargs: dict[str, Any], *, sleep: Callable[[float], None] = time.sleep) -> None:
    """``ray.init``; a Ray Client connection the cluster refused to set up is tried again, with a
    warning on stderr, up to :data:`CLIENT_CONNECT_ATTEMPTS` times in all."""
    attempts = CLIENT_CONNECT_ATTEMPTS if str(address or "").startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, **kwargs)
            return
        except ConnectionError as exc:  # ConnectionAbortedError: the proxy's client server failed
            if attempt == attempts:
                raise
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001 - nothing was connected; the retry starts clean
                pass
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            delay = 2.0 * attempt
            print(f"Ray Client {address}: connection {attempt}/{attempts} failed ({reason}); "
                  f"trying again in {delay:.0f}s", file=sys.stderr)
            sleep(delay)


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


@contextmanager
def relay_lines(stream: TextIO | None = None, interval: float = 0.5) -> Iterator[Any]:
    """Show on this driver the lines that workers anywhere on the cluster send.

    Yields an actor handle; a worker (a Ray Train rank, a task) calls ``handle.put.remote(line)``
    and a thread here prints the lines to ``stream`` (default ``sys.stderr``) as they arrive, the
    last ones before the block ends. Works through Ray Client too. Workers' own stdout does not reach
    the driver (``connect`` turns ``log_to_driver`` off: it would carry every library's noise).
    """
    import ray

    @ray.remote(num_cpus=0)
    class _LineRelay:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def put(self, line: str) -> None:
            self.lines.append(line)

        def drain(self) -> list[str]:
            lines, self.lines = self.lines, []
            return lines

    relay = _LineRelay.remote()
    done = threading.Event()

    def pump() -> None:
        while True:
            try:
                for line in ray.get(relay.drain.remote()):
                    print(line, file=stream or sys.stderr, flush=True)
            except Exception:  # noqa: BLE001 - progress must never break the work it reports on
                return
            if done.is_set():
                return
            done.wait(interval)

    thread = threading.Thread(target=pump, name="provenir-relay", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        done.set()
        thread.join(timeout=30)
        ray.kill(relay)
