"""Bad raw input, each through real Dagster runs: the named check fails naming table, partition,
column and rule; nothing downstream runs; the last good data stays; fixing the input turns green."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines import cli
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import HOURLY_SNAPSHOT_JOB, RAW_HOURLY_JOB
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.sources import nycflights
from feature_pipelines_tests.conftest import SMALL_END, SMALL_START, make_pipeline, write_small_landing

DAY = "2013-01-04"
BUSY_HOUR = datetime(2013, 1, 4, 15, tzinfo=timezone.utc)


def _flights() -> pl.DataFrame:
    return nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_END, closed="left"))


def _weather() -> pl.DataFrame:
    return nycflights.weather().filter(pl.col("observed_at").is_between(SMALL_START, SMALL_END, closed="left"))


def _in_day(column: str) -> pl.Expr:
    return pl.col(column).dt.date() == datetime(2013, 1, 4).date()


SCENARIOS: dict[str, tuple[str, Callable[[pl.DataFrame], pl.DataFrame], str, str, str, list[str]]] = {
    # name: (landing table, edit, failing check, table named, column named, other words expected)
    "column_dropped": ("flights", lambda f: f.drop("dep_delay"), "flights_schema_matches", "raw_flights", "dep_delay", ["missing"]),
    "dtype_changed": ("flights", lambda f: f.with_columns(pl.col("dep_delay").cast(pl.String)), "flights_schema_matches", "raw_flights", "dep_delay", ["String"]),
    "duplicate_rows": ("flights", lambda f: pl.concat([f, f.filter(_in_day("dep_known_at")).head(5)]), "flights_unique", "raw_flights", "flight_number", ["duplicated"]),
    "negative_distance": ("flights", lambda f: f.with_columns(pl.when(_in_day("dep_known_at") & (pl.col("flight_number") % 7 == 0)).then(-pl.col("distance")).otherwise(pl.col("distance")).alias("distance")), "flights_values_in_range", "raw_flights", "distance", ["out of range"]),
    "delay_of_10000_minutes": ("flights", lambda f: f.with_columns(pl.when(_in_day("dep_known_at") & (pl.col("flight_number") % 7 == 0)).then(10_000).otherwise(pl.col("dep_delay")).alias("dep_delay")), "flights_values_in_range", "raw_flights", "dep_delay", ["out of range"]),
    "empty_busy_hour": ("flights", lambda f: f.filter(pl.col("dep_known_at").dt.truncate("1h") != BUSY_HOUR), "row_volume_within_tolerance", "raw_flights", "", ["0 rows"]),
    "thirty_percent_nulls": ("weather", lambda w: w.with_columns(pl.when(_in_day("observed_at") & (pl.int_range(pl.len()) % 10 < 3)).then(None).otherwise(pl.col("temp")).alias("temp")), "feature_nulls_within_limits", "origin_weather", "origin_temp_latest", ["null", "mostly"]),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_bad_input_is_gated_and_recovers(
    scenario: str, tmp_path: Path, small_landing_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    landing_table, edit, check, table, column, words = SCENARIOS[scenario]
    good = make_pipeline(tmp_path, small_landing_root)
    # History: three good days (raw hours, features, publish), and the good Jan 4 for "previous good data".
    assert materialize_range(good.defs, RAW_HOURLY_JOB, "2013-01-01-00:00", f"{DAY}-23:00", instance=good.instance).result.success
    assert materialize_range(good.defs, HOURLY_SNAPSHOT_JOB, "2013-01-01", DAY, instance=good.instance).result.success
    before = {t: (good.store.version(t), good.store.read(t)) for t in ("raw_flights", "raw_weather", "origin_weather", "carrier_delay_stats")}

    frames = {"flights": _flights(), "weather": _weather()}
    frames[landing_table] = edit(frames[landing_table])
    bad = make_pipeline(tmp_path, write_small_landing(tmp_path / "bad", **frames).root)
    bad.instance = good.instance
    raw = materialize_range(bad.defs, RAW_HOURLY_JOB, f"{DAY}-00:00", f"{DAY}-23:00", instance=bad.instance, raise_on_error=False)
    features = materialize_range(bad.defs, HOURLY_SNAPSHOT_JOB, DAY, DAY, instance=bad.instance, raise_on_error=False)
    evaluations = [c for run in (raw, features) for c in run.result.get_asset_check_evaluations()]
    failed = [c for c in evaluations if c.check_name == check and not c.passed]
    assert failed, [(c.check_name, c.passed) for c in evaluations]
    message = failed[0].description or ""
    for word in [repr(table), DAY, repr(column) if column else "", *words]:
        assert word in message, (word, message)
    # Nothing downstream of the bad data ran: its view's publish did not happen in either run.
    downstream = "carrier_delay_stats_online" if landing_table == "flights" else "origin_weather_online"
    published = {e.asset_key.to_user_string() for run in (raw, features) for e in run.result.get_asset_materialization_events()}
    assert downstream not in published
    # The gated table still serves its last good data, unchanged; every earlier version of the
    # raw table stays readable by time travel (a raw rule that did not object lets the copy land).
    version, frame = before[table]
    assert bad.store.version(table) == version
    assert bad.store.read(table).equals(frame)
    raw_table = f"raw_{landing_table}"
    assert bad.store.read(raw_table, version=before[raw_table][0]).equals(before[raw_table][1])
    # The command line summarises the last run's outcomes and exits 1 on a blocking failure.
    monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", bad.settings.lake_root)
    assert cli.main(["checks"]) == 1
    assert check in capsys.readouterr().out
    partitions = [DAY] if table == "origin_weather" else [f"{DAY}-{h:02d}:00" for h in range(24)]
    assert QualityLedger(bad.store).failed_partitions(table, partitions).height > 0

    # Fix the input and re-run: everything goes green and publishing resumes.
    fixed = make_pipeline(tmp_path, small_landing_root)
    fixed.instance = good.instance
    assert materialize_range(fixed.defs, RAW_HOURLY_JOB, f"{DAY}-00:00", f"{DAY}-23:00", instance=fixed.instance).result.success
    rerun = materialize_range(fixed.defs, HOURLY_SNAPSHOT_JOB, DAY, DAY, instance=fixed.instance)
    assert rerun.result.success
    assert all(c.passed for c in rerun.result.get_asset_check_evaluations())
    assert downstream in {e.asset_key.to_user_string() for e in rerun.result.get_asset_materialization_events()}
    assert QualityLedger(fixed.store).failed_partitions(table, partitions).height == 0
