"""A schedule tick is the run's clock: the hourly refreshes' runs carry the tick's instant."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from dagster import build_schedule_context

from feature_pipelines.definitions import build_definitions
from feature_pipelines.orchestration.clock import RUN_CLOCK_TAG, parse_instant
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import RAW_HOURLY_JOB
from feature_pipelines_tests.conftest import make_pipeline, write_small_landing
from feature_pipelines_tests.orchestration.ledger_view import judged_hours


def test_hourly_refresh_runs_on_the_ticks_clock(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, write_small_landing(tmp_path / "landing").root)
    defs = build_definitions(pipeline.settings)
    schedule = defs.resolve_schedule_def("hourly_snapshot_features_schedule")
    tick = datetime(2013, 1, 5, 14, 15, tzinfo=timezone.utc)
    repository = defs.get_repository_def()
    with build_schedule_context(instance=pipeline.instance, scheduled_execution_time=tick, repository_def=repository) as context:
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2013-01-05"]
    assert parse_instant(requests[0].tags[RUN_CLOCK_TAG], "tag") == tick


def test_raw_hourly_tick_rewrites_the_open_day_up_to_the_tick(tmp_path: Path) -> None:
    """Raw tables are days: the tick at :05 asks for the day holding the hour just closed (at
    00:05 yesterday, finalised), on the tick's clock, and the run writes that day's hours up to it."""
    pipeline = make_pipeline(tmp_path, write_small_landing(tmp_path / "landing").root)
    defs = build_definitions(pipeline.settings)
    schedule = defs.resolve_schedule_def("raw_hourly_job_schedule")
    repository = defs.get_repository_def()
    for tick, day in ((datetime(2013, 1, 5, 14, 5, tzinfo=timezone.utc), "2013-01-05"),
                      (datetime(2013, 1, 6, 0, 5, tzinfo=timezone.utc), "2013-01-05")):
        with build_schedule_context(instance=pipeline.instance, scheduled_execution_time=tick, repository_def=repository) as context:
            requests = list(schedule.evaluate_tick(context).run_requests or [])
        assert [r.partition_key for r in requests] == [day]
        assert parse_instant(requests[0].tags[RUN_CLOCK_TAG], "tag") == tick
    run = materialize_range(defs, RAW_HOURLY_JOB, "2013-01-05", "2013-01-05", instance=pipeline.instance,
                            now=datetime(2013, 1, 5, 14, 5, tzinfo=timezone.utc))
    assert run.result.success
    assert judged_hours(pipeline.store, "raw_flights") == {f"2013-01-05-{h:02d}:00" for h in range(14)}
    assert pipeline.store.read("raw_flights")["dep_known_at"].max() < datetime(2013, 1, 5, 14, tzinfo=timezone.utc)
