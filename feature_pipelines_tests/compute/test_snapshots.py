"""Windowed snapshot values against an independent brute-force computation on hand-built events."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from feature_pipelines.compute.snapshots import SnapshotInputError, snapshot_features
from feature_pipelines.features.spec import (
    Aggregation,
    Entity,
    Feature,
    FeatureView,
    FreshnessSLA,
    NullPolicy,
    Partitioning,
    SourceSpec,
)

T0 = datetime(2013, 1, 2, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)

route = Entity("route", ("origin", "dest"))
VIEW = FeatureView(
    name="route_test_stats",
    entity=route,
    source=SourceSpec(asset="raw_flights", known_at_column="known_at"),
    partitioning=Partitioning.HOURLY,
    features=(
        Feature("route_flights_count_3h", "int64", Aggregation.COUNT, "3h"),
        Feature("route_dep_delay_mean_3h", "float64", Aggregation.MEAN, "3h", "dep_delay"),
        Feature("route_dep_delay_sum_3h", "float64", Aggregation.SUM, "3h", "dep_delay", null_policy=NullPolicy.PROPAGATE),
        Feature("route_dep_delay_p90_24h", "float64", Aggregation.P90, "24h", "dep_delay"),
        Feature("route_cancel_rate_24h", "float64", Aggregation.RATE, "24h", "cancelled"),
        Feature("route_dep_delay_latest", "float64", Aggregation.LATEST, "3h", "dep_delay", null_policy=NullPolicy.KEEP),
    ),
    ttl=timedelta(hours=2),
    owner="tests@example.com",
    description="test view",
    freshness=FreshnessSLA(timedelta(hours=2), timedelta(hours=3)),
)

# Events chosen to sit on the boundaries: exactly at t - 3h (inside [t-3h, t)), exactly at t
# (outside: it belongs to the next snapshot), nulls, and a route that goes quiet.
EVENTS = pl.DataFrame(
    {
        "origin": ["EWR", "EWR", "EWR", "EWR", "EWR", "JFK", "JFK", None],
        "dest": ["ORD", "ORD", "ORD", "ORD", "ORD", "LAX", "LAX", "ORD"],
        "known_at": [
            T0 - 3 * HOUR,  # exactly at t - 3h for t = T0
            T0 - 2 * HOUR - timedelta(minutes=30),
            T0 - timedelta(microseconds=1),  # just before t
            T0,  # exactly at t: not known before t
            T0 + timedelta(minutes=10),
            T0 - 20 * HOUR,
            T0 - 5 * HOUR,
            T0 - HOUR,  # null entity key: belongs to no entity
        ],
        "dep_delay": [10.0, None, 30.0, 1000.0, 5.0, 7.0, -3.0, 99.0],
        "cancelled": [False, True, False, False, False, False, True, False],
    },
    schema_overrides={"known_at": pl.Datetime("us", "UTC")},
)


def brute_force(events: pl.DataFrame, view: FeatureView, t: datetime) -> dict[tuple[str, str], dict[str, object]]:
    """Row-by-row reference: for each entity with an event in [t - max_window, t), each feature."""
    rows = [r for r in events.iter_rows(named=True) if r["origin"] is not None and r["dest"] is not None]
    keys = {(r["origin"], r["dest"]) for r in rows if t - view.max_window <= r["known_at"] < t}
    out: dict[tuple[str, str], dict[str, object]] = {}
    for key in keys:
        values: dict[str, object] = {}
        for feature in view.features:
            window = [r for r in rows if (r["origin"], r["dest"]) == key and t - feature.window_timedelta <= r["known_at"] < t]
            window.sort(key=lambda r: r["known_at"])
            column = [r[feature.source_column] for r in window] if feature.source_column else []
            present = [v for v in column if v is not None]
            match feature.aggregation:
                case Aggregation.COUNT:
                    values[feature.name] = len(window)
                case Aggregation.MEAN:
                    values[feature.name] = statistics.fmean(present) if present else None
                case Aggregation.SUM:
                    values[feature.name] = None if (None in column or not present) else sum(present)
                case Aggregation.P90:
                    values[feature.name] = _quantile(sorted(present), 0.9) if present else None
                case Aggregation.RATE:
                    values[feature.name] = sum(present) / len(present) if present else None
                case Aggregation.LATEST:
                    values[feature.name] = column[-1] if column else None
        out[key] = values
    return out


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.mark.parametrize("snapshot", [T0 - HOUR, T0, T0 + HOUR])
def test_snapshot_equals_brute_force(snapshot: datetime) -> None:
    result = snapshot_features(EVENTS, VIEW, start=snapshot - HOUR, end=snapshot)
    assert result["event_timestamp"].unique().to_list() == [snapshot] or result.height == 0
    got = {(r["origin"], r["dest"]): {f: r[f] for f in VIEW.feature_names} for r in result.iter_rows(named=True)}
    expected = brute_force(EVENTS, VIEW, snapshot)
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        for name, value in values.items():
            assert got[key][name] == pytest.approx(value, nan_ok=False) if value is not None else got[key][name] is None, (key, name)


def test_boundaries_are_half_open_and_nulls_follow_policy() -> None:
    result = snapshot_features(EVENTS, VIEW, start=T0 - HOUR, end=T0)
    ewr = result.filter(pl.col("origin") == "EWR").row(0, named=True)
    # [T0-3h, T0): the event at exactly T0-3h counts, the one at exactly T0 does not.
    assert ewr["route_flights_count_3h"] == 3
    assert ewr["route_dep_delay_mean_3h"] == pytest.approx(20.0)  # SKIP: the null is left out
    assert ewr["route_dep_delay_sum_3h"] is None  # PROPAGATE: one null makes the sum null
    assert ewr["route_dep_delay_latest"] == 30.0
    # JFK's last event is 5h old: it is still in the 24h window, out of the 3h one.
    jfk = result.filter(pl.col("origin") == "JFK").row(0, named=True)
    assert jfk["route_flights_count_3h"] == 0
    assert jfk["route_dep_delay_mean_3h"] is None
    assert jfk["route_dep_delay_latest"] is None
    assert jfk["route_cancel_rate_24h"] == pytest.approx(0.5)
    # The null-key event belongs to no entity.
    assert result.filter(pl.col("origin").is_null()).height == 0


def test_several_snapshots_in_one_call_equal_one_call_each() -> None:
    together = snapshot_features(EVENTS, VIEW, start=T0 - 3 * HOUR, end=T0 + 2 * HOUR)
    alone = pl.concat(
        [snapshot_features(EVENTS, VIEW, start=T0 + k * HOUR, end=T0 + (k + 1) * HOUR) for k in range(-3, 2)]
    )
    assert together.equals(alone.sort("event_timestamp", "origin", "dest"))


def test_feature_dtypes_are_declared_ones() -> None:
    result = snapshot_features(EVENTS, VIEW, start=T0 - HOUR, end=T0)
    assert result.schema["route_flights_count_3h"] == pl.Int64
    assert result.schema["event_timestamp"] == pl.Datetime("us", "UTC")


def test_missing_column_names_view_and_column() -> None:
    with pytest.raises(SnapshotInputError, match=r"route_test_stats.*'dep_delay'.*missing"):
        snapshot_features(EVENTS.drop("dep_delay"), VIEW, start=T0 - HOUR, end=T0, context="table 'raw_flights'")


def test_wrong_dtype_names_column_and_dtype() -> None:
    bad = EVENTS.with_columns(pl.col("dep_delay").cast(pl.String))
    with pytest.raises(SnapshotInputError, match=r"'dep_delay'.*numeric.*String"):
        snapshot_features(bad, VIEW, start=T0 - HOUR, end=T0)


def test_naive_known_at_is_rejected() -> None:
    naive = EVENTS.with_columns(pl.col("known_at").dt.replace_time_zone(None))
    with pytest.raises(SnapshotInputError, match="must be a UTC Datetime"):
        snapshot_features(naive, VIEW, start=T0 - HOUR, end=T0)
