"""Benchmark our feature server against Feast's `feast serve` on the same request, load and machine.

Each server gets its own redis-server (`LocalRedisServer`) holding the same snapshot: every route
of `route_delay_stats` and every origin of `origin_weather`, the same values, one hour old. Feast
runs from its own virtualenv (`benchmarks/.feast-venv/`, created on first use with
``pip install "feast[redis]==0.67.*"``): Feast is a benchmark-only dependency, never one of the
project's. Its repo is a temp dir: a Redis online store, a file offline store, entities `origin`
and `dest`, the two views with our names, dtypes and TTLs; `feast apply`, then
`write_to_online_store`, then ``feast serve --workers 2 --max-requests 0`` (no worker restarts:
Feast at its best). Ours is the `serve` app factory under uvicorn with 2 workers, request log on.

Per round, both servers in turn (the order alternates, so a drift in the machine's other load hits
both):

* unloaded: one request in flight, 1 entity x 10 features (all 8 of route_delay_stats and 2 of
  origin_weather, two views): p50/p99;
* loaded: `--concurrency` in flight from `--client-processes` processes, 1 entity x 3 features of
  route_delay_stats: throughput, p50/p99, and server CPU per request (user + system of the
  server's whole process tree, from /proc, over the measured seconds, divided by the requests).

The load generator is `http_load`'s raw HTTP/1.1 client by default (``--client raw``, ~0.04 ms of
client CPU per request): with httpx (``--client httpx``, ~0.7 ms per request) the client used most
of a 2-cpu machine and capped the faster server's throughput, so the ratio measured the client.

The report gives each round and the median over rounds, and the ratios ours/Feast of the medians
(throughput above 1 is ours faster; CPU and latency below 1 is ours cheaper).

Run: ``python -m benchmarks.bench_against_feast [--out PATH] [--seconds 30] [--rounds 3] [--client raw]``.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import polars as pl

from benchmarks.harness import machine, report_parser, write_report
from benchmarks.http_load import (
    CLIENTS,
    PREFIX,
    SEED,
    free_port,
    load,
    served_routes,
    start_server,
    stop_server,
    wait_until_healthy,
)
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "against_feast.json"
FEAST_VENV = HERE / ".feast-venv"
FEAST_REQUIREMENT = "feast[redis]==0.67.*"
ROUTES = FEATURE_VIEWS["route_delay_stats"]
WEATHER = FEATURE_VIEWS["origin_weather"]
LOADED_FEATURES = [
    "route_delay_stats:route_dep_delay_mean_24h",
    "route_delay_stats:route_dep_delay_p90_24h",
    "route_delay_stats:route_cancel_rate_24h",
]
UNLOADED_FEATURES = [
    *(f"{ROUTES.name}:{feature.name}" for feature in ROUTES.features),
    f"{WEATHER.name}:origin_temp_latest",
    f"{WEATHER.name}:origin_visib_latest",
]
UNLOADED_S = 10.0
WORKERS = 2
FEAST_DTYPES = {"float64": "Float64", "int64": "Int64"}


# ---------------------------------------------------------------- the data, the same for both


def snapshots() -> dict[str, pl.DataFrame]:
    """One row per entity of both views, one hour old: what both online stores will hold."""
    rng = np.random.default_rng(SEED)
    routes = served_routes()
    origins = sorted({origin for origin, _ in routes})
    when = datetime.now(UTC) - timedelta(hours=1)
    keys = {
        ROUTES.name: {"origin": [o for o, _ in routes], "dest": [d for _, d in routes]},
        WEATHER.name: {"origin": origins},
    }
    frames = {}
    for view in (ROUTES, WEATHER):
        n = len(next(iter(keys[view.name].values())))
        columns: dict[str, Any] = {
            **keys[view.name],
            "event_timestamp": pl.Series([when] * n, dtype=pl.Datetime("us", "UTC")),
        }
        for feature in view.features:
            columns[feature.name] = rng.integers(0, 200, n) if feature.dtype == "int64" else rng.normal(10, 20, n)
        frames[view.name] = pl.DataFrame(columns)
    return frames


def publish_ours(server: LocalRedisServer, frames: dict[str, pl.DataFrame]) -> None:
    client = server.client()
    try:
        for view in (ROUTES, WEATHER):
            publish(client, OnlineTable.for_view(view, PREFIX), frames[view.name])
    finally:
        client.close()


# ---------------------------------------------------------------- Feast: its venv, repo and server


def feast_bin(name: str) -> Path:
    return FEAST_VENV / "bin" / name


def ensure_feast_venv() -> str:
    """Feast's own virtualenv (created once); the installed Feast version."""
    if not feast_bin("feast").exists():
        subprocess.run(["python3.11", "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run([str(feast_bin("pip")), "install", "-q", FEAST_REQUIREMENT], check=True)
    version = subprocess.run([str(feast_bin("python")), "-c", "import feast; print(feast.__version__)"],
                             check=True, capture_output=True, text=True)
    return version.stdout.strip()


def _feast_view_source(view: FeatureView, data: Path) -> str:
    fields = ", ".join(f'Field(name="{f.name}", dtype={FEAST_DTYPES[f.dtype]})' for f in view.features)
    entities = ", ".join(view.entity_keys)
    return textwrap.dedent(f"""
        {view.name} = FeatureView(
            name="{view.name}", entities=[{entities}], ttl=timedelta(seconds={view.ttl.total_seconds()}),
            schema=[{fields}], online=True,
            source=FileSource(path="{data}", timestamp_field="event_timestamp"),
        )
    """)


def write_feast_repo(repo: Path, redis_url: str, frames: dict[str, pl.DataFrame]) -> None:
    """feature_store.yaml, the definitions and the offline parquet files of a Feast repo."""
    address = urlsplit(redis_url)
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(textwrap.dedent(f"""
        project: bench_against_feast
        registry: data/registry.db
        provider: local
        online_store:
          type: redis
          connection_string: "{address.hostname}:{address.port}"
        offline_store:
          type: file
        entity_key_serialization_version: 3
    """))
    views = []
    for name, frame in frames.items():
        data = repo / "data" / f"{name}.parquet"
        frame.write_parquet(data)
        views.append(_feast_view_source(FEATURE_VIEWS[name], data))
    (repo / "definitions.py").write_text(
        "from datetime import timedelta\n"
        "from feast import Entity, FeatureView, Field, FileSource, ValueType\n"
        "from feast.types import Float64, Int64\n\n"
        'origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING)\n'
        'dest = Entity(name="dest", join_keys=["dest"], value_type=ValueType.STRING)\n'
        + "".join(views)
    )


def load_feast_repo(repo: Path) -> None:
    """`feast apply`, then write each view's parquet into the online store."""
    subprocess.run([str(feast_bin("feast")), "-c", str(repo), "apply"], check=True, capture_output=True)
    write = textwrap.dedent(f"""
        import pandas as pd
        from feast import FeatureStore
        store = FeatureStore(repo_path="{repo}")
        for name in {[ROUTES.name, WEATHER.name]!r}:
            store.write_to_online_store(name, pd.read_parquet("{repo}/data/" + name + ".parquet"))
    """)
    subprocess.run([str(feast_bin("python")), "-c", write], check=True, cwd=repo)


def start_feast(repo: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`feast serve` on a free port, its gunicorn log in the repo's `serve.log`."""
    port = free_port()
    with (repo / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [str(feast_bin("feast")), "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port),
             "--workers", str(WORKERS), "--max-requests", "0", "--no-access-log"],
            cwd=repo, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = wait_until_healthy(process, port, name="feast serve", timeout_s=120, stop_signal=signal.SIGTERM,
                              log=repo / "serve.log")
    return process, base


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_server(process, stop_signal=signal.SIGTERM)


# ---------------------------------------------------------------- rounds, medians, ratios


@dataclass(frozen=True)
class Running:
    """A server under test: its name, its process (the root of its tree) and its base URL."""

    name: str
    process: subprocess.Popen[bytes]
    base: str


def check_same_answer(servers: Sequence[Running]) -> None:
    """Both servers answer the 10-feature request alike (same names, values, all PRESENT) before
    anything is measured: Feast answers 200 even when it found nothing."""
    body = {"features": UNLOADED_FEATURES, "entities": {"origin": ["O1"], "dest": ["D7"]}}
    answers = {}
    for server in servers:
        response = httpx.post(f"{server.base}/get-online-features", json=body, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"{server.name}: HTTP {response.status_code}: {response.text[:500]}")
        answer = response.json()
        results = answer["results"]
        statuses = {status for result in results[2:] for status in result["statuses"]}
        if statuses != {"PRESENT"}:
            raise RuntimeError(f"{server.name}: statuses {statuses} for a published entity")
        answers[server.name] = {
            name: result["values"][0] for name, result in zip(answer["metadata"]["feature_names"], results, strict=True)
        }
    (reference, expected), *others = answers.items()
    for name, served in others:
        for feature, value in expected.items():
            same = (abs(value - served[feature]) <= 1e-9 * max(1.0, abs(value)) if isinstance(value, float)
                    else value == served[feature])
            if not same:
                raise RuntimeError(f"{name} serves {feature}={served[feature]!r}, {reference} {value!r}")


def measure(server: Running, seconds: float, concurrency: int, client_processes: int, client: str
            ) -> dict[str, Any]:
    pid, base = server.process.pid, server.base
    return {
        # The same body for both servers: Feast has no on-demand view here, so no on-demand feature.
        "unloaded": load(pid, base, min(seconds, UNLOADED_S), 1, 1, features=UNLOADED_FEATURES, client=client),
        "loaded": load(pid, base, seconds, concurrency, client_processes, features=LOADED_FEATURES, client=client),
    }


FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "throughput_per_s": lambda r: r["loaded"]["throughput_per_s"],
    "server_cpu_ms_per_request": lambda r: r["loaded"]["server_cpu_ms_per_request"],
    "loaded_p50_ms": lambda r: r["loaded"]["p50_ms"],
    "loaded_p99_ms": lambda r: r["loaded"]["p99_ms"],
    "unloaded_p50_ms": lambda r: r["unloaded"]["p50_ms"],
    "unloaded_p99_ms": lambda r: r["unloaded"]["p99_ms"],
}


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    return {name: statistics.median(figure(r) for r in rounds) for name, figure in FIGURES.items()}


def run(out_path: Path, seconds: float, rounds: int, concurrency: int, client_processes: int, client: str = "raw"
        ) -> dict[str, Any]:
    feast_version = ensure_feast_venv()
    frames = snapshots()
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "feast": []}
    with (LocalRedisServer() as ours_redis, LocalRedisServer() as feast_redis,
          tempfile.TemporaryDirectory(prefix="bench-feast-") as scratch):
        publish_ours(ours_redis, frames)
        repo = Path(scratch) / "repo"
        write_feast_repo(repo, feast_redis.url, frames)
        load_feast_repo(repo)
        lake = Path(scratch) / "lake"
        ours_process, ours_base = start_server(ours_redis, WORKERS, lake)
        try:
            feast_process, feast_base = start_feast(repo)
            try:
                servers = [Running("ours", ours_process, ours_base), Running("feast", feast_process, feast_base)]
                check_same_answer(servers)
                for n in range(rounds):
                    for server in servers if n % 2 == 0 else reversed(servers):
                        results[server.name].append(measure(server, seconds, concurrency, client_processes, client))
                        print(f"round {n + 1}, {server.name}: {results[server.name][-1]['loaded']['throughput_per_s']:,.0f}"
                              " req/s", flush=True)
            finally:
                _stop(feast_process)
        finally:
            stop_server(ours_process)
    summary = {name: medians(per_round) for name, per_round in results.items()}
    ratios = {figure: summary["ours"][figure] / summary["feast"][figure] for figure in FIGURES}
    import fastapi
    import uvicorn

    report = {
        "benchmark": "against_feast",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": machine(
            {"feast": feast_version, "fastapi (ours)": fastapi.__version__, "uvicorn (ours)": uvicorn.__version__},
            note="both servers, both redis-servers and the load generator share these cpus",
        ),
        "load": {
            "rounds": rounds, "seconds": seconds, "workers": WORKERS, "concurrency": concurrency,
            "client_processes": client_processes, "client": client, "entities_per_request": 1,
            "loaded_features": LOADED_FEATURES, "unloaded_features": UNLOADED_FEATURES,
            "ours": "uvicorn, request log on", "feast": "feast serve --max-requests 0",
        },
        "median": summary,
        "ratio_ours_to_feast": ratios,
        "rounds": results,
    }
    write_report(out_path, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = report_parser(__doc__.splitlines()[0], DEFAULT_OUT)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds of load per server and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each measuring both servers (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight when loaded (default 32)")
    parser.add_argument("--client-processes", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="load generator: raw (hand-written HTTP/1.1, default: cheap enough that the "
                             "servers, not the client, set the pace) or httpx (see benchmarks.http_load)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.rounds <= 10 or not 0 < args.concurrency <= 256:
        parser.error("--seconds must be in (0, 600], --rounds in [1, 10], --concurrency in [1, 256]")
    if not 0 < args.client_processes <= min(8, args.concurrency):
        parser.error("--client-processes must be in [1, min(8, concurrency)]")
    report = run(args.out, args.seconds, args.rounds, args.concurrency, args.client_processes, args.client)
    env = report["environment"]
    print(f"feast {env['feast']}; {env['cpus']} cpus shared by everything; load average at end "
          f"{', '.join(f'{x:.1f}' for x in env['load_average_at_end'])}")
    print(f"{'median of ' + str(args.rounds) + ' rounds':<28}{'ours':>12}{'feast':>12}{'ours/feast':>12}")
    for figure in FIGURES:
        ours, feast = report["median"]["ours"][figure], report["median"]["feast"][figure]
        print(f"{figure:<28}{ours:>12,.2f}{feast:>12,.2f}{report['ratio_ours_to_feast'][figure]:>12.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
