"""A real redis-server per session on a free loopback port (never fakeredis, never 6379), the
streaming test views that exercise every streamable aggregation, and replay helpers."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis

from feature_pipelines.features.entities import carrier, origin
from feature_pipelines.features.flights import FLIGHTS_SOURCE
from feature_pipelines.features.service_levels import HOURLY_OPERATIONS
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy, SourceSpec, StreamingSpec
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.sources import nycflights
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.keys import StreamKeys

KEYS = StreamKeys("fp:test-stream")
DAY = timedelta(days=1)
REPLAY_DAY = datetime(2013, 1, 5, tzinfo=UTC)  # read instants fall in this day; the day before feeds its windows
STREAMING = StreamingSpec(freshness_seconds=1.0, max_lateness=timedelta(minutes=15))
_A, _M, _S = Aggregation, NullPolicy, HOURLY_OPERATIONS

# Every streamable aggregation and both null policies, on float (exact sums), integer and boolean columns.
CARRIER_STREAM = FeatureView(
    name="carrier_stream_test", entity=carrier, source=FLIGHTS_SOURCE, streaming=STREAMING,
    owner="test", description="streaming test view over flights",
    features=(
        Feature("carrier_flights_count_3h", "int64", _A.COUNT, "3h"),
        Feature("carrier_dep_delay_mean_3h", "float64", _A.MEAN, "3h", "dep_delay"),
        Feature("carrier_dep_delay_strict_mean_3h", "float64", _A.MEAN, "3h", "dep_delay", null_policy=_M.PROPAGATE),
        Feature("carrier_dep_delay_max_24h", "int64", _A.MAX, "24h", "dep_delay"),
        Feature("carrier_air_time_min_24h", "int64", _A.MIN, "24h", "air_time"),
        Feature("carrier_cancel_rate_24h", "float64", _A.RATE, "24h", "cancelled"),
        Feature("carrier_distance_sum_24h", "int64", _A.SUM, "24h", "distance"),
        Feature("carrier_dep_delay_latest", "int64", _A.LATEST, "3h", "dep_delay", null_policy=_M.KEEP),
    ),
    **{k: v for k, v in _S.items() if k != "owner"},
)  # fmt: skip
WEATHER_STREAM = FeatureView(
    name="origin_stream_test", entity=origin, source=SourceSpec("raw_weather", "observed_at"), streaming=STREAMING,
    owner="test", description="streaming test view over weather (float sums)",
    features=(
        Feature("origin_observations_count_6h", "int64", _A.COUNT, "6h"),
        Feature("origin_temp_mean_6h", "float64", _A.MEAN, "6h", "temp"),
        Feature("origin_temp_mean_24h", "float64", _A.MEAN, "24h", "temp"),
        Feature("origin_precip_sum_6h", "float64", _A.SUM, "6h", "precip"),
        Feature("origin_dewp_sum_24h", "float64", _A.SUM, "24h", "dewp"),
        Feature("origin_humid_strict_mean_6h", "float64", _A.MEAN, "6h", "humid", null_policy=_M.PROPAGATE),
        Feature("origin_wind_gust_mean_24h", "float64", _A.MEAN, "24h", "wind_gust"),
        Feature("origin_wind_speed_max_6h", "float64", _A.MAX, "6h", "wind_speed"),
        Feature("origin_temp_min_24h", "float64", _A.MIN, "24h", "temp"),
        Feature("origin_visib_latest", "float64", _A.LATEST, "6h", "visib", null_policy=_M.KEEP),
    ),
    **{k: v for k, v in _S.items() if k != "owner"},
)  # fmt: skip


@pytest.fixture(scope="session")
def stream_server() -> Iterator[LocalRedisServer]:
    with LocalRedisServer() as server:
        yield server


@pytest.fixture
def stream_client(stream_server: LocalRedisServer) -> Iterator[redis.Redis]:
    client = stream_server.client(socket_timeout=30)
    client.flushall()
    yield client
    client.close()


def replay_events(table: str, days: int = 2) -> pl.DataFrame:
    """The real 2013 events of a table known in [REPLAY_DAY - (days - 1) days, REPLAY_DAY + 1 day), in
    known-at order (the order a feed delivers them; ties keep the source's order)."""
    frame, column = (nycflights.flights(), "dep_known_at") if table == "raw_flights" else (nycflights.weather(), "observed_at")
    start = REPLAY_DAY - (days - 1) * DAY
    return frame.filter(pl.col(column).is_between(start, REPLAY_DAY + DAY, closed="left")).sort(column, maintain_order=True)


def drain(consumer: StreamConsumer, *, limit: int = 1000) -> int:
    """Run batches until one reads nothing; returns the entries processed."""
    total = 0
    for _ in range(limit):
        report = consumer.run_once()
        if report.entries == 0:
            return total
        total += report.entries
    raise AssertionError("the consumer did not drain the stream")


def random_rows(view: FeatureView, events: pl.DataFrame, n: int, *, seed: int) -> pl.DataFrame:
    """n (entity, instant) rows: entities drawn from the events (and one nobody has), instants
    uniform to the microsecond over the replay day, a share exactly on hour boundaries."""
    rng = np.random.default_rng(seed)
    keys = list(view.entity_keys)
    entities = events.select(keys).drop_nulls().unique(maintain_order=True)
    pick = entities[rng.integers(0, entities.height, n).tolist()]
    pick[0, keys[0]] = "ZZ-nobody"
    base = (REPLAY_DAY - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    offsets = rng.integers(0, 86_400_000_000, n)
    on_hour = rng.random(n) < 0.1
    offsets = np.where(on_hour, offsets // 3_600_000_000 * 3_600_000_000, offsets)
    return pick.with_columns(pl.Series("event_timestamp", base + offsets).cast(pl.Datetime("us", "UTC")))


def float_bits(values: list[Any]) -> list[Any]:
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


def assert_identical(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same schema and values; floats equal to the bit; the first differing row named."""
    assert actual.schema == expected.schema
    assert actual.height == expected.height
    for name in expected.columns:
        left, right = float_bits(actual[name].to_list()), float_bits(expected[name].to_list())
        if left != right:
            row = next(i for i, (a, b) in enumerate(zip(left, right)) if a != b)
            raise AssertionError(f"column {name!r} differs at row {row}: {actual.row(row, named=True)} vs {expected.row(row, named=True)}")
