"""Tiles and their kept events expire `StreamingSpec.retention` after their last write, and reads stay exact."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import redis

from feature_pipelines.compute.snapshots import features_at
from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.events import stream_table
from feature_pipelines.streaming.keys import entity_text
from feature_pipelines.streaming.online import read_streaming_features
from feature_pipelines.streaming.producer import push_events
from feature_pipelines.streaming.tiles import TilePlan
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


def test_retention_is_the_longest_window_plus_a_tile_the_lateness_and_the_margin() -> None:
    spec = aircraft_utilisation.streaming
    assert spec is not None
    expected = timedelta(hours=24) + timedelta(hours=1) + timedelta(minutes=15) + spec.retention_margin
    assert spec.retention(timedelta(hours=24)) == expected
    plan = TilePlan.of(aircraft_utilisation, stream_table(TABLE).schema)
    assert plan.retention_ms == expected // timedelta(milliseconds=1)


def _ttls(client: redis.Redis, pattern: str) -> list[int]:
    keys = list(client.scan_iter(match=pattern, count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    return pipe.execute()


def test_every_tile_and_its_events_carry_the_retention_renewed_on_each_write(stream_client: redis.Redis) -> None:
    events = replay_events(TABLE, days=1).head(600)
    first, second = events.head(300), events.tail(300)
    consumer = StreamConsumer(stream_client, VIEWS, table=TABLE, keys=KEYS, block_ms=1)
    push_events(stream_client, TABLE, first, keys=KEYS)
    drain(consumer)
    for view in VIEWS:
        retention = TilePlan.of(view, stream_table(TABLE).schema).retention_ms
        for kind in ("tile", "tev"):
            ttls = _ttls(stream_client, f"{KEYS.prefix}:{kind}:{view.name}:*")
            assert len(ttls) > 50, (view.name, kind)
            assert all(retention - 60_000 < ttl <= retention for ttl in ttls), (view.name, kind, min(ttls), max(ttls))
    short = 600_000
    for key in stream_client.scan_iter(match=f"{KEYS.prefix}:tile:*", count=1000):
        stream_client.pexpire(key, short)
    push_events(stream_client, TABLE, second, keys=KEYS)
    drain(consumer)
    plan = TilePlan.of(aircraft_utilisation, stream_table(TABLE).schema)
    rewritten = {KEYS.tile(aircraft_utilisation.name, entity_text([tail]), plan.tile_of(known))
                 for tail, known in second.select("tailnum", pl.col("dep_known_at").dt.epoch("us")).drop_nulls().iter_rows()}
    pipe = stream_client.pipeline(transaction=False)
    for key in rewritten:
        pipe.pttl(key)
    assert all(ttl > plan.retention_ms - 60_000 for ttl in pipe.execute())  # the second write renewed them
    untouched = [ttl for ttl in _ttls(stream_client, f"{KEYS.prefix}:tile:{aircraft_utilisation.name}:*") if ttl <= short]
    assert untouched  # tiles only the first push wrote kept the shortened TTL: the renewal is per write
    for view in VIEWS:
        rows = random_rows(view, events, 400, seed=11)
        assert_identical(read_streaming_features(stream_client, view, rows, keys=KEYS), features_at(events, view, rows))
