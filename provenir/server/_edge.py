"""What a request body must be before any handler sees it: bounded in size, and strict JSON.

:class:`RequestGuard` is an ASGI middleware. It counts a body's bytes as they arrive (a
``Content-Length`` over the limit is refused before the first byte is read; a chunked body when it
crosses it), so an endless body never sits in memory: the answer is ``413``. A JSON body (declared
``application/json``/``+json``, or undeclared) is then parsed strictly; anything plain
``json.loads`` would let through but no handler can use is a ``422`` naming the field, in FastAPI's
own shape (``{"detail": [{"type", "loc", "msg", "input"}]}``):

* ``NaN``, ``Infinity``, ``-Infinity``, and numbers too large for a float (``1e999``) or an int;
* invalid UTF-8 bytes and lone UTF-16 surrogates (``"\\ud800"``) in keys or strings;
* nesting deeper than :data:`MAX_JSON_DEPTH`.

Other malformed JSON is left to FastAPI, which answers ``422 json_invalid`` itself.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The default limit on a request body, in bytes (``PROVENIR_MAX_BODY_BYTES`` overrides it).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Deepest nesting of arrays and objects a JSON body may have.
MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_UNICODE = "not valid Unicode: invalid UTF-8 bytes or a lone UTF-16 surrogate (\\ud800-\\udfff)"


class _Refused:
    """A JSON value no handler can take, standing in for it until its field is found."""

    def __init__(self, kind: str, message: str, text: str) -> None:
        self.kind, self.message, self.text = kind, message, text


def _constant(name: str) -> _Refused:
    message = f"{name} is not a number JSON allows; send a finite number"
    return _Refused("finite_number", message, name)


def _float(text: str) -> Any:
    value = float(text)
    if math.isfinite(value):
        return value
    return _Refused("finite_number", "number too large for a 64-bit float", text[:40])


def _int(text: str) -> Any:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (4300 by default)
        return _Refused("int_parsing_size", "integer with too many digits", text[:40] + "…")


def _problems(value: Any, loc: list[Any], found: list[dict[str, Any]], depth: int = 0) -> None:
    """Append one error per refused value or invalid string under ``value`` (at most 20)."""
    if len(found) >= 20:
        return
    if depth > MAX_JSON_DEPTH:
        found.append({"type": "too_deep", "loc": loc,
                      "msg": f"nested more than {MAX_JSON_DEPTH} levels deep", "input": None})
    elif isinstance(value, _Refused):
        found.append({"type": value.kind, "loc": loc, "msg": value.message, "input": value.text})
    elif isinstance(value, str):
        if _SURROGATE.search(value):
            found.append({"type": "unicode", "loc": loc, "input": None, "msg": _BAD_UNICODE})
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                found.append({"type": "unicode", "loc": loc, "input": None,
                              "msg": f"a key that is {_BAD_UNICODE}"})
                continue
            _problems(item, [*loc, key], found, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _problems(item, [*loc, index], found, depth + 1)


def json_problems(body: bytes) -> list[dict[str, Any]]:
    """FastAPI-style errors (``loc`` starting ``"body"``) for what a strict JSON reader refuses in
    ``body``; empty when the body is fine or is malformed in a way FastAPI reports itself."""
    text = body.decode("utf-8", errors="surrogateescape")  # invalid bytes become lone surrogates
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError:
        if text.encode("utf-8", errors="surrogatepass") == body:
            return []  # syntax: FastAPI's own 422 json_invalid names the position
        return [{"type": "unicode", "loc": ["body"], "input": None,
                 "msg": "the body is not valid UTF-8 JSON"}]
    except RecursionError:
        return [{"type": "too_deep", "loc": ["body"], "input": None,
                 "msg": f"nested more than {MAX_JSON_DEPTH} levels deep"}]
    found: list[dict[str, Any]] = []
    _problems(value, ["body"], found)
    return found


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return True  # FastAPI reads an undeclared body as JSON


async def _answer(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content, ensure_ascii=True).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:  # the rest of the body was not (all) read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Before a 413 the rest of the body is read and dropped, up to these bounds: a client still sending
# when the connection closed would often see a reset instead of the answer. Past them the
# connection is closed anyway (an endless body is never read to its end).
DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 1.0


async def _drain(receive: Receive, more: bool) -> None:
    """Read and drop what is left of a refused body, within :data:`DRAIN_BYTES` and :data:`DRAIN_SECONDS`."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline, dropped = loop.time() + DRAIN_SECONDS, 0
    while more and dropped < DRAIN_BYTES:
        left = deadline - loop.time()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), timeout=left)
        except asyncio.TimeoutError:
            return
        if message["type"] == "http.disconnect":
            return
        dropped += len(message.get("body", b""))
        more = bool(message.get("more_body", False))


class RequestGuard:
    """ASGI middleware: ``413`` past ``max_body_bytes``, ``422`` for JSON no handler can take."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> dict[str, Any]:
        return {"detail": f"request body larger than {self.max_body_bytes} bytes "
                          "(the server's PROVENIR_MAX_BODY_BYTES)"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _answer(send, 400, {"detail": "Content-Length is not a number"})
                    return
                if declared > self.max_body_bytes:
                    await _drain(receive, True)
                    await _answer(send, 413, self._too_large())
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _drain(receive, bool(message.get("more_body", False)))
                await _answer(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _is_json(scope):
            problems = json_problems(body)
            if problems:
                await _answer(send, 422, {"detail": problems})
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
