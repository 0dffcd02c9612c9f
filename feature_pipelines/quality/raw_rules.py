"""Quality rules for the raw hourly tables, for what really goes wrong in this data.

Thresholds were checked against every hourly partition of the real 2013 data; a rule that real
data breaks is a WARN (metadata blocking=False), never blocking:

- The flights table is partitioned by `dep_known_at` (the actual departure, or the scheduled one
  of a cancelled flight), like the raw asset, so `flights_in_partition_window` checks that column,
  and `flights_cancelled_have_null_times` also checks that it is the departure (or, cancelled, the
  schedule): a wrong dep_known_at would put a flight in the wrong partition unnoticed.
- Tail numbers are missing only on cancelled flights (2,512 of 8,255 cancelled, none of the
  departed ones), so `flights_tailnum_present` allows 2% missing among departed flights; counted
  over all rows it would fail 679 real hours.
- `flights_null_rate` (dep_delay null = cancelled, by `flights_cancelled_have_null_times`) is a
  WARN: the 2013-02-08/09 blizzard cancelled every flight of whole hours, so no threshold below
  100% passes every real hour of >= 20 flights. At 50% it flags 20 real hours (the blizzard and
  a few thunderstorm hours); hours with fewer than 20 flights are skipped.
- `weather_hours_covered` is a WARN: the source misses 75 origin-hours in 35 hours of its span,
  and has no observation before 2013-01-01 06:00 UTC or after 2013-12-30 23:00 UTC (89 hourly
  partitions of the data range warn).
- `weather_wind_speed_plausible` (<= 100 mph) is a WARN, split from `weather_values_in_range`:
  EWR at 2013-02-12 08:00 UTC reports 1048.36 mph between readings of 20.7 and 12.7 mph, a
  sensor/transcription error that cannot be corrected by re-running the hour; blocking it would
  stall that partition forever. The feature gates (origin_weather: wind features <= 100) still
  catch the value downstream.
- Null keys (carrier, origin, times, ...) are never legitimate, so `flights_required_columns_not_null`
  is a blocking rule added next to the requested ones.

An empty partition passes every blocking raw rule (a quiet night hour is real); volume is judged
elsewhere.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from datetime import datetime

import great_expectations as gx
import numpy as np
import polars as pl
from great_expectations.expectations.row_conditions import Column

from feature_pipelines.quality.outcome import CheckOutcome, Finding, gx_findings, jsonable, outcome
from feature_pipelines.quality.suites import (
    check_volume,
    PartitionWindow,
    assign_partitions,
    dtype_findings,
    gx_type,
    tagged,
    validate_frame,
)
from feature_pipelines.sources import nycflights
from feature_pipelines.timeutil import require_utc

E = gx.expectations
FLIGHTS_TABLE, WEATHER_TABLE = "raw_flights", "raw_weather"
ORIGINS = ("EWR", "JFK", "LGA")
MAX_MISSING_TAILNUM_FRACTION = 0.02  # among departed flights
MAX_DEP_DELAY_NULL_FRACTION = 0.5  # WARN only, see the module docstring
MIN_FLIGHTS_FOR_NULL_RATE = 20
FLIGHTS_REQUIRED = ("carrier", "flight_number", "origin", "dest", "scheduled_departure_at",
                    "scheduled_arrival_at", "dep_known_at", "cancelled", "distance")
FLIGHTS_KEY = ("carrier", "flight_number", "scheduled_departure_at", "origin")
FLIGHTS_PARTITION_COLUMN = "dep_known_at"  # must match the raw_flights asset's time column
WEATHER_PARTITION_COLUMN = "observed_at"
WEATHER_KEY = ("origin", "observed_at")
_WINDOW = {"min_value": {"$PARAMETER": "window_start"}, "max_value": {"$PARAMETER": "window_end"}, "strict_max": True}

FLIGHTS_CHECKS = (
    "flights_schema_matches", "flights_required_columns_not_null", "flights_cancelled_have_null_times",
    "flights_tailnum_present", "flights_unique", "flights_in_partition_window", "flights_values_in_range",
    "flights_null_rate",
)
WEATHER_CHECKS = (
    "weather_schema_matches", "weather_unique_observations", "weather_hours_covered",
    "weather_in_partition_window", "weather_values_in_range", "weather_wind_speed_plausible",
)
WARN_CHECKS = frozenset({"flights_null_rate", "weather_hours_covered", "weather_wind_speed_plausible"})


@functools.cache
def flights_schema() -> dict[str, pl.DataType]:
    return dict(nycflights.flights().schema)


@functools.cache
def weather_schema() -> dict[str, pl.DataType]:
    return dict(nycflights.weather().schema)


def _schema_expectations(check: str, schema: dict[str, pl.DataType]) -> list[E.Expectation]:
    found = [tagged(E.ExpectTableColumnsToMatchSet(column_set=list(schema), exact_match=True), check)]
    return found + [tagged(E.ExpectColumnValuesToBeOfType(column=c, type_=gx_type(t)), check) for c, t in schema.items()]


@functools.cache
def _flights_suite(with_null_rate: bool) -> gx.ExpectationSuite:
    cancelled, departed = Column("cancelled") == True, Column("cancelled") == False  # noqa: E712
    found = _schema_expectations("flights_schema_matches", flights_schema())
    found += [tagged(E.ExpectColumnValuesToNotBeNull(column=c), "flights_required_columns_not_null") for c in FLIGHTS_REQUIRED]
    for column in ("departed_at", "dep_delay"):
        found.append(tagged(E.ExpectColumnValuesToBeNull(column=column, row_condition=cancelled), "flights_cancelled_have_null_times"))
        found.append(tagged(E.ExpectColumnValuesToNotBeNull(column=column, row_condition=departed), "flights_cancelled_have_null_times"))
    for other, condition in (("departed_at", departed), ("scheduled_departure_at", cancelled)):
        found.append(tagged(E.ExpectColumnPairValuesToBeEqual(
            column_A="dep_known_at", column_B=other, row_condition=condition), "flights_cancelled_have_null_times"))
    found.append(tagged(E.ExpectColumnValuesToNotBeNull(
        column="tailnum", mostly=1 - MAX_MISSING_TAILNUM_FRACTION, row_condition=departed), "flights_tailnum_present"))
    found.append(tagged(E.ExpectCompoundColumnsToBeUnique(column_list=list(FLIGHTS_KEY)), "flights_unique"))
    found.append(tagged(E.ExpectColumnValuesToBeBetween(column=FLIGHTS_PARTITION_COLUMN, **_WINDOW), "flights_in_partition_window"))
    for column, low, high, strict in (("distance", 0, 5000, True), ("dep_delay", -120, 1440, False), ("air_time", 0, 800, False)):
        found.append(tagged(E.ExpectColumnValuesToBeBetween(
            column=column, min_value=low, max_value=high, strict_min=strict), "flights_values_in_range"))
    if with_null_rate:
        found.append(tagged(E.ExpectColumnValuesToNotBeNull(
            column="dep_delay", mostly=1 - MAX_DEP_DELAY_NULL_FRACTION), "flights_null_rate"))
    return gx.ExpectationSuite(name=f"{FLIGHTS_TABLE}_rules", expectations=found)


@functools.cache
def _weather_suite() -> gx.ExpectationSuite:
    found = _schema_expectations("weather_schema_matches", weather_schema())
    found += [tagged(E.ExpectColumnValuesToNotBeNull(column=c), "weather_unique_observations") for c in WEATHER_KEY]
    found.append(tagged(E.ExpectCompoundColumnsToBeUnique(column_list=list(WEATHER_KEY)), "weather_unique_observations"))
    found.append(tagged(E.ExpectColumnValuesToBeBetween(column=WEATHER_PARTITION_COLUMN, **_WINDOW), "weather_in_partition_window"))
    found.append(tagged(E.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS)), "weather_values_in_range"))
    for column, low, high in (("temp", -40, 130), ("humid", 0, 100), ("wind_speed", 0, None)):
        found.append(tagged(E.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high), "weather_values_in_range"))
    found.append(tagged(E.ExpectColumnValuesToBeBetween(column="wind_speed", max_value=100), "weather_wind_speed_plausible"))
    return gx.ExpectationSuite(name=f"{WEATHER_TABLE}_rules", expectations=found)


def _windows(partition: str, window_start: datetime, window_end: datetime) -> list[PartitionWindow]:
    return [PartitionWindow(partition, require_utc(window_start, "window_start"), require_utc(window_end, "window_end"))]


def _run(
    table: str, suite: gx.ExpectationSuite, frame: pl.DataFrame, partitions: Sequence[PartitionWindow],
    time_column: str, identity: Sequence[str], schema: dict[str, pl.DataType],
) -> tuple[list[dict[str, list[Finding]]], np.ndarray]:
    rows = assign_partitions(frame, time_column, partitions, closed="left")
    parameters = {"window_start": partitions[0].start, "window_end": partitions[-1].end}
    result = validate_frame(suite, frame, n_partitions=len(partitions), parameters=parameters)
    found = gx_findings(result, frame, row_partition=rows, n_partitions=len(partitions), identity=identity)
    schema_check = f"{table.removeprefix('raw_')}_schema_matches"
    exact = dtype_findings(frame, schema)
    for per_check in found:
        per_check.setdefault(schema_check, []).extend(exact)
    return found, rows


def _outcomes(table: str, checks: Sequence[str], key: str, found: dict[str, list[Finding]]) -> list[CheckOutcome]:
    return [outcome(check, table, key, found.get(check, []), blocking=check not in WARN_CHECKS) for check in checks]


def validate_raw_flights_partitions(
    frame: pl.DataFrame, *, partitions: Sequence[PartitionWindow]
) -> dict[str, list[CheckOutcome]]:
    """The raw flights rules for contiguous hourly partitions in one GX call, per partition key;
    rows belong to the partition of their dep_known_at."""
    single_small = len(partitions) == 1 and frame.height < MIN_FLIGHTS_FOR_NULL_RATE
    suite = _flights_suite(with_null_rate=not single_small)
    found, rows = _run(FLIGHTS_TABLE, suite, frame, partitions, FLIGHTS_PARTITION_COLUMN, FLIGHTS_KEY, flights_schema())
    counts = np.bincount(rows, minlength=len(partitions))
    results = {}
    for part, window in enumerate(partitions):
        if counts[part] < MIN_FLIGHTS_FOR_NULL_RATE:
            found[part]["flights_null_rate"] = [Finding(
                f"expect_column_values_to_not_be_null(mostly={1 - MAX_DEP_DELAY_NULL_FRACTION:g})", ("dep_delay",),
                True, f"skipped: {counts[part]} flights, fewer than {MIN_FLIGHTS_FOR_NULL_RATE}")]
        results[window.key] = _outcomes(FLIGHTS_TABLE, FLIGHTS_CHECKS, window.key, found[part])
    return results


def validate_raw_flights(
    frame: pl.DataFrame, *, partition: str, window_start: datetime, window_end: datetime
) -> list[CheckOutcome]:
    """The raw flights rules for one hourly partition [window_start, window_end), in FLIGHTS_CHECKS order."""
    return validate_raw_flights_partitions(frame, partitions=_windows(partition, window_start, window_end))[partition]


def _hours_covered(frame: pl.DataFrame, partitions: Sequence[PartitionWindow]) -> list[Finding]:
    """Per partition: every origin in ORIGINS has an observation in every hour of its window."""
    rule = f"every_origin_observed_each_hour(origins={list(ORIGINS)})"
    columns = WEATHER_KEY
    schema = weather_schema()
    unusable = [c for c in columns if c not in frame.columns or frame.schema[c] != schema[c]]
    if unusable:
        return [Finding(rule, tuple(unusable), False, "column missing or of the wrong dtype")] * len(partitions)
    hours = pl.datetime_range(partitions[0].start, partitions[-1].end, "1h", closed="left", time_unit="us",
                              time_zone="UTC", eager=True).alias("hour")
    expected = pl.DataFrame({"origin": list(ORIGINS)}).join(hours.to_frame(), how="cross")
    observed = frame.select("origin", pl.col("observed_at").dt.truncate("1h").alias("hour")).unique()
    missing = expected.join(observed, on=["origin", "hour"], how="anti").sort("hour", "origin")
    owner = assign_partitions(missing, "hour", partitions, closed="left")
    expected_owner = assign_partitions(expected, "hour", partitions, closed="left")
    totals = np.bincount(expected_owner, minlength=len(partitions))
    # Split the gaps by partition once (a year is 8,760 partitions; filtering per partition is quadratic).
    by_partition = missing.with_columns(pl.Series("__owner", owner)).partition_by("__owner", as_dict=True, include_key=False)
    empty = missing.clear()
    findings = []
    for part in range(len(partitions)):
        gaps = by_partition.get((part,), empty)
        detail = f"{gaps.height} of {totals[part]} origin-hours without an observation" if gaps.height else ""
        examples = tuple({k: jsonable(v) for k, v in row.items()} for row in gaps.head(5).to_dicts())
        findings.append(Finding(rule, columns, gaps.height == 0, detail, {"missing_origin_hours": gaps.height}, examples))
    return findings


def validate_raw_weather_partitions(
    frame: pl.DataFrame, *, partitions: Sequence[PartitionWindow]
) -> dict[str, list[CheckOutcome]]:
    """The raw weather rules for contiguous hourly partitions in one GX call, per partition key."""
    found, _ = _run(WEATHER_TABLE, _weather_suite(), frame, partitions, WEATHER_PARTITION_COLUMN, WEATHER_KEY, weather_schema())
    coverage = _hours_covered(frame, partitions)
    results = {}
    for part, window in enumerate(partitions):
        found[part]["weather_hours_covered"] = [coverage[part]]
        results[window.key] = _outcomes(WEATHER_TABLE, WEATHER_CHECKS, window.key, found[part])
    return results


def validate_raw_weather(
    frame: pl.DataFrame, *, partition: str, window_start: datetime, window_end: datetime
) -> list[CheckOutcome]:
    """The raw weather rules for one hourly partition [window_start, window_end), in WEATHER_CHECKS order."""
    return validate_raw_weather_partitions(frame, partitions=_windows(partition, window_start, window_end))[partition]


RAW_VOLUME = "row_volume_within_tolerance"
RAW_VOLUME_FACTOR = 5.0
MIN_MEDIAN_FOR_VOLUME = 5  # quieter hours (nights) are not judged: zero flights at 4 am is real


def raw_volume(table: str, partition: str, row_count: int, same_hour_history: Sequence[int]) -> CheckOutcome:
    """An hour's row count against the same hour of recent days: an empty or collapsed busy hour
    fails; a quiet hour, or an hour without history, passes with a note."""
    if same_hour_history and statistics.median(same_hour_history) >= MIN_MEDIAN_FOR_VOLUME:
        return check_volume(table, partition, row_count, same_hour_history, RAW_VOLUME_FACTOR)
    note = "no history for this hour" if not same_hour_history else "a quiet hour"
    return CheckOutcome(
        RAW_VOLUME, True, table, partition,
        f"table {table!r} partition {partition}: {row_count} rows accepted ({note})",
        {"blocking": True, "row_count": row_count, "history_size": len(same_hour_history)},
    )
