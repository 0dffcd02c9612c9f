"""Raw-table rules: real 2013 partitions pass, broken copies fail with messages that say where and why."""

from __future__ import annotations

import functools
import json
import statistics
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from feature_pipelines.quality.actions import Action
from feature_pipelines.quality.gate import judge
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.quality.raw_rules import (
    FLIGHTS_CHECKS,
    FLIGHTS_KEY,
    FLIGHTS_PARTITION_COLUMN,
    FLIGHTS_RULES,
    ORIGINS,
    RAW_VOLUME,
    SOURCE_FILE,
    SOURCE_ROW,
    WEATHER_CHECKS,
    WEATHER_KEY,
    WEATHER_PARTITION_COLUMN,
    WEATHER_RULES,
    LandingFacts,
    delivery_index,
    flights_schema,
    hourly_counts,
    validate_raw_flights,
    validate_raw_flights_partitions,
    validate_raw_weather,
    validate_raw_weather_partitions,
    weather_schema,
)
from feature_pipelines.quality.suites import assign_partitions
from feature_pipelines.sources import nycflights
from feature_pipelines.timeutil import PartitionWindow

HOUR = timedelta(hours=1)
BUSY = datetime(2013, 3, 1, 17, tzinfo=timezone.utc)  # 12:00 in New York, 52 departures
KEY = "2013-03-01-17:00"
WIND = datetime(2013, 2, 12, 8, tzinfo=timezone.utc)  # EWR reports 1048.36 mph


def _hour(frame: pl.DataFrame, column: str, start: datetime) -> pl.DataFrame:
    return frame.filter(pl.col(column) >= start, pl.col(column) < start + HOUR)


@pytest.fixture(scope="module")
def flights_hour() -> pl.DataFrame:
    return _hour(nycflights.flights(), FLIGHTS_PARTITION_COLUMN, BUSY)


@pytest.fixture(scope="module")
def weather_hour() -> pl.DataFrame:
    return _hour(nycflights.weather(), WEATHER_PARTITION_COLUMN, BUSY)


@functools.cache
def _known_keys() -> dict[str, frozenset[str]]:
    """The dimension keys, as orchestration.raw_assets._known_keys reads them from the landing zone."""
    return {
        "carrier": frozenset(nycflights.airlines()["carrier"].drop_nulls().to_list()),
        "origin": frozenset(ORIGINS),
        "dest": frozenset(nycflights.airports()["faa"].drop_nulls().to_list()) | frozenset(nycflights.KNOWN_MISSING_AIRPORTS),
        "tailnum": frozenset(nycflights.planes()["tailnum"].drop_nulls().to_list()),
    }


def _landed(frame: pl.DataFrame, file: str = "part-0000.parquet") -> pl.DataFrame:
    """`frame` as one landed file: its rows in order."""
    return frame.with_columns(pl.lit(file).alias(SOURCE_FILE), pl.int_range(pl.len(), dtype=pl.UInt32).alias(SOURCE_ROW))


def _facts(landed: pl.DataFrame, table: str, **overrides: object) -> LandingFacts:
    """What the landing zone would know if `landed` were all of it."""
    if table == "raw_flights":
        key, schema, column, known = FLIGHTS_KEY, flights_schema(), FLIGHTS_PARTITION_COLUMN, _known_keys()
    else:
        key, schema, column, known = WEATHER_KEY, weather_schema(), WEATHER_PARTITION_COLUMN, None
    fields = {"first_delivery": delivery_index(landed, key, schema), "hourly_counts": hourly_counts(landed, column),
              "known_keys": known, **overrides}
    return LandingFacts(**fields)  # type: ignore[arg-type]


def _flights(frame: pl.DataFrame, start: datetime = BUSY, key: str = KEY, landing: LandingFacts | None = None) -> dict[str, CheckOutcome]:
    outcomes = validate_raw_flights(frame, partition=key, window_start=start, window_end=start + HOUR, landing=landing)
    assert [o.check_name for o in outcomes] == list(FLIGHTS_CHECKS)
    return {o.check_name: o for o in outcomes}


def _weather(frame: pl.DataFrame, start: datetime = BUSY, key: str = KEY, landing: LandingFacts | None = None) -> dict[str, CheckOutcome]:
    outcomes = validate_raw_weather(frame, partition=key, window_start=start, window_end=start + HOUR, landing=landing)
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


def _rows(o: CheckOutcome) -> list[int] | None:
    return None if o.failing_rows is None else o.failing_rows.tolist()


def test_rule_actions_are_declared_per_table() -> None:
    assert list(FLIGHTS_CHECKS) == list(FLIGHTS_RULES) and FLIGHTS_CHECKS[-1] == RAW_VOLUME
    assert list(WEATHER_CHECKS) == list(WEATHER_RULES) and WEATHER_CHECKS[-1] == RAW_VOLUME
    warn_flights = {name for name, rule in FLIGHTS_RULES.items() if rule.action is Action.WARN}
    warn_weather = {name for name, rule in WEATHER_RULES.items() if rule.action is Action.WARN}
    assert warn_flights == {"flights_tailnum_present", "flights_null_rate", "flights_known_aircraft"}
    assert warn_weather == {"weather_hours_covered", RAW_VOLUME}
    assert FLIGHTS_RULES[RAW_VOLUME].action is Action.FAIL and WEATHER_RULES[RAW_VOLUME].action is Action.WARN
    assert WEATHER_RULES["weather_wind_speed_plausible"].action is Action.DROP
    assert FLIGHTS_RULES["flights_redelivered"].drop_budget == WEATHER_RULES["weather_redelivered"].drop_budget == 1.0


def test_real_hour_passes(flights_hour: pl.DataFrame, weather_hour: pl.DataFrame) -> None:
    for found, rules in ((_flights(flights_hour), FLIGHTS_RULES), (_weather(weather_hour), WEATHER_RULES)):
        assert not _failed(found), [o.message for o in found.values() if not o.passed]
        assert {name for name, o in found.items() if not o.blocking} == {name for name, r in rules.items() if not r.blocking}
        assert {name: o.metadata["action"] for name, o in found.items()} == {name: r.action.value for name, r in rules.items()}
        assert all(_rows(o) in ([], None) for o in found.values())
        json.dumps([o.metadata for o in found.values()])


def test_real_hour_passes_with_landing_facts(flights_hour: pl.DataFrame) -> None:
    """With the dimension keys known, the hour's unregistered tails warn and nothing else fails."""
    landed = _landed(flights_hour)
    found = _flights(landed, landing=_facts(landed, "raw_flights"))
    unknown_tails = int((~flights_hour["tailnum"].is_in(sorted(_known_keys()["tailnum"])) & flights_hour["tailnum"].is_not_null()).sum())
    assert unknown_tails > 0
    assert _failed(found) == ["flights_known_aircraft"] and not found["flights_known_aircraft"].blocking
    _assert_names(found["flights_known_aircraft"].message, "'raw_flights'", KEY, "column 'tailnum'", "tailnum_in(raw_planes)",
                  f"{unknown_tails} of {flights_hour.height} rows with keys the dimension tables do not know")
    assert len(_rows(found["flights_known_aircraft"]) or []) == unknown_tails
    for name in ("flights_known_carrier", "flights_known_airports"):
        assert found[name].passed and found[name].metadata["rules_evaluated"] == 1


def test_dropped_column(flights_hour: pl.DataFrame) -> None:
    found = _flights(flights_hour.drop("dep_delay"))
    _assert_names(found["flights_schema_matches"].message, "'raw_flights'", KEY, "dep_delay",
                  "expect_table_columns_to_match_set", "missing ['dep_delay']")
    _assert_names(found["flights_values_in_range"].message, "column 'dep_delay'", "column missing")
    assert not found["flights_cancelled_have_null_times"].passed
    assert _rows(found["flights_values_in_range"]) is None  # no row to drop: the column is missing


def test_string_delays(flights_hour: pl.DataFrame) -> None:
    found = _flights(flights_hour.with_columns(pl.col("dep_delay").cast(pl.String)))
    _assert_names(found["flights_schema_matches"].message, "'raw_flights'", KEY, "column 'dep_delay'",
                  "expect_column_values_to_be_of_type(type=int64)", "observed type 'str'", "polars_dtype_is(Int64)")
    _assert_names(found["flights_values_in_range"].message, "column 'dep_delay'",
                  "expect_column_values_to_be_between(min=-120, max=1440)", "has dtype String", "GX error")
    assert _rows(found["flights_values_in_range"]) is None


def test_thirty_percent_missing_tail_numbers(flights_hour: pl.DataFrame) -> None:
    rows = int(flights_hour.height * 0.3)
    tailnum = _flights(_set(flights_hour.sort("cancelled"), "tailnum", None, rows))["flights_tailnum_present"]
    assert not tailnum.passed and not tailnum.blocking
    assert tailnum.metadata["severity"] == "WARN" and tailnum.metadata["action"] == "warn"
    _assert_names(tailnum.message, "'raw_flights'", KEY, "column 'tailnum'",
                  "expect_column_values_to_not_be_null(mostly=0.98) where cancelled == False", f"{rows} of ", "allowed 2.0%")
    assert tailnum.failing_rows is None  # a share rule names no rows to drop


def test_duplicates(flights_hour: pl.DataFrame, weather_hour: pl.DataFrame) -> None:
    """A later copy of a key fails: as a re-delivery when identical, as a conflict otherwise; the
    first delivery (here: the frame's own order) never fails."""
    n, key_columns = flights_hour.height, "['carrier', 'flight_number', 'scheduled_departure_at', 'origin']"
    found = _flights(pl.concat([flights_hour, flights_hour.tail(1)]))
    assert _failed(found) == ["flights_redelivered"] and _rows(found["flights_redelivered"]) == [n]
    _assert_names(found["flights_redelivered"].message, "'raw_flights'", KEY, key_columns,
                  f"identical_redelivery({key_columns})", f"1 of {n + 1} rows identical copies of an earlier delivery")
    other = flights_hour.tail(1).with_columns(pl.col("distance") + 1)
    found = _flights(pl.concat([flights_hour, other]))
    assert _failed(found) == ["flights_unique"] and _rows(found["flights_unique"]) == [n]
    _assert_names(found["flights_unique"].message, "'raw_flights'", KEY, key_columns, f"first_delivery_per_key({key_columns})",
                  f"1 of {n + 1} rows re-delivered with other values than their first delivery")

    found = _weather(pl.concat([weather_hour, weather_hour.head(1)]))
    assert _failed(found) == ["weather_redelivered"] and _rows(found["weather_redelivered"]) == [3]
    _assert_names(found["weather_redelivered"].message, "'raw_weather'", KEY, "['origin', 'observed_at']",
                  "1 of 4 rows identical copies of an earlier delivery")
    found = _weather(pl.concat([weather_hour, weather_hour.head(1).with_columns(pl.col("temp") + 1.0)]))
    assert _failed(found) == ["weather_unique_observations"] and _rows(found["weather_unique_observations"]) == [3]
    _assert_names(found["weather_unique_observations"].message, "'raw_weather'", KEY, "['origin', 'observed_at']",
                  "first_delivery_per_key(['origin', 'observed_at'])", "1 of 4 rows re-delivered with other values")


def test_null_weather_key(weather_hour: pl.DataFrame) -> None:
    found = _weather(_set(weather_hour, "origin", None))
    assert found["weather_keys_not_null"].blocking and _rows(found["weather_keys_not_null"]) == [0]
    _assert_names(found["weather_keys_not_null"].message, "'raw_weather'", KEY, "column 'origin'",
                  "expect_column_values_to_not_be_null()", "1 of 3 rows null")
    assert found["weather_unique_observations"].passed and found["weather_redelivered"].passed


def test_empty_partition_passes_blocking_rules(flights_hour: pl.DataFrame, weather_hour: pl.DataFrame) -> None:
    assert not _failed(_flights(flights_hour.clear()))
    weather = _weather(weather_hour.clear())
    assert _failed(weather) == ["weather_hours_covered"] and not weather["weather_hours_covered"].blocking
    _assert_names(weather["weather_hours_covered"].message, "'raw_weather'", KEY, "3 of 3 origin-hours")


def test_values_out_of_range(flights_hour: pl.DataFrame) -> None:
    broken = _set(_set(flights_hour.sort("cancelled"), "distance", -5, 2), "dep_delay", 10_000, 1)
    ranges = _flights(broken)["flights_values_in_range"]
    assert not ranges.passed and ranges.blocking and _rows(ranges) == [0, 1]
    _assert_names(ranges.message, "'raw_flights'", KEY, "column 'distance'", "min=0, max=5000, strict_min=True",
                  "2 of", "column 'dep_delay'", "expect_column_values_to_be_between(min=-120, max=1440)", "10000")


def test_weather_values_out_of_range(weather_hour: pl.DataFrame) -> None:
    found = _weather(_set(_set(weather_hour, "humid", 140.0), "origin", "XXX"))
    _assert_names(found["weather_values_in_range"].message, "'raw_weather'", KEY, "column 'humid'", "max=100",
                  "column 'origin'", "expect_column_values_to_be_in_set")
    assert _rows(found["weather_values_in_range"]) == [0]


def test_nan_is_not_a_value(weather_hour: pl.DataFrame) -> None:
    found = _weather(weather_hour.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(float("nan")).otherwise(pl.col("pressure")).alias("pressure")))
    assert _failed(found) == ["weather_values_not_nan"] and _rows(found["weather_values_not_nan"]) == [2]
    _assert_names(found["weather_values_not_nan"].message, "'raw_weather'", KEY, "column 'pressure'", "values_are_not_nan",
                  "1 of 3 rows NaN (not a value, not a null)")


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
    assert _rows(consistency) == [0]


def test_null_carrier(flights_hour: pl.DataFrame) -> None:
    required = _flights(_set(flights_hour, "carrier", None))["flights_required_columns_not_null"]
    _assert_names(required.message, "column 'carrier'", "expect_column_values_to_not_be_null()", "1 of")
    assert _rows(required) == [0]


def test_unknown_dimension_keys(flights_hour: pl.DataFrame) -> None:
    broken = _landed(_set(_set(flights_hour, "carrier", "ZZ"), "dest", "XXX", 3))
    found = _flights(broken, landing=_facts(broken, "raw_flights"))
    carrier, airports = found["flights_known_carrier"], found["flights_known_airports"]
    assert carrier.blocking and _rows(carrier) == [0]
    _assert_names(carrier.message, "'raw_flights'", KEY, "column 'carrier'", "carrier_in(raw_airlines)",
                  f"1 of {flights_hour.height} rows with keys the dimension tables do not know", "'ZZ'")
    assert airports.blocking and _rows(airports) == [0, 1, 2]
    _assert_names(airports.message, "columns ['origin', 'dest']", "dest_in(raw_airports)", "3 of", "'XXX'")
    # Without landing facts the frame is the whole source: no dimension to check against.
    plain = _flights(_set(flights_hour, "carrier", "ZZ"))
    for name in ("flights_known_carrier", "flights_known_airports", "flights_known_aircraft"):
        assert plain[name].passed and plain[name].metadata["rules_evaluated"] == 0


def test_rejected_landed_file_fails_its_hours(flights_hour: pl.DataFrame) -> None:
    landed = _landed(flights_hour)
    rejection = "file 'part-0007.parquet': column 'dep_delay' has dtype String, declared Int64"
    facts = _facts(landed, "raw_flights", rejected_hours={BUSY: [rejection], BUSY + HOUR: ["another file"]})
    contract = _flights(landed, landing=facts)["flights_landing_contract"]
    assert not contract.passed and contract.blocking and contract.failing_rows is None
    _assert_names(contract.message, "'raw_flights'", KEY, "landed_files_match_contract", rejection)
    assert "another file" not in contract.message
    assert _flights(landed, BUSY - HOUR, "earlier", landing=facts)["flights_landing_contract"].passed


def test_raw_volume_against_the_same_new_york_hour() -> None:
    """Judged against the same wall-clock hour of the 7 preceding days of the landed source."""
    events = nycflights.flights()
    landed = _landed(events)
    facts = _facts(landed, "raw_flights")
    start = datetime(2013, 3, 12, 16, tzinfo=timezone.utc)  # 12:00 EDT; the preceding week's 12:00 EST is 17:00 UTC
    hour = _landed(_hour(events, FLIGHTS_PARTITION_COLUMN, start))
    # New York left EST on 2013-03-10: from 03-09 back, 12:00 in New York was 17:00 UTC.
    counts = hourly_counts(landed, FLIGHTS_PARTITION_COLUMN)
    history = [counts.get(start - timedelta(days=d) + (HOUR if d >= 3 else timedelta()), 0) for d in range(1, 8)]
    assert statistics.median(history) / 12 > 3  # so that 3 flights are a collapse
    full = _flights(hour, start, "h", landing=facts)[RAW_VOLUME]
    assert full.passed and full.metadata["recent_median"] == statistics.median(history)
    collapsed = _flights(hour.head(3), start, "h", landing=facts)[RAW_VOLUME]
    assert not collapsed.passed and collapsed.blocking and collapsed.metadata["history_size"] == 7
    assert collapsed.metadata["recent_median"] == statistics.median(history)
    _assert_names(collapsed.message, "'raw_flights'", "partition h", "row_count_within_recent_median(factor=12)", "3 rows, outside [")
    empty = _flights(hour.clear(), start, "h", landing=facts)[RAW_VOLUME]
    _assert_names(empty.message, "0 rows: the partition is empty")
    # Nothing landed after this hour yet: not judged.
    pending = LandingFacts(hourly_counts={h: c for h, c in facts.hourly_counts.items() if h < start})  # type: ignore[union-attr]
    late = _flights(hour.clear(), start, "h", landing=pending)[RAW_VOLUME]
    assert late.passed and "after the newest landed record" in late.message


def test_storm_hour_warns_without_blocking() -> None:
    storm = datetime(2013, 2, 9, 0, tzinfo=timezone.utc)
    found = _flights(_hour(nycflights.flights(), FLIGHTS_PARTITION_COLUMN, storm), storm, "2013-02-09-00:00")
    assert _failed(found) == ["flights_null_rate"] and not found["flights_null_rate"].blocking
    _assert_names(found["flights_null_rate"].message, "column 'dep_delay'", "60 of 60 rows null")
    assert found["flights_null_rate"].metadata["severity"] == "WARN"


def test_impossible_wind_speed_is_dropped() -> None:
    hour = _hour(nycflights.weather(), WEATHER_PARTITION_COLUMN, WIND)
    found = _weather(hour, WIND, "2013-02-12-08:00")
    wind = found["weather_wind_speed_plausible"]
    assert _failed(found) == ["weather_wind_speed_plausible"] and wind.blocking
    ewr = hour["origin"].to_list().index("EWR")
    assert _rows(wind) == [ewr]
    _assert_names(wind.message, "'raw_weather'", "2013-02-12-08:00", "column 'wind_speed'",
                  "expect_column_values_to_be_between(max=100)", "1 of 3 rows out of range", "1048.36", "'EWR'")
    verdict = judge("raw_weather", np.zeros(hour.height, np.int64), ["2013-02-12-08:00"],
                    {"2013-02-12-08:00": list(found.values())}, WEATHER_RULES)
    assert verdict.passed_keys == ["2013-02-12-08:00"]
    assert verdict.keep.tolist() == [i != ewr for i in range(hour.height)]
    assert {c: r.tolist() for c, r in verdict.partitions[0].dropped.items()} == {"weather_wind_speed_plausible": [ewr]}


def test_range_matches_single_partitions() -> None:
    start = datetime(2013, 2, 8, 18, tzinfo=timezone.utc)
    windows = [PartitionWindow(f"h{i}", start + i * HOUR, start + (i + 1) * HOUR) for i in range(12)]
    for column, events, ranged, single in (
        (FLIGHTS_PARTITION_COLUMN, nycflights.flights(), validate_raw_flights_partitions, validate_raw_flights),
        (WEATHER_PARTITION_COLUMN, nycflights.weather(), validate_raw_weather_partitions, validate_raw_weather),
    ):
        frame = events.filter(pl.col(column) >= start, pl.col(column) < windows[-1].end)
        frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("origin")).alias("origin"))
        results = ranged(frame, partitions=windows)
        broken_hour = frame[5, column].replace(minute=0)
        checked = [w for w in windows if w.start == broken_hour] + windows[2::5]
        assert any(not o.passed and o.blocking for o in results[checked[0].key])
        for window in checked:
            alone = single(_hour(frame, column, window.start), partition=window.key, window_start=window.start, window_end=window.end)
            assert [(o.check_name, o.passed) for o in alone] == [(o.check_name, o.passed) for o in results[window.key]]


# Measured over every hour of the real 2013 data, validated with the landing facts of the whole year.
YEAR_WARN_FAILING_HOURS = {
    "raw_flights": {"flights_tailnum_present": 0, "flights_null_rate": 20, "flights_known_aircraft": 6490},
    "raw_weather": {"weather_hours_covered": 89, RAW_VOLUME: 16},
}
YEAR_UNKNOWN_TAIL_FLIGHTS = 50_094
YEAR_WEATHER_EMPTY_HOURS = [  # hours the source has no observation in, while the same hour of the days before had
    "2013-02-21-05:00", "2013-08-19-21:00", "2013-08-23-00:00", "2013-08-23-01:00", "2013-10-26-00:00",
    "2013-10-26-01:00", "2013-10-26-02:00", "2013-10-26-03:00", "2013-10-26-04:00", "2013-10-27-01:00",
    "2013-11-03-00:00", "2013-11-03-01:00", "2013-11-03-02:00", "2013-11-03-03:00", "2013-11-03-04:00",
    "2013-11-04-15:00",
]


def test_every_real_2013_hour_passes_the_blocking_rules() -> None:
    hours = [nycflights.DATA_START + i * HOUR for i in range((nycflights.DATA_END - nycflights.DATA_START) // HOUR)]
    windows = [PartitionWindow(h.strftime("%Y-%m-%d-%H:%M"), h, h + HOUR) for h in hours]
    keys = [w.key for w in windows]
    measured: dict[str, dict[str, object]] = {}
    for table, ranged, events, column, rules in (
        ("raw_flights", validate_raw_flights_partitions, nycflights.flights(), FLIGHTS_PARTITION_COLUMN, FLIGHTS_RULES),
        ("raw_weather", validate_raw_weather_partitions, nycflights.weather(), WEATHER_PARTITION_COLUMN, WEATHER_RULES),
    ):
        landed = _landed(events)
        results = ranged(landed, partitions=windows, landing=_facts(landed, table))
        assert list(results) == keys
        failing_hours = {name: 0 for name in rules}
        drop_rows = {name: 0 for name, rule in rules.items() if rule.action is Action.DROP}
        for outcomes in results.values():
            assert [o.check_name for o in outcomes] == list(rules)
            for o in outcomes:
                assert o.blocking == rules[o.check_name].blocking
                failing_hours[o.check_name] += not o.passed
                if o.check_name in drop_rows and not o.passed:
                    assert o.failing_rows is not None, o.message
                    drop_rows[o.check_name] += o.failing_rows.size
        blocking = {name: failing_hours[name] for name, rule in rules.items() if rule.blocking}
        warned = {name: failing_hours[name] for name, rule in rules.items() if not rule.blocking}
        dropped = {name: (failing_hours[name], drop_rows[name]) for name in drop_rows}
        verdict = judge(table, assign_partitions(landed, column, windows, closed="left"), keys, results, rules)
        measured[table] = {"warn": warned, "drop": dropped, "verdict": verdict, "results": results, "landed": landed}
        print(f"{table}: warn rules' failing hours {warned}; drop rules' (failing hours, rows) {dropped}; "
              f"judge drops {verdict.dropped_by_check()}, keeps {int(verdict.keep.sum())} of {landed.height} rows")

        # Only the drop rules may fail a blocking rule over the real year, and only within budget.
        assert {name: count for name, count in blocking.items() if name not in drop_rows} == dict.fromkeys(
            [name for name in blocking if name not in drop_rows], 0)
        assert verdict.passed_keys == keys and not verdict.failed
        assert warned == YEAR_WARN_FAILING_HOURS[table]

    flights, weather = measured["raw_flights"], measured["raw_weather"]
    assert flights["drop"] == {name: (0, 0) for name, rule in FLIGHTS_RULES.items() if rule.action is Action.DROP}
    assert weather["drop"] == {name: (int(name == "weather_wind_speed_plausible"),) * 2
                               for name, rule in WEATHER_RULES.items() if rule.action is Action.DROP}
    unknown_tails = sum(o.failing_rows.size for outcomes in flights["results"].values()  # type: ignore[union-attr]
                        for o in outcomes if o.check_name == "flights_known_aircraft" and not o.passed)
    assert unknown_tails == YEAR_UNKNOWN_TAIL_FLIGHTS
    assert flights["verdict"].dropped_by_check() == {} and bool(flights["verdict"].keep.all())  # type: ignore[union-attr]
    empty = [key for key, outcomes in weather["results"].items()  # type: ignore[union-attr]
             if not next(o for o in outcomes if o.check_name == RAW_VOLUME).passed]
    assert empty == YEAR_WEATHER_EMPTY_HOURS

    # The 1048 mph reading fails the (blocking) wind rule with exactly one row; the gate drops that
    # row and its hour passes with the other two airports' readings.
    wind_key = WIND.strftime("%Y-%m-%d-%H:%M")
    wind = next(o for o in weather["results"][wind_key] if o.check_name == "weather_wind_speed_plausible")  # type: ignore[index]
    landed_weather: pl.DataFrame = weather["landed"]  # type: ignore[assignment]
    assert not wind.passed and wind.blocking and wind.failing_rows is not None and wind.failing_rows.size == 1
    reading = landed_weather[wind.failing_rows.tolist()].select("origin", "observed_at", "wind_speed").row(0)
    assert reading[:2] == ("EWR", WIND) and reading[2] == pytest.approx(1048.36058)
    verdict = weather["verdict"]
    partition = next(p for p in verdict.partitions if p.partition == wind_key)  # type: ignore[union-attr]
    assert partition.passed and partition.rows == 3
    assert {c: r.tolist() for c, r in partition.dropped.items()} == {"weather_wind_speed_plausible": wind.failing_rows.tolist()}
    acted = next(o for o in partition.outcomes if o.check_name == "weather_wind_speed_plausible")
    assert acted.passed and acted.metadata["dropped_rows"] == 1 and acted.metadata["drop_allowance"] == 1
    assert verdict.dropped_by_check() == {"weather_wind_speed_plausible": 1}  # type: ignore[union-attr]
    assert np.flatnonzero(~verdict.keep).tolist() == wind.failing_rows.tolist()  # type: ignore[union-attr]
