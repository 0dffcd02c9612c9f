"""Raw-table rules: real 2013 partitions pass, broken copies fail with messages that say where and why."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.quality.raw_rules import (
    FLIGHTS_CHECKS,
    FLIGHTS_PARTITION_COLUMN,
    WARN_CHECKS,
    WEATHER_CHECKS,
    validate_raw_flights,
    validate_raw_flights_partitions,
    validate_raw_weather,
    validate_raw_weather_partitions,
)
from feature_pipelines.quality.suites import PartitionWindow
from feature_pipelines.sources import nycflights

HOUR = timedelta(hours=1)
BUSY = datetime(2013, 3, 1, 17, tzinfo=timezone.utc)  # 12:00 in New York, 70-odd departures
KEY = "2013-03-01-17:00"


def _hour(frame: pl.DataFrame, column: str, start: datetime) -> pl.DataFrame:
    return frame.filter(pl.col(column) >= start, pl.col(column) < start + HOUR)


@pytest.fixture(scope="module")
def flights_hour() -> pl.DataFrame:
    return _hour(nycflights.flights(), FLIGHTS_PARTITION_COLUMN, BUSY)


@pytest.fixture(scope="module")
def weather_hour() -> pl.DataFrame:
    return _hour(nycflights.weather(), "observed_at", BUSY)


def _flights(frame: pl.DataFrame, start: datetime = BUSY, key: str = KEY) -> dict[str, CheckOutcome]:
    outcomes = validate_raw_flights(frame, partition=key, window_start=start, window_end=start + HOUR)
    assert [o.check_name for o in outcomes] == list(FLIGHTS_CHECKS)
    return {o.check_name: o for o in outcomes}


def _weather(frame: pl.DataFrame, start: datetime = BUSY, key: str = KEY) -> dict[str, CheckOutcome]:
    outcomes = validate_raw_weather(frame, partition=key, window_start=start, window_end=start + HOUR)
    assert [o.check_name for o in outcomes] == list(WEATHER_CHECKS)
    return {o.check_name: o for o in outcomes}


def _failed(found: dict[str, CheckOutcome]) -> list[str]:
    return [name for name, o in found.items() if not o.passed]


def _assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def _set(frame: pl.DataFrame, column: str, value: object, rows: int = 1) -> pl.DataFrame:
    """`frame` with `column` set to `value` in its first `rows` rows."""
    return frame.with_columns(pl.when(pl.int_range(pl.len()) < rows).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))


def test_real_hour_passes(flights_hour: pl.DataFrame, weather_hour: pl.DataFrame) -> None:
    found = {**_flights(flights_hour), **_weather(weather_hour)}
    assert not _failed(found), [o.message for o in found.values() if not o.passed]
    assert {name for name, o in found.items() if not o.blocking} == WARN_CHECKS
    json.dumps([o.metadata for o in found.values()])


def test_dropped_column(flights_hour: pl.DataFrame) -> None:
    found = _flights(flights_hour.drop("dep_delay"))
    _assert_names(found["flights_schema_matches"].message, "'raw_flights'", KEY, "dep_delay",
                  "expect_table_columns_to_match_set", "missing ['dep_delay']")
    _assert_names(found["flights_values_in_range"].message, "column 'dep_delay'", "column missing")
    assert not found["flights_cancelled_have_null_times"].passed


def test_string_delays(flights_hour: pl.DataFrame) -> None:
    found = _flights(flights_hour.with_columns(pl.col("dep_delay").cast(pl.String)))
    _assert_names(found["flights_schema_matches"].message, "'raw_flights'", KEY, "column 'dep_delay'",
                  "expect_column_values_to_be_of_type(type=int64)", "observed type 'str'", "polars_dtype_is(Int64)")
    _assert_names(found["flights_values_in_range"].message, "column 'dep_delay'",
                  "expect_column_values_to_be_between(min=-120, max=1440)", "has dtype String", "GX error")


def test_thirty_percent_missing_tail_numbers(flights_hour: pl.DataFrame) -> None:
    rows = int(flights_hour.height * 0.3)
    tailnum = _flights(_set(flights_hour.sort("cancelled"), "tailnum", None, rows))["flights_tailnum_present"]
    assert not tailnum.passed and tailnum.blocking
    _assert_names(tailnum.message, "'raw_flights'", KEY, "column 'tailnum'",
                  "expect_column_values_to_not_be_null(mostly=0.98) where cancelled == False", f"{rows} of ", "allowed 2.0%")


def test_duplicates(flights_hour: pl.DataFrame, weather_hour: pl.DataFrame) -> None:
    unique = _flights(pl.concat([flights_hour, flights_hour.tail(1)]))["flights_unique"]
    _assert_names(unique.message, "'raw_flights'", KEY, "['carrier', 'flight_number', 'scheduled_departure_at', 'origin']",
                  "expect_compound_columns_to_be_unique", "2 of")
    observations = _weather(pl.concat([weather_hour, weather_hour.head(1)]))["weather_unique_observations"]
    _assert_names(observations.message, "'raw_weather'", KEY, "['origin', 'observed_at']", "2 of 4 rows duplicated")


def test_empty_partition_passes_blocking_rules(flights_hour: pl.DataFrame, weather_hour: pl.DataFrame) -> None:
    assert not _failed(_flights(flights_hour.clear()))
    weather = _weather(weather_hour.clear())
    assert _failed(weather) == ["weather_hours_covered"] and not weather["weather_hours_covered"].blocking
    _assert_names(weather["weather_hours_covered"].message, "'raw_weather'", KEY, "3 of 3 origin-hours")


def test_values_out_of_range(flights_hour: pl.DataFrame) -> None:
    broken = _set(_set(flights_hour.sort("cancelled"), "distance", -5, 2), "dep_delay", 10_000, 1)
    ranges = _flights(broken)["flights_values_in_range"]
    assert not ranges.passed
    _assert_names(ranges.message, "'raw_flights'", KEY, "column 'distance'", "min=0, max=5000, strict_min=True",
                  "2 of", "column 'dep_delay'", "expect_column_values_to_be_between(min=-120, max=1440)", "10000")


def test_weather_values_out_of_range(weather_hour: pl.DataFrame) -> None:
    found = _weather(_set(_set(weather_hour, "humid", 140.0), "origin", "XXX"))
    _assert_names(found["weather_values_in_range"].message, "column 'humid'", "max=100", "column 'origin'",
                  "expect_column_values_to_be_in_set")


def test_timestamps_outside_window(flights_hour: pl.DataFrame, weather_hour: pl.DataFrame) -> None:
    late = _set(flights_hour, FLIGHTS_PARTITION_COLUMN, BUSY + HOUR, 3)
    window = _flights(late)["flights_in_partition_window"]
    _assert_names(window.message, "'raw_flights'", KEY, "column 'dep_known_at'",
                  "expect_column_values_to_be_between(min=2013-03-01T17:00:00+00:00, max=2013-03-01T18:00:00+00:00, strict_max=True)",
                  "3 of")
    early = _weather(_set(weather_hour, "observed_at", BUSY - HOUR))["weather_in_partition_window"]
    _assert_names(early.message, "'raw_weather'", KEY, "column 'observed_at'", "1 of 3 rows out of range")


def test_cancelled_flight_with_a_delay(flights_hour: pl.DataFrame) -> None:
    broken = flights_hour.with_columns(pl.lit(True).alias("cancelled"))
    consistency = _flights(broken)["flights_cancelled_have_null_times"]
    _assert_names(consistency.message, "column 'dep_delay'", "expect_column_values_to_be_null() where cancelled == True",
                  "column 'departed_at'")


def test_known_at_must_be_the_departure(flights_hour: pl.DataFrame) -> None:
    shifted = flights_hour.sort("cancelled").with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.col("dep_known_at") + timedelta(minutes=1))
        .otherwise(pl.col("dep_known_at")).alias("dep_known_at"))
    consistency = _flights(shifted)["flights_cancelled_have_null_times"]
    _assert_names(consistency.message, "columns ['dep_known_at', 'departed_at']",
                  "expect_column_pair_values_to_be_equal() where cancelled == False", "1 of")


def test_null_carrier(flights_hour: pl.DataFrame) -> None:
    required = _flights(_set(flights_hour, "carrier", None))["flights_required_columns_not_null"]
    _assert_names(required.message, "column 'carrier'", "expect_column_values_to_not_be_null()", "1 of")


def test_storm_hour_warns_without_blocking() -> None:
    storm = datetime(2013, 2, 9, 0, tzinfo=timezone.utc)
    found = _flights(_hour(nycflights.flights(), FLIGHTS_PARTITION_COLUMN, storm), storm, "2013-02-09-00:00")
    assert _failed(found) == ["flights_null_rate"] and not found["flights_null_rate"].blocking
    _assert_names(found["flights_null_rate"].message, "column 'dep_delay'", "60 of 60 rows null")
    assert found["flights_null_rate"].metadata["severity"] == "WARN"


def test_impossible_wind_speed_warns() -> None:
    hour = datetime(2013, 2, 12, 8, tzinfo=timezone.utc)
    found = _weather(_hour(nycflights.weather(), "observed_at", hour), hour, "2013-02-12-08:00")
    assert _failed(found) == ["weather_wind_speed_plausible"]
    _assert_names(found["weather_wind_speed_plausible"].message, "1048.36", "'EWR'")


def test_range_matches_single_partitions() -> None:
    start = datetime(2013, 2, 8, 18, tzinfo=timezone.utc)
    windows = [PartitionWindow(f"h{i}", start + i * HOUR, start + (i + 1) * HOUR) for i in range(12)]
    for column, events, ranged, single in (
        (FLIGHTS_PARTITION_COLUMN, nycflights.flights(), validate_raw_flights_partitions, validate_raw_flights),
        ("observed_at", nycflights.weather(), validate_raw_weather_partitions, validate_raw_weather),
    ):
        frame = events.filter(pl.col(column) >= start, pl.col(column) < windows[-1].end)
        frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("origin")).alias("origin"))
        results = ranged(frame, partitions=windows)
        broken_hour = frame[5, column].replace(minute=0)
        for window in [w for w in windows if w.start == broken_hour] + windows[2::5]:
            alone = single(_hour(frame, column, window.start), partition=window.key, window_start=window.start, window_end=window.end)
            assert [(o.check_name, o.passed) for o in alone] == [(o.check_name, o.passed) for o in results[window.key]]


def test_every_real_2013_hour_passes_the_blocking_rules() -> None:
    hours = [nycflights.DATA_START + i * HOUR for i in range((nycflights.DATA_END - nycflights.DATA_START) // HOUR)]
    windows = [PartitionWindow(h.strftime("%Y-%m-%d-%H:%M"), h, h + HOUR) for h in hours]
    failing: dict[str, int] = {}
    for ranged, events in ((validate_raw_flights_partitions, nycflights.flights()), (validate_raw_weather_partitions, nycflights.weather())):
        for outcomes in ranged(events, partitions=windows).values():
            for o in outcomes:
                failing[o.check_name] = failing.get(o.check_name, 0) + (not o.passed)
    blocking = {name: count for name, count in failing.items() if name not in WARN_CHECKS}
    assert blocking == dict.fromkeys(blocking, 0)
    assert {name: failing[name] for name in WARN_CHECKS} == {
        "flights_null_rate": 20, "weather_hours_covered": 89, "weather_wind_speed_plausible": 1}
