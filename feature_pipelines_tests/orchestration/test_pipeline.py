"""Real Dagster runs over real Delta tables: idempotence, range equivalence, clear failures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import DAILY_JOB, HOURLY_JOB
from feature_pipelines.sources import nycflights
from feature_pipelines_tests.conftest import SMALL_END, SMALL_START, Pipeline, make_pipeline, step_failure_text, write_small_landing

FEATURE_TABLES = ["origin_weather", "carrier_delay_stats", "route_delay_stats", "aircraft_utilisation"]


def _contents(pipeline: Pipeline, table: str) -> pl.DataFrame:
    """Table contents without created_timestamp, which records when a row was written."""
    frame = pipeline.store.read(table).drop("created_timestamp", strict=False)
    return frame.sort(frame.columns)


def _run_demo_range(pipeline: Pipeline, hours: tuple[str, str], days: tuple[str, str]) -> None:
    assert materialize_range(pipeline.defs, HOURLY_JOB, *hours, instance=pipeline.instance).result.success
    assert materialize_range(pipeline.defs, DAILY_JOB, *days, instance=pipeline.instance).result.success


def test_materializing_twice_gives_identical_tables(pipeline: Pipeline) -> None:
    _run_demo_range(pipeline, ("2013-01-01-00:00", "2013-01-02-23:00"), ("2013-01-01", "2013-01-02"))
    first = {t: _contents(pipeline, t) for t in FEATURE_TABLES + ["raw_flights"]}
    versions = {t: pipeline.store.version(t) for t in FEATURE_TABLES}
    _run_demo_range(pipeline, ("2013-01-01-00:00", "2013-01-02-23:00"), ("2013-01-01", "2013-01-02"))
    for table, frame in first.items():
        assert _contents(pipeline, table).equals(frame), table
        assert frame.height > 0
    # Each re-run committed exactly one new version: a replace, not an append.
    assert {t: pipeline.store.version(t) for t in FEATURE_TABLES} == {t: v + 1 for t, v in versions.items()}


def test_range_backfill_equals_partition_by_partition(pipeline: Pipeline, tmp_path: Path, small_landing_root: Path) -> None:
    _run_demo_range(pipeline, ("2013-01-01-00:00", "2013-01-03-23:00"), ("2013-01-01", "2013-01-03"))
    single = make_pipeline(tmp_path / "single", small_landing_root)
    # The raw history first (trailing windows read it), then feature partitions one run each.
    raw = ["raw_flights", "raw_weather"]
    assert materialize_range(single.defs, HOURLY_JOB, "2013-01-01-00:00", "2013-01-03-23:00", instance=single.instance, assets=raw).result.success
    hourly_views = ["origin_weather", "carrier_delay_stats"]
    hours = ("2013-01-01-00:00", "2013-01-02-00:00", "2013-01-02-13:00", "2013-01-03-23:00")
    for hour in hours:
        assert materialize_range(single.defs, HOURLY_JOB, hour, hour, instance=single.instance, assets=hourly_views).result.success
    for day in ("2013-01-01", "2013-01-02", "2013-01-03"):
        assert materialize_range(single.defs, DAILY_JOB, day, day, instance=single.instance).result.success
    snapshots = [datetime.strptime(h, "%Y-%m-%d-%H:%M").replace(tzinfo=timezone.utc) + timedelta(hours=1) for h in hours]
    for table in FEATURE_TABLES:
        ranged = _contents(pipeline, table)
        if table in hourly_views:
            ranged = ranged.filter(pl.col("event_timestamp").is_in(snapshots))
        alone = _contents(single, table)
        assert alone.height > 0
        assert ranged.equals(alone), table


def test_feature_run_refuses_upstream_history_never_materialized(pipeline: Pipeline) -> None:
    run = materialize_range(pipeline.defs, HOURLY_JOB, "2013-01-05-00:00", "2013-01-05-00:00", instance=pipeline.instance, raise_on_error=False)
    assert not run.result.success
    assert "were never materialised" in step_failure_text(run.result)
    assert not pipeline.store.exists("carrier_delay_stats")


def test_materialization_records_version_rows_schema_and_lineage(pipeline: Pipeline) -> None:
    run = materialize_range(pipeline.defs, HOURLY_JOB, "2013-01-01-00:00", "2013-01-01-02:00", instance=pipeline.instance)
    events = [e for e in run.result.get_asset_materialization_events() if e.asset_key.to_user_string() == "carrier_delay_stats"]
    assert [e.partition for e in events] == ["2013-01-01-00:00", "2013-01-01-01:00", "2013-01-01-02:00"]
    metadata = events[0].materialization.metadata
    version = metadata["delta_version"].value
    assert version == pipeline.store.version("carrier_delay_stats")
    assert metadata["dagster/row_count"].value == pipeline.store.read("carrier_delay_stats", version=version).height
    assert [c.name for c in metadata["dagster/column_schema"].schema.columns][:2] == ["carrier", "event_timestamp"]
    lineage = metadata["dagster/column_lineage"].lineage.deps_by_column
    assert {d.column_name for d in lineage["carrier_dep_delay_mean_24h"]} == {"dep_delay", "dep_known_at"}


def test_time_travel_by_version_and_timestamp(pipeline: Pipeline) -> None:
    materialize_range(pipeline.defs, HOURLY_JOB, "2013-01-01-00:00", "2013-01-01-07:00", instance=pipeline.instance)
    v0 = pipeline.store.version("origin_weather")
    before = pipeline.store.read("origin_weather")
    materialize_range(pipeline.defs, HOURLY_JOB, "2013-01-01-08:00", "2013-01-01-09:00", instance=pipeline.instance)
    assert before.height > 0
    assert pipeline.store.read("origin_weather").height > before.height
    assert pipeline.store.read("origin_weather", version=v0).equals(before)
    from deltalake import DeltaTable

    history = DeltaTable(pipeline.store.table_uri("origin_weather")).history()
    first_commit = min(h["timestamp"] for h in history)
    from datetime import datetime, timezone

    as_of = datetime.fromtimestamp(first_commit / 1000, tz=timezone.utc)
    assert pipeline.store.scan("origin_weather", as_of=as_of).collect().equals(before)


def test_rewriting_one_partition_leaves_neighbours_untouched(pipeline: Pipeline) -> None:
    materialize_range(pipeline.defs, HOURLY_JOB, "2013-01-01-00:00", "2013-01-01-15:00", instance=pipeline.instance)
    table = pipeline.store.read("carrier_delay_stats")
    materialize_range(pipeline.defs, HOURLY_JOB, "2013-01-01-13:00", "2013-01-01-13:00", instance=pipeline.instance)
    after = pipeline.store.read("carrier_delay_stats")
    snapshot = pl.datetime(2013, 1, 1, 14, time_zone="UTC")
    assert after.filter(pl.col("event_timestamp") != snapshot).equals(table.filter(pl.col("event_timestamp") != snapshot))
    rewritten = after.filter(pl.col("event_timestamp") == snapshot)
    assert rewritten.height == table.filter(pl.col("event_timestamp") == snapshot).height > 0
    assert (rewritten["created_timestamp"] > table["created_timestamp"].max()).all()


@pytest.mark.parametrize(
    ("edit", "column", "expected"),
    [
        (lambda f: f.drop("dep_delay"), "dep_delay", "is missing"),
        (lambda f: f.with_columns(pl.col("dep_delay").cast(pl.String)), "dep_delay", "has dtype String, expected Int64"),
    ],
    ids=["missing_column", "wrong_dtype"],
)
def test_bad_input_fails_naming_table_partition_column_and_changes_nothing(
    tmp_path: Path, small_landing_root: Path, edit, column: str, expected: str
) -> None:
    good = make_pipeline(tmp_path / "good", small_landing_root)
    assert materialize_range(good.defs, HOURLY_JOB, "2013-01-01-00:00", "2013-01-01-03:00", instance=good.instance).result.success
    before = {t: (good.store.version(t), good.store.read(t)) for t in ("raw_flights", "carrier_delay_stats")}

    flights = nycflights.flights().filter(pl.col("scheduled_departure_at").is_between(SMALL_START, SMALL_END, closed="left"))
    bad_landing = write_small_landing(tmp_path / "bad_landing", flights=edit(flights))
    bad = make_pipeline(tmp_path / "good", bad_landing.root)  # same lake and instance, bad files landed
    bad.instance = good.instance
    run = materialize_range(bad.defs, HOURLY_JOB, "2013-01-01-02:00", "2013-01-01-03:00", instance=bad.instance, raise_on_error=False)
    assert not run.result.success
    message = step_failure_text(run.result)
    assert "raw_flights" in message and "2013-01-01-02:00" in message and repr(column) in message and expected in message
    for table, (version, frame) in before.items():
        assert bad.store.version(table) == version
        assert bad.store.read(table).equals(frame)
