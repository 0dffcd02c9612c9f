"""A replayed day of real 2013 events through the stream reads online exactly what the offline
at-instant path computes from the same events, at thousands of random instants and at every hour."""

from __future__ import annotations

import polars as pl
import pytest
import redis

from feature_pipelines.compute.snapshots import features_at, snapshot_features
from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.online import read_streaming_features
from feature_pipelines.streaming.producer import push_events
from feature_pipelines_tests.streaming.conftest import (
    CARRIER_STREAM,
    DAY,
    KEYS,
    REPLAY_DAY,
    WEATHER_STREAM,
    assert_identical,
    drain,
    random_rows,
    replay_events,
)

CASES = {
    "raw_flights": (aircraft_utilisation, CARRIER_STREAM),
    "raw_weather": (WEATHER_STREAM,),
}


@pytest.fixture(params=sorted(CASES))
def replayed(request: pytest.FixtureRequest, stream_client: redis.Redis) -> tuple[pl.DataFrame, tuple[FeatureView, ...]]:
    """Two days of a table's real events pushed and consumed; every one accepted."""
    table = request.param
    events = replay_events(table)
    views = CASES[table]
    push_events(stream_client, table, events, keys=KEYS)
    consumer = StreamConsumer(stream_client, views, table=table, keys=KEYS, block_ms=1)
    assert drain(consumer) == events.height
    assert stream_client.xlen(KEYS.dead_letters(table)) == 0
    assert int(stream_client.hget(KEYS.stats(table), "applied") or 0) > 0.9 * events.height
    return events, views


def test_online_equals_offline_at_random_instants(
    replayed: tuple[pl.DataFrame, tuple[FeatureView, ...]], stream_client: redis.Redis
) -> None:
    events, views = replayed
    for view in views:
        rows = random_rows(view, events, 1500, seed=len(view.name))
        offline = features_at(events, view, rows)
        online = read_streaming_features(stream_client, view, rows, keys=KEYS)
        assert_identical(online, offline)
        assert offline[view.features[0].name].null_count() == 0  # a COUNT is always a value
        assert (offline[view.features[0].name] > 0).sum() > 100  # most instants see events


def test_every_hour_boundary_equals_the_batch_snapshot(
    replayed: tuple[pl.DataFrame, tuple[FeatureView, ...]], stream_client: redis.Redis
) -> None:
    events, views = replayed
    for view in views:
        batch = snapshot_features(events, view, start=REPLAY_DAY, end=REPLAY_DAY + DAY)
        assert batch.height > 20
        rows = batch.select(*view.entity_keys, "event_timestamp")
        assert_identical(features_at(events, view, rows), batch)
        assert_identical(read_streaming_features(stream_client, view, rows, keys=KEYS), batch)
