"""The feature server under bounded load on loopback while a view is published again and again.

A real `serve` process (uvicorn, default bind, request log on) reads from the session's real
redis-server while a publisher thread rewrites `route_delay_stats` generation after generation.
Generation g sets every feature of entity i to g * 1,000,000 + i (floats: + 0.25) and its event
time to BASE + g seconds, so each served value says which publish and which entity it came from.

What is guaranteed, and checked: every request succeeds, and within one response each entity's
features and event time all come from one generation (the publish script writes an entity's
whole hash in one HSET; the read is one HMGET per entity). Not guaranteed, and not checked:
that the entities of one response share a generation -- a publish is many batches, and a read
may fall between two of them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable
from feature_pipelines_tests.serving.serve_process import serve_process

REPO = Path(__file__).resolve().parents[2]
PREFIX = "fp:load"
VIEW = FEATURE_VIEWS["route_delay_stats"]
N_ENTITIES = 600
FEATURES = ["route_flights_count_24h", "route_dep_delay_mean_24h", "route_dep_delay_p90_24h",
            "route_cancel_rate_24h", "route_flights_count_7d"]
CLIENTS = 8
LOAD_SECONDS = 4.0
MAX_REQUESTS_PER_CLIENT = 3_000  # a hard bound, whatever the speed
MAX_GENERATIONS = 3_000
MULTI_ENTITY_ROWS = 25
GENERATION_STRIDE = 1_000_000
class TornEntityError(AssertionError):
    """One entity of one response holds values of two publishes (or of another entity)."""


def entity_keys(index: int) -> tuple[str, str]:
    return f"O{index % 3}", f"D{index}"


def generation_frame(generation: int, base: datetime) -> pl.DataFrame:
    """Every entity's snapshot of generation g: each value encodes (g, entity index)."""
    index = np.arange(N_ENTITIES, dtype=np.int64)
    encoded = index + generation * GENERATION_STRIDE
    columns: dict[str, Any] = {
        "origin": [entity_keys(i)[0] for i in range(N_ENTITIES)],
        "dest": [entity_keys(i)[1] for i in range(N_ENTITIES)],
        "event_timestamp": pl.Series([base + timedelta(seconds=generation)] * N_ENTITIES,
                                     dtype=pl.Datetime("us", "UTC")),
    }
    for name, dtype in VIEW.schema().items():
        columns[name] = encoded if dtype == pl.Int64 else encoded + 0.25
    return pl.DataFrame(columns)


def generations_of(body: dict[str, Any], requested: Sequence[int], base: datetime) -> list[int]:
    """The generation each requested entity's values came from; raises TornEntityError when an
    entity's features (or its event time) disagree, or belong to another entity."""
    results = dict(zip(body["metadata"]["feature_names"], body["results"]))
    out = []
    for row, index in enumerate(requested):
        seen: dict[str, int] = {}
        for name in FEATURES:
            value = results[name]["values"][row]
            generation, entity = divmod(int(value), GENERATION_STRIDE)
            if entity != index:
                raise TornEntityError(f"row {row}: {name} = {value} belongs to entity {entity}, not {index}")
            seen[name] = generation
            status = results[name]["statuses"][row]
            if status != "PRESENT":
                raise TornEntityError(f"row {row}: {name} has status {status}")
        stamp = datetime.fromisoformat(results[FEATURES[0]]["event_timestamps"][row])
        seen["event_timestamp"] = int((stamp - base).total_seconds())
        if len(set(seen.values())) != 1:
            raise TornEntityError(f"row {row} (entity {index}) mixes generations: {seen}")
        out.append(seen["event_timestamp"])
    return out


@dataclass
class ClientTally:
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    generations: set[int] = field(default_factory=set)
    mixed_across_entities: int = 0


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port` (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture
def server(redis_server: LocalRedisServer, tmp_path: Path) -> Iterator[str]:
    """`feature-pipelines serve` with its defaults (loopback, one worker, request log on)."""
    env = {"FEATURE_PIPELINES_REDIS_URL": redis_server.url, "FEATURE_PIPELINES_REDIS_PREFIX": PREFIX,
           "FEATURE_PIPELINES_LAKE_ROOT": str(tmp_path / "lake")}
    with serve_process(env) as served:
        # Default bind: loopback only (127.0.0.1 is 0100007F in /proc's little-endian hex).
        assert listening_addresses(served.port) == {"0100007F"}
        yield served.base
    assert served.returncode == 0, served.output


def publish_until_terminated(redis_url: str, base_iso: str) -> None:
    """The publisher process: generation after generation, in small batches (more interleaving
    with reads), until SIGTERM; prints "<generation> <monotonic time>" as each one completes.

    A process of its own, so that its polars and encoding work does not hold the GIL of the
    load-generating threads (which would show up as client-side latency, not the server's).
    """
    import redis

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    base_time = datetime.fromisoformat(base_iso)
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        print("ready", flush=True)
        generation = 1
        while not stop.is_set() and generation <= MAX_GENERATIONS:
            publish(client, OnlineTable.for_view(VIEW, PREFIX), generation_frame(generation, base_time), batch_size=40,
                    batches_per_pipeline=2)
            print(generation, time.monotonic(), flush=True)
            generation += 1
    finally:
        client.close()


@contextmanager
def publisher_process(redis_url: str, base_time: datetime) -> Iterator[list[tuple[int, float]]]:
    """Run `publish_until_terminated` in a child process while the block runs; yields the list
    that receives (generation, completion time) once the process has stopped."""
    code = ("import sys\n"
            "from feature_pipelines_tests.serving.test_load_during_publish import publish_until_terminated\n"
            "publish_until_terminated(sys.argv[1], sys.argv[2])\n")
    process = subprocess.Popen([sys.executable, "-c", code, redis_url, base_time.isoformat()], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    completed: list[tuple[int, float]] = []
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield completed
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, f"the publisher failed (exit {process.returncode})"
    for line in output.splitlines():
        generation, at = line.split()
        completed.append((int(generation), float(at)))


def _client(base: str, seed: int, base_time: datetime, stop_at: float, tally: ClientTally) -> None:
    rng = random.Random(seed)
    references = [f"{VIEW.name}:{name}" for name in FEATURES]
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= stop_at:
                return
            rows = 1 if rng.random() < 0.5 else MULTI_ENTITY_ROWS
            requested = rng.sample(range(N_ENTITIES), rows)
            keys = [entity_keys(i) for i in requested]
            body = {"features": references, "entities": {"origin": [o for o, _ in keys], "dest": [d for _, d in keys]}}
            began = time.perf_counter()
            try:
                response = client.post("/get-online-features", json=body)
            except httpx.HTTPError as error:
                tally.failures.append(f"{type(error).__name__}: {error}")
                continue
            tally.latencies_s.append(time.perf_counter() - began)
            if response.status_code != 200:
                tally.failures.append(f"HTTP {response.status_code}: {response.text[:300]}")
                continue
            try:
                generations = generations_of(response.json(), requested, base_time)
            except TornEntityError as error:
                tally.torn.append(str(error))
                continue
            tally.generations.update(generations)
            tally.mixed_across_entities += len(set(generations)) > 1


def test_every_request_succeeds_and_no_entity_is_torn_during_publishes(
    server: str, redis_server: LocalRedisServer, record_property: Any
) -> None:
    base_time = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    first = redis_server.client()
    try:
        publish(first, OnlineTable.for_view(VIEW, PREFIX), generation_frame(0, base_time))
    finally:
        first.close()
    tallies = [ClientTally() for _ in range(CLIENTS)]
    with publisher_process(redis_server.url, base_time) as done:
        began = time.monotonic()
        clients = [threading.Thread(target=_client, args=(server, 1000 + i, base_time, began + LOAD_SECONDS, tallies[i]))
                   for i in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=LOAD_SECONDS + 60)
        ended = time.monotonic()
    latencies = [x for t in tallies for x in t.latencies_s]
    failures = [x for t in tallies for x in t.failures]
    torn = [x for t in tallies for x in t.torn]
    seen = set().union(*(t.generations for t in tallies))
    during = [g for g, at in done if began <= at <= ended]
    p50, p99 = (float(np.percentile(np.asarray(latencies) * 1000, q)) for q in (50, 99))
    summary = (f"{len(latencies)} requests from {CLIENTS} clients in {ended - began:.1f} s while {len(during)} "
               f"publishes of {N_ENTITIES} entities completed: p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
               f"{len(seen)} generations served; {sum(t.mixed_across_entities for t in tallies)} multi-entity "
               f"responses spanned two generations (allowed)")
    print(summary)
    record_property("load_during_publish", summary)
    assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}"
    assert not torn, f"{len(torn)} responses held a torn entity, e.g. {torn[:3]}"
    assert len(latencies) >= CLIENTS * 10, summary  # the load really ran
    # The publishes really overlapped the load: responses came from several generations.
    assert len(during) >= 3 and len(seen) >= 3, summary


def _response(values_by_feature: dict[str, list[int]], stamps: list[datetime]) -> dict[str, Any]:
    names = list(values_by_feature)
    return {"metadata": {"feature_names": names},
            "results": [{"values": values, "statuses": ["PRESENT"] * len(values),
                         "event_timestamps": [s.isoformat() for s in stamps]} for values in values_by_feature.values()]}


def test_the_torn_entity_check_catches_a_mixed_entity() -> None:
    """The load test's check is not vacuous: an entity whose features (or event time) come from
    two generations, or from another entity, is reported."""
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    at = [base + timedelta(seconds=7), base + timedelta(seconds=7)]
    consistent = {name: [7 * GENERATION_STRIDE + 5, 7 * GENERATION_STRIDE + 9] for name in FEATURES}
    assert generations_of(_response(consistent, at), [5, 9], base) == [7, 7]
    one_feature_behind = {**consistent, FEATURES[2]: [6 * GENERATION_STRIDE + 5, 7 * GENERATION_STRIDE + 9]}
    with pytest.raises(TornEntityError, match="row 0 \\(entity 5\\) mixes generations"):
        generations_of(_response(one_feature_behind, at), [5, 9], base)
    with pytest.raises(TornEntityError, match="mixes generations"):
        generations_of(_response(consistent, [at[0], base + timedelta(seconds=8)]), [5, 9], base)
    with pytest.raises(TornEntityError, match="belongs to entity 5, not 9"):
        generations_of(_response(consistent, at), [9, 9], base)
