"""Quality rules for the raw hourly tables, each declared with its action (warn, drop or fail).

Every action was chosen against every hourly partition of the real 2013 data; the reason is
written beside the rule in `FLIGHTS_RULES` / `WEATHER_RULES`. The figures behind them:

- `flights_null_rate` warns: the 2013-02-08/09 blizzard cancelled every flight of whole hours, so
  no threshold below 100% passes every real hour of >= 20 flights. At 50% it flags 20 real hours.
- Tail numbers are missing only on cancelled flights (2,512 of 8,255 cancelled, none of the
  departed ones), so `flights_tailnum_present` allows 2% missing among departed flights and warns.
- `flights_known_aircraft` warns: 50,094 flights (14.9%) carry tail numbers that the FAA registry
  in `planes` does not hold (American and Envoy report fleet numbers). Dropping them would remove
  a seventh of the year; their carrier and route features are sound.
- `weather_hours_covered` warns: the source misses 75 origin-hours in 35 hours of its span, and
  has no observation before 2013-01-01 06:00 UTC or after 2013-12-30 23:00 UTC.
- `weather_wind_speed_plausible` drops: EWR at 2013-02-12 08:00 UTC reports 1048.36 mph between
  readings of 20.7 and 12.7 mph, a sensor or transcription error. The reading is quarantined and
  counted; the other two airports' readings of that hour land.
- Row-level rules that real data never breaks (null keys, inconsistent cancellations, values out
  of range, unknown carriers or airports, NaN, re-deliveries) drop the offending rows within a
  budget of 1% of a partition's rows (at least one row): one bad record holds back only itself,
  while a partition that needs more dropped than that is a broken feed and fails whole.
- Rules about the partition as a whole (the landing contract, the schema, the partition window,
  the volume) fail the partition: there is no row to drop. The flights volume rule compares an
  hour with the same New York hour of the 7 preceding days (traffic follows the wall clock, so
  comparing UTC hours would flag every hour around the DST changes); its calibration is beside
  `RAW_VOLUME_FACTOR`. The weather volume only warns: the source misses whole hours.

Verdicts depend only on data. The volume rule compares an hour with the same hour of the
preceding days of the landed source itself, and uniqueness is judged against every delivery in
the landing zone, in delivery (file name) order: the first delivery of a record wins, a later
identical copy is dropped as a re-delivery, and a later copy with other values is dropped as a
conflict (see `LandingFacts`).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

import great_expectations as gx
import numpy as np
import polars as pl
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.expectations.row_conditions import Column

from feature_pipelines.json_values import json_value
from feature_pipelines.quality.actions import RuleAction, drop, fail, warn
from feature_pipelines.quality.gx_adapter import gx_findings
from feature_pipelines.quality.outcome import CheckOutcome, Finding, outcome
from feature_pipelines.quality.row_space import RowSpace
from feature_pipelines.quality.suites import (
    PartitionWindow,
    assign_partitions,
    check_volume,
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
RAW_VOLUME = "row_volume_within_tolerance"
# Calibrated on every hour of 2013 against the same New York hour of the 7 preceding days: the
# lowest real ratio is 5 flights against a median of 50 (2013-11-29 01:00 UTC, the evening after
# Thanksgiving), so a factor of 12 passes all of 2013 while an hour that collapses below a twelfth
# of its usual traffic (or an emptied busy hour) fails. Hours whose median is under 10 flights are
# not judged: 2013-01-10 04:00 UTC (23:00 in New York) had none against a median of 5.
RAW_VOLUME_FACTOR = 12.0
RAW_VOLUME_DAYS = 7  # the same local hour of this many preceding days
VOLUME_ZONE = ZoneInfo(nycflights.NEW_YORK)  # traffic follows the airports' wall clock, also across DST
MIN_MEDIAN_FOR_VOLUME = {FLIGHTS_TABLE: 10, WEATHER_TABLE: 1}

_ROWS = "Real 2013 data never breaks it; "
FLIGHTS_RULES: dict[str, RuleAction] = {
    "flights_landing_contract": fail("a landed file whose columns, dtypes or time zones break the contract is quarantined whole; the hours it covers would be incomplete without it"),
    "flights_schema_matches": fail("a frame that does not have the declared columns and dtypes cannot be written"),
    "flights_required_columns_not_null": drop(_ROWS + "a flight without its keys or times cannot be placed in any feature"),
    "flights_cancelled_have_null_times": drop(_ROWS + "a departure time on a cancelled flight (or none on a departed one) contradicts itself"),
    "flights_tailnum_present": warn("tail numbers are missing only on cancelled flights in 2013; carrier and route features do not need them"),
    "flights_unique": drop(_ROWS + "a later delivery of a flight with other values is a conflicting re-delivery; the first delivery wins"),
    "flights_redelivered": drop("an identical copy of an earlier delivery adds nothing; dropping it loses nothing", budget=1.0),
    "flights_in_partition_window": fail("rows outside their hour mean the partitioning itself is wrong"),
    "flights_values_in_range": drop(_ROWS + "a negative distance or a delay beyond a day is one bad record"),
    "flights_values_not_nan": drop(_ROWS + "NaN is no value and no null; it would poison every sum and mean"),
    "flights_null_rate": warn("the February 2013 blizzard cancelled every flight of whole hours (20 real hours over 50%)"),
    "flights_known_carrier": drop(_ROWS + "every 2013 carrier is in `airlines`; an unknown code would become a new carrier entity"),
    "flights_known_airports": drop(_ROWS + "origins are EWR/JFK/LGA and every destination is in `airports` or among the four whose zones the loader knows"),
    "flights_known_aircraft": warn("50,094 flights (14.9%) fly tails the FAA registry in `planes` does not hold; dropping them would lose a seventh of the year"),
    RAW_VOLUME: fail("an empty or collapsed busy hour is a broken feed, not a quiet hour; judged against the source's own same hour of the preceding days"),
}
WEATHER_RULES: dict[str, RuleAction] = {
    "weather_landing_contract": fail("a landed file whose columns, dtypes or time zones break the contract is quarantined whole; the hours it covers would be incomplete without it"),
    "weather_schema_matches": fail("a frame that does not have the declared columns and dtypes cannot be written"),
    "weather_keys_not_null": drop(_ROWS + "an observation without an airport or a time belongs nowhere"),
    "weather_unique_observations": drop(_ROWS + "a later delivery of an observation with other values is a conflict; the first delivery wins"),
    "weather_redelivered": drop("an identical copy of an earlier delivery adds nothing; dropping it loses nothing", budget=1.0),
    "weather_hours_covered": warn("the source misses 75 origin-hours in 35 hours of 2013, and has nothing before 06:00 UTC on Jan 1 or after Dec 30 23:00 UTC"),
    "weather_in_partition_window": fail("rows outside their hour mean the partitioning itself is wrong"),
    "weather_values_in_range": drop(_ROWS + "an unknown airport, a temperature beyond -40..130 F or a humidity beyond 0..100 is one bad reading"),
    "weather_values_not_nan": drop(_ROWS + "NaN is no value and no null; GX would count it as missing"),
    "weather_wind_speed_plausible": drop("one real reading (EWR 2013-02-12 08:00 UTC, 1048.36 mph) is a sensor error; dropped and counted, it no longer holds back its hour"),
    RAW_VOLUME: warn("the source itself misses whole hours of 2013 (see weather_hours_covered); an hour without weather where the preceding days had it is reported, and the feature gates judge what it does to the features"),
}
FLIGHTS_CHECKS = tuple(FLIGHTS_RULES)
WEATHER_CHECKS = tuple(WEATHER_RULES)
RAW_RULES = {FLIGHTS_TABLE: FLIGHTS_RULES, WEATHER_TABLE: WEATHER_RULES}


@dataclass(frozen=True)
class LandingFacts:
    """What the rules know beyond the run's own rows, all read from the landing zone's data.

    - `rejected_hours`: hour start -> messages of the landed files that break the contract and
      cover that hour (each such hour fails its `*_landing_contract` rule).
    - `first_delivery`: for every record key ever delivered, the (file, row) of its first
      delivery and a hash of its values; with it a row knows whether it is the first delivery,
      an identical re-delivery or a conflicting one, whatever hour the other copy sits in.
    - `hourly_counts`: landed rows per hour over the whole source, for the volume rule.
    - `known_keys`: dimension column -> values the dimension tables hold.
    When a field is None the rule falls back to the run's own rows (unit tests of a single frame).
    """

    rejected_hours: Mapping[datetime, Sequence[str]] = field(default_factory=dict)
    first_delivery: pl.DataFrame | None = None
    hourly_counts: Mapping[datetime, int] | None = None
    known_keys: Mapping[str, frozenset[str]] | None = None


SOURCE_FILE, SOURCE_ROW, ROW_HASH = "__source_file", "__source_row", "__row_hash"


def delivery_index(landed: pl.DataFrame, key: Sequence[str], schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """Per record key, its first delivery in (file name, row) order and the hash of its values."""
    hashed = landed.with_columns(_value_hash(landed, schema))
    return (
        hashed.sort(SOURCE_FILE, SOURCE_ROW, maintain_order=True)
        .group_by(list(key), maintain_order=True)
        .agg(pl.col(SOURCE_FILE).first(), pl.col(SOURCE_ROW).first(), pl.col(ROW_HASH).first())
    )


def _value_hash(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """A hash of a row's declared values (those present: a broken frame is still judged)."""
    return pl.struct([c for c in schema if c in frame.columns]).hash(seed=0).alias(ROW_HASH)


def hourly_counts(landed: pl.DataFrame, time_column: str) -> dict[datetime, int]:
    counts = landed.group_by(pl.col(time_column).dt.truncate("1h").alias("hour")).len()
    return dict(zip(counts["hour"].to_list(), counts["len"].to_list()))


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
    found += [tagged(E.ExpectColumnValuesToNotBeNull(column=c), "weather_keys_not_null") for c in WEATHER_KEY]
    found.append(tagged(E.ExpectColumnValuesToBeBetween(column=WEATHER_PARTITION_COLUMN, **_WINDOW), "weather_in_partition_window"))
    found.append(tagged(E.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS)), "weather_values_in_range"))
    for column, low, high in (("temp", -40, 130), ("humid", 0, 100), ("wind_speed", 0, None)):
        found.append(tagged(E.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high), "weather_values_in_range"))
    found.append(tagged(E.ExpectColumnValuesToBeBetween(column="wind_speed", max_value=100), "weather_wind_speed_plausible"))
    return gx.ExpectationSuite(name=f"{WEATHER_TABLE}_rules", expectations=found)


def _windows(partition: str, window_start: datetime, window_end: datetime) -> list[PartitionWindow]:
    return [PartitionWindow(partition, require_utc(window_start, "window_start"), require_utc(window_end, "window_end"))]


@dataclass(frozen=True)
class _Rows:
    """The validated frame, each row's partition, and the identity columns examples show."""

    frame: pl.DataFrame
    row_partition: np.ndarray
    partitions: Sequence[PartitionWindow]
    identity: tuple[str, ...]

    def findings(self, rule: str, columns: tuple[str, ...], mask: np.ndarray, verb: str) -> list[Finding]:
        """Per partition, a row-level finding from a boolean mask of failing rows."""
        space = RowSpace(self.frame, self.row_partition, len(self.partitions), self.identity)
        return space.mask_findings(rule, columns, mask, verb)


def _usable(frame: pl.DataFrame, schema: Mapping[str, pl.DataType], columns: Sequence[str]) -> bool:
    return all(c in frame.columns and frame.schema[c] == schema[c] for c in columns)


def _unusable(rule: str, columns: Sequence[str], n: int) -> list[Finding]:
    return [Finding(rule, tuple(columns), False, "column missing or of the wrong dtype")] * n


def _nan_findings(rows: _Rows, schema: Mapping[str, pl.DataType]) -> list[Finding]:
    floats = [c for c, t in schema.items() if t.is_float() and c in rows.frame.columns and rows.frame.schema[c].is_float()]
    rule = "values_are_not_nan"
    if not floats:
        return [Finding(rule, (), True)] * len(rows.partitions)
    mask = rows.frame.select(pl.any_horizontal([pl.col(c).is_nan().fill_null(False) for c in floats])).to_series().to_numpy()
    nan_columns = tuple(c for c in floats if rows.frame[c].is_nan().any())
    return rows.findings(rule, nan_columns or tuple(floats), mask, "NaN (not a value, not a null)")


def _delivery_findings(
    rows: _Rows, key: Sequence[str], schema: Mapping[str, pl.DataType], facts: LandingFacts
) -> tuple[list[Finding], list[Finding]]:
    """(conflicting re-deliveries, identical re-deliveries) per partition: a row that is not its
    key's first delivery, with other values than it or the same ones."""
    unique_rule, again_rule = f"first_delivery_per_key({list(key)})", f"identical_redelivery({list(key)})"
    n = len(rows.partitions)
    if not _usable(rows.frame, schema, key):
        return _unusable(unique_rule, key, n), _unusable(again_rule, key, n)
    frame = rows.frame
    bare = SOURCE_FILE not in frame.columns
    if bare:  # a frame without provenance: its own order is the delivery order, whatever the facts say
        frame = frame.with_columns(pl.lit("").alias(SOURCE_FILE), pl.int_range(pl.len(), dtype=pl.Int64).alias(SOURCE_ROW))
    first = facts.first_delivery if facts.first_delivery is not None and not bare else delivery_index(frame, key, schema)
    hashes = frame.select(_value_hash(frame, schema))
    placed = (
        frame.select(*key, SOURCE_FILE, pl.col(SOURCE_ROW).cast(pl.Int64))
        .with_columns(hashes)
        .join(first.with_columns(pl.col(SOURCE_ROW).cast(pl.Int64)), on=list(key), how="left", suffix="_first",
              maintain_order="left", nulls_equal=True)
    )
    later = ~((placed[SOURCE_FILE] == placed[f"{SOURCE_FILE}_first"]) & (placed[SOURCE_ROW] == placed[f"{SOURCE_ROW}_first"]))
    later = later.fill_null(False).to_numpy()
    same = (placed[ROW_HASH] == placed[f"{ROW_HASH}_first"]).fill_null(False).to_numpy()
    columns = tuple(key)
    return (
        rows.findings(unique_rule, columns, later & ~same, "re-delivered with other values than their first delivery"),
        rows.findings(again_rule, columns, later & same, "identical copies of an earlier delivery"),
    )


def _known_key_findings(rows: _Rows, column_sets: Mapping[str, frozenset[str]], rule: str) -> list[Finding]:
    """Rows whose key columns hold values the dimension tables do not know (nulls are other rules')."""
    columns = tuple(column_sets)
    if not all(c in rows.frame.columns and rows.frame.schema[c] == pl.String for c in columns):
        return _unusable(rule, columns, len(rows.partitions))
    unknown = pl.any_horizontal([
        (pl.col(c).is_not_null() & ~pl.col(c).is_in(sorted(values))) for c, values in column_sets.items()
    ])
    mask = rows.frame.select(unknown).to_series().to_numpy()
    return rows.findings(rule, columns, mask, "with keys the dimension tables do not know")


def _contract_findings(partitions: Sequence[PartitionWindow], facts: LandingFacts, rule: str) -> list[Finding]:
    found = []
    hour = timedelta(hours=1)
    for window in partitions:
        # Look the window's hours up (a refused year-long file covers 8,760 of them).
        starts = [window.start + k * hour for k in range((window.end - window.start) // hour)]
        messages = [m for start in starts for m in facts.rejected_hours.get(start, ())]
        found.append(Finding(rule, (), not messages, "; ".join(dict.fromkeys(messages)), len(messages)))
    return found


def _volume_outcomes(
    table: str, rows: _Rows, time_column: str, facts: LandingFacts
) -> list[CheckOutcome]:
    """Each hour against the same hour of the preceding days of the landed source itself."""
    counts = facts.hourly_counts
    if counts is None:
        usable = isinstance(rows.frame.schema.get(time_column), pl.Datetime)
        counts = hourly_counts(rows.frame, time_column) if usable else {}
    first_hour, last_hour = (min(counts), max(counts)) if counts else (None, None)
    own = np.bincount(rows.row_partition, minlength=len(rows.partitions))
    results = []
    for part, window in enumerate(rows.partitions):
        if last_hour is None or window.start > last_hour:
            # Nothing later has landed: the hour is not delivered yet (or the data set ends);
            # the views' freshness SLAs flag a feed that stops.
            results.append(raw_volume(table, window.key, int(own[part]), [], note="after the newest landed record"))
            continue
        history = [int(counts.get(hour, 0)) for hour in same_local_hour_before(window.start, RAW_VOLUME_DAYS) if hour >= first_hour]
        results.append(raw_volume(table, window.key, int(own[part]), history))
    return results


def same_local_hour_before(hour: datetime, days: int) -> list[datetime]:
    """The same New York wall-clock hour on each of the `days` preceding days, as UTC instants
    (a local hour that does not exist that day, in a spring-forward gap, is left out)."""
    local = hour.astimezone(VOLUME_ZONE).replace(tzinfo=None)
    found = []
    for k in range(1, days + 1):
        wall = local - timedelta(days=k)
        instant = wall.replace(tzinfo=VOLUME_ZONE).astimezone(timezone.utc)
        if instant.astimezone(VOLUME_ZONE).replace(tzinfo=None) == wall:
            found.append(instant)
    return found


class SuiteEvaluator(Protocol):
    """What evaluates a GX suite over a frame: `validate_frame` (GX itself, the batch gates), or
    the stream's polars evaluation of the same expectations (`streaming/raw_rules_polars.py`)."""

    def __call__(self, suite: gx.ExpectationSuite, frame: pl.DataFrame, *, n_partitions: int,
                 parameters: Mapping[str, object] | None = None) -> ExpectationSuiteValidationResult: ...


def _run(
    table: str, suite: gx.ExpectationSuite, frame: pl.DataFrame, partitions: Sequence[PartitionWindow],
    time_column: str, identity: Sequence[str], schema: dict[str, pl.DataType], evaluate: SuiteEvaluator,
) -> tuple[list[dict[str, list[Finding]]], np.ndarray]:
    rows = assign_partitions(frame, time_column, partitions, closed="left")
    parameters = {"window_start": partitions[0].start, "window_end": partitions[-1].end}
    # One chunk (a no-op for the batch path's sorted frames): the row counts of gx_findings are
    # computed over this frame, and a stream batch arrives in many.
    declared = frame.select([c for c in frame.columns if c not in (SOURCE_FILE, SOURCE_ROW)]).rechunk()
    result = evaluate(suite, declared, n_partitions=len(partitions), parameters=parameters)
    found = gx_findings(result, declared, row_partition=rows, n_partitions=len(partitions), identity=identity)
    schema_check = f"{table.removeprefix('raw_')}_schema_matches"
    exact = dtype_findings(declared, schema)
    for per_check in found:
        per_check.setdefault(schema_check, []).extend(exact)
    return found, rows


def _add(found: list[dict[str, list[Finding]]], check: str, findings: Sequence[Finding]) -> None:
    for per_partition, finding in zip(found, findings):
        per_partition.setdefault(check, []).append(finding)


def _outcomes(table: str, rules: Mapping[str, RuleAction], key: str, found: dict[str, list[Finding]]) -> list[CheckOutcome]:
    return [
        outcome(check, table, key, found.get(check, []), blocking=rule.blocking, details={"action": rule.action.value})
        for check, rule in rules.items() if check != RAW_VOLUME
    ]


def _row_rules(
    table: str, frame: pl.DataFrame, found: list[dict[str, list[Finding]]], row_partition: np.ndarray,
    partitions: Sequence[PartitionWindow], key: Sequence[str], schema: dict[str, pl.DataType], facts: LandingFacts,
) -> _Rows:
    """The polars rules beside GX's: landing contract, deliveries, NaN (GX counts NaN as null)."""
    prefix = table.removeprefix("raw_")
    rows = _Rows(frame, row_partition, partitions, tuple(key))
    _add(found, f"{prefix}_landing_contract", _contract_findings(partitions, facts, "landed_files_match_contract"))
    conflicting, identical = _delivery_findings(rows, key, schema, facts)
    _add(found, "flights_unique" if table == FLIGHTS_TABLE else "weather_unique_observations", conflicting)
    _add(found, f"{prefix}_redelivered", identical)
    _add(found, f"{prefix}_values_not_nan", _nan_findings(rows, schema))
    return rows


def validate_raw_flights_partitions(
    frame: pl.DataFrame, *, partitions: Sequence[PartitionWindow], landing: LandingFacts | None = None,
    evaluate: SuiteEvaluator = validate_frame,
) -> dict[str, list[CheckOutcome]]:
    """The raw flights rules for contiguous hourly partitions in one GX call, per partition key;
    rows belong to the partition of their dep_known_at. `landing` carries what the landing zone
    knows beyond these rows (see LandingFacts); without it the frame is taken as the whole source.
    `evaluate` evaluates the suite (GX by default; the stream passes its polars evaluation)."""
    facts = landing or LandingFacts()
    single_small = len(partitions) == 1 and frame.height < MIN_FLIGHTS_FOR_NULL_RATE
    suite = _flights_suite(with_null_rate=not single_small)
    found, row_partition = _run(FLIGHTS_TABLE, suite, frame, partitions, FLIGHTS_PARTITION_COLUMN, FLIGHTS_KEY,
                                flights_schema(), evaluate)
    rows = _row_rules(FLIGHTS_TABLE, frame, found, row_partition, partitions, FLIGHTS_KEY, flights_schema(), facts)
    known = facts.known_keys
    if known is not None:
        _add(found, "flights_known_carrier", _known_key_findings(rows, {"carrier": known["carrier"]}, "carrier_in(raw_airlines)"))
        _add(found, "flights_known_airports", _known_key_findings(
            rows, {"origin": known["origin"], "dest": known["dest"]}, "origin_in(EWR, JFK, LGA), dest_in(raw_airports)"))
        _add(found, "flights_known_aircraft", _known_key_findings(rows, {"tailnum": known["tailnum"]}, "tailnum_in(raw_planes)"))
    counts = np.bincount(row_partition, minlength=len(partitions))
    volumes = _volume_outcomes(FLIGHTS_TABLE, rows, FLIGHTS_PARTITION_COLUMN, facts)
    results = {}
    for part, window in enumerate(partitions):
        if counts[part] < MIN_FLIGHTS_FOR_NULL_RATE:
            found[part]["flights_null_rate"] = [Finding(
                f"expect_column_values_to_not_be_null(mostly={1 - MAX_DEP_DELAY_NULL_FRACTION:g})", ("dep_delay",),
                True, f"skipped: {counts[part]} flights, fewer than {MIN_FLIGHTS_FOR_NULL_RATE}")]
        results[window.key] = [*_outcomes(FLIGHTS_TABLE, FLIGHTS_RULES, window.key, found[part]),
                               volumes[part].under(FLIGHTS_RULES[RAW_VOLUME])]
    return results


def validate_raw_flights(
    frame: pl.DataFrame, *, partition: str, window_start: datetime, window_end: datetime, landing: LandingFacts | None = None
) -> list[CheckOutcome]:
    """The raw flights rules for one hourly partition [window_start, window_end), in FLIGHTS_CHECKS order."""
    return validate_raw_flights_partitions(frame, partitions=_windows(partition, window_start, window_end), landing=landing)[partition]


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
        examples = tuple({k: json_value(v) for k, v in row.items()} for row in gaps.head(5).to_dicts())
        findings.append(Finding(rule, columns, gaps.height == 0, detail, {"missing_origin_hours": gaps.height}, examples))
    return findings


def validate_raw_weather_partitions(
    frame: pl.DataFrame, *, partitions: Sequence[PartitionWindow], landing: LandingFacts | None = None,
    evaluate: SuiteEvaluator = validate_frame,
) -> dict[str, list[CheckOutcome]]:
    """The raw weather rules for contiguous hourly partitions in one GX call, per partition key
    (`evaluate` as for flights)."""
    facts = landing or LandingFacts()
    found, row_partition = _run(WEATHER_TABLE, _weather_suite(), frame, partitions, WEATHER_PARTITION_COLUMN, WEATHER_KEY,
                                weather_schema(), evaluate)
    rows = _row_rules(WEATHER_TABLE, frame, found, row_partition, partitions, WEATHER_KEY, weather_schema(), facts)
    coverage = _hours_covered(frame, partitions)
    volumes = _volume_outcomes(WEATHER_TABLE, rows, WEATHER_PARTITION_COLUMN, facts)
    results = {}
    for part, window in enumerate(partitions):
        found[part]["weather_hours_covered"] = [coverage[part]]
        results[window.key] = [*_outcomes(WEATHER_TABLE, WEATHER_RULES, window.key, found[part]),
                               volumes[part].under(WEATHER_RULES[RAW_VOLUME])]
    return results


def validate_raw_weather(
    frame: pl.DataFrame, *, partition: str, window_start: datetime, window_end: datetime, landing: LandingFacts | None = None
) -> list[CheckOutcome]:
    """The raw weather rules for one hourly partition [window_start, window_end), in WEATHER_CHECKS order."""
    return validate_raw_weather_partitions(frame, partitions=_windows(partition, window_start, window_end), landing=landing)[partition]


def raw_volume(table: str, partition: str, row_count: int, same_hour_history: Sequence[int], *, note: str = "") -> CheckOutcome:
    """An hour's row count against the same hour of the preceding days: an empty or collapsed busy
    hour fails; a quiet hour, or an hour without history, passes with a note."""
    if same_hour_history and statistics.median(same_hour_history) >= MIN_MEDIAN_FOR_VOLUME[table]:
        return check_volume(table, partition, row_count, same_hour_history, RAW_VOLUME_FACTOR)
    note = note or ("no history for this hour" if not same_hour_history else "a quiet hour")
    return CheckOutcome(
        RAW_VOLUME, True, table, partition,
        f"table {table!r} partition {partition}: {row_count} rows accepted ({note})",
        {"row_count": row_count, "history_size": len(same_hour_history)},
    )
