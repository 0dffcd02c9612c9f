"""Feature-table gates: suites derived from the catalog views, on real snapshots and broken copies."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import great_expectations as gx
import polars as pl
import pytest

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.quality import suites
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.quality.suites import (
    CREATED_TIMESTAMP,
    PartitionWindow,
    check_feature_volume,
    check_volume,
    register_expectation,
    validate_feature_partition,
    validate_feature_partitions,
    view_suite,
)
from feature_pipelines.sources import nycflights

CARRIER = FEATURE_VIEWS["carrier_delay_stats"]
WEATHER = FEATURE_VIEWS["origin_weather"]
START = datetime(2013, 3, 1, tzinfo=timezone.utc)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
PARTITION = "2013-03-01"  # the daily partition: snapshots in (03-01 00:00, 03-02 00:00]
CHECKS = [
    "schema_matches_declaration",
    "feature_nulls_within_limits",
    "feature_values_in_range",
    "entity_keys_unique_per_timestamp",
    "row_volume_within_tolerance",
]


def _events(view) -> pl.DataFrame:
    return nycflights.flights() if view.source.asset == "raw_flights" else nycflights.weather()


def _written(view_name: str, start: datetime, end: datetime) -> pl.DataFrame:
    """A feature table slice as the asset writes it: snapshots plus created_timestamp."""
    view = FEATURE_VIEWS[view_name]
    frame = snapshot_features(_events(view), view, start=start, end=end)
    return frame.with_columns(pl.lit(end + HOUR).dt.cast_time_unit("us").alias(CREATED_TIMESTAMP))


def _source_rows(view, start: datetime, end: datetime) -> int:
    """The source events in the windows of the snapshots of (start, end], as the feature asset counts them."""
    known = _events(view).get_column(view.source.known_at_column)
    low = start + view.cadence.interval - view.max_window
    return int(((known >= low) & (known < end)).sum())


@pytest.fixture(scope="module")
def carrier_day() -> pl.DataFrame:
    return _written("carrier_delay_stats", START, START + DAY)


@pytest.fixture(scope="module")
def weather_day() -> pl.DataFrame:
    return _written("origin_weather", START, START + DAY)


def _by_name(outcomes: list[CheckOutcome]) -> dict[str, CheckOutcome]:
    return {o.check_name: o for o in outcomes}


def _assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def _validate(frame: pl.DataFrame, view=CARRIER, partition: str = PARTITION) -> dict[str, CheckOutcome]:
    """The checks of the 2013-03-01 partition of `view`, whose source has events in its windows."""
    return _by_name(validate_feature_partition(view, frame, partition=partition, source_rows=_source_rows(view, START, START + DAY)))


@pytest.mark.parametrize("view_name", ["carrier_delay_stats", "origin_weather", "aircraft_utilisation"])
def test_real_partitions_pass(view_name: str) -> None:
    view = FEATURE_VIEWS[view_name]
    frame = _written(view_name, START, START + DAY)
    source_rows = _source_rows(view, START, START + DAY)
    assert source_rows > 0 and frame.height > 0
    outcomes = validate_feature_partition(view, frame, partition=PARTITION, source_rows=source_rows)
    assert [o.check_name for o in outcomes] == CHECKS
    assert all(o.passed for o in outcomes), [o.message for o in outcomes if not o.passed]
    assert {o.check_name: o.metadata["action"] for o in outcomes} == {name: suites.FEATURE_RULES[name].action.value for name in CHECKS}
    volume = outcomes[-1]
    assert volume.metadata["row_count"] == frame.height and volume.metadata["source_rows"] == source_rows
    json.dumps([o.metadata for o in outcomes])


def test_real_route_day_passes() -> None:
    view = FEATURE_VIEWS["route_delay_stats"]
    frame = _written("route_delay_stats", START, START + DAY)
    outcomes = validate_feature_partition(view, frame, partition=PARTITION, source_rows=_source_rows(view, START, START + DAY))
    assert all(o.passed for o in outcomes), [o.message for o in outcomes if not o.passed]


def test_suite_is_derived_from_the_view_and_cached() -> None:
    suite = view_suite(CARRIER)
    assert suite.name == CARRIER.name and view_suite(CARRIER) is suite
    kinds = {e.expectation_type for e in suite.expectations}
    assert {"expect_table_columns_to_match_ordered_list", "expect_column_values_to_be_of_type",
            "expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
            "expect_compound_columns_to_be_unique"} <= kinds
    ordered = next(e for e in suite.expectations if e.expectation_type == "expect_table_columns_to_match_ordered_list")
    assert ordered.column_list == ["carrier", EVENT_TIMESTAMP, *CARRIER.feature_names, CREATED_TIMESTAMP]
    mostly = {e.column: e.mostly for e in suite.expectations if e.expectation_type == "expect_column_values_to_not_be_null"}
    declared = FEATURE_VIEWS["carrier_delay_stats"].feature("carrier_dep_delay_mean_24h").max_null_fraction
    assert mostly["carrier_dep_delay_mean_24h"] == pytest.approx(1 - declared) and mostly["carrier"] == 1


def test_dropped_column_fails_schema_and_per_column_checks(carrier_day: pl.DataFrame) -> None:
    found = _validate(carrier_day.drop("carrier_dep_delay_mean_7d"))
    schema = found["schema_matches_declaration"]
    assert not schema.passed
    _assert_names(schema.message, "'carrier_delay_stats'", PARTITION, "carrier_dep_delay_mean_7d",
                  "expect_table_columns_to_match_ordered_list")
    for name in ("feature_nulls_within_limits", "feature_values_in_range"):
        assert not found[name].passed
        _assert_names(found[name].message, "carrier_dep_delay_mean_7d", "column missing")
    assert found["entity_keys_unique_per_timestamp"].passed


def test_string_delays_fail_dtype_and_range_without_crashing(carrier_day: pl.DataFrame) -> None:
    frame = carrier_day.with_columns(pl.col("carrier_dep_delay_mean_24h").cast(pl.String))
    found = _validate(frame)
    _assert_names(found["schema_matches_declaration"].message, "'carrier_delay_stats'", PARTITION,
                  "carrier_dep_delay_mean_24h", "expect_column_values_to_be_of_type(type=float64)", "'str'")
    ranges = found["feature_values_in_range"]
    assert not ranges.passed
    _assert_names(ranges.message, "carrier_dep_delay_mean_24h", "expect_column_values_to_be_between", "GX error")


def test_thirty_percent_nulls_where_one_percent_allowed(weather_day: pl.DataFrame) -> None:
    assert _validate(weather_day, WEATHER)["feature_nulls_within_limits"].passed
    nulled = weather_day.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 < 3).then(None).otherwise(pl.col("origin_visib_latest")).alias("origin_visib_latest"))
    nulls = _validate(nulled, WEATHER)["feature_nulls_within_limits"]
    assert not nulls.passed
    _assert_names(nulls.message, "'origin_weather'", PARTITION, "origin_visib_latest",
                  "expect_column_values_to_not_be_null(mostly=0.99)", "23 of 72 rows null", "allowed 1.0%")
    failure = nulls.metadata["failures"][0]
    assert failure["observed"] == {"unexpected_count": 23, "rows_considered": 72}
    assert len(failure["examples"]) == 5 and failure["examples"][0]["origin_visib_latest"] is None


def test_duplicate_entity_rows(carrier_day: pl.DataFrame) -> None:
    unique = _validate(pl.concat([carrier_day, carrier_day.head(2)]))["entity_keys_unique_per_timestamp"]
    assert not unique.passed
    _assert_names(unique.message, "'carrier_delay_stats'", PARTITION, "['carrier', 'event_timestamp']",
                  "expect_compound_columns_to_be_unique", f"4 of {carrier_day.height + 2} rows duplicated")
    assert unique.metadata["failures"][0]["examples"][0].keys() == {"carrier", EVENT_TIMESTAMP}


def test_empty_partition_fails_volume_only(carrier_day: pl.DataFrame) -> None:
    source_rows = _source_rows(CARRIER, START, START + DAY)
    found = _validate(carrier_day.clear())
    assert [name for name, o in found.items() if not o.passed] == ["row_volume_within_tolerance"]
    volume = found["row_volume_within_tolerance"]
    assert volume.blocking and volume.metadata["action"] == "fail"
    _assert_names(volume.message, "'carrier_delay_stats'", PARTITION, "rows_when_source_has_events",
                  f"0 rows although the source has {source_rows} events in the windows of its snapshots")
    # Empty because the source had nothing to snapshot: that is no loss.
    quiet = _by_name(validate_feature_partition(CARRIER, carrier_day.clear(), partition=PARTITION, source_rows=0))
    assert all(o.passed for o in quiet.values()), [o.message for o in quiet.values() if not o.passed]
    _assert_names(quiet["row_volume_within_tolerance"].message, "empty, as its source has no events in the windows of its snapshots")


def test_check_feature_volume() -> None:
    assert check_feature_volume("t", "p", 5, 100).passed
    assert check_feature_volume("t", "p", 5, 0).passed  # rows from events outside the count are not this rule's concern
    assert check_feature_volume("t", "p", 0, 0).passed
    lost = check_feature_volume("t", "p", 0, 1)
    assert not lost.passed and lost.check_name == "row_volume_within_tolerance" and lost.failing_rows is None
    assert lost.message == ("table 't' partition p: rule rows_when_source_has_events failed: "
                            "0 rows although the source has 1 events in the windows of its snapshots")
    assert lost.metadata["row_count"] == 0 and lost.metadata["source_rows"] == 1


def test_values_out_of_range(carrier_day: pl.DataFrame) -> None:
    frame = carrier_day.with_columns(
        pl.when(pl.col("carrier") == "UA").then(10_000.0).otherwise(pl.col("carrier_dep_delay_mean_24h"))
        .alias("carrier_dep_delay_mean_24h"),
        pl.when(pl.col("carrier") == "AA").then(-3).otherwise(pl.col("carrier_flights_count_7d"))
        .alias("carrier_flights_count_7d"),
    )
    ranges = _validate(frame)["feature_values_in_range"]
    assert not ranges.passed
    _assert_names(ranges.message, "'carrier_delay_stats'", PARTITION, "carrier_dep_delay_mean_24h",
                  "expect_column_values_to_be_between(min=-120, max=1440)",
                  f"{(carrier_day['carrier'] == 'UA').sum()} of {carrier_day.height} rows out of range",
                  "carrier_flights_count_7d", "'UA'", "10000")
    # A row-level rule: its failing rows are named, so the gate can drop them (see test_gate).
    expected = carrier_day.with_row_index().filter(pl.col("carrier").is_in(["UA", "AA"]))["index"].to_list()
    assert ranges.failing_rows is not None and ranges.failing_rows.tolist() == expected
    assert ranges.blocking and ranges.metadata["action"] == "drop"


def test_naive_timestamps_fail_schema(carrier_day: pl.DataFrame) -> None:
    schema = _validate(carrier_day.with_columns(pl.col(EVENT_TIMESTAMP).dt.replace_time_zone(None)))["schema_matches_declaration"]
    _assert_names(schema.message, EVENT_TIMESTAMP, "expect_column_values_to_be_of_type(type=Timestamp)",
                  "polars_dtype_is(Datetime(time_unit='us', time_zone='UTC'))")


def test_check_volume() -> None:
    assert check_volume("t", "p", 10, [], 3.0).passed
    assert "no recent partitions" in check_volume("t", "p", 10, [], 3.0).message
    assert check_volume("t", "p", 30, [10, 11, 9], 3.0).passed
    high = check_volume("t", "p", 40, [10, 11, 9], 3.0)
    assert not high.passed and "outside [3.3, 30.0]" in high.message and high.metadata["recent_median"] == 10
    assert not check_volume("t", "p", 0, [], 3.0).passed


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suites, "EXTRA_EXPECTATIONS", {})
    monkeypatch.setattr(suites, "_SUITES", {})


@pytest.mark.usefixtures("isolated_registry")
def test_registered_expectations_form_custom_check(carrier_day: pl.DataFrame) -> None:
    carriers = carrier_day["carrier"].to_list()
    register_expectation(CARRIER.name, gx.expectations.ExpectColumnValuesToBeInSet(column="carrier", value_set=carriers))
    outcomes = validate_feature_partition(CARRIER, carrier_day, partition=PARTITION, source_rows=_source_rows(CARRIER, START, START + DAY))
    assert [o.check_name for o in outcomes] == [*CHECKS, "custom_expectations"]
    assert list(suites.view_rules(CARRIER)) == [*CHECKS, "custom_expectations", suites.UPSTREAM]
    custom = _validate(carrier_day.with_columns(pl.col("carrier").str.replace("UA", "ZZ")))["custom_expectations"]
    assert not custom.passed
    _assert_names(custom.message, "'carrier_delay_stats'", "column 'carrier'", "expect_column_values_to_be_in_set", "'ZZ'")


def test_range_validation_splits_per_partition() -> None:
    windows = [PartitionWindow(f"d{i}", START + i * DAY, START + (i + 1) * DAY) for i in range(4)]
    frame = _written("carrier_delay_stats", START, windows[-1].end)
    in_d2 = (pl.col(EVENT_TIMESTAMP) > windows[2].start) & (pl.col(EVENT_TIMESTAMP) <= windows[2].end)
    broken = frame.with_columns(
        pl.when(in_d2 & (pl.col("carrier") == "UA")).then(None).otherwise(pl.col("carrier_dep_delay_mean_7d"))
        .alias("carrier_dep_delay_mean_7d"))
    parts = [broken.filter(pl.col(EVENT_TIMESTAMP) > w.start, pl.col(EVENT_TIMESTAMP) <= w.end) for w in windows]
    source_rows = {w.key: _source_rows(CARRIER, w.start, w.end) for w in windows}
    results = validate_feature_partitions(CARRIER, broken, partitions=windows, source_rows=source_rows)
    for window, part in zip(windows, parts):
        alone = validate_feature_partition(CARRIER, part, partition=window.key, source_rows=source_rows[window.key])
        assert alone == results[window.key]
        assert [o.passed for o in alone] == [True, window.key != "d2", True, True, True]
        assert ("carrier_dep_delay_mean_7d" in results[window.key][1].message) == (window.key == "d2")
    united = int((parts[2]["carrier"] == "UA").sum())
    _assert_names(results["d2"][1].message, "partition d2", "column 'carrier_dep_delay_mean_7d'",
                  f"{united} of {parts[2].height} rows null")
