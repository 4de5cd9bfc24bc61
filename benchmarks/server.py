"""The REST API under load: plain uvicorn vs Ray Serve with 2 replicas, same store, same requests.

Both targets are ``provenir serve`` subprocesses on 127.0.0.1 (loopback only), with a bearer token
and ``--max-body-bytes 65536``, over one fresh store holding a few stub-backend runs:

  * uvicorn:   ``provenir serve --port P``                      (one process)
  * Ray Serve: ``provenir serve --ray-serve --replicas 2 --address <head>``

A Ray head is started for the run on 127.0.0.1 (its own ports and temp folder, Ray's token auth
off); both servers submit their jobs to it (``RAY_ADDRESS`` for uvicorn, the cluster the replicas
run on for Serve). Each target gets the same seeded sequence of ``--requests`` requests from
``--clients`` concurrent clients (one ``httpx.AsyncClient``, one connection per client), stopped
early after ``--max-seconds``:

  * reads (~78%): GET /health, /manifests, /manifests/{id}, /manifests/{id}/verify, /jobs,
    /audit?limit=50;
  * job submissions (``--job-share``, 1% by default): POST /jobs/train with a stub-backend config;
    at the end each is waited for (``--job-wait`` s) and the ones not finished by then are stopped
    with DELETE and waited for, so nothing is left running;
  * hostile requests (~20%): NaN/Infinity, lone surrogates, invalid UTF-8, deep nesting, a body
    over the limit, a 1 MiB chunked body, ``limit=-1``/``abc``/``10**12``, ``since=not-a-date``,
    unknown fields, wrong types, malformed JSON, bad run/job ids, a missing token. Each has the
    status it must get; a different one is counted as unexpected.

Printed per target: requests/s, p50 and p99 latency (ms), the count by status class, transport
errors and unexpected statuses, then the ratio Serve/uvicorn. Exit 1 when any answer is a 5xx.
Every process it starts (servers, the Ray head) is stopped at the end, on Ctrl-C too.

    .venv/bin/python benchmarks/server.py
    .venv/bin/python benchmarks/server.py --requests 500 --clients 20 --max-seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
MAX_BODY = 65536
FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")


# ---------------------------------------------------------------------------------------------
# processes


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                "PROVENIR_API_TOKEN": TOKEN, **extra})
    return {k: v for k, v in env.items() if v is not None}


class Processes:
    """Process groups started here, stopped (SIGTERM, then SIGKILL) in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(log.parent), start_new_session=True)
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)
        self.started = [(n, p) for n, p in self.started if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.started)):
            self.stop(proc)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until ``url`` answers 200 with the token (a Serve app answers 404/503 while it deploys)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, headers=AUTH, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up; the end of {log}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def start_ray_head(procs: Processes, folder: Path) -> dict[str, str]:
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env = _free_ports(7)
    temp = Path("/tmp") / f"provenir-bench-{os.getpid()}"  # Ray's socket paths must stay short
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
    ]
    log = folder / "ray-head.log"
    head = procs.start("ray head", command, log, _env())
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 180
    while True:  # Ray's job server answers: the head is up
        try:
            if httpx.get(f"{url}/api/jobs/", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if head.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the Ray head did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return {"dashboard": url, "gcs": f"127.0.0.1:{gcs}", "temp": str(temp)}


def make_store(folder: Path, runs: int) -> tuple[Path, Path]:
    """A fresh store with ``runs`` stub-backend runs of the quickstart, and a small training file."""
    store = folder / "store"
    for i in range(runs):
        subprocess.run([str(BIN / "provenir"), "run", str(ROOT / "examples" / "quickstart.yaml"),
                        "--store", str(store), "--set", f"name=bench-{i}", "--set", f"seed={i}", "--json"],
                       check=True, stdout=subprocess.DEVNULL, env=_env(), cwd=str(folder))
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}+{i}?", "output": str(2 * i)}) + "\n"
                            for i in range(16)), encoding="utf-8")
    return store, data


# ---------------------------------------------------------------------------------------------
# the request mix


@dataclass
class Req:
    kind: str  # read | job | hostile
    name: str
    method: str
    path: str
    expect: tuple[int, ...] = (200,)
    params: dict[str, str] | None = None
    content: bytes | None = None
    chunked: int = 0  # bytes sent as a chunked body (no Content-Length)
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))


def _stub_config(data: Path, name: str) -> dict[str, Any]:
    return {"name": name, "backend": "stub", "max_steps": 2, "batch_size": 4,
            "data": {"train_path": str(data), "template": "chatml"}}


def hostile_cases(data: Path, run_id: str) -> list[Req]:
    valid = _stub_config(data, "hostile")

    def body(text: str) -> bytes:
        return text.encode("utf-8", errors="surrogatepass")

    def post(name: str, content: bytes, path: str = "/jobs/train", expect: tuple[int, ...] = (422,)) -> Req:
        return Req("hostile", name, "POST", path, expect, content=content, headers={**AUTH, **JSON})

    config = json.dumps(valid)
    deep = '{"config": ' + "[" * 200 + "]" * 200 + "}"
    return [
        post("NaN in JSON", body('{"config": {"name": "x", "backend": "stub", "max_steps": NaN}}')),
        post("Infinity in JSON", body('{"config": {"name": "x", "training": {"learning_rate": Infinity}}}')),
        post("-Infinity in /eval", body('{"records": [{"output": "a"}], "predictions": ["a"], '
                                        '"x": -Infinity}'), "/eval"),
        post("1e999 in JSON", body('{"config": {"name": "x", "seed": 1e999}}')),
        post("lone surrogate (escaped)", body('{"config": {"name": "\\ud800"}}')),
        post("lone surrogate key", body('{"config": {"\\udfff": 1}}')),
        post("invalid UTF-8 bytes", b'{"config": {"name": "\xff\xfe\xc3"}}'),
        post("deep nesting", body(deep)),
        post("malformed JSON", b'{"config": {"name": '),
        post("unknown top-level field", body('{"config": ' + config + ', "bogus": 1}')),
        post("unknown config field", body(json.dumps({"config": {**valid, "no_such_key": 1}}))),
        post("wrong type: config a string", body('{"config": "train please"}')),
        post("wrong type: max_steps", body(json.dumps({"config": {**valid, "max_steps": "many"}}))),
        post("wrong type: /eval records", body('{"records": "x", "predictions": 3}'), "/eval"),
        post("not an object", body("[1, 2, 3]")),
        Req("hostile", "body over the limit", "POST", "/jobs/train", (413,),
            content=b'{"config": "' + b"x" * (MAX_BODY + 1024) + b'"}', headers={**AUTH, **JSON}),
        Req("hostile", "1 MiB chunked body", "POST", "/jobs/train", (413,), chunked=1 << 20,
            headers={**AUTH, **JSON}),
        Req("hostile", "audit limit=-1", "GET", "/audit", (422,), params={"limit": "-1"}),
        Req("hostile", "audit limit=abc", "GET", "/audit", (422,), params={"limit": "abc"}),
        Req("hostile", "audit limit=10**12", "GET", "/audit", (422,), params={"limit": str(10**12)}),
        Req("hostile", "audit since=not-a-date", "GET", "/audit", (422,), params={"since": "not-a-date"}),
        Req("hostile", "logs max_bytes=0", "GET", "/jobs/20261207T000000000000Z-train-00000000/logs",
            (404, 422), params={"max_bytes": "0"}),
        Req("hostile", "bad run id", "GET", "/manifests/..%2F..%2Fetc", (400, 404)),
        Req("hostile", "unknown run id", "GET", f"/manifests/{run_id[:-8]}ffffffff/verify", (400, 404)),
        Req("hostile", "bad job id", "GET", "/jobs/not%20a%20job", (400, 404)),
        Req("hostile", "no token", "GET", "/manifests", (401,), headers={}),
        Req("hostile", "wrong token", "POST", "/jobs/train", (401,), content=body(config),
            headers={"Authorization": "Bearer nope", **JSON}),
    ]


def build_mix(n: int, job_share: float, data: Path, run_ids: list[str], seed: int = 0) -> list[Req]:
    rng = random.Random(seed)
    hostile = hostile_cases(data, run_ids[0])
    out: list[Req] = []
    jobs = 0
    for i in range(n):
        roll = rng.random()
        if roll < job_share:
            jobs += 1
            body = {"config": _stub_config(data, f"load-{jobs}")}
            out.append(Req("job", "POST /jobs/train", "POST", "/jobs/train", (202,),
                           content=json.dumps(body).encode(), headers={**AUTH, **JSON}))
        elif roll < job_share + 0.20:
            out.append(hostile[i % len(hostile)])
        else:
            run = rng.choice(run_ids)
            out.append(rng.choice([
                Req("read", "GET /health", "GET", "/health"),
                Req("read", "GET /manifests", "GET", "/manifests"),
                Req("read", "GET /manifests/{id}", "GET", f"/manifests/{run}"),
                Req("read", "GET /manifests/{id}/verify", "GET", f"/manifests/{run}/verify"),
                Req("read", "GET /jobs", "GET", "/jobs"),
                Req("read", "GET /audit?limit=50", "GET", "/audit", params={"limit": "50"}),
            ]))
    return out


# ---------------------------------------------------------------------------------------------
# the load


@dataclass
class Result:
    target: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    classes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    unexpected: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    jobs_end: Counter = field(default_factory=Counter)
    stopped_jobs: int = 0
    sent: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def pct(self, q: float, kind: str | None = None) -> float:
        values = self.latencies if kind is None else self.by_kind.get(kind, [])
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def chunked_post(base: str, req: Req, size: int = 16384) -> int:
    """POST ``req.chunked`` bytes as a chunked body on a raw connection, reading the answer while
    writing (the server answers 413 and closes before the body ends: a client that only reads after
    writing everything sees a reset, not the answer). Returns the status."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = [f"{req.method} {req.path} HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked",
            *(f"{k}: {v}" for k, v in req.headers.items())]
    answer = asyncio.ensure_future(reader.readline())
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        try:
            while sent < req.chunked and not answer.done():
                piece = b"x" * min(size, req.chunked - sent)
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                sent += len(piece)
                await asyncio.sleep(0)
            if not answer.done():
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server stopped reading: its answer is already on the way
        line = await asyncio.wait_for(answer, 60)
        if not line.startswith(b"HTTP/"):
            raise httpx.RemoteProtocolError(f"no status line: {line[:80]!r}")
        return int(line.split()[1])
    finally:
        answer.cancel()
        writer.close()


async def drive(base: str, target: str, mix: list[Req], clients: int, max_seconds: float) -> Result:
    result = Result(target)
    queue = iter(mix)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(60.0)
    start = time.perf_counter()
    deadline = start + max_seconds

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                req = next(queue, None)
                if req is None:
                    return
                result.sent += 1
                t0 = time.perf_counter()
                response = None
                try:
                    if req.chunked:
                        status = await chunked_post(base, req)
                    else:
                        response = await client.request(req.method, req.path, params=req.params,
                                                        content=req.content, headers=req.headers)
                        await response.aread()
                        status = response.status_code
                except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
                    result.latencies.append(time.perf_counter() - t0)
                    result.errors[f"{req.name}: {type(exc).__name__}"] += 1
                    continue
                elapsed = time.perf_counter() - t0
                result.latencies.append(elapsed)
                result.by_kind.setdefault(req.kind, []).append(elapsed)
                result.classes[f"{status // 100}xx"] += 1
                if status >= 500:
                    text = response.text[:300] if response is not None else ""
                    result.server_errors.append(f"{status} {req.method} {req.path} ({req.name}): {text}")
                if status not in req.expect:
                    result.unexpected[f"{req.name}: {status}"] += 1
                if status == 202 and response is not None and req.path.startswith("/jobs/"):  # a hostile one let through too
                    result.job_ids.append(response.json()["job_id"])

        await asyncio.gather(*(worker() for _ in range(clients)))
    result.seconds = time.perf_counter() - start
    return result


def settle_jobs(base: str, result: Result, wait_s: float) -> None:
    """Wait for every submitted job; stop (DELETE) the ones still running after ``wait_s``."""
    if not result.job_ids:
        return
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
        def statuses() -> dict[str, str]:
            return {j: client.get(f"/jobs/{j}").json()["status"] for j in result.job_ids}

        deadline = time.monotonic() + wait_s
        while (left := [j for j, s in statuses().items() if s not in FINISHED]) and time.monotonic() < deadline:
            time.sleep(1)
        for job in left:
            answer = client.delete(f"/jobs/{job}")
            if answer.status_code == 202:
                result.stopped_jobs += 1
        deadline = time.monotonic() + 90
        while (last := statuses()) and any(s not in FINISHED for s in last.values()):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        result.jobs_end = Counter(last.values())


def run_target(name: str, command: list[str], procs: Processes, folder: Path, port: int, env: dict[str, str],
               mix: list[Req], args: argparse.Namespace, ready_timeout: float) -> Result:
    log = folder / f"{name.split()[0].lower()}.log"
    print(f"[{name}] starting: {' '.join(command)}", file=sys.stderr)
    proc = procs.start(name, command, log, env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base}/manifests", proc, log, ready_timeout)
        warm = [Req("read", "warm-up", "GET", p) for p in ("/health", "/manifests", "/jobs", "/audit")] * 10
        asyncio.run(drive(base, name, warm, min(args.clients, 10), 60))  # every replica imported and warm
        print(f"[{name}] {len(mix)} requests, {args.clients} clients", file=sys.stderr)
        result = asyncio.run(drive(base, name, mix, args.clients, args.max_seconds))
        print(f"[{name}] {result.sent} sent in {result.seconds:.1f} s; settling {len(result.job_ids)} jobs",
              file=sys.stderr)
        settle_jobs(base, result, args.job_wait)
        return result
    finally:
        procs.stop(proc, timeout=30)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nREST API under load: {args.clients} concurrent clients, {args.requests} requests per target "
          f"(cap {args.max_seconds:.0f} s), ~{args.job_share:.0%} job submissions, ~20% hostile; "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; client and servers share the machine")
    print(f"{'target':24} {'sent':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'2xx':>6} {'4xx':>6} "
          f"{'5xx':>5} {'errors':>7} {'unexpected':>10}  jobs")
    for r in results:
        jobs = (f"{len(r.job_ids)} submitted, end: {dict(r.jobs_end)}"
                + (f", {r.stopped_jobs} stopped by DELETE" if r.stopped_jobs else ""))
        print(f"{r.target:24} {r.sent:6d} {r.rate:8.1f} {r.pct(0.50):8.1f} {r.pct(0.99):8.1f} "
              f"{r.classes['2xx']:6d} {r.classes['4xx']:6d} {r.classes['5xx']:5d} {sum(r.errors.values()):7d} "
              f"{sum(r.unexpected.values()):10d}  {jobs}")
    if len(results) == 2 and results[0].rate:
        a, b = results
        print(f"{'Serve / uvicorn':24} {'':6} {b.rate / a.rate:7.2f}x {b.pct(0.5) / a.pct(0.5):7.2f}x "
              f"{b.pct(0.99) / a.pct(0.99):7.2f}x")
    print("p50 / p99 ms by kind: " + " · ".join(
        f"{r.target}: " + ", ".join(f"{k} {r.pct(0.5, k):.0f}/{r.pct(0.99, k):.0f} (n={len(r.by_kind.get(k, []))})"
                                    for k in ("read", "hostile", "job")) for r in results))
    for r in results:
        for label, counter in (("transport errors", r.errors), ("unexpected statuses", r.unexpected)):
            if counter:
                print(f"  {r.target} {label}: " + "; ".join(f"{k} ×{v}" for k, v in counter.most_common()))
        for line in r.server_errors[:10]:
            print(f"  {r.target} 5xx: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per target")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time cap per target")
    parser.add_argument("--job-share", type=float, default=0.01, help="share of POST /jobs/train")
    parser.add_argument("--job-wait", type=float, default=120.0,
                        help="seconds to wait for the jobs before stopping the rest with DELETE")
    parser.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas")
    parser.add_argument("--runs", type=int, default=3, help="runs in the store")
    parser.add_argument("--only", choices=("uvicorn", "serve"), help="drive one target only")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="provenir-bench-server-"))
    procs = Processes()
    head: dict[str, str] = {}

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    results: list[Result] = []
    try:
        store, data = make_store(folder, args.runs)
        from provenir.core.store import ArtifactStore

        run_ids = ArtifactStore(str(store)).list_runs()
        if not run_ids:
            raise SystemExit(f"no runs in {store}")
        mix = build_mix(args.requests, args.job_share, data, run_ids)
        print(f"[setup] store {store} with {len(run_ids)} runs; starting a Ray head", file=sys.stderr)
        head = start_ray_head(procs, folder)
        serve_args = ["--host", "127.0.0.1", "--store", str(store), "--max-body-bytes", str(MAX_BODY)]
        if args.only in (None, "uvicorn"):
            port = _free_ports(1)[0]
            results.append(run_target(
                "uvicorn (1 process)", [str(BIN / "provenir"), "serve", "--port", str(port), *serve_args],
                procs, folder, port, _env(RAY_ADDRESS=head["dashboard"]), mix, args, 60))
        if args.only in (None, "serve"):
            port = _free_ports(1)[0]
            results.append(run_target(
                f"Ray Serve ({args.replicas} replicas)",
                [str(BIN / "provenir"), "serve", "--port", str(port), "--ray-serve", "--address", head["gcs"],
                 "--replicas", str(args.replicas), *serve_args],
                procs, folder, port, _env(), mix, args, 240))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers and the Ray head", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if head:
            shutil.rmtree(head["temp"], ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    print_table(results, args)
    return 1 if any(r.classes["5xx"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
