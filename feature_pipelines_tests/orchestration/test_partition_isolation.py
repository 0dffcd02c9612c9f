"""One bad hour holds back only itself, and what reads it; one clock per backfill.

Real Dagster runs over the real first days of 2013: a 10-day raw run with one emptied busy hour
writes the other 239 hours and holds back that one; raw tables are daily partitions judged hour by
hour, so its day shows red, and the day's check evaluation and the quality ledger name exactly that
hour. The feature views then materialise every day whose windows do not read it and refuse, by
name, the days that do. A backfill whose clock is HH:59:40 succeeds although the hour turns while
it runs.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
from dagster import AssetKey

from feature_pipelines.definitions import build_definitions
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.partitions import raw_partitions
from feature_pipelines.orchestration.runs import materialize_range, materialize_window
from feature_pipelines.orchestration.schedules import DAILY_SNAPSHOT_JOB, HOURLY_SNAPSHOT_JOB, RAW_HOURLY_JOB
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.sources import nycflights
from feature_pipelines_tests.conftest import SMALL_END, SMALL_START, make_pipeline, write_small_landing
from feature_pipelines_tests.orchestration.ledger_view import judged_hours

BAD_HOUR = datetime(2013, 1, 5, 15, tzinfo=timezone.utc)
BAD_KEY = "2013-01-05-15:00"
BAD_DAY = "2013-01-05"
DAYS = [f"2013-01-{d:02d}" for d in range(1, 11)]


def _reads_bad_hour(view_name: str, day: str) -> bool:
    """Whether the day's snapshots read raw events of the bad hour: [start + cadence - W - L, end)."""
    view = FEATURE_VIEWS[view_name]
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    low = start + view.cadence.interval - view.max_window - view.source.max_lateness
    return view.source.asset == "raw_flights" and low < BAD_HOUR + timedelta(hours=1) and BAD_HOUR < start + timedelta(days=1)


def test_a_failed_hour_holds_back_itself_and_only_what_reads_it(tmp_path: Path) -> None:
    flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_END, closed="left"))
    emptied = flights.filter(pl.col("dep_known_at").dt.truncate("1h") != BAD_HOUR)
    pipeline = make_pipeline(tmp_path, write_small_landing(tmp_path / "landing", flights=emptied).root)
    days = raw_partitions(pipeline.settings)
    keys = [f"{day}-{h:02d}:00" for day in DAYS for h in range(24)]
    assert len(keys) == 240

    raw = materialize_range(pipeline.defs, RAW_HOURLY_JOB, DAYS[0], DAYS[-1], instance=pipeline.instance, raise_on_error=False,
                            now=datetime(2013, 1, 11, tzinfo=timezone.utc))
    assert not raw.result.success
    # The hour is the unit held back: the ledger judged all 240 hours and failed exactly the bad one.
    ledger = QualityLedger(pipeline.store)
    assert set(ledger.failed_partitions("raw_flights", keys)["partition"].to_list()) == {BAD_KEY}
    assert ledger.failed_partitions("raw_weather", keys).height == 0
    held = [e for e in raw.result.get_asset_check_evaluations() if e.asset_key == AssetKey("raw_flights") and not e.passed and e.partition]
    assert {e.partition for e in held} == {BAD_DAY}
    assert all(e.metadata["failed_units"].value == [BAD_KEY] and BAD_KEY in (e.description or "") for e in held)
    # Its day is red in the partitions view (no materialization), every other day is materialised.
    assert pipeline.instance.get_materialized_partitions(AssetKey("raw_flights")) == set(DAYS) - {BAD_DAY}
    assert pipeline.instance.get_materialized_partitions(AssetKey("raw_weather")) == set(DAYS)
    status = pipeline.instance.get_status_by_partition(AssetKey("raw_flights"), DAYS, days) or {}
    assert {k for k, s in status.items() if s is not None and s.value == "FAILED"} == {BAD_DAY}
    assert {k for k, s in status.items() if s is not None and s.value == "MATERIALIZED"} == set(DAYS) - {BAD_DAY}
    # The day's other 23 hours are written (with every other day's hours): the table holds every row.
    stored = pipeline.store.read("raw_flights")
    assert stored.height == emptied.filter(pl.col("dep_known_at") < datetime(2013, 1, 11, tzinfo=timezone.utc)).height

    for job in (HOURLY_SNAPSHOT_JOB, DAILY_SNAPSHOT_JOB):
        run = materialize_range(pipeline.defs, job, DAYS[0], DAYS[-1], instance=pipeline.instance, raise_on_error=False)
        views = [v for v in FEATURE_VIEWS.values() if v.cadence is (Partitioning.HOURLY if job == HOURLY_SNAPSHOT_JOB else Partitioning.DAILY)]
        for view in views:
            refused = {day for day in DAYS if _reads_bad_hour(view.name, day)}
            assert pipeline.instance.get_materialized_partitions(AssetKey(view.name)) == set(DAYS) - refused, view.name
            refusals = {e.partition: e.description or "" for e in run.result.get_asset_check_evaluations()
                        if e.asset_key == AssetKey(view.name) and e.check_name == "upstream_partitions_ready" and e.partition}
            assert set(refusals) == refused, view.name
            for text in refusals.values():
                assert "'raw_flights'" in text and BAD_KEY in text and "held back" in text, text
        assert run.result.success is not any(_reads_bad_hour(v.name, d) for v in views for d in DAYS)
    # The weather view does not read flights: every day of it is there.
    assert pipeline.instance.get_materialized_partitions(AssetKey("origin_weather")) == set(DAYS)


def test_a_backfill_whose_clock_reads_hh_59_40_succeeds(empty_online_store: None, tmp_path: Path) -> None:
    """The clock is read once and every run computes up to it, so the hours that close while the
    backfill runs (here: every hour since the clock) are never needed."""
    today = datetime.now(timezone.utc)
    settings = Settings(
        environment="local",
        lake_root=str(tmp_path / "lake"),
        landing_root=str(write_small_landing(tmp_path / "landing").root),
        replay=ReplayClock.starting(date.fromordinal(today.date().toordinal() - 3)),
    )
    defs = build_definitions(settings)
    pipeline = make_pipeline(tmp_path / "unused", tmp_path / "landing")
    clock = (today - timedelta(hours=3)).replace(minute=59, second=40, microsecond=0)
    end = clock.replace(minute=0, second=0)
    runs = materialize_window(defs, settings, end - timedelta(days=1), end, instance=pipeline.instance, now=clock, raise_on_error=False)
    assert [r.job_name for r in runs if not r.result.success] == []
    store = DeltaStore(root=settings.lake_root)
    carrier = store.read("carrier_delay_stats")
    # The open day's snapshots stop at the clock's last closed hour, the hours after it exist in
    # Dagster (real time went on) but no run needed them.
    assert carrier[EVENT_TIMESTAMP].max() == end
    # Raw days are judged hour by hour: the open day's last hour judged and written is the clock's last closed one.
    raw_days = pipeline.instance.get_materialized_partitions(AssetKey("raw_flights"))
    assert max(raw_days) == (end - timedelta(hours=1)).strftime("%Y-%m-%d")
    assert max(judged_hours(store, "raw_flights")) == (end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    assert store.read("raw_flights")["dep_known_at"].max() < end
