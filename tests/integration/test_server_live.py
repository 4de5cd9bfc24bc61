"""The REST API live: uvicorn through `provenir serve`, and the Ray Serve deployment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, headers=None, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, headers=headers, timeout=2.0)
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


def test_provenir_serve_with_token(tmp_path):
    port = free_port()
    exe = Path(sys.executable).parent / "provenir"
    env = {**os.environ, "PROVENIR_API_TOKEN": "tok"}
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(tmp_path),
         "--max-body-bytes", "2048"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        assert wait_for(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/manifests").status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/manifests", headers={"Authorization": "Bearer tok"})
        assert ok.status_code == 200 and ok.json() == []
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
        big = httpx.post(f"http://127.0.0.1:{port}/jobs/train", headers={"Authorization": "Bearer tok"},
                         content=b'{"config": "' + b"x" * 4096 + b'"}')
        assert big.status_code == 413  # --max-body-bytes 2048
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_ray_serve_deployment(ray_local, tmp_path):
    from ray import serve

    from provenir.server.serve import build_deployment

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_deployment(str(tmp_path), api_token="tok", num_cpus=0.1), name="provenir",
                  route_prefix="/")
        health = wait_for(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/adapters").status_code == 401
        listed = httpx.get(f"http://127.0.0.1:{port}/manifests", headers={"Authorization": "Bearer tok"})
        assert listed.status_code == 200 and listed.json() == []
    finally:
        serve.shutdown()


def test_serve_config_yaml_is_valid(repo_root):
    import yaml

    config = yaml.safe_load((repo_root / "serve" / "config.yaml").read_text())
    app = config["applications"][0]
    assert app["import_path"] == "provenir.server.serve:app_builder"
    assert config["http_options"]["host"] == "127.0.0.1"
    from provenir.server.serve import app_builder

    assert callable(app_builder)
