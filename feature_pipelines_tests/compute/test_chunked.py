"""Bucketed per-partition snapshots equal snapshots.py exactly, read only their history, and split entities."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feature_pipelines.compute.chunked import (
    bucket_events,
    iter_bucket_snapshots,
    partition_bounds,
    plan_partition,
    snapshot_partition,
)
from feature_pipelines.compute.snapshots import SnapshotInputError, snapshot_features
from feature_pipelines.features.flights import aircraft_utilisation, carrier_delay_stats, route_delay_stats
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.sources import nycflights
from feature_pipelines.sources.synthetic import (
    ENTITY_KEY,
    FLAG,
    KNOWN_AT,
    SYNTHETIC_TABLE,
    VALUE,
    SyntheticEvents,
    iter_event_chunks,
    synthetic_view,
    write_events,
)

SPEC = SyntheticEvents(events=60_000, entities=3_000, days=12, seed=11, null_share=0.2, flag_rate=0.1)
DAILY = synthetic_view()
HOURLY = synthetic_view(snapshot_every=Partitioning.HOURLY)
DAY = timedelta(days=1)
# A partition deep enough that its 7-day history is all inside the data, with data after it too.
START = SPEC.start + 9 * DAY
END = START + DAY


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return pl.concat(iter_event_chunks(SPEC, chunk_rows=25_000))


@pytest.mark.parametrize("buckets", [1, 2, 3, 8])
def test_bucketed_equals_unchunked_exactly(events: pl.DataFrame, buckets: int) -> None:
    expected = snapshot_features(events, DAILY, start=START, end=END)
    assert expected.height > 1_000  # a real comparison, not two empty frames
    got = snapshot_partition(events, DAILY, start=START, end=END, buckets=buckets)
    assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize("buckets", [2, 5])
def test_bucketed_equals_unchunked_with_hourly_snapshots(buckets: int) -> None:
    # Fewer entities: 24 snapshots a day of 7-day windows are 24x the work of the daily view.
    events = pl.concat(iter_event_chunks(replace(SPEC, events=8_000, entities=200)))
    expected = snapshot_features(events, HOURLY, start=START, end=END)
    assert expected[EVENT_TIMESTAMP].n_unique() == 24 and expected.height > 2_000
    got = snapshot_partition(events, HOURLY, start=START, end=END, buckets=buckets)
    assert_frame_equal(got, expected, check_exact=True)


def test_bucket_count_follows_max_events_per_bucket(events: pl.DataFrame) -> None:
    plan = plan_partition(events.lazy(), DAILY, start=START, end=END, max_events_per_bucket=10_000)
    history = events.filter(pl.col(KNOWN_AT) >= END - 7 * DAY, pl.col(KNOWN_AT) < END)
    assert plan.events == history.height
    assert plan.buckets == -(-history.height // 10_000)
    got = snapshot_partition(events, DAILY, start=START, end=END, max_events_per_bucket=10_000)
    assert_frame_equal(got, snapshot_features(events, DAILY, start=START, end=END), check_exact=True)


def test_buckets_split_entities_and_hold_only_their_events(events: pl.DataFrame) -> None:
    plan = plan_partition(events.lazy(), DAILY, start=START, end=END, buckets=4)
    parts = [bucket_events(events.lazy(), DAILY, plan, b).collect() for b in range(plan.buckets)]
    assert sum(p.height for p in parts) == plan.events
    # Hashing spreads entities evenly enough that no bucket holds much more than its share.
    assert max(p.height for p in parts) < 0.5 * plan.events
    key_sets = [set(p[ENTITY_KEY]) for p in parts]
    assert sum(len(k) for k in key_sets) == len(set().union(*key_sets))  # each entity in one bucket
    # Only the columns the view reads, only the partition's history.
    assert set(parts[0].columns) == {ENTITY_KEY, KNOWN_AT, VALUE, FLAG}
    assert all(p[KNOWN_AT].min() >= END - 7 * DAY and p[KNOWN_AT].max() < END for p in parts if p.height)
    rows = list(iter_bucket_snapshots(events.lazy(), DAILY, plan))
    assert [set(r[ENTITY_KEY]) <= k for r, k in zip(rows, key_sets)] == [True] * 4


def test_reading_from_a_delta_table_gives_the_same_rows(tmp_path: Path, events: pl.DataFrame) -> None:
    store = DeltaStore(str(tmp_path / "lake"))
    write_events(store, SPEC, chunk_rows=20_000)
    got = snapshot_partition(store.scan(SYNTHETIC_TABLE), DAILY, start=START, end=END, buckets=3)
    assert_frame_equal(got, snapshot_features(events, DAILY, start=START, end=END), check_exact=True)


def test_half_open_windows_at_the_bucket_path() -> None:
    t = datetime(2013, 1, 10, tzinfo=timezone.utc)
    micro = timedelta(microseconds=1)
    rows = [
        ("A", t - 7 * DAY, 1.0),  # exactly t - 7d: inside [t - 7d, t)
        ("A", t - DAY, 2.0),  # exactly t - 24h: inside the 24h window too
        ("A", t - micro, 4.0),  # just before t
        ("A", t, 1000.0),  # exactly t: known at t, not before it; belongs to the next snapshot
        ("B", t - 7 * DAY - micro, 50.0),  # just outside the 7d window: B has no row at t
        ("C", t - DAY - micro, 8.0),  # outside 24h, inside 7d: a row with a 24h count of 0
    ]
    events = pl.DataFrame(
        {
            ENTITY_KEY: [r[0] for r in rows],
            KNOWN_AT: [r[1] for r in rows],
            VALUE: [r[2] for r in rows],
            FLAG: [False] * len(rows),
        },
        schema_overrides={KNOWN_AT: pl.Datetime("us", "UTC")},
    )
    for buckets in (1, 2, 5):
        got = snapshot_partition(events, DAILY, start=t - DAY, end=t, buckets=buckets)
        assert got[EVENT_TIMESTAMP].unique().to_list() == [t]
        assert got[ENTITY_KEY].to_list() == ["A", "C"]
        assert got["aircraft_flights_count_7d"].to_list() == [3, 1]
        assert got["aircraft_flights_count_24h"].to_list() == [2, 0]
        assert got["aircraft_dep_delay_mean_7d"].to_list() == [7.0 / 3, 8.0]
        assert got["aircraft_dep_delay_mean_24h"].to_list() == [3.0, None]


def test_partition_bounds_tile_the_range_and_refuse_misaligned_ends() -> None:
    bounds = list(partition_bounds(DAILY, SPEC.start, SPEC.start + 3 * DAY))
    assert bounds == [(SPEC.start + i * DAY, SPEC.start + (i + 1) * DAY) for i in range(3)]
    with pytest.raises(SnapshotInputError, match="not on a daily partition boundary"):
        list(partition_bounds(DAILY, SPEC.start + timedelta(hours=1), SPEC.start + DAY))


def test_bad_input_names_the_view_and_column(events: pl.DataFrame) -> None:
    with pytest.raises(SnapshotInputError, match=f"needs column '{VALUE}'"):
        snapshot_partition(events.drop(VALUE), DAILY, start=START, end=END)
    with pytest.raises(ValueError, match="buckets must be >= 1"):
        snapshot_partition(events, DAILY, start=START, end=END, buckets=0)
    with pytest.raises(ValueError, match="naive"):
        snapshot_partition(events, DAILY, start=datetime(2013, 1, 10), end=END)


@pytest.fixture(scope="module")
def flights() -> pl.DataFrame:
    return nycflights.flights().filter(pl.col("dep_known_at") < datetime(2013, 1, 12, tzinfo=timezone.utc))


@pytest.mark.parametrize("view", [route_delay_stats, carrier_delay_stats, aircraft_utilisation], ids=lambda v: v.name)
def test_real_flight_views_bucketed_equal_unchunked(flights: pl.DataFrame, view) -> None:  # type: ignore[no-untyped-def]
    # Real 2013 flights and the real catalog views: two-column keys (route) are hashed as one
    # entity, and hourly snapshots (carrier) are split the same way as daily ones.
    start = datetime(2013, 1, 10, tzinfo=timezone.utc)
    expected = snapshot_features(flights, view, start=start, end=start + DAY)
    assert expected.height > 10
    got = snapshot_partition(flights, view, start=start, end=start + DAY, buckets=3)
    assert_frame_equal(got, expected, check_exact=True)
