"""Bad input delivered the way an hourly feed delivers it, each through real Dagster runs.

Every case lands its fault in the landing zone either as a new file beside the earlier deliveries
or by replacing a whole file, then runs the day. Under its rule's action:
- `fail` holds back exactly the partitions it names, and writes the rest of the day;
- `drop` writes the partition without the offending rows, which go to the quarantine with their
  rule, and counts them;
- nothing good is lost, and every message names the table, the partition, the column and the rule.
Fixing the input and re-running admits the partition again and empties its quarantine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey

from feature_pipelines import cli
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.orchestration.partitions import partitions_for, raw_partitions
from feature_pipelines.orchestration.runs import RangeRun, materialize_range
from feature_pipelines.orchestration.schedules import HOURLY_SNAPSHOT_JOB, RAW_HOURLY_JOB
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.quarantine import ACTION, PARTITION, RULE, Quarantine
from feature_pipelines.sources import nycflights
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines_tests.conftest import SMALL_END, SMALL_START, Pipeline, make_pipeline, write_small_landing
from feature_pipelines_tests.orchestration.ledger_view import judged_hours

DAY = "2013-01-04"
DAY_START = datetime(2013, 1, 4, tzinfo=timezone.utc)
HOURS = [f"{DAY}-{h:02d}:00" for h in range(24)]
BUSY = datetime(2013, 1, 4, 15, tzinfo=timezone.utc)
BUSY_KEY = "2013-01-04-15:00"
NEW_FILE = "part-0001-fault.parquet"
SEED = "part-0000.parquet"


def _flights() -> pl.DataFrame:
    return nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_END, closed="left"))


def _weather() -> pl.DataFrame:
    return nycflights.weather().filter(pl.col("observed_at").is_between(SMALL_START, SMALL_END, closed="left"))


def _in_hour(column: str, hour: datetime = BUSY) -> pl.Expr:
    return pl.col(column).is_between(hour, hour + timedelta(hours=1), closed="left")


def _nth_in_hour(column: str, keep: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """A mask of the rows of the busy hour chosen by `keep` over their rank within the hour."""
    rank = pl.int_range(pl.len()).over(_in_hour(column))
    return _in_hour(column) & keep(rank)


@dataclass(frozen=True)
class Fault:
    """One bad delivery: how it lands, and what the gates must do about it."""

    table: str  # landing table
    deliver: Callable[[LandingZone], None]
    asset: str  # the table whose check objects
    check: str
    action: str  # "fail" or "drop"
    partitions: tuple[str, ...]  # the partitions the check flags
    column: str  # the column the message names ("" when the rule is about the partition)
    words: tuple[str, ...] = ()
    dropped: int = 0  # rows the drop action removes
    features: bool = False  # the check belongs to a feature view: run its job too
    extra: dict[str, object] = field(default_factory=dict)


def _new_file(table: str, make: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[LandingZone], None]:
    def deliver(zone: LandingZone) -> None:
        source = _flights() if table == "flights" else _weather()
        zone.put(table, make(source), file_name=NEW_FILE)
    return deliver


def _replace(table: str, edit: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[LandingZone], None]:
    def deliver(zone: LandingZone) -> None:
        source = _flights() if table == "flights" else _weather()
        zone.put(table, edit(source), file_name=SEED)
    return deliver


def _naive(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(c).dt.replace_time_zone(None) for c, t in frame.schema.items() if isinstance(t, pl.Datetime))


def _set_where(mask: pl.Expr, column: str, value: pl.Expr) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda f: f.with_columns(pl.when(mask).then(value).otherwise(pl.col(column)).alias(column))


def _redelivered_later(frame: pl.DataFrame) -> pl.DataFrame:
    """The first flight of 10:00 delivered again with a delay an hour longer: it moves to 11:00."""
    original = frame.filter(_in_hour("dep_known_at", datetime(2013, 1, 4, 10, tzinfo=timezone.utc)), ~pl.col("cancelled")).head(1)
    late = pl.duration(minutes=60)
    return original.with_columns(pl.col("dep_delay") + 60, pl.col("departed_at") + late, pl.col("dep_known_at") + late,
                                 pl.col("arrived_at") + late, pl.col("arr_delay") + 60)


def _unknown_carrier(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(_in_hour("dep_known_at")).head(1).with_columns(pl.lit("ZZ").alias("carrier"), pl.lit(9999).cast(pl.Int64).alias("flight_number"))


FAULTS: dict[str, Fault] = {
    "column_dropped_in_a_new_file": Fault(
        "flights", _new_file("flights", lambda f: f.filter(_in_hour("dep_known_at")).drop("dep_delay")),
        "raw_flights", "flights_landing_contract", "fail", (BUSY_KEY,), "dep_delay", (NEW_FILE, "missing", "Int64")),
    "dtype_changed_in_the_whole_file": Fault(
        "flights", _replace("flights", lambda f: f.with_columns(pl.col("dep_delay").cast(pl.String))),
        # The file covers every hour of the day that has a flight (06:00 and 08:00 UTC have none).
        "raw_flights", "flights_landing_contract", "fail", tuple(h for h in HOURS if h[-5:] not in ("06:00", "08:00")),
        "dep_delay", (SEED, "expected Int64, found String")),
    "naive_times_in_a_new_file": Fault(
        "flights", _new_file("flights", lambda f: _naive(f.filter(_in_hour("dep_known_at")))),
        "raw_flights", "flights_landing_contract", "fail",
        # Its zone is unknown, so it holds back every hour it could cover under a real UTC offset.
        tuple(HOURS[1:]), "dep_known_at", (NEW_FILE, "without an explicit zone")),
    "busy_hour_emptied": Fault(
        "flights", _replace("flights", lambda f: f.filter(~_in_hour("dep_known_at"))),
        "raw_flights", "row_volume_within_tolerance", "fail", (BUSY_KEY,), "", ("0 rows",)),
    "negative_distance_on_one_flight": Fault(
        "flights", _replace("flights", _set_where(_nth_in_hour("dep_known_at", lambda r: r == 3), "distance", -pl.col("distance"))),
        "raw_flights", "flights_values_in_range", "drop", (BUSY_KEY,), "distance", ("out of range", "dropped to quarantine"), dropped=1),
    "delay_of_10000_minutes_on_one_flight": Fault(
        "flights", _replace("flights", _set_where(_nth_in_hour("dep_known_at", lambda r: r == 5) & ~pl.col("cancelled"), "dep_delay", pl.lit(10_000))),
        "raw_flights", "flights_values_in_range", "drop", (BUSY_KEY,), "dep_delay", ("out of range",), dropped=1),
    "negative_distance_on_a_third_of_an_hour": Fault(
        "flights", _replace("flights", _set_where(_nth_in_hour("dep_known_at", lambda r: r % 3 == 0), "distance", -pl.col("distance"))),
        "raw_flights", "flights_values_in_range", "fail", (BUSY_KEY,), "distance", ("over the budget",)),
    "unknown_carrier_in_a_new_file": Fault(
        "flights", _new_file("flights", _unknown_carrier),
        "raw_flights", "flights_known_carrier", "drop", (BUSY_KEY,), "carrier", ("ZZ", "dimension tables do not know"), dropped=1, features=True),
    "record_redelivered_an_hour_later_with_other_values": Fault(
        "flights", _new_file("flights", _redelivered_later),
        "raw_flights", "flights_unique", "drop", ("2013-01-04-11:00",), "flight_number", ("other values than their first delivery",), dropped=1),
    "identical_redelivery_of_five_flights": Fault(
        "flights", _new_file("flights", lambda f: f.filter(_in_hour("dep_known_at")).head(5)),
        "raw_flights", "flights_redelivered", "drop", (BUSY_KEY,), "flight_number", ("identical copies",), dropped=5),
    "nan_temperature": Fault(
        "weather", _replace("weather", _set_where(_nth_in_hour("observed_at", lambda r: r == 1), "temp", pl.lit(float("nan")))),
        "raw_weather", "weather_values_not_nan", "drop", (BUSY_KEY,), "temp", ("NaN",), dropped=1),
    "thirty_percent_null_temperatures": Fault(
        "weather", _replace("weather", _set_where(
            (pl.col("observed_at").dt.date() == DAY_START.date()) & (pl.int_range(pl.len()) % 10 < 3), "temp", pl.lit(None))),
        "origin_weather", "feature_nulls_within_limits", "fail", (DAY,), "origin_temp_latest", ("null", "mostly"), features=True),
}


def _run(pipeline: Pipeline, features: bool) -> list[RangeRun]:
    runs = [materialize_range(pipeline.defs, RAW_HOURLY_JOB, HOURS[0], HOURS[-1], instance=pipeline.instance, raise_on_error=False)]
    if features:
        runs.append(materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, DAY, DAY, instance=pipeline.instance, raise_on_error=False))
    return runs


def _flagged(runs: list[RangeRun], asset: str, check: str) -> dict[str, object]:
    """Per partition (per hour for a raw table: its days are judged hour by hour, and a day's
    evaluation lists the hours it flagged), the evaluation of `check` that failed or dropped rows."""
    flagged = {}
    for run in runs:
        for e in run.result.get_asset_check_evaluations():
            if e.asset_key == AssetKey(asset) and e.check_name == check and e.partition is not None:
                units = e.metadata.get("units")
                flagged.update({unit: e for unit in units.value} if units is not None else {e.partition: e})
    return flagged


def _partition_rows(frame: pl.DataFrame, column: str, key: str) -> pl.DataFrame:
    start = datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=timezone.utc)
    return frame.filter(_in_hour(column, start))


@pytest.mark.parametrize("name", list(FAULTS))
def test_bad_delivery_is_isolated_and_recovers(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fault = FAULTS[name]
    zone = write_small_landing(tmp_path / "landing")
    pipeline = make_pipeline(tmp_path, zone.root)
    if fault.features:  # the day's trailing windows read the day before
        assert materialize_range(pipeline.defs, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-03-23:00", instance=pipeline.instance).result.success
    assert all(run.result.success for run in _run(pipeline, fault.features))
    raw_table = f"raw_{fault.table}"
    time_column = "dep_known_at" if fault.table == "flights" else "observed_at"
    good = pipeline.store.read(raw_table)
    good_feature = pipeline.store.read(fault.asset) if fault.features else None

    fault.deliver(zone)
    runs = _run(pipeline, fault.features)
    flagged = _flagged(runs, fault.asset, fault.check)
    assert set(flagged) == set(fault.partitions), sorted(flagged)
    for key, evaluation in flagged.items():
        message = evaluation.description or ""
        for word in (repr(fault.asset), key, repr(fault.column) if fault.column else "", *fault.words):
            assert word in message, (word, message)
    quarantine = Quarantine(pipeline.store).rows(fault.asset)
    after = pipeline.store.read(raw_table)

    if fault.action == "fail":
        assert not runs[-1 if fault.features else 0].result.success
        assert all(not e.passed for e in flagged.values())
        held = set(fault.partitions)
        # Held back: those partitions keep their last good rows; red in the partitions view.
        target = pipeline.store.read(fault.asset)
        before = good_feature if fault.features else good
        stamp = "event_timestamp" if fault.features else time_column
        if not fault.features:
            for key in held:
                assert _partition_rows(target, stamp, key).equals(_partition_rows(before, stamp, key)), key
        partitions_def = partitions_for(Partitioning.DAILY, pipeline.settings) if fault.features else raw_partitions(pipeline.settings)
        # Red in the partitions view: the day (a raw day holding a held-back hour gets no materialization).
        status = pipeline.instance.get_status_by_partition(AssetKey(fault.asset), [DAY], partitions_def)
        assert {k for k, s in (status or {}).items() if s is not None and s.value == "FAILED"} == {DAY}
        assert set(quarantine.filter(pl.col(ACTION) == "fail")[PARTITION].unique().to_list()) <= held
        if fault.asset == raw_table:
            # Hour by hour: the ledger holds back exactly those hours, and every other hour of the
            # day was judged and written again in this run (nothing good is lost).
            assert set(QualityLedger(pipeline.store).failed_partitions(raw_table, HOURS)["partition"].to_list()) == held
            assert judged_hours(pipeline.store, raw_table, runs[0].result.run_id) == set(HOURS)
            for key in set(HOURS) - held:
                assert _partition_rows(target, stamp, key).equals(_partition_rows(before, stamp, key)), key
            assert not any(e.asset_key == AssetKey(raw_table) for e in runs[0].result.get_asset_materialization_events())
    else:
        assert all(run.result.success for run in runs), name
        assert all(e.passed for e in flagged.values())
        dropped = quarantine.filter(pl.col(RULE) == fault.check, pl.col(ACTION) == "drop")
        assert dropped.height == fault.dropped
        assert set(dropped[PARTITION].to_list()) == set(fault.partitions)
        # The partition was written without exactly those rows; nothing else was lost.
        delivered = pl.concat([pl.read_parquet(path) for path in zone.files(fault.table)], how="vertical_relaxed")
        keys = ["origin", "observed_at"] if fault.table == "weather" else ["carrier", "flight_number", "scheduled_departure_at", "origin"]
        columns = list(good.columns)
        kept = after.select(columns)
        # The first delivery of every record wins; a value rule removes exactly its rows.
        expected = delivered.select(columns).unique(subset=keys, keep="first", maintain_order=True)
        if fault.check not in ("flights_unique", "flights_redelivered"):
            expected = expected.join(dropped.select(columns), on=columns, how="anti", nulls_equal=True)
        expected = expected.filter(pl.col(time_column).is_between(DAY_START, DAY_START + timedelta(days=1), closed="left"))
        day_rows = kept.filter(pl.col(time_column).is_between(DAY_START, DAY_START + timedelta(days=1), closed="left"))
        assert day_rows.sort(keys).equals(expected.sort(keys))
        if fault.check == "flights_known_carrier":
            assert "ZZ" not in pipeline.store.read("carrier_delay_stats")["carrier"].to_list()
        metadata = next(e.step_materialization_data.materialization.metadata for e in runs[0].result.get_asset_materialization_events()
                        if e.asset_key == AssetKey(raw_table))
        assert metadata["dropped_rows"].value >= fault.dropped

    monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", pipeline.settings.lake_root)
    assert cli.main(["quarantine"]) == 0
    assert fault.check in capsys.readouterr().out

    # Fix the input and re-run: the partitions are admitted and leave the quarantine.
    (zone.table_dir(fault.table) / NEW_FILE).unlink(missing_ok=True)
    zone.put(fault.table, _flights() if fault.table == "flights" else _weather(), file_name=SEED)
    rerun = _run(pipeline, fault.features)
    assert all(run.result.success for run in rerun)
    assert Quarantine(pipeline.store).rows(fault.asset).filter(pl.col(PARTITION).is_in(list(fault.partitions))).height == 0
    assert pipeline.store.read(raw_table).sort(time_column, *good.columns[:2]).equals(good.sort(time_column, *good.columns[:2]))
