"""`traffic`'s stream: the replay catches the stream up once (a cursor, nothing pushed twice), and
live, a departure pushed as it happens changes the served value within the view's freshness SLA.

Real 2013 departures in a real landing zone, a real redis-server and a real consumer thread; the
replay clock is set so that a chosen departure becomes known two seconds into the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.online.retrieval import get_online_features
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.sources import nycflights
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.follow import FollowOptions, StreamNotConsumedError, follow_stream, wait_consumed
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.replay import push_replayed, stream_horizon
from feature_pipelines.streaming.traffic import StreamFeed, catch_up
from feature_pipelines.timeutil import utc_now
from feature_pipelines_tests.conftest import write_small_landing
from feature_pipelines_tests.streaming.conftest import REPLAY_DAY

pytestmark = pytest.mark.services

PREFIX = "fp:live-test"
VIEW = FEATURE_VIEWS["aircraft_utilisation"]
FEATURE = "aircraft_flights_count_24h"


@pytest.fixture
def landed(tmp_path: Path) -> pl.DataFrame:
    flights = nycflights.flights().filter(
        pl.col("dep_known_at").is_between(REPLAY_DAY - timedelta(days=1), REPLAY_DAY + timedelta(days=1), closed="left"))
    write_small_landing(tmp_path / "landing", flights=flights)
    return flights


def _settings(tmp_path: Path, clock: ReplayClock) -> Settings:
    return Settings("local", str(tmp_path / "lake"), str(tmp_path / "landing"), clock)


@pytest.fixture
def consumer_thread(stream_client: redis.Redis) -> Iterator[None]:
    consumer = StreamConsumer(stream_client, list(FEATURE_VIEWS.values()), table="raw_flights",
                              keys=stream_keys(PREFIX), block_ms=20)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


def test_a_departure_pushed_as_it_happens_is_served_within_a_second(
    tmp_path: Path, landed: pl.DataFrame, stream_client: redis.Redis, consumer_thread: None,
) -> None:
    # The 12:00 hour's first departure with an aircraft becomes known 2 s from now.
    noon = REPLAY_DAY + timedelta(hours=12)
    chosen = landed.filter(pl.col("dep_known_at") >= noon, pl.col("tailnum").is_not_null()).sort("dep_known_at").row(0, named=True)
    clock = ReplayClock(utc_now() + timedelta(seconds=2) - chosen["dep_known_at"])
    feed = StreamFeed(stream_client, stream_keys(PREFIX), _settings(tmp_path, clock), FEATURE_VIEWS)

    line = catch_up(feed, utc_now())  # the 25 hours before it
    known_before = landed.filter(pl.col("dep_known_at") < chosen["dep_known_at"],
                                 pl.col("dep_known_at") >= chosen["dep_known_at"] - stream_horizon(list(FEATURE_VIEWS.values())))
    assert f"{known_before.height} raw_flights events" in line
    again = push_replayed(stream_client, feed.keys, feed.zone, clock, "raw_flights", until=utc_now(),
                          horizon=stream_horizon(list(FEATURE_VIEWS.values())))
    assert again.events == 0  # the cursor: nothing pushed twice

    def served(rows: pl.DataFrame) -> list[Any]:
        return get_online_features(stream_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=rows,
                                   features=[f"{VIEW.name}:{FEATURE}"], now=utc_now())[FEATURE].to_list()

    changes = follow_stream(stream_client, feed.keys, feed.zone, clock, VIEW, FEATURE, served,
                            FollowOptions(seconds=10, max_events=1), horizon=stream_horizon(list(FEATURE_VIEWS.values())))
    change = next(c for c in changes if c.entity == (chosen["tailnum"],))
    same_instant = landed.filter(pl.col("dep_known_at") == chosen["dep_known_at"], pl.col("tailnum") == chosen["tailnum"]).height
    assert change.seconds is not None and change.seconds < VIEW.streaming.freshness_seconds, change  # type: ignore[union-attr]
    assert change.after == change.before + same_instant, change
    # Every event with an aircraft was applied (one without names no entity: read, acked, not counted).
    with_aircraft = known_before.filter(pl.col("tailnum").is_not_null()).height
    assert int(stream_client.hget(feed.keys.stats("raw_flights"), "applied") or 0) >= with_aircraft
    assert not stream_client.exists(feed.keys.dead_letters("raw_flights"))


def test_a_push_nobody_consumes_says_how_to_start_the_consumer(tmp_path: Path, landed: pl.DataFrame,
                                                                stream_client: redis.Redis) -> None:
    clock = ReplayClock(utc_now() - (REPLAY_DAY + timedelta(hours=12)))
    feed = StreamFeed(stream_client, stream_keys(PREFIX), _settings(tmp_path, clock), FEATURE_VIEWS)
    pushed = push_replayed(stream_client, feed.keys, feed.zone, clock, "raw_flights", until=utc_now(), horizon=timedelta(hours=2))
    assert pushed.events > 10
    with pytest.raises(StreamNotConsumedError, match="feature-pipelines stream --background"):
        wait_consumed(stream_client, feed.keys, "raw_flights", timeout=5, stall=0.3)
