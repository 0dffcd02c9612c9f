"""Benchmark the HTTP feature server against the same read done in process.

What it measures, all on loopback, bounded in time and request count:

* in process: `get_online_features` of one route (4 stored features + 1 on-demand ratio), called
  directly by one caller: p50/p99 latency and CPU per request, the floor that HTTP, JSON,
  validation and request logging add to.
* server: the same request as `POST /get-online-features` to a real uvicorn server (the
  `serve` app factory, request log on, into a temporary lake) with 1 and then 4 worker
  processes, in two phases: unloaded (one request in flight, up to 10 s: latency comparable
  with in process) and loaded (`--concurrency` in flight for `--seconds`, from
  `--client-processes` processes of httpx.AsyncClient loops: throughput and latency under
  load). Server CPU per request is read from /proc for the whole server process tree, so it
  holds even when the load generator, not the server, is what limits throughput.
  Random entities from the published set, one per request.

The load generator shares the machine's cores with the server (see `environment.cpus`) and
with anything else running there (`load_average_at_end`); the report says so rather than
hiding it.

Run: ``python -m benchmarks.bench_server [--out PATH] [--seconds 30]`` (starts its own
redis-server; never touches another one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.retrieval import get_online_features
from feature_pipelines.online.table import OnlineTable

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "server.json"
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
WORKER_COUNTS = (1, 4)
MAX_REQUESTS_PER_RUN = 2_000_000  # a hard bound, whatever the duration
IN_PROCESS_REQUESTS = 3_000
WARMUP_S = 2.0
UNLOADED_S = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _routes() -> list[tuple[str, str]]:
    return [(f"O{i}", f"D{j}") for i in range(N_ORIGINS) for j in range(N_DESTS)]


def publish_table(server: LocalRedisServer) -> None:
    """One snapshot of route_delay_stats for every route, one hour old (well within its TTL)."""
    rng = np.random.default_rng(SEED)
    routes = _routes()
    n = len(routes)
    columns: dict[str, Any] = {
        "origin": [o for o, _ in routes],
        "dest": [d for _, d in routes],
        "event_timestamp": pl.Series([datetime.now(timezone.utc) - timedelta(hours=1)] * n,
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


def _summary(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    return {
        "requests": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_per_s": ms.size / elapsed_s,
    }


def bench_in_process(server: LocalRedisServer) -> dict[str, float]:
    """The same request served by get_online_features directly: one caller, no HTTP."""
    client = server.client(socket_timeout=2)
    rng = random.Random(SEED)
    routes = _routes()
    on_demand = [ON_DEMAND_FEATURES[ON_DEMAND]]
    latencies = []
    cpu_began = time.process_time()
    try:
        began = time.perf_counter()
        for i in range(IN_PROCESS_REQUESTS + 200):
            origin, dest = rng.choice(routes)
            start = time.perf_counter()
            rows = pl.DataFrame({"origin": [origin], "dest": [dest]})
            get_online_features(client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=rows, features=STORED,
                                now=datetime.now(timezone.utc), on_demand=on_demand)
            if i >= 200:  # warm-up excluded
                latencies.append(time.perf_counter() - start)
            else:
                began, cpu_began = time.perf_counter(), time.process_time()
        out = _summary(latencies, time.perf_counter() - began)
        out["cpu_ms_per_request"] = (time.process_time() - cpu_began) * 1000 / len(latencies)
        return out
    finally:
        client.close()


def _start_server(server: LocalRedisServer, workers: int, lake: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
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
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} while starting")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    _stop_server(process)
    raise RuntimeError("the server did not become healthy within 60 s")


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _process_tree_cpu_s(root_pid: int) -> float:
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


async def _drive(base: str, seconds: float, concurrency: int, barrier: Any) -> dict[str, Any]:
    """`concurrency` loops, each with its own one-connection AsyncClient, one request at a time.

    One client per loop rather than one pooled client: httpx's shared pool costs more per
    request as connections are added (measured: a pooled client at 32 connections managed half
    the requests of 8), which would benchmark the client, not the server.
    """
    routes = _routes()
    features = [*STORED, f"on_demand:{ON_DEMAND}"]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    clients = [httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=1), timeout=10)
               for _ in range(concurrency)]
    try:
        await asyncio.to_thread(barrier.wait)
        measure_from = time.perf_counter() + WARMUP_S  # warm-up: connections, worker code paths
        stop_at = measure_from + seconds
        cpu_at_start: list[float] = []
        sent = 0

        async def loop(client: httpx.AsyncClient, seed: int) -> None:
            nonlocal sent
            rng = random.Random(seed)
            while True:
                start = time.perf_counter()
                if start >= stop_at or sent >= MAX_REQUESTS_PER_RUN:
                    return
                if start >= measure_from and not cpu_at_start:
                    cpu_at_start.append(time.process_time())
                origin, dest = rng.choice(routes)
                body = {"features": features, "entities": {"origin": [origin], "dest": [dest]}}
                try:
                    response = await client.post("/get-online-features", json=body)
                    outcome = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as error:
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
            await client.aclose()
    return {"latencies": latencies, "errors": errors, "client_cpu_s": client_cpu}


def _client_process(base: str, seconds: float, concurrency: int, barrier: Any, results: Any) -> None:
    results.put(asyncio.run(_drive(base, seconds, concurrency, barrier)))


def _load(
    server_pid: int, base: str, seconds: float, concurrency: int, client_processes: int
) -> dict[str, Any]:
    """One measured phase against a running server: latency, throughput, CPU on both sides."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with polars threads
    barrier = context.Barrier(client_processes + 1)
    results = context.Queue()
    shares = [concurrency // client_processes + (i < concurrency % client_processes) for i in range(client_processes)]
    clients = [context.Process(target=_client_process, args=(base, seconds, share, barrier, results))
               for share in shares]
    for client in clients:
        client.start()
    try:
        barrier.wait(timeout=120)
        time.sleep(WARMUP_S)
        server_cpu_start = _process_tree_cpu_s(server_pid)
        time.sleep(seconds)
        server_cpu = _process_tree_cpu_s(server_pid) - server_cpu_start
        driven = [results.get(timeout=120) for _ in clients]
    finally:
        for client in clients:
            client.join(timeout=30)
            if client.is_alive():
                client.kill()
    latencies = [x for d in driven for x in d["latencies"]]
    errors: dict[str, int] = {}
    for d in driven:
        for key, count in d["errors"].items():
            errors[key] = errors.get(key, 0) + count
    if not latencies:
        raise RuntimeError(f"no successful request with {concurrency} in flight: {errors}")
    out: dict[str, Any] = _summary(latencies, seconds)
    out.update(
        concurrency=concurrency, client_processes=client_processes, seconds=seconds, errors=errors,
        server_cpu_s=server_cpu,
        server_cpu_ms_per_request=server_cpu * 1000 / len(latencies),
        client_cpu_s=sum(d["client_cpu_s"] for d in driven),
    )
    return out


def bench_server(
    server: LocalRedisServer, workers: int, seconds: float, concurrency: int, client_processes: int
) -> dict[str, Any]:
    """Start a server with `workers` processes; measure it unloaded (one request in flight:
    latency comparable to in process), then loaded (`concurrency` in flight: throughput)."""
    with tempfile.TemporaryDirectory(prefix="bench-server-lake-") as lake:
        process, base = _start_server(server, workers, Path(lake))
        try:
            unloaded = _load(process.pid, base, min(seconds, UNLOADED_S), 1, 1)
            loaded = _load(process.pid, base, seconds, concurrency, client_processes)
        finally:
            _stop_server(process)
        logged = _logged_rows(Path(lake))
    return {"workers": workers, "unloaded": unloaded, "loaded": loaded, "request_log_rows": logged}


def _logged_rows(lake: Path) -> int | None:
    """How many rows the workers' request logs wrote (they flush on shutdown)."""
    table = lake / "_serving" / "feature_log"
    if not table.exists():
        return None
    return int(pl.scan_delta(str(table)).select(pl.len()).collect().item())


def run(out_path: Path, seconds: float, concurrency: int, client_processes: int) -> dict[str, Any]:
    with LocalRedisServer() as server:
        publish_table(server)
        in_process = bench_in_process(server)
        servers = {str(n): bench_server(server, n, seconds, concurrency, client_processes) for n in WORKER_COUNTS}
    for figures in servers.values():
        for phase in (figures["unloaded"], figures["loaded"]):
            phase["p50_ratio_to_in_process"] = phase["p50_ms"] / in_process["p50_ms"]
            phase["p99_ratio_to_in_process"] = phase["p99_ms"] / in_process["p99_ms"]
            phase["cpu_per_request_ratio_to_in_process"] = (
                phase["server_cpu_ms_per_request"] / in_process["cpu_ms_per_request"]
            )
    import fastapi
    import uvicorn

    report = {
        "benchmark": "server",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": {
            "python": platform.python_version(),
            "polars": pl.__version__,
            "fastapi": fastapi.__version__,
            "uvicorn": uvicorn.__version__,
            "httpx": httpx.__version__,
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "note": "client and server share these cpus (and with whatever else runs on the machine)",
        },
        "request": {
            "entities": 1,
            "stored_features": STORED,
            "on_demand_features": [ON_DEMAND],
            "published_entities": N_ORIGINS * N_DESTS,
            "request_log": True,
        },
        "in_process": in_process,
        "server": servers,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per worker count (default 30)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="load-generator processes sharing the concurrency (default 2)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.concurrency <= 256:
        parser.error("--seconds must be in (0, 600] and --concurrency in (0, 256]")
    if not 0 < args.client_processes <= min(8, args.concurrency):
        parser.error("--client-processes must be in [1, min(8, concurrency)]")
    report = run(args.out, args.seconds, args.concurrency, args.client_processes)
    base = report["in_process"]
    env = report["environment"]
    print(f"{env['cpus']} cpus (shared by client and server); load average at end "
          f"{', '.join(f'{x:.1f}' for x in env['load_average_at_end'])}")
    print(f"in process: p50 {base['p50_ms']:.3f} ms, p99 {base['p99_ms']:.3f} ms, "
          f"{base['throughput_per_s']:,.0f}/s (one caller), {base['cpu_ms_per_request']:.3f} ms CPU/request")
    for workers, figures in report["server"].items():
        for phase in ("unloaded", "loaded"):
            s = figures[phase]
            print(f"server, {workers} worker(s), {phase}, {s['concurrency']} in flight from "
                  f"{s['client_processes']} client process(es): p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
                  f"{s['throughput_per_s']:,.0f} req/s, errors {s['errors'] or 0}; p50 x{s['p50_ratio_to_in_process']:.1f}, "
                  f"p99 x{s['p99_ratio_to_in_process']:.1f} in-process; server CPU "
                  f"{s['server_cpu_ms_per_request']:.2f} ms/request (x{s['cpu_per_request_ratio_to_in_process']:.1f}); "
                  f"client CPU {s['client_cpu_s']:.1f} s")
        print(f"  request log rows written by the {workers}-worker server: {figures['request_log_rows']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
