"""Failures: a consumer killed mid-batch, a Redis restart, late events, and events the raw rules reject."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import polars as pl
import pytest
import redis

from feature_pipelines.compute.snapshots import features_at
from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.streaming.consumer import DEFAULT_GROUP, StreamConsumer
from feature_pipelines.streaming.events import STREAM_TABLES, encode_rows
from feature_pipelines.streaming.online import read_streaming_features
from feature_pipelines.streaming.producer import push_events
from feature_pipelines_tests.streaming.conftest import (
    CARRIER_STREAM,
    KEYS,
    assert_identical,
    drain,
    random_rows,
    replay_events,
)

TABLE = "raw_flights"
VIEWS = (aircraft_utilisation, CARRIER_STREAM)


def _assert_served_as_offline(client: redis.Redis, accepted: pl.DataFrame) -> None:
    for view in VIEWS:
        rows = random_rows(view, accepted, 400, seed=7)
        assert_identical(read_streaming_features(client, view, rows, keys=KEYS), features_at(accepted, view, rows))


def _stat(client: redis.Redis, field: str) -> int:
    return int(client.hget(KEYS.stats(TABLE), field) or 0)


@pytest.mark.parametrize("moment", ["after_read", "after_chunk", "overlapped"])
def test_consumer_killed_mid_batch_loses_and_double_counts_nothing(
    stream_server: LocalRedisServer, stream_client: redis.Redis, moment: str
) -> None:
    events = replay_events(TABLE, days=1).head(400)
    push_events(stream_client, TABLE, events, keys=KEYS)
    StreamConsumer(stream_client, VIEWS, table=TABLE, keys=KEYS)  # the group exists before the child reads
    child = subprocess.run(
        [sys.executable, "-m", "feature_pipelines_tests.streaming.killed_consumer", stream_server.url, moment],
        check=False, timeout=120, capture_output=True, text=True,
    )
    assert child.returncode == -9, child.stderr
    pending = stream_client.xpending(KEYS.events(TABLE), DEFAULT_GROUP)["pending"]
    # Read, never acked: the whole batch; overlapped, the batch being applied and perhaps the next one read meanwhile.
    assert pending == events.height if moment != "overlapped" else pending in (200, 400)
    assert _stat(stream_client, "applied") == (0 if moment == "after_read" else 150)  # the first chunk was applied
    survivor = StreamConsumer(stream_client, VIEWS, table=TABLE, keys=KEYS, name="survivor", claim_idle_ms=0, block_ms=1)
    first = survivor.run_once()
    assert first.claimed == pending
    assert first.outcomes.get("retry", 0) == (0 if moment == "after_read" else 150)
    drain(survivor)
    assert stream_client.xpending(KEYS.events(TABLE), DEFAULT_GROUP)["pending"] == 0
    assert _stat(stream_client, "applied") == events.height
    assert stream_client.xlen(KEYS.dead_letters(TABLE)) == 0
    _assert_served_as_offline(stream_client, events)


def test_redis_restart_keeps_tiles_markers_and_pending_entries(tmp_path: Any) -> None:
    events = replay_events(TABLE, days=1).head(600)
    with LocalRedisServer(appendonly=True, directory=tmp_path) as server:
        client = server.client(socket_timeout=30)
        push_events(client, TABLE, events.head(300), keys=KEYS)
        consumer = StreamConsumer(client, VIEWS, table=TABLE, keys=KEYS, batch_size=200, block_ms=1)
        consumer.run_once()
        client.close()
        server.restart(crash=True)
        client = server.client(socket_timeout=30)
        push_events(client, TABLE, events.tail(300), keys=KEYS)
        consumer = StreamConsumer(client, VIEWS, table=TABLE, keys=KEYS, batch_size=200, block_ms=1)
        drain(consumer)
        assert int(client.hget(KEYS.stats(TABLE), "applied") or 0) == events.height
        _assert_served_as_offline(client, events)
        client.close()


def _departed(events: pl.DataFrame, moment: Any) -> pl.DataFrame:
    """A real departed flight moved to depart (and become known) at `moment`."""
    return events.filter(~pl.col("cancelled")).tail(1).with_columns(
        pl.lit(moment).cast(pl.Datetime("us", "UTC")).alias("departed_at"),
        pl.lit(moment).cast(pl.Datetime("us", "UTC")).alias("dep_known_at"),
    )


def test_late_events_within_the_bound_count_and_beyond_it_are_dead_lettered(stream_client: redis.Redis) -> None:
    day = replay_events(TABLE, days=1)
    on_time = day.head(300)
    watermark = on_time["dep_known_at"].max()
    within = _departed(day.slice(400, 50), watermark - timedelta(minutes=14))
    beyond = _departed(day.slice(500, 50), watermark - timedelta(minutes=16))
    consumer = StreamConsumer(stream_client, VIEWS, table=TABLE, keys=KEYS, block_ms=1)
    push_events(stream_client, TABLE, on_time, keys=KEYS)
    drain(consumer)
    push_events(stream_client, TABLE, pl.concat([within, beyond]), keys=KEYS)
    drain(consumer)
    dead = stream_client.xrange(KEYS.dead_letters(TABLE))
    rules = sorted(fields[b"rule"].decode() for _, fields in dead)
    assert rules == sorted(f"stream_max_lateness:{v.name}" for v in VIEWS)
    assert all(fields[b"event_id"].decode() == STREAM_TABLES[TABLE].event_id(encode_rows(STREAM_TABLES[TABLE], beyond)[0])
               for _, fields in dead)
    assert b"behind the watermark" in dead[0][1][b"reason"]
    assert _stat(stream_client, f"stream_max_lateness:{CARRIER_STREAM.name}") == 1
    _assert_served_as_offline(stream_client, pl.concat([on_time, within]))


def test_rejected_events_go_to_the_dead_letter_stream_with_their_rule(stream_client: redis.Redis) -> None:
    day = replay_events(TABLE, days=1).filter(~pl.col("cancelled"))
    good = day.head(100)
    rows = encode_rows(STREAM_TABLES[TABLE], day.slice(200, 6))
    negative = {**rows[0], "distance": -5}
    no_carrier = {**rows[1], "carrier": None}
    missing = {k: v for k, v in rows[2].items() if k != "tailnum"}
    wrong_type = {**rows[3], "distance": "far"}
    twice = rows[4]
    consumer = StreamConsumer(stream_client, VIEWS, table=TABLE, keys=KEYS, block_ms=1)
    push_events(stream_client, TABLE, [*encode_rows(STREAM_TABLES[TABLE], good), negative, no_carrier, missing,
                                        wrong_type, twice, twice, rows[5]], keys=KEYS)
    drain(consumer)
    push_events(stream_client, TABLE, [twice, {**rows[5], "distance": rows[5]["distance"] + 1}], keys=KEYS)
    drain(consumer)
    dead = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in stream_client.xrange(KEYS.dead_letters(TABLE))]
    table = STREAM_TABLES[TABLE]
    got = [(d["rule"], d["event_id"]) for d in dead]
    assert got == [
        ("flights_values_in_range", table.event_id(negative)),
        ("flights_required_columns_not_null", table.event_id(no_carrier)),
        ("flights_schema_matches", table.event_id(missing)),
        ("flights_schema_matches", table.event_id(wrong_type)),
        ("flights_redelivered", table.event_id(twice)),  # a copy in the same batch: the raw rule
        ("flights_redelivered", table.event_id(twice)),  # a copy in a later batch: the event-id marker
        ("flights_unique", table.event_id(rows[5])),  # other values later: the first delivery wins
    ]
    assert all(d["table"] == TABLE and d["reason"] and d["payload"] and d["entry_id"] for d in dead)
    assert "distance" in dead[0]["reason"] and "tailnum" in dead[2]["reason"] and "far" in dead[3]["reason"]
    assert _stat(stream_client, "flights_schema_matches") == 2 and _stat(stream_client, "flights_redelivered") == 2
    accepted = pl.concat([good, day.slice(204, 2)])
    assert _stat(stream_client, "applied") == accepted.height
    _assert_served_as_offline(stream_client, accepted)
