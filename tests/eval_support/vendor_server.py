"""A loopback HTTP server speaking Anthropic's Messages or OpenAI's Chat Completions wire format.

It replays a script of replies, one per request, and records every request it receives, so tests
can drive the official client libraries through rate limits, server errors, malformed JSON and
time-outs. It listens on 127.0.0.1 only (an ephemeral port), reads at most 1 MiB per request, and is
stopped by the test that started it (use it as a context manager).

Script items:
    Reply(text)                    a successful completion whose assistant text is ``text``
    Error(status, headers=...)     the vendor's error body with that HTTP status
    Delay(seconds, then)           wait, then send ``then`` (longer than the client's timeout: a time-out)
    Raw(status, body)              raw bytes with ``application/json`` (e.g. a broken body)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20


@dataclass
class Reply:
    text: str


@dataclass
class Error:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Delay:
    seconds: float
    then: Any


@dataclass
class Raw:
    status: int
    body: bytes


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _anthropic_ok(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "msg_loopback",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 10},
    }


def _openai_ok(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


class VendorServer:
    """``with VendorServer("openai", [Error(429), Reply('{...}')]) as server: server.base_url``."""

    def __init__(self, vendor: str, script: list[Any] | None = None):
        if vendor not in ("anthropic", "openai"):
            raise ValueError(vendor)
        self.vendor = vendor
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        root = f"http://{host}:{port}"
        return root + "/v1" if self.vendor == "openai" else root

    @property
    def expected_path(self) -> str:
        return "/v1/chat/completions" if self.vendor == "openai" else "/v1/messages"

    def add(self, *items: Any) -> None:
        with self._lock:
            self.script.extend(items)

    def _next(self) -> Any:
        with self._lock:
            return self.script.pop(0) if self.script else Error(500)

    def _error_body(self, status: int) -> dict[str, Any]:
        if self.vendor == "anthropic":
            kind = _ANTHROPIC_ERRORS.get(status, "api_error")
            return {"type": "error", "error": {"type": kind, "message": f"loopback {status}"}}
        return {"error": {"message": f"loopback {status}", "type": "error", "param": None, "code": str(status)}}

    def __enter__(self) -> VendorServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = min(int(self.headers.get("content-length", "0") or 0), MAX_BODY)
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                with server._lock:
                    server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "json": payload})
                if self.path != server.expected_path:
                    self._send(404, json.dumps(server._error_body(404)).encode())
                    return
                item = server._next()
                while isinstance(item, Delay):
                    time.sleep(item.seconds)
                    item = item.then
                model = (payload or {}).get("model", "loopback")
                if isinstance(item, Reply):
                    ok = _openai_ok if server.vendor == "openai" else _anthropic_ok
                    self._send(200, json.dumps(ok(item.text, model)).encode())
                elif isinstance(item, Error):
                    self._send(item.status, json.dumps(server._error_body(item.status)).encode(), item.headers)
                elif isinstance(item, Raw):
                    self._send(item.status, item.body)
                else:
                    self._send(500, b'{"error": "bad script item"}')

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
