"""The feature server under HTTP load: the published table, a real uvicorn server, and the load generator.

Shared by `bench_server` and `bench_serve_during_publish`: one route view (`route_delay_stats`),
4 stored + 1 on-demand feature per request, random entities from the published set; the server
started from the `serve` app factory with its request log on; `load()` drives it from spawned
client processes and reads the server's CPU from /proc for its whole process tree.

Two load generators, the same load shape (the same bodies, one request at a time per
connection, `concurrency` keep-alive connections): `httpx` (httpx.AsyncClient per loop) and
`raw` (HTTP/1.1 written and parsed by hand on asyncio streams under uvloop, the request bytes
built once per route). On a machine whose cores the client shares with the servers, httpx's
~0.7 ms of client CPU per request can cap the throughput of a server that needs less than that,
so the comparison would measure the client; `raw` costs a fraction of it (see `client_cpu_s`).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import polars as pl
import uvloop

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable

REPO = Path(__file__).resolve().parent.parent
PREFIX = "fp:bench"
SEED = 20130101
N_ORIGINS, N_DESTS = 3, 100
VIEW = FEATURE_VIEWS["route_delay_stats"]
STORED = [
    "route_delay_stats:route_flights_count_24h",
    "route_delay_stats:route_dep_delay_mean_24h",
    "route_delay_stats:route_dep_delay_p90_24h",
    "route_delay_stats:route_cancel_rate_24h",
]
ON_DEMAND = "route_dep_delay_ratio_24h_7d"
MAX_REQUESTS_PER_RUN = 2_000_000  # a hard bound, whatever the duration
WARMUP_S = 2.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def served_routes() -> list[tuple[str, str]]:
    return [(f"O{i}", f"D{j}") for i in range(N_ORIGINS) for j in range(N_DESTS)]


def publish_table(server: LocalRedisServer) -> None:
    """One snapshot of route_delay_stats for every route, one hour old (well within its TTL)."""
    rng = np.random.default_rng(SEED)
    routes = served_routes()
    n = len(routes)
    columns: dict[str, Any] = {
        "origin": [o for o, _ in routes],
        "dest": [d for _, d in routes],
        "event_timestamp": pl.Series([datetime.now(UTC) - timedelta(hours=1)] * n,
                                     dtype=pl.Datetime("us", "UTC")),
    }
    for feature in VIEW.features:
        if feature.dtype == "int64":
            columns[feature.name] = rng.integers(0, 200, n)
        else:
            columns[feature.name] = rng.normal(10, 20, n)
    client = server.client()
    try:
        publish(client, OnlineTable.for_view(VIEW, PREFIX), pl.DataFrame(columns))
    finally:
        client.close()


def latency_summary(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    return {
        "requests": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_per_s": ms.size / elapsed_s,
    }


def start_server(server: LocalRedisServer, workers: int, lake: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "FEATURE_PIPELINES_REDIS_URL": server.url,
        "FEATURE_PIPELINES_REDIS_PREFIX": PREFIX,
        "FEATURE_PIPELINES_LAKE_ROOT": str(lake),
        "FEATURE_PIPELINES_SERVE_REQUEST_LOG": "1",
        "PYTHONPATH": str(REPO),
    }
    for name in ("FEATURE_PIPELINES_API_KEY", "FEATURE_PIPELINES_REDIS_PASSWORD"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "feature_pipelines.serving.cli:app_from_env", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--no-access-log"],
        env=env, cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    return process, wait_until_healthy(process, port, name="the server", timeout_s=60)


def wait_until_healthy(
    process: subprocess.Popen[bytes], port: int, *, name: str, timeout_s: float,
    stop_signal: int = signal.SIGINT, log: Path | None = None,
) -> str:
    """The base URL once `GET /health` answers 200 (ours and `feast serve` both have it); the
    process is stopped and an error raised, with the tail of `log`, if it exits or times out."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = f":\n{log.read_text()[-2000:]}" if log is not None else ""
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting{tail}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(process, stop_signal=stop_signal)
    raise RuntimeError(f"{name} did not become healthy within {timeout_s:.0f} s")


def stop_server(process: subprocess.Popen[bytes], *, stop_signal: int = signal.SIGINT) -> None:
    """Stop the server's whole process group: `stop_signal`, then SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, stop_signal)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def process_tree_cpu_s(root_pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(cpu.get(pid, 0.0) for pid in tree)


DEFAULT_FEATURES = (*STORED, f"on_demand:{ON_DEMAND}")
CLIENTS = ("httpx", "raw")


class RawHTTPError(Exception):
    """A response the raw client cannot read (not HTTP/1.1 with a Content-Length)."""


class RawConnection:
    """One keep-alive HTTP/1.1 connection, one request at a time: POST of prebuilt bytes, the
    status and body read back by Content-Length (what both servers under test send)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lowered = head.lower()
            at = lowered.find(b"\r\ncontent-length:")
            if at < 0:
                raise RawHTTPError(f"no Content-Length in {head[:200]!r}")
            length = int(lowered[at + 17:lowered.index(b"\r\n", at + 2)])
            body = await self.reader.readexactly(length)
            if b"\r\nconnection: close" in lowered:
                await self.close()
            return status, body
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, RawHTTPError):
            await self.close()
            raise

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()


def raw_request(host: str, port: int, body: dict[str, Any]) -> bytes:
    """The bytes of one POST /get-online-features with a JSON body, as httpx would send them."""
    payload = json.dumps(body).encode()
    return (f"POST /get-online-features HTTP/1.1\r\nhost: {host}:{port}\r\naccept: */*\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n").encode() + payload


async def _drive(
    base: str, features: list[str], seconds: float, concurrency: int, barrier: Any, client_kind: str = "httpx"
) -> dict[str, Any]:
    """`concurrency` loops, each with its own one-connection client, one request at a time.

    One client per loop rather than one pooled client: httpx's shared pool costs more per
    request as connections are added (measured: a pooled client at 32 connections managed half
    the requests of 8), which would benchmark the client, not the server.
    """
    routes = served_routes()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    address = urlsplit(base)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    prebuilt = {route: raw_request(host, port, {"features": features,
                                                 "entities": {"origin": [route[0]], "dest": [route[1]]}})
                for route in routes}
    clients: list[Any] = [
        httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=1), timeout=10)
        if client_kind == "httpx" else RawConnection(host, port)
        for _ in range(concurrency)
    ]
    try:
        await asyncio.to_thread(barrier.wait)
        measure_from = time.perf_counter() + WARMUP_S  # warm-up: connections, worker code paths
        stop_at = measure_from + seconds
        cpu_at_start: list[float] = []
        sent = 0

        async def loop(client: Any, seed: int) -> None:
            nonlocal sent
            rng = random.Random(seed)
            while True:
                start = time.perf_counter()
                if start >= stop_at or sent >= MAX_REQUESTS_PER_RUN:
                    return
                if start >= measure_from and not cpu_at_start:
                    cpu_at_start.append(time.process_time())
                origin, dest = rng.choice(routes)
                try:
                    if client_kind == "httpx":
                        body = {"features": features, "entities": {"origin": [origin], "dest": [dest]}}
                        status = (await client.post("/get-online-features", json=body)).status_code
                    else:
                        status, _ = await client.post(prebuilt[origin, dest])
                    outcome = None if status == 200 else f"HTTP {status}"
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError, RawHTTPError) as error:
                    outcome = type(error).__name__
                end = time.perf_counter()
                if start >= measure_from:
                    sent += 1
                    if outcome is None:
                        latencies.append(end - start)
                    else:
                        errors[outcome] = errors.get(outcome, 0) + 1

        await asyncio.gather(*(loop(client, SEED + 1000 * os.getpid() + i) for i, client in enumerate(clients)))
        client_cpu = time.process_time() - (cpu_at_start[0] if cpu_at_start else time.process_time())
    finally:
        for client in clients:
            await (client.aclose() if client_kind == "httpx" else client.close())
    return {"latencies": latencies, "errors": errors, "client_cpu_s": client_cpu}


def _client_process(
    base: str, features: list[str], seconds: float, concurrency: int, barrier: Any, results: Any, client_kind: str
) -> None:
    drive = _drive(base, features, seconds, concurrency, barrier, client_kind)
    results.put(uvloop.run(drive) if client_kind == "raw" else asyncio.run(drive))


def load(
    server_pid: int, base: str, seconds: float, concurrency: int, client_processes: int,
    *, features: Sequence[str] = DEFAULT_FEATURES, client: str = "httpx",
) -> dict[str, Any]:
    """One measured phase against a running server: latency, throughput, CPU on both sides. Every
    request asks one route's `features` (the same body shape for our server and `feast serve`);
    `client` is the load generator, "httpx" or "raw" (see the module docstring)."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    context = multiprocessing.get_context("spawn")  # no fork of a process with polars threads
    barrier = context.Barrier(client_processes + 1)
    results = context.Queue()
    shares = [concurrency // client_processes + (i < concurrency % client_processes) for i in range(client_processes)]
    processes = [context.Process(target=_client_process,
                                 args=(base, list(features), seconds, share, barrier, results, client))
                 for share in shares]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=120)
        time.sleep(WARMUP_S)
        server_cpu_start = process_tree_cpu_s(server_pid)
        time.sleep(seconds)
        server_cpu = process_tree_cpu_s(server_pid) - server_cpu_start
        driven = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    latencies = [x for d in driven for x in d["latencies"]]
    errors: dict[str, int] = {}
    for d in driven:
        for key, count in d["errors"].items():
            errors[key] = errors.get(key, 0) + count
    if not latencies:
        raise RuntimeError(f"no successful request with {concurrency} in flight: {errors}")
    out: dict[str, Any] = latency_summary(latencies, seconds)
    out.update(
        concurrency=concurrency, client_processes=client_processes, seconds=seconds, errors=errors,
        features=len(features), client=client,
        server_cpu_s=server_cpu,
        server_cpu_ms_per_request=server_cpu * 1000 / len(latencies),
        client_cpu_s=sum(d["client_cpu_s"] for d in driven),
    )
    return out
