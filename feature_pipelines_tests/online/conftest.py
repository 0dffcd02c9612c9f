"""A real redis-server for the online store tests, on a free loopback port, never fakeredis,
and the frames and comparisons the tests share (imported from here by the test modules)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
import redis

from feature_pipelines.online.local_server import LocalRedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedisServer]:
    """One server for the session: starting one costs ~50 ms, flushing between tests is enough."""
    with LocalRedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: LocalRedisServer) -> Iterator[redis.Redis]:
    """A bytes client on an empty database (the online store works on raw bytes)."""
    client = redis_server.client(socket_timeout=10)
    client.flushall()
    client.script_flush()
    yield client
    client.close()

PREFIX = "fp:test"
VIEW = "route_delay_stats"
ENTITY_KEYS = ["origin", "dest"]
SCHEMA: dict[str, pl.DataType] = {
    "route_flights_24h": pl.Int64(),
    "route_dep_delay_mean_24h": pl.Float64(),
    "route_top_carrier_24h": pl.String(),
    "route_any_cancelled_24h": pl.Boolean(),
}
FEATURES = list(SCHEMA)
TTL = timedelta(days=2)
VIEW_ARGS: dict[str, Any] = dict(
    prefix=PREFIX, view=VIEW, entity_keys=ENTITY_KEYS, schema=SCHEMA, ttl=TTL
)


def now_utc() -> datetime:
    """The current instant, truncated to microseconds as stored (Datetime us)."""
    return datetime.now(timezone.utc)


def snapshot(n: int, event_time: datetime, generation: int = 0, offset: int = 0) -> pl.DataFrame:
    """n entities whose every feature value depends on `generation`, so that two generations
    differ in every field (the torn-entity checks rely on that); some values are null."""
    rows = range(offset, offset + n)
    return pl.DataFrame(
        {
            "origin": [f"O{i % 97}" for i in rows],
            "dest": [f"D{i}" for i in rows],
            "event_timestamp": pl.Series([event_time] * n, dtype=pl.Datetime("us", "UTC")),
            "route_flights_24h": [None if i % 11 == 3 else i + 1_000_000 * generation for i in rows],
            "route_dep_delay_mean_24h": [
                None if i % 13 == 5 else i / 7 - generation * 1_000.5 for i in rows
            ],
            "route_top_carrier_24h": [
                None if i % 17 == 2 else ("" if i % 17 == 9 else f"g{generation}-c{i}") for i in rows
            ],
            "route_any_cancelled_24h": [None if i % 19 == 4 else (i + generation) % 2 == 0 for i in rows],
        }
    )


def float_bits(values: list[Any]) -> list[bytes | None]:
    """Floats as their IEEE bytes, so NaN, -0.0 and payloads compare exactly."""
    return [None if v is None else struct.pack("<d", v) for v in values]


def assert_frames_identical(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same columns, dtypes and values, floats compared bit for bit."""
    assert actual.columns == expected.columns
    assert actual.schema == expected.schema
    assert actual.height == expected.height
    for name in actual.columns:
        left, right = actual[name].to_list(), expected[name].to_list()
        if actual.schema[name] == pl.Float64:
            assert float_bits(left) == float_bits(right), name
        else:
            assert left == right, name
