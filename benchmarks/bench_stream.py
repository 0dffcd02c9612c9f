"""The stream consumer: lag from push to servable, throughput against a raw Redis Streams loop, memory, a 10x burst.

Every event is a real 2013 departure (`aircraft_utilisation`, the catalog's streaming view; flights
with a tail number, so each event is either applied or dead-lettered). For the paced phases each
event is re-timed to be known at the instant it is pushed, as on a live feed: all its datetimes move
by the same amount, so its own relations hold and its id (which holds the scheduled departure) stays
unique. Its values are the real ones. The consumers are `StreamConsumer`s in their own processes
(spawned once, reused by every phase on a flushed redis-server of this benchmark's own):

* lag: a steady 1k and 10k events/s for a while; an event's lag is from its XADD (its entry id's
  millisecond clock, Redis's) to the end of the script call that applied it (the consumer's
  `after_chunk` hook, same machine clock): from then on a read serves it. p50, p99, max.
* throughput (saturated): the events already on the stream, consumed by 1 and by N processes, against
  a raw XREADGROUP + XACK loop over the same entries in this process (no decoding, no judging, no
  script), as a ratio; the raw XADD rate beside our `push_events`.
* memory: a real day replayed (its 2013 instants, in order), then MEMORY USAGE of every tile key
  (tiles and their kept events) per entity, and of the idempotency markers per event.
* burst: 1k/s, then 10x that for a while, then 1k/s again: peak backlog (undelivered + pending), the
  stream's bytes at the peak, the time to drain after the burst, and no loss (applied + dead-lettered
  == pushed). The stream itself absorbs a burst: XADD is cheap, the consumers read at most
  `batch_size` entries a batch, and the backlog waits in Redis, bounded by its memory or the
  producer's `max_length`.

Run: python -m benchmarks.bench_stream [--quick] [--consumers 2] [--out benchmarks/results/stream.json]
"""

from __future__ import annotations

import multiprocessing
import queue
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import redis

from benchmarks.harness import machine, report_parser, write_report
from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.sources import nycflights
from feature_pipelines.streaming.consumer import ConsumerHooks, StreamConsumer
from feature_pipelines.streaming.defaults import DEFAULT_BATCH_SIZE, DEFAULT_GROUP
from feature_pipelines.streaming.events import encode_rows, stream_table
from feature_pipelines.streaming.keys import StreamKeys
from feature_pipelines.streaming.producer import push_events
from feature_pipelines.streaming.runner import stream_lag

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "stream.json"
TABLE = "raw_flights"
VIEW = aircraft_utilisation
KEYS = StreamKeys("fp:bench-stream")
BATCH_SIZE = DEFAULT_BATCH_SIZE
TICK_S = 0.01
FULL = {"lag": [(1_000, 20.0), (10_000, 10.0)], "saturated": 100_000, "burst": (1_000, 5.0, 10.0)}
QUICK = {"lag": [(1_000, 1.0), (10_000, 0.3)], "saturated": 2_000, "burst": (1_000, 0.5, 0.3)}


def _worker(url: str, index: int, inbox: Any, outbox: Any, stop: Any) -> None:
    """A consumer process: per phase, a fresh consumer of the group until `stop`; sends back its lags (s)."""
    client = redis.Redis.from_url(url, socket_timeout=60)
    while (command := inbox.get()) is not None:
        lags = _Lags()
        consumer = StreamConsumer(client, [VIEW], table=TABLE, keys=KEYS, name=f"bench-{index}", block_ms=20,
                                  batch_size=command, hooks=ConsumerHooks(after_chunk=lags.record))
        outbox.put(("ready", index))
        consumer.run(stop=stop)
        outbox.put(("lags", lags.seconds))


class _Lags:
    """Per applied entry: seconds from its XADD (the entry id's milliseconds) to now, its chunk applied."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def record(self, entry_ids: list[str]) -> None:
        now_ms = time.time() * 1000
        self.seconds.extend((now_ms - int(e.split("-")[0])) / 1000 for e in entry_ids)


class Consumers:
    """N consumer processes, started once; `phase(n)` runs the first n of them until `end()`."""

    def __init__(self, url: str, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop, self.outbox = context.Event(), context.Queue()
        self.inboxes = [context.Queue() for _ in range(processes)]
        self.processes = [context.Process(target=_worker, args=(url, i, self.inboxes[i], self.outbox, self.stop), daemon=True)
                          for i in range(processes)]
        for process in self.processes:
            process.start()
        self.running = 0

    def phase(self, n: int, batch_size: int = BATCH_SIZE) -> None:
        self.stop.clear()
        self.running = n
        for inbox in self.inboxes[:n]:
            inbox.put(batch_size)
        for _ in range(n):
            kind, _index = self._get()
            assert kind == "ready"

    def end(self) -> list[float]:
        self.stop.set()
        lags: list[float] = []
        for _ in range(self.running):
            kind, part = self._get()
            assert kind == "lags"
            lags += part
        return lags

    def _get(self) -> tuple[str, Any]:
        try:
            return self.outbox.get(timeout=300)  # type: ignore[no-any-return]
        except queue.Empty as error:
            dead = [p.name for p in self.processes if not p.is_alive()]
            raise RuntimeError(f"the consumer processes did not answer within 300 s (exited: {dead})") from error

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=30)


def departures() -> list[dict[str, Any]]:
    """The year's departures with a tail number, in known-at order, encoded as the stream carries them."""
    frame = nycflights.flights().filter(pl.col("tailnum").is_not_null()).sort("dep_known_at", maintain_order=True)
    return encode_rows(stream_table(TABLE), frame)


def retimed(rows: list[dict[str, Any]], start: int, count: int, first_us: int, rate: float) -> list[dict[str, Any]]:
    """`count` events from `rows` (cycling from `start`), event i known at first_us + i / rate: every
    datetime of an event moves by the same amount."""
    table = stream_table(TABLE)
    times = [c for c, t in table.schema.items() if isinstance(t, pl.Datetime)]
    out = []
    for i in range(count):
        row = rows[(start + i) % len(rows)]
        shift = first_us + int(i * 1_000_000 / rate) - row[table.time_column]
        out.append({**row, **{c: row[c] + shift for c in times if row[c] is not None}})
    return out


def _stats(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(KEYS.stats(TABLE)).items()}


def _settled(client: redis.Redis, pushed: int, timeout_s: float = 600.0) -> dict[str, int]:
    """Wait until every pushed event is applied or dead-lettered; its stats."""
    deadline = time.monotonic() + timeout_s
    while sum((stats := _stats(client)).values()) < pushed:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pushed} pushed, only {sum(stats.values())} settled after {timeout_s:.0f} s: {stats}")
        time.sleep(0.01)
    return stats


def _now_us() -> int:
    return time.time_ns() // 1000


def paced(client: redis.Redis, rows: list[dict[str, Any]], offset: int, rate: float, seconds: float,
          on_tick: Any = None) -> tuple[int, float]:
    """Push `rate` events/s for `seconds`, each known at its planned push instant; (pushed, seconds taken)."""
    total = int(rate * seconds)
    events = retimed(rows, offset, total, _now_us(), rate)
    began, pushed = time.perf_counter(), 0
    while pushed < total:
        due = min(total, int((time.perf_counter() - began) * rate) + 1)
        if due > pushed:
            push_events(client, TABLE, events[pushed:due], keys=KEYS)
            pushed = due
        if on_tick:
            on_tick()
        time.sleep(TICK_S)
    return pushed, time.perf_counter() - began


def _percentiles(lags: list[float]) -> dict[str, float]:
    values = np.asarray(lags) * 1000
    return {"events": len(lags), "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "max_ms": float(values.max())}


def bench_lag(client: redis.Redis, consumers: Consumers, rows: list[dict[str, Any]], rate: float, seconds: float, n: int) -> dict[str, Any]:
    client.flushall()
    consumers.phase(n)
    pushed, took = paced(client, rows, 0, rate, seconds)
    stats = _settled(client, pushed)
    lags = consumers.end()
    return {"rate_target": rate, "rate_achieved": pushed / took, "seconds": took, "consumers": n, "pushed": pushed,
            "applied": stats.get("applied", 0), **_percentiles(lags)}


def bench_throughput(client: redis.Redis, consumers: Consumers, rows: list[dict[str, Any]], count: int, n: int) -> dict[str, Any]:
    """`count` events on the stream (known 10k/s apart, as a live 10k/s feed), consumed as fast as it goes."""
    client.flushall()
    events = retimed(rows, 0, count, _now_us(), 10_000)
    push_began = time.perf_counter()
    push_events(client, TABLE, events, keys=KEYS)
    push_seconds = time.perf_counter() - push_began
    consumers.phase(n)
    began = time.perf_counter()
    stats = _settled(client, count)
    seconds = time.perf_counter() - began
    consumers.end()
    return {"consumers": n, "events": count, "seconds": seconds, "events_per_s": count / seconds,
            "push_events_per_s": count / push_seconds, "applied": stats.get("applied", 0)}


def bench_raw(client: redis.Redis, rows: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """The floor: XADD of the same fields (pipelined), then XREADGROUP + XACK of every entry, nothing else."""
    import json

    client.flushall()
    stream, table = KEYS.events(TABLE), stream_table(TABLE)
    fields = [{"event_id": table.event_id(r), "payload": json.dumps(r, separators=(",", ":"))}
              for r in retimed(rows, 0, count, _now_us(), 10_000)]
    began = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for f in fields:
        pipe.xadd(stream, f)  # type: ignore[arg-type]
    pipe.execute()
    xadd_seconds = time.perf_counter() - began
    client.xgroup_create(stream, DEFAULT_GROUP, id="0")
    began, read = time.perf_counter(), 0
    while read < count:
        got = client.xreadgroup(DEFAULT_GROUP, "raw", {stream: ">"}, count=BATCH_SIZE)
        ids = [entry_id for entry_id, _ in got[0][1]]
        client.xack(stream, DEFAULT_GROUP, *ids)
        read += len(ids)
    seconds = time.perf_counter() - began
    return {"events": count, "xadd_per_s": count / xadd_seconds, "read_ack_per_s": count / seconds}


def bench_memory(client: redis.Redis, consumers: Consumers, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A real day replayed with its own 2013 instants, then what its keys hold."""
    client.flushall()
    start = datetime(2013, 6, 5, tzinfo=UTC)
    lo, hi = (int((d - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) for d in (start, start + timedelta(days=1)))
    day = [r for r in rows if lo <= r["dep_known_at"] < hi]
    consumers.phase(1)
    push_events(client, TABLE, day, keys=KEYS)
    _settled(client, len(day))
    consumers.end()
    sizes: dict[str, int] = {}
    entities: set[str] = set()
    for kind in ("tile", "tev", "entry", "seen"):
        keys = list(client.scan_iter(match=f"{KEYS.prefix}:{kind}:*", count=5000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes[kind] = sum(pipe.execute())
        if kind == "tile":
            entities = {key.decode().split(":")[-2] for key in keys}
    tiles = sizes["tile"] + sizes["tev"]
    return {"day": start.date().isoformat(), "events": len(day), "entities": len(entities), "view": VIEW.name,
            "tile_bytes": sizes["tile"], "tile_event_bytes": sizes["tev"], "bytes_per_entity": tiles / len(entities),
            "marker_bytes": sizes["entry"] + sizes["seen"], "marker_bytes_per_event": (sizes["entry"] + sizes["seen"]) / len(day),
            "used_memory_bytes": int(client.info("memory")["used_memory"])}


def bench_burst(client: redis.Redis, consumers: Consumers, rows: list[dict[str, Any]], base: float, seconds: float,
                burst_seconds: float, n: int) -> dict[str, Any]:
    client.flushall()
    consumers.phase(n)
    samples: list[tuple[float, int, int]] = []
    stream = KEYS.events(TABLE)
    last = [0.0]

    def sample() -> None:
        if time.perf_counter() - last[0] >= 0.05:
            last[0] = time.perf_counter()
            lag = stream_lag(client, KEYS, TABLE)
            samples.append((last[0], lag.undelivered + lag.pending, int(client.memory_usage(stream, samples=0) or 0)))

    pushed, _ = paced(client, rows, 0, base, seconds, sample)
    burst_began = time.perf_counter()
    more, _ = paced(client, rows, pushed, 10 * base, burst_seconds, sample)
    burst_ended = time.perf_counter()
    pushed += more
    after, _ = paced(client, rows, pushed, base, seconds, sample)
    pushed += after
    deadline = time.monotonic() + 600
    while sum(_stats(client).values()) < pushed and time.monotonic() < deadline:  # still draining: keep sampling
        sample()
        time.sleep(TICK_S)
    last[0] = 0.0
    sample()
    stats = _settled(client, pushed)
    consumers.end()
    peak = max(samples, key=lambda s: s[1])
    # Drained: the backlog is back under 0.1 s of the base traffic.
    drained = next((t for t, backlog, _ in samples if t > burst_ended and backlog <= base * 0.1), None)
    return {"base_rate": base, "burst_rate": 10 * base, "burst_seconds": burst_seconds, "consumers": n,
            "pushed": pushed, "applied": stats.get("applied", 0),
            "dead_lettered": sum(v for k, v in stats.items() if k != "applied"),
            "no_loss": sum(stats.values()) == pushed,
            "peak_backlog": peak[1], "peak_stream_bytes": max(s[2] for s in samples),
            "peak_at_s_after_burst_start": peak[0] - burst_began,
            "drain_seconds_after_burst": None if drained is None else drained - burst_ended}


def run(out_path: Path, *, quick: bool, processes: int) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    rows = departures()
    with LocalRedisServer() as server:
        client = server.client(socket_timeout=60)
        consumers = Consumers(server.url, processes)
        try:
            lag = [bench_lag(client, consumers, rows, rate, seconds, processes) for rate, seconds in sizes["lag"]]
            raw = bench_raw(client, rows, sizes["saturated"])
            throughput = [bench_throughput(client, consumers, rows, sizes["saturated"], n) for n in sorted({1, processes})]
            memory = bench_memory(client, consumers, rows)
            base, seconds, burst_seconds = sizes["burst"]
            burst = bench_burst(client, consumers, rows, base, seconds, burst_seconds, processes)
        finally:
            consumers.close()
            client.close()
    for t in throughput:
        t["ratio_to_raw_read_ack"] = t["events_per_s"] / raw["read_ack_per_s"]
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    report = {
        "benchmark": "stream", "quick": quick,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": machine({"redis_py": redis.__version__, "redis_server": version}, consumer_processes=processes),
        "lag": lag, "throughput": throughput, "raw": raw, "memory": memory, "burst": burst,
    }
    write_report(out_path, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = report_parser(__doc__.splitlines()[0], DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="a few seconds a phase: the smoke test's size")
    parser.add_argument("--consumers", type=int, default=2, help="consumer processes for the lag and burst phases (default 2)")
    args = parser.parse_args(argv)
    report = run(args.out, quick=args.quick, processes=args.consumers)
    env = report["environment"]
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in env['load_average_at_end'])} on {env['cpus']} cpus")
    print(f"{'lag at':>14} {'achieved':>9} {'consumers':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for lag in report["lag"]:
        print(f"{lag['rate_target']:>10,.0f} ev/s {lag['rate_achieved']:>9,.0f} {lag['consumers']:>9} "
              f"{lag['p50_ms']:>8.1f} {lag['p99_ms']:>8.1f} {lag['max_ms']:>8.1f}")
    raw = report["raw"]
    for t in report["throughput"]:
        print(f"throughput, {t['consumers']} consumer(s): {t['events_per_s']:,.0f} events/s; raw XREADGROUP+XACK "
              f"{raw['read_ack_per_s']:,.0f}/s; ratio {t['ratio_to_raw_read_ack']:.3f}; push_events {t['push_events_per_s']:,.0f}/s "
              f"vs raw XADD {raw['xadd_per_s']:,.0f}/s")
    m = report["memory"]
    print(f"memory, {m['view']} after {m['day']} ({m['events']} events, {m['entities']} entities): "
          f"{m['bytes_per_entity']:,.0f} B per entity (tiles {m['tile_bytes']:,} B + kept events {m['tile_event_bytes']:,} B); "
          f"markers {m['marker_bytes_per_event']:,.0f} B per event; used_memory {m['used_memory_bytes']:,} B")
    b = report["burst"]
    drain = "not drained" if b["drain_seconds_after_burst"] is None else f"{b['drain_seconds_after_burst']:.2f} s"
    print(f"burst {b['base_rate']:,.0f} -> {b['burst_rate']:,.0f} ev/s for {b['burst_seconds']} s: peak backlog "
          f"{b['peak_backlog']:,} entries ({b['peak_stream_bytes']:,} B of stream), drained {drain} after it; "
          f"pushed {b['pushed']:,}, applied {b['applied']:,}, dead-lettered {b['dead_lettered']:,}, no loss: {b['no_loss']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
