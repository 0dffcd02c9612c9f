"""`feature-pipelines stream --consumers N`: N consumer processes of one group share a stream's
entries, and the result is the same exact tiles as one consumer's (real processes, real redis-server)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from functools import partial

import polars as pl
import pytest
import redis

from feature_pipelines.compute.snapshots import features_at
from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.streaming.consumer import DEFAULT_GROUP
from feature_pipelines.streaming.online import read_streaming_features
from feature_pipelines.streaming.producer import push_events
from feature_pipelines.streaming.runner import StreamProgress, run_stream
from feature_pipelines_tests.streaming.conftest import KEYS, assert_identical, random_rows, replay_events

TABLE = "raw_flights"
# Two consumers apply their batches side by side, so the stream's order holds only up to the batches in
# flight: a day pushed at once spans hours per batch, more than the 15 minutes of lateness the view absorbs
# (a live stream's batches span seconds). A wide bound keeps every event, to compare values exactly.
VIEW = replace(aircraft_utilisation, streaming=replace(aircraft_utilisation.streaming, max_lateness=timedelta(days=2)))  # type: ignore[type-var]
pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_two_consumer_processes_share_the_group_and_serve_exact_values(
    stream_server: LocalRedisServer, stream_client: redis.Redis
) -> None:
    events = replay_events(TABLE, days=1).filter(pl.col("tailnum").is_not_null())
    stop, result = threading.Event(), []
    ready = threading.Event()
    runner = threading.Thread(target=lambda: result.append(run_stream(
        partial(redis.Redis.from_url, stream_server.url), {VIEW.name: VIEW},
        keys=KEYS, stop=stop, name="scaled", processes=2, progress_every=0.2, batch_size=40, block_ms=50,
        on_ready=lambda _tables: ready.set())))
    runner.start()
    assert ready.wait(60)
    deadline = time.monotonic() + 120  # each process imports the consumer's stack (polars, GX) first
    while {c["name"] for c in _consumers(stream_client)} != {b"scaled-1", b"scaled-2"}:  # both processes joined
        assert time.monotonic() < deadline, _consumers(stream_client)
        time.sleep(0.1)
    for start in range(0, events.height, 100):
        push_events(stream_client, TABLE, events.slice(start, 100), keys=KEYS)
    deadline = time.monotonic() + 60
    while int(stream_client.hget(KEYS.stats(TABLE), "applied") or 0) < events.height:
        assert time.monotonic() < deadline, "the consumers did not apply every event"
        time.sleep(0.1)
    stop.set()
    runner.join(timeout=60)
    summary: StreamProgress = result[0]
    assert (summary.entries, summary.applied, summary.dead_lettered) == (events.height, events.height, 0)
    assert summary.lag[TABLE].pending == 0
    rows = random_rows(VIEW, events, 400, seed=3)
    assert_identical(read_streaming_features(stream_client, VIEW, rows, keys=KEYS), features_at(events, VIEW, rows))


def _consumers(client: redis.Redis) -> list[dict[str, object]]:
    return client.xinfo_consumers(KEYS.events(TABLE), DEFAULT_GROUP) if client.exists(KEYS.events(TABLE)) else []
