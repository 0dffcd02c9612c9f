"""Benchmark the feature server while the view it serves is being published, against idle.

Same run, same server, same load (`--concurrency` requests in flight, one random route each,
4 stored + 1 on-demand feature, as `bench_server`):

* idle_before: no publish running;
* during_publish: a separate process publishes `route_delay_stats` continuously
  (`--publish-entities` entities per generation, the served routes among them, the event time
  advancing each generation, so every generation really overwrites);
* idle_after: no publish again (shows drift from other load on the shared machine).

Reported: p50/p99 latency and throughput per phase, and during/idle ratios; plus the publish
rate alone (server idle) and under the serving load, so the cost shows on both sides.

Run: ``python -m benchmarks.bench_serve_during_publish [--out PATH] [--seconds 10]`` (starts its
own redis-server and server; never touches another one).
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.harness import Stopwatch, machine, report_parser, write_report
from benchmarks.http_load import PREFIX, VIEW, load, publish_table, served_routes, start_server, stop_server
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serve_during_publish.json"
MAX_GENERATIONS = 100_000  # a hard bound on the publisher, whatever the duration


def _generation_frame(entities: int, generation: int, base: datetime) -> pl.DataFrame:
    """The served routes first, then filler routes; values change with every generation."""
    served = served_routes()
    filler = [(f"F{i % 7}", f"X{i}") for i in range(max(0, entities - len(served)))]
    routes = (served + filler)[:entities]
    n = len(routes)
    rng = np.random.default_rng(generation)
    columns: dict[str, Any] = {
        "origin": [o for o, _ in routes],
        "dest": [d for _, d in routes],
        "event_timestamp": pl.Series([base + timedelta(seconds=generation)] * n, dtype=pl.Datetime("us", "UTC")),
    }
    for name, dtype in VIEW.schema().items():
        columns[name] = rng.integers(0, 200, n) if dtype == pl.Int64 else rng.normal(10, 20, n)
    return pl.DataFrame(columns)


def _publish_loop(url: str, entities: int, base_iso: str, ready: Any, stop: Any, results: Any) -> None:
    """Publisher process: generation after generation until `stop`; reports entities/s."""
    import redis

    base = datetime.fromisoformat(base_iso)
    frames = [_generation_frame(entities, g, base) for g in range(2)]  # values alternate; stamps advance
    client = redis.Redis.from_url(url, socket_timeout=10)
    table = OnlineTable.for_view(VIEW, PREFIX)
    written = generations = 0
    try:
        ready.set()
        with Stopwatch() as watch:
            while not stop.is_set() and generations < MAX_GENERATIONS:
                generations += 1
                frame = frames[generations % 2].with_columns(
                    event_timestamp=pl.lit(base + timedelta(milliseconds=generations), dtype=pl.Datetime("us", "UTC"))
                )
                result = publish(client, table, frame)
                written += result.written
    finally:
        client.close()
    elapsed = watch.seconds
    results.put({"generations": generations, "entities_written": written, "seconds": elapsed,
                 "entities_per_s": written / elapsed if elapsed else 0.0})


class Publisher:
    """The publisher process, started and stopped around a phase."""

    def __init__(self, server: LocalRedisServer, entities: int) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with polars threads
        self._ready, self._stop, self._results = context.Event(), context.Event(), context.Queue()
        base = datetime.now(timezone.utc) - timedelta(hours=1)
        self._process = context.Process(
            target=_publish_loop, args=(server.url, entities, base.isoformat(), self._ready, self._stop, self._results)
        )

    def __enter__(self) -> Publisher:
        self._process.start()
        if not self._ready.wait(timeout=120):
            self._process.kill()
            raise RuntimeError("the publisher process did not start within 120 s")
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        figures: dict[str, Any] = self._results.get(timeout=120)
        self._process.join(timeout=30)
        if self._process.exitcode != 0:
            raise RuntimeError(f"the publisher process exited with code {self._process.exitcode}")
        return figures

    def __exit__(self, *_: object) -> None:
        if self._process.is_alive():
            self._stop.set()
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()


def _phase(process_pid: int, base: str, seconds: float, concurrency: int) -> dict[str, Any]:
    out = load(process_pid, base, seconds, concurrency, 1)
    if out["errors"]:
        raise RuntimeError(f"requests failed: {out['errors']}")
    return out


def run(out_path: Path, seconds: float, concurrency: int, workers: int, publish_entities: int) -> dict[str, Any]:
    with LocalRedisServer() as server, tempfile.TemporaryDirectory(prefix="bench-sdp-lake-") as lake:
        publish_table(server)
        with Publisher(server, publish_entities) as alone:
            time.sleep(seconds)
            publish_alone = alone.stop()
        process, base = start_server(server, workers, Path(lake))
        try:
            idle_before = _phase(process.pid, base, seconds, concurrency)
            with Publisher(server, publish_entities) as publisher:
                during = _phase(process.pid, base, seconds, concurrency)
                publish_under_load = publisher.stop()
            idle_after = _phase(process.pid, base, seconds, concurrency)
        finally:
            stop_server(process)
    ratios = {
        f"{metric}_during_over_idle_before": during[metric] / idle_before[metric]
        for metric in ("p50_ms", "p99_ms", "throughput_per_s")
    }
    ratios["p99_idle_after_over_idle_before"] = idle_after["p99_ms"] / idle_before["p99_ms"]
    ratios["publish_rate_under_load_over_alone"] = (
        publish_under_load["entities_per_s"] / publish_alone["entities_per_s"]
    )
    report = {
        "benchmark": "serve_during_publish",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": machine(note="server, load generator, publisher and redis-server share these cpus"),
        "setup": {"workers": workers, "concurrency": concurrency, "seconds_per_phase": seconds,
                  "publish_entities_per_generation": publish_entities, "request_log": True},
        "idle_before": idle_before,
        "during_publish": during,
        "idle_after": idle_after,
        "publish_alone": publish_alone,
        "publish_under_serving_load": publish_under_load,
        "ratios": ratios,
    }
    write_report(out_path, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = report_parser(__doc__.splitlines()[0], DEFAULT_OUT)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--publish-entities", type=int, default=20_000,
                        help="entities per published generation (default 20,000)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 300 or not 0 < args.concurrency <= 64 or not 0 < args.workers <= 8:
        parser.error("--seconds must be in (0, 300], --concurrency in (0, 64], --workers in (0, 8]")
    if not len(served_routes()) <= args.publish_entities <= 1_000_000:
        parser.error(f"--publish-entities must be in [{len(served_routes())}, 1,000,000]")
    report = run(args.out, args.seconds, args.concurrency, args.workers, args.publish_entities)
    for phase in ("idle_before", "during_publish", "idle_after"):
        s = report[phase]
        print(f"{phase:>15}: p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, {s['throughput_per_s']:,.0f} req/s, "
              f"{s['requests']} requests, errors {s['errors'] or 0}")
    for name in ("publish_alone", "publish_under_serving_load"):
        p = report[name]
        print(f"{name:>26}: {p['entities_per_s']:,.0f} entities/s ({p['generations']} generations)")
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in report["ratios"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
