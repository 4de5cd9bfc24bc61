"""`connect`'s Ray Client retry: a refused ``ray://`` set-up is tried again, other failures are not.

Ray's client proxy (ray/util/client/server/proxier.py) answers a connection whose per-driver client
server did not start with ``ConnectionAbortedError("Initialization failure from server: ...
Starting Ray client server failed")``; that is the error faked here.
"""

from __future__ import annotations

import pytest

from provenir.distributed import cluster

REFUSED = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback...\nRuntimeError: Starting Ray client server failed. "
    "See ray_client_server_23000.err for detailed logs.\n")


class FakeRay:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = list(failures)
        self.inits: list[str | None] = []
        self.shutdowns = 0

    def init(self, address=None, **kwargs):
        self.inits.append(address)
        if self.failures:
            raise self.failures.pop(0)

    def shutdown(self):
        self.shutdowns += 1


def test_client_connection_is_retried_with_a_warning(capsys):
    ray, sleeps = FakeRay([REFUSED, REFUSED]), []
    cluster._init(ray, "ray://127.0.0.1:10001", {}, sleep=sleeps.append)
    assert ray.inits == ["ray://127.0.0.1:10001"] * 3 and ray.shutdowns == 2 and sleeps == [2.0, 4.0]
    err = capsys.readouterr().err
    assert "connection 1/3 failed" in err and "connection 2/3 failed" in err
    assert "Starting Ray client server failed" in err


def test_client_connection_gives_up_after_the_last_attempt():
    ray = FakeRay([REFUSED] * 3)
    with pytest.raises(ConnectionAbortedError, match="Starting Ray client server failed"):
        cluster._init(ray, "ray://127.0.0.1:10001", {}, sleep=lambda s: None)
    assert len(ray.inits) == cluster.CLIENT_CONNECT_ATTEMPTS


@pytest.mark.parametrize("address", [None, "auto", "127.0.0.1:6379"])
def test_other_addresses_are_tried_once(address):
    ray = FakeRay([ConnectionError("no GCS at this address")])
    with pytest.raises(ConnectionError):
        cluster._init(ray, address, {}, sleep=lambda s: pytest.fail("no retry expected"))
    assert ray.inits == [address]


def test_other_errors_are_not_retried():
    ray = FakeRay([ValueError("bad namespace")])
    with pytest.raises(ValueError):
        cluster._init(ray, "ray://127.0.0.1:10001", {}, sleep=lambda s: pytest.fail("no retry expected"))
    assert len(ray.inits) == 1
