"""The compiled snapshot engine returns bit for bit what the group_by_dynamic reference engine returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_pipelines.compute import snapshots
from feature_pipelines.compute.chunked import snapshot_partition
from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.compute.snapshots_reference import snapshot_features_reference
from feature_pipelines.features.flights import aircraft_utilisation, carrier_delay_stats, route_delay_stats
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy, Partitioning
from feature_pipelines.features.weather import origin_weather
from feature_pipelines.sources import nycflights
from feature_pipelines.sources.synthetic import (
    ENTITY_KEY,
    FLAG,
    KNOWN_AT,
    VALUE,
    SyntheticEvents,
    iter_event_chunks,
    synthetic_view,
)

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
WHOLE = "dep_delay_int"  # an Int64 copy of the delay: integer sums and int-to-float quantiles
SPEC = SyntheticEvents(events=30_000, entities=400, days=12, seed=5, null_share=0.2, flag_rate=0.1)
START = SPEC.start + 9 * DAY


def _features(windows: tuple[str, ...]) -> tuple[Feature, ...]:
    """Every aggregation and null policy, over a window equal to the cadence and longer ones."""
    out: list[Feature] = []
    for w in windows:
        skip, propagate = NullPolicy.SKIP, NullPolicy.PROPAGATE
        out += [
            Feature(f"aircraft_flights_count_{w}", "int64", Aggregation.COUNT, w),
            Feature(f"aircraft_delay_mean_{w}", "float64", Aggregation.MEAN, w, VALUE),
            Feature(f"aircraft_delay_strict_mean_{w}", "float64", Aggregation.MEAN, w, VALUE, null_policy=propagate),
            Feature(f"aircraft_delay_sum_{w}", "float64", Aggregation.SUM, w, VALUE),
            Feature(f"aircraft_delay_strict_sum_{w}", "float64", Aggregation.SUM, w, VALUE, null_policy=propagate),
            Feature(f"aircraft_whole_sum_{w}", "int64", Aggregation.SUM, w, WHOLE, null_policy=skip),
            Feature(f"aircraft_whole_mean_{w}", "float64", Aggregation.MEAN, w, WHOLE),
            Feature(f"aircraft_whole_p90_{w}", "float64", Aggregation.P90, w, WHOLE),
            Feature(f"aircraft_delay_min_{w}", "float64", Aggregation.MIN, w, VALUE),
            Feature(f"aircraft_delay_max_{w}", "float64", Aggregation.MAX, w, VALUE, null_policy=propagate),
            Feature(f"aircraft_whole_max_{w}", "int64", Aggregation.MAX, w, WHOLE),
            Feature(f"aircraft_delay_p90_{w}", "float64", Aggregation.P90, w, VALUE),
            Feature(f"aircraft_delay_strict_p90_{w}", "float64", Aggregation.P90, w, VALUE, null_policy=propagate),
            Feature(f"aircraft_cancel_rate_{w}", "float64", Aggregation.RATE, w, FLAG),
            Feature(f"aircraft_cancel_strict_rate_{w}", "float64", Aggregation.RATE, w, FLAG, null_policy=propagate),
        ]
    out.append(
        Feature("aircraft_delay_latest", "float64", Aggregation.LATEST, windows[0], VALUE, null_policy=NullPolicy.KEEP)
    )
    out.append(
        Feature("aircraft_whole_latest", "int64", Aggregation.LATEST, windows[0], WHOLE, null_policy=NullPolicy.KEEP)
    )
    return tuple(out)


def _view(cadence: Partitioning, windows: tuple[str, ...]) -> FeatureView:
    """The synthetic view with every aggregation and null policy over `windows`."""
    return replace(synthetic_view(snapshot_every=cadence), name="synthetic_everything", features=_features(windows))


DAILY = _view(Partitioning.DAILY, ("24h", "3d", "7d"))
HOURLY = _view(Partitioning.HOURLY, ("1h", "6h", "24h"))


def _with_edges(events: pl.DataFrame, step: timedelta) -> pl.DataFrame:
    """The events, with a share of them moved exactly onto the snapshot grid (so each sits at some t
    and at some t - window), nullable flags and Int64 delays, and exact known-at ties with new values."""
    rng = np.random.default_rng(17)
    on_grid = pl.Series(rng.random(events.height) < 0.15)
    edged = events.with_columns(
        pl.when(on_grid)
        .then(pl.col(KNOWN_AT).dt.truncate(f"{int(step.total_seconds())}s"))
        .otherwise(pl.col(KNOWN_AT)),
        pl.when(pl.Series(rng.random(events.height) < 0.05)).then(None).otherwise(pl.col(FLAG)).alias(FLAG),
        pl.col(VALUE).round(0).cast(pl.Int64).alias(WHOLE),
    )
    ties = edged.sample(n=events.height // 20, seed=3).with_columns(pl.col(VALUE) * 2 + 1, pl.col(WHOLE) - 7)
    return pl.concat([edged, ties])


def assert_bit_identical(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same schema, rows and order; every float equal to the bit (the sign of zero too), nulls in the same places."""
    assert got.schema == expected.schema
    assert got.height == expected.height
    assert got.equals(expected)
    for name, dtype in expected.schema.items():
        if dtype == pl.Float64:
            assert got[name].is_null().equals(expected[name].is_null()), name
            bits = got[name].fill_null(0.0).to_numpy().view("int64")
            assert np.array_equal(bits, expected[name].fill_null(0.0).to_numpy().view("int64")), name


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail if the engine hands the events to the reference instead of computing them itself."""

    def refuse(*args: object, **kwargs: object) -> pl.DataFrame:
        raise AssertionError("the fast engine fell back to the reference on inputs it is meant to compute")

    monkeypatch.setattr(snapshots, "snapshot_features_reference", refuse)
    yield


@pytest.fixture(scope="module")
def synthetic() -> pl.DataFrame:
    return pl.concat(iter_event_chunks(SPEC))


@pytest.mark.parametrize("view", [DAILY, HOURLY], ids=["daily", "hourly"])
def test_synthetic_equals_reference(synthetic: pl.DataFrame, view: FeatureView, no_fallback: None) -> None:
    events = _with_edges(synthetic, view.cadence.interval)
    expected = snapshot_features_reference(events, view, start=START, end=START + 2 * DAY)
    assert expected.height > 500 and expected["aircraft_delay_latest"].null_count() > 0
    assert_bit_identical(snapshot_features(events, view, start=START, end=START + 2 * DAY), expected)


@pytest.mark.parametrize("buckets", [1, 3, 7])
@pytest.mark.parametrize("view", [DAILY, HOURLY], ids=["daily", "hourly"])
def test_bucketed_partitions_equal_reference(
    synthetic: pl.DataFrame, view: FeatureView, buckets: int, no_fallback: None
) -> None:
    events = _with_edges(synthetic, view.cadence.interval)
    expected = snapshot_features_reference(events, view, start=START, end=START + DAY)
    assert_bit_identical(snapshot_partition(events, view, start=START, end=START + DAY, buckets=buckets), expected)


def test_window_edges_exactly(no_fallback: None) -> None:
    """An event exactly at t - window is in the window, one exactly at t is not, on every window of each cadence."""
    t = datetime(2013, 1, 10, tzinfo=UTC)
    for view in (DAILY, HOURLY):
        windows = sorted({f.window_timedelta for f in view.features})
        moments = [t - w for w in windows] + [t - w - timedelta(microseconds=1) for w in windows] + [t, t - HOUR]
        events = pl.DataFrame(
            {
                ENTITY_KEY: ["A"] * len(moments) + ["B"] * len(moments),
                KNOWN_AT: moments * 2,
                VALUE: [float(i) + 0.1 for i in range(len(moments))] + [None, 2.5] * (len(moments) // 2),
                FLAG: [True, False] * len(moments),
                WHOLE: list(range(len(moments))) * 2,
            },
            schema_overrides={KNOWN_AT: pl.Datetime("us", "UTC"), WHOLE: pl.Int64, VALUE: pl.Float64},
        )
        start = t - 3 * view.cadence.interval
        got = snapshot_features(events, view, start=start, end=t + view.cadence.interval)
        assert_bit_identical(got, snapshot_features_reference(events, view, start=start, end=t + view.cadence.interval))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.0])
def test_values_outside_the_proven_domain_take_the_reference(synthetic: pl.DataFrame, bad: float) -> None:
    events = _with_edges(synthetic, DAY)
    events = events.with_columns(
        pl.when(pl.int_range(pl.len()) % 50 == 0).then(bad).otherwise(pl.col(VALUE)).alias(VALUE)
    )
    expected = snapshot_features_reference(events, DAILY, start=START, end=START + DAY)
    assert_bit_identical(snapshot_features(events, DAILY, start=START, end=START + DAY), expected)


# Small integers and halves: many equal values and exact ties, where a formula's shortcut or the
# order of a sum would show.
_values = st.one_of(st.none(), st.integers(-5, 40).map(float), st.sampled_from([0.1, 0.2, 0.3, 1e15, 2.5, -7.25]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("ABC"), st.integers(0, 4 * 24 * 4), _values, st.one_of(st.none(), st.booleans())),
        min_size=1,
        max_size=60,
    ),
    hourly=st.booleans(),
)
def test_random_small_histories_equal_reference(no_fallback: None, rows: list, hourly: bool) -> None:  # type: ignore[type-arg]
    view = HOURLY if hourly else DAILY
    t0 = datetime(2013, 1, 1, tzinfo=UTC)
    events = pl.DataFrame(
        {
            ENTITY_KEY: [r[0] for r in rows],
            KNOWN_AT: [t0 + r[1] * timedelta(minutes=15) for r in rows],  # often exactly on the grid
            VALUE: [r[2] for r in rows],
            FLAG: [r[3] for r in rows],
            WHOLE: [None if r[2] is None else int(r[2]) for r in rows],
        },
        schema_overrides={KNOWN_AT: pl.Datetime("us", "UTC"), VALUE: pl.Float64, WHOLE: pl.Int64, FLAG: pl.Boolean},
    )
    start, end = t0 + DAY, t0 + 4 * DAY
    got = snapshot_features(events, view, start=start, end=end)
    assert_bit_identical(got, snapshot_features_reference(events, view, start=start, end=end))


@pytest.fixture(scope="module")
def january() -> dict[str, pl.DataFrame]:
    end = datetime(2013, 2, 1, tzinfo=UTC)
    return {
        "flights": nycflights.flights().filter(pl.col("dep_known_at") < end),
        "weather": nycflights.weather().filter(pl.col("observed_at") < end),
    }


@pytest.mark.parametrize(
    "view",
    [route_delay_stats, carrier_delay_stats, aircraft_utilisation, origin_weather],
    ids=lambda v: v.name,
)
def test_a_month_of_the_real_views_equals_reference(
    january: dict[str, pl.DataFrame], view: FeatureView, no_fallback: None
) -> None:
    events = january["weather" if view is origin_weather else "flights"]
    start, end = datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 2, 1, tzinfo=UTC)
    expected = snapshot_features_reference(events, view, start=start, end=end)
    assert expected.height > 100
    assert_bit_identical(snapshot_features(events, view, start=start, end=end), expected)
    # One partition cut in buckets gives the same rows as the month's slice of that day.
    day = datetime(2013, 1, 20, tzinfo=UTC)
    sliced = expected.filter(pl.col("event_timestamp") > day, pl.col("event_timestamp") <= day + DAY)
    assert_bit_identical(snapshot_partition(events, view, start=day, end=day + DAY, buckets=3), sliced)
