"""A schedule tick is the run's clock: the hourly refresh's run carries the tick's instant."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from dagster import build_schedule_context

from feature_pipelines.definitions import build_definitions
from feature_pipelines.orchestration.clock import RUN_CLOCK_TAG, parse_instant
from feature_pipelines_tests.conftest import make_pipeline, write_small_landing


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
