"""A real redis-server for the online store tests, on a free loopback port, never fakeredis,
the frames and comparisons the tests share (imported from here by the test modules), and a
replayed lake for the tests that publish through real Dagster runs."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from dagster import DagsterInstance, Definitions

from feature_pipelines.definitions import build_definitions
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.runs import materialize_range, partition_keys_between
from feature_pipelines.orchestration.schedules import RAW_HOURLY_JOB
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.sources.nycflights import DATA_START
from feature_pipelines.timeutil import floor_to, utc_now


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
TABLE = OnlineTable(name=VIEW, entity_keys=tuple(ENTITY_KEYS), schema=SCHEMA, ttl=TTL, prefix=PREFIX)


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


@dataclass(frozen=True)
class ReplayLake:
    """A real Definitions over a lake holding raw flights for the last closed days mapped onto
    the present (replay mode), so that publishes write values that are still within their TTL.

    `days` are the two last closed daily partitions (older first): a test publishes the first
    normally and then the second under a fault, as the daily schedule would.
    """

    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    days: tuple[str, str]

    def view_frame(self, view: str) -> pl.DataFrame:
        return DeltaStore(root=self.settings.lake_root).read(view)


@dataclass(frozen=True)
class _ReplaySeed:
    settings: Settings
    instance: DagsterInstance
    days: tuple[str, str]


@pytest.fixture(scope="session")
def _replay_seed(tmp_path_factory: pytest.TempPathFactory, small_landing_root: Path) -> _ReplaySeed:
    """Raw flights of the days the views read, landed once per session (~5 s with definitions)."""
    today = floor_to(utc_now(), timedelta(days=1))
    # Whole weeks (weekdays line up), chosen so the 11 replayed days cover the two days before today.
    offset = timedelta(weeks=(today - timedelta(days=3) - DATA_START) // timedelta(weeks=1))
    tmp = tmp_path_factory.mktemp("replay-online")
    settings = Settings("local", str(tmp / "lake"), str(small_landing_root), ReplayClock(offset))
    defs = build_definitions(settings)
    first_day = today - timedelta(days=2)
    hours = partition_keys_between(partitions_for(Partitioning.HOURLY, settings), first_day - timedelta(days=1), today)
    days = partition_keys_between(partitions_for(Partitioning.DAILY, settings), first_day, today)
    assert hours is not None and days is not None
    instance = DagsterInstance.ephemeral()
    raw = materialize_range(defs, RAW_HOURLY_JOB, *hours, instance=instance, assets=["raw_flights"])
    assert raw.result.success
    return _ReplaySeed(settings=settings, instance=instance, days=days)


@pytest.fixture
def replay_lake(_replay_seed: _ReplaySeed, tmp_path: Path) -> ReplayLake:
    """A copy of the seeded lake per test, so no test sees feature partitions another wrote (a
    publish of an older day after a newer one exists offline rightly fails the parity check).
    The instance is shared: it records that the raw partitions were materialised."""
    lake_root = tmp_path / "lake"
    shutil.copytree(_replay_seed.settings.lake_root, lake_root)
    settings = replace(_replay_seed.settings, lake_root=str(lake_root))
    return ReplayLake(
        settings=settings, defs=build_definitions(settings), instance=_replay_seed.instance,
        days=_replay_seed.days,
    )
