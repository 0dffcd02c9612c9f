"""POST /push against a real redis-server: raw events pushed over HTTP land on their table's
stream in order, a stream consumer judges them with the raw rules and aggregates them into the
streaming view's tiles, and an online streaming read then serves them; a bad event is
dead-lettered with its reason, never dropped; unknown tables, oversized pushes and a missing API
key are refused with the documented statuses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import polars as pl
import redis
from fastapi import FastAPI

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.sources import nycflights
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.events import STREAM_TABLES, encode_rows
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.online import read_streaming_features
from feature_pipelines_tests.serving.conftest import PREFIX, TestClient
from feature_pipelines_tests.streaming.conftest import REPLAY_DAY

VIEW = FEATURE_VIEWS["aircraft_utilisation"]
KEYS = stream_keys(PREFIX)


def _morning_flights() -> pl.DataFrame:
    """The real flights known in the first 12 hours of a 2013 day."""
    flights = nycflights.flights()
    return flights.filter(pl.col("dep_known_at").is_between(REPLAY_DAY, REPLAY_DAY + timedelta(hours=12), closed="left")).sort("dep_known_at", maintain_order=True)


def test_pushed_events_are_consumed_into_tiles_and_served(make_app: Callable[..., FastAPI], redis_client: redis.Redis) -> None:
    flights = _morning_flights()
    events = encode_rows(STREAM_TABLES["raw_flights"], flights)
    assert len(events) > 50
    bad = {**events[-1], "flight": 999_999, "distance": -5}  # an impossible distance: the raw rules drop it
    with TestClient(make_app()) as client:
        pushed = client.post("/push", json={"table": "raw_flights", "events": [*events, bad]})
    assert pushed.status_code == 202, pushed.text
    body = pushed.json()
    assert body["accepted"] == len(events) + 1 and len(set(body["entry_ids"])) == len(events) + 1
    assert redis_client.xlen(KEYS.events("raw_flights")) == len(events) + 1

    consumer = StreamConsumer(redis_client, [VIEW], table="raw_flights", keys=KEYS, block_ms=1)
    while consumer.run_once().entries:
        pass
    dead = redis_client.xrange(KEYS.dead_letters("raw_flights"))
    assert len(dead) == 1 and b"distance" in b"".join(v for _, fields in dead for v in fields.values())
    # Served from the tiles at the end of the pushed hours: each aircraft's flights of those hours.
    at = REPLAY_DAY + timedelta(hours=12)
    tails = flights.filter(pl.col("tailnum").is_not_null()).group_by("tailnum").len().sort("len", "tailnum", descending=True).head(50)
    rows = tails.select("tailnum").with_columns(pl.lit(at).dt.cast_time_unit("us").alias("event_timestamp"))
    served = read_streaming_features(redis_client, VIEW, rows, keys=KEYS)
    assert tails.height == 50 and tails["len"].max() > 1
    assert served["aircraft_flights_count_24h"].to_list() == tails["len"].to_list()


def test_push_refuses_what_it_cannot_take(make_app: Callable[..., FastAPI]) -> None:
    event = encode_rows(STREAM_TABLES["raw_flights"], _morning_flights().head(1))[0]
    with TestClient(make_app(max_push_events=2)) as client:
        unknown = client.post("/push", json={"table": "raw_planes", "events": [event]})
        too_many = client.post("/push", json={"table": "raw_flights", "events": [event] * 3})
        empty = client.post("/push", json={"table": "raw_flights", "events": []})
    assert unknown.status_code == 404 and "does not stream" in unknown.json()["detail"]
    assert too_many.status_code == 413 and "limit of 2" in too_many.json()["detail"]
    assert empty.status_code == 422
    with TestClient(make_app(api_key="s3cret")) as client:
        anonymous = client.post("/push", json={"table": "raw_flights", "events": [event]})
        keyed = client.post("/push", json={"table": "raw_flights", "events": [event]}, headers={"X-API-Key": "s3cret"})
    assert anonymous.status_code == 401 and keyed.status_code == 202
