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

import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from benchmarks.harness import Stopwatch, machine, report_parser, write_report
from benchmarks.http_load import (
    CLIENTS,
    N_DESTS,
    N_ORIGINS,
    ON_DEMAND,
    PREFIX,
    SEED,
    STORED,
    latency_summary,
    load,
    publish_table,
    served_routes,
    start_server,
    stop_server,
)
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.retrieval import get_online_features

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "server.json"
WORKER_COUNTS = (1, 4)
IN_PROCESS_REQUESTS = 3_000
IN_PROCESS_REQUESTS_WARMUP = 200
UNLOADED_S = 10.0


def bench_in_process(server: LocalRedisServer) -> dict[str, float]:
    """The same request served by get_online_features directly: one caller, no HTTP."""
    client = server.client(socket_timeout=2)
    rng = random.Random(SEED)
    routes = served_routes()
    on_demand = [ON_DEMAND_FEATURES[ON_DEMAND]]

    def request(origin: str, dest: str) -> None:
        rows = pl.DataFrame({"origin": [origin], "dest": [dest]})
        get_online_features(client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=rows, features=STORED,
                            now=datetime.now(UTC), on_demand=on_demand)

    latencies = []
    try:
        for _ in range(IN_PROCESS_REQUESTS_WARMUP):
            request(*rng.choice(routes))
        with Stopwatch() as watch:
            for _ in range(IN_PROCESS_REQUESTS):
                origin, dest = rng.choice(routes)
                start = time.perf_counter()
                request(origin, dest)
                latencies.append(time.perf_counter() - start)
    finally:
        client.close()
    out = latency_summary(latencies, watch.seconds)
    out["cpu_ms_per_request"] = watch.cpu_seconds * 1000 / len(latencies)
    return out


def bench_server(
    server: LocalRedisServer, workers: int, seconds: float, concurrency: int, client_processes: int, client: str
) -> dict[str, Any]:
    """Start a server with `workers` processes; measure it unloaded (one request in flight:
    latency comparable to in process), then loaded (`concurrency` in flight: throughput)."""
    with tempfile.TemporaryDirectory(prefix="bench-server-lake-") as lake:
        process, base = start_server(server, workers, Path(lake))
        try:
            unloaded = load(process.pid, base, min(seconds, UNLOADED_S), 1, 1, client=client)
            loaded = load(process.pid, base, seconds, concurrency, client_processes, client=client)
        finally:
            stop_server(process)
        logged = _logged_rows(Path(lake))
    return {"workers": workers, "unloaded": unloaded, "loaded": loaded, "request_log_rows": logged}


def _logged_rows(lake: Path) -> int | None:
    """How many rows the workers' request logs wrote (they flush on shutdown)."""
    table = lake / "_serving" / "feature_log"
    if not table.exists():
        return None
    return int(pl.scan_delta(str(table)).select(pl.len()).collect().item())


def run(out_path: Path, seconds: float, concurrency: int, client_processes: int, client: str = "raw") -> dict[str, Any]:
    with LocalRedisServer() as server:
        publish_table(server)
        in_process = bench_in_process(server)
        servers = {str(n): bench_server(server, n, seconds, concurrency, client_processes, client)
                   for n in WORKER_COUNTS}
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
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": machine(
            {"fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__, "httpx": httpx.__version__},
            note="client and server share these cpus (and with whatever else runs on the machine)",
        ),
        "request": {
            "entities": 1,
            "stored_features": STORED,
            "on_demand_features": [ON_DEMAND],
            "published_entities": N_ORIGINS * N_DESTS,
            "request_log": True,
            "client": client,
        },
        "in_process": in_process,
        "server": servers,
    }
    write_report(out_path, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = report_parser(__doc__.splitlines()[0], DEFAULT_OUT)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per worker count (default 30)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="load-generator processes sharing the concurrency (default 2)")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="load generator (default raw: cheap enough not to cap the server; see benchmarks.http_load)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.concurrency <= 256:
        parser.error("--seconds must be in (0, 600] and --concurrency in (0, 256]")
    if not 0 < args.client_processes <= min(8, args.concurrency):
        parser.error("--client-processes must be in [1, min(8, concurrency)]")
    report = run(args.out, args.seconds, args.concurrency, args.client_processes, args.client)
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
