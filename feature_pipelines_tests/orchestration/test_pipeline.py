"""Real Dagster runs over real Delta tables: idempotence, range equivalence, clear failures."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from feature_pipelines.orchestration.runs import materialize_range, materialize_window
from feature_pipelines.orchestration.schedules import DAILY_SNAPSHOT_JOB, HOURLY_SNAPSHOT_JOB, RAW_HOURLY_JOB
from feature_pipelines.sources import nycflights
from feature_pipelines_tests.conftest import (
    SMALL_END,
    SMALL_START,
    Pipeline,
    make_pipeline,
    step_failure_text,
    write_small_landing,
)

FEATURE_TABLES = ["origin_weather", "carrier_delay_stats", "route_delay_stats", "aircraft_utilisation"]
HOURLY_SNAPSHOT_VIEWS = ["origin_weather", "carrier_delay_stats"]


def _contents(pipeline: Pipeline, table: str) -> pl.DataFrame:
    """Table contents without created_timestamp, which records when a row was written."""
    frame = pipeline.store.read(table).drop("created_timestamp", strict=False)
    return frame.sort(frame.columns)


def _run_days(pipeline: Pipeline, first_day: str, last_day: str) -> None:
    """Raw hours of the days, then both feature jobs over the days (one run each)."""
    assert materialize_range(pipeline.defs, RAW_HOURLY_JOB, f"{first_day}-00:00", f"{last_day}-23:00", instance=pipeline.instance).result.success
    assert materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, first_day, last_day, instance=pipeline.instance).result.success
    assert materialize_range(pipeline.defs, DAILY_SNAPSHOT_JOB, first_day, last_day, instance=pipeline.instance).result.success


def test_materializing_twice_gives_identical_tables(pipeline: Pipeline) -> None:
    _run_days(pipeline, "2013-01-01", "2013-01-03")
    first = {t: _contents(pipeline, t) for t in FEATURE_TABLES + ["raw_flights"]}
    versions = {t: pipeline.store.version(t) for t in FEATURE_TABLES}
    _run_days(pipeline, "2013-01-01", "2013-01-03")
    for table, frame in first.items():
        assert frame.height > 0
        assert _contents(pipeline, table).equals(frame), table
    # Each re-run committed exactly one new version: a replace, not an append.
    assert {t: pipeline.store.version(t) for t in FEATURE_TABLES} == {t: v + 1 for t, v in versions.items()}


def test_hourly_snapshot_views_have_one_row_per_entity_and_hour(pipeline: Pipeline) -> None:
    _run_days(pipeline, "2013-01-01", "2013-01-01")
    weather = pipeline.store.read("origin_weather")
    # Weather starts at 06:00 UTC on Jan 1; snapshots at 07:00 .. 24:00, three airports each.
    assert weather["event_timestamp"].n_unique() == 18
    assert weather.group_by("origin", "event_timestamp").len()["len"].max() == 1
    assert weather["event_timestamp"].max() == datetime(2013, 1, 2, tzinfo=timezone.utc)


def test_range_backfill_equals_partition_by_partition(pipeline: Pipeline, tmp_path: Path, small_landing_root: Path) -> None:
    _run_days(pipeline, "2013-01-01", "2013-01-09")
    single = make_pipeline(tmp_path / "single", small_landing_root)
    assert materialize_range(single.defs, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-09-23:00", instance=single.instance).result.success
    days = ("2013-01-01", "2013-01-05", "2013-01-09")
    for day in days:
        for job in (HOURLY_SNAPSHOT_JOB, DAILY_SNAPSHOT_JOB):
            assert materialize_range(single.defs, job, day, day, instance=single.instance).result.success
    for table in FEATURE_TABLES:
        days_of_rows = (pl.col("event_timestamp") - pl.duration(microseconds=1)).dt.strftime("%Y-%m-%d")
        ranged = _contents(pipeline, table).filter(days_of_rows.is_in(days))
        alone = _contents(single, table)
        assert alone.height > 0
        assert ranged.equals(alone), table


def test_feature_run_refuses_upstream_history_never_materialized(pipeline: Pipeline) -> None:
    assert materialize_range(pipeline.defs, RAW_HOURLY_JOB, "2013-01-05-00:00", "2013-01-05-23:00", instance=pipeline.instance).result.success
    run = materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, "2013-01-05", "2013-01-05", instance=pipeline.instance, raise_on_error=False)
    assert not run.result.success
    refusals = [e for e in run.result.get_asset_check_evaluations()
                if e.check_name == "upstream_partitions_ready" and e.partition == "2013-01-05" and not e.passed]
    assert {e.asset_key.to_user_string() for e in refusals} == {"carrier_delay_stats", "origin_weather"}
    for refusal in refusals:
        text = refusal.description or ""
        assert "never materialised" in text and "2013-01-04-" in text, text
        assert ("'raw_flights'" in text) or ("'raw_weather'" in text), text
    assert not pipeline.store.exists("carrier_delay_stats")


def test_backfill_window_lands_raw_history_first(pipeline: Pipeline) -> None:
    start, end = datetime(2013, 1, 9, tzinfo=timezone.utc), datetime(2013, 1, 11, tzinfo=timezone.utc)
    runs = materialize_window(pipeline.defs, pipeline.settings, start, end, instance=pipeline.instance, now=end)
    assert [(r.job_name, r.first_partition, r.last_partition) for r in runs] == [
        ("raw_dimensions_job", "", ""),
        # Features start the training set's reach (TTL 2 days + 2 h lead, so 3 days) before it,
        # raw hours the longest window (7 days) before that, clamped at the data's start; raw
        # tables are days (judged hour by hour).
        (RAW_HOURLY_JOB, "2013-01-01", "2013-01-10"),
        (HOURLY_SNAPSHOT_JOB, "2013-01-06", "2013-01-10"),
        (DAILY_SNAPSHOT_JOB, "2013-01-06", "2013-01-10"),
        ("training_job", "2013-01-09", "2013-01-09"),
    ]
    assert all(r.result.success for r in runs)
    carrier = pipeline.store.read("carrier_delay_stats")
    assert carrier["event_timestamp"].max() <= end


def test_materialization_records_version_rows_schema_and_lineage(pipeline: Pipeline) -> None:
    assert materialize_range(pipeline.defs, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-03-23:00", instance=pipeline.instance).result.success
    run = materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, "2013-01-01", "2013-01-03", instance=pipeline.instance)
    events = [e for e in run.result.get_asset_materialization_events() if e.asset_key.to_user_string() == "carrier_delay_stats"]
    assert [e.partition for e in events] == ["2013-01-01", "2013-01-02", "2013-01-03"]
    metadata = events[0].materialization.metadata
    version = metadata["delta_version"].value
    assert version == pipeline.store.version("carrier_delay_stats")
    assert metadata["dagster/row_count"].value == pipeline.store.read("carrier_delay_stats", version=version).height
    assert [c.name for c in metadata["dagster/column_schema"].schema.columns][:2] == ["carrier", "event_timestamp"]
    lineage = metadata["dagster/column_lineage"].lineage.deps_by_column
    assert {d.column_name for d in lineage["carrier_dep_delay_mean_24h"]} == {"dep_delay", "dep_known_at"}


def test_time_travel_by_version_and_timestamp(pipeline: Pipeline) -> None:
    assert materialize_range(pipeline.defs, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-02-23:00", instance=pipeline.instance).result.success
    materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, "2013-01-01", "2013-01-01", instance=pipeline.instance)
    v0 = pipeline.store.version("origin_weather")
    before = pipeline.store.read("origin_weather")
    materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, "2013-01-02", "2013-01-02", instance=pipeline.instance)
    assert before.height > 0
    assert pipeline.store.read("origin_weather").height > before.height
    assert pipeline.store.read("origin_weather", version=v0).equals(before)
    # (A table's first data commit follows an empty create commit; the instant of v0 is the one.)
    commit = next(h["timestamp"] for h in DeltaTable(pipeline.store.table_uri("origin_weather")).history() if h["version"] == v0)
    as_of = datetime.fromtimestamp(commit / 1000, tz=timezone.utc)
    assert pipeline.store.scan("origin_weather", as_of=as_of).collect().equals(before)


def test_rewriting_one_partition_leaves_neighbours_untouched(pipeline: Pipeline) -> None:
    _run_days(pipeline, "2013-01-01", "2013-01-03")
    table = pipeline.store.read("carrier_delay_stats")
    assert materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, "2013-01-02", "2013-01-02", instance=pipeline.instance).result.success
    after = pipeline.store.read("carrier_delay_stats")
    in_day = pl.col("event_timestamp").is_between(
        datetime(2013, 1, 2, tzinfo=timezone.utc), datetime(2013, 1, 3, tzinfo=timezone.utc), closed="right"
    )
    assert after.filter(~in_day).equals(table.filter(~in_day))
    rewritten = after.filter(in_day)
    assert rewritten.height == table.filter(in_day).height > 0
    assert (rewritten["created_timestamp"] > table["created_timestamp"].max()).all()


@pytest.mark.parametrize(
    ("edit", "column", "expected"),
    [
        (lambda f: f.drop("dep_delay"), "dep_delay", "missing"),
        (lambda f: f.with_columns(pl.col("dep_delay").cast(pl.String)), "dep_delay", "String"),
    ],
    ids=["missing_column", "wrong_dtype"],
)
def test_bad_input_fails_naming_table_partition_column_and_changes_nothing(
    tmp_path: Path, small_landing_root: Path, edit, column: str, expected: str
) -> None:
    good = make_pipeline(tmp_path / "good", small_landing_root)
    _run_days(good, "2013-01-01", "2013-01-01")
    before = {t: (good.store.version(t), good.store.read(t)) for t in ("raw_flights", "carrier_delay_stats")}

    flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_END, closed="left"))
    bad_landing = write_small_landing(tmp_path / "bad_landing", flights=edit(flights))
    bad = make_pipeline(tmp_path / "good", bad_landing.root)  # same lake and instance, bad files landed
    bad.instance = good.instance
    # Raw tables are days judged hour by hour: this runs 2013-01-01's hours up to 12:00.
    run = materialize_range(bad.defs, RAW_HOURLY_JOB, "2013-01-01-12:00", "2013-01-01-12:00", instance=bad.instance, raise_on_error=False)
    assert not run.result.success
    assert "blocking asset checks failed" in step_failure_text(run.result)
    # The landed file breaks the contract: it is refused whole, named, and holds back its hours
    # (the day's evaluation lists them, each with its message).
    contract = next(c for c in run.result.get_asset_check_evaluations()
                    if c.check_name == "flights_landing_contract" and c.partition == "2013-01-01")
    message = contract.description or ""
    assert not contract.passed and "2013-01-01-12:00" in contract.metadata["failed_units"].value
    for part in ("'raw_flights'", "2013-01-01-12:00", "'part-0000.parquet'", repr(column), expected, "Int64"):
        assert part in message, (part, message)
    flight_hours = set(flights.filter(pl.col("dep_known_at") < datetime(2013, 1, 1, 13, tzinfo=timezone.utc))
                       ["dep_known_at"].dt.strftime("%Y-%m-%d-%H:00").to_list())
    assert set(contract.metadata["failed_units"].value) == flight_hours
    assert not [e for e in run.result.get_asset_materialization_events() if e.asset_key.to_user_string() == "raw_flights"]
    # Nothing changes: the features are untouched; in the raw table every hour with a flight is
    # held back, and the hours without one are written again empty (a commit that changes no row).
    assert bad.store.version("carrier_delay_stats") == before["carrier_delay_stats"][0]
    for table, (_, frame) in before.items():
        assert bad.store.read(table).equals(frame)
