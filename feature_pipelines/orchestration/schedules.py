"""Jobs and schedules: raw hours as they close, hourly refresh of hourly-snapshot views, daily views.

- raw_hourly_job, every hour at :05, rewrites the open day's raw partition with its hours so far
  (at 00:05 it finalises yesterday): raw tables are daily partitions judged hour by hour.
- hourly_snapshot_features_job, every hour at :15, rewrites the open day's partition of views that
  snapshot hourly (at 00:15 it finalises yesterday, whose last snapshot is midnight).
- daily_snapshot_features_job, every day at 00:20, computes the day just closed.
- raw_dimensions_job, every day at 00:30, reloads planes, airlines and airports.
- monitoring_job, every day at 00:45, judges the day before (skew, drift, shadow definitions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    TimeWindowPartitionsDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from feature_pipelines.orchestration.clock import clock_tags
from feature_pipelines.orchestration.concurrency import run_tags_for_assets
from feature_pipelines.orchestration.partitions import raw_partitions
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import floor_to, require_utc

RAW_HOURLY_JOB = "raw_hourly_job"
HOURLY_SNAPSHOT_JOB = "hourly_snapshot_features_job"
DAILY_SNAPSHOT_JOB = "daily_snapshot_features_job"
TRAINING_JOB = "training_job"
DIMENSIONS_JOB = "raw_dimensions_job"
MONITORING_JOB = "monitoring_job"


def latest_snapshot_partition(partitions: TimeWindowPartitionsDefinition, scheduled_at: object) -> str:
    """The partition holding the latest closed hourly snapshot t = floor(now, 1h).

    Feature partitions hold snapshots in (start, end], so t belongs to the partition containing
    the instant just before it.
    """
    snapshot = floor_to(require_utc(scheduled_at, "scheduled time"), timedelta(hours=1))  # type: ignore[arg-type]
    return partitions.get_partition_key_for_timestamp((snapshot - timedelta(microseconds=1)).timestamp())


def _refresh_request(partitions: TimeWindowPartitionsDefinition, context: ScheduleEvaluationContext) -> RunRequest:
    """The run that refreshes the partition holding the hour just closed, on the tick's clock."""
    key = latest_snapshot_partition(partitions, context.scheduled_execution_time)
    tick = require_utc(context.scheduled_execution_time, "tick")
    stamp = floor_to(tick, timedelta(hours=1))  # type: ignore[arg-type]
    # The tick's time is the run's clock: its open partition is computed up to it, no further.
    return RunRequest(run_key=f"{key}@{stamp.isoformat()}", partition_key=key, tags=clock_tags(tick))  # type: ignore[arg-type]


def _default_status(settings: Settings) -> DefaultScheduleStatus:
    """In replay mode the schedules start running with `dagster dev`; otherwise they wait to be switched on."""
    return DefaultScheduleStatus.RUNNING if settings.replay.offset else DefaultScheduleStatus.STOPPED


def build_jobs_and_schedules(
    settings: Settings,
    *,
    raw_dimensions: Sequence[str],
    raw_hourly: Sequence[str],
    hourly_snapshot_views: Sequence[str],
    daily_snapshot_views: Sequence[str],
    hourly_snapshot_partitions: TimeWindowPartitionsDefinition,
    publish_assets: Sequence[str] = (),
) -> tuple[list[object], list[ScheduleDefinition]]:
    """Jobs per grain; in replay mode their schedules start running with `dagster dev`."""
    status = _default_status(settings)
    raw_days = raw_partitions(settings)
    dimensions_job = define_asset_job(
        DIMENSIONS_JOB, selection=AssetSelection.assets(*raw_dimensions), description="Refresh the unpartitioned dimension tables."
    )
    raw_job = define_asset_job(
        RAW_HOURLY_JOB, selection=AssetSelection.assets(*raw_hourly), description="Land raw flights and weather: a day's partition, the open day up to the clock."
    )
    hourly_job = define_asset_job(
        HOURLY_SNAPSHOT_JOB,
        selection=AssetSelection.assets(*hourly_snapshot_views),
        description="Feature views snapshotted hourly, one daily partition (today's is refreshed every hour).",
        tags=run_tags_for_assets(hourly_snapshot_views, publish_assets),
    )
    daily_job = define_asset_job(
        DAILY_SNAPSHOT_JOB,
        selection=AssetSelection.assets(*daily_snapshot_views),
        description="Feature views snapshotted daily, one day.",
        tags=run_tags_for_assets(daily_snapshot_views, publish_assets),
    )

    @schedule(
        job=hourly_job,
        cron_schedule="15 * * * *",
        execution_timezone="UTC",
        default_status=status,
        name="hourly_snapshot_features_schedule",
        description="Every hour: recompute the partition holding the latest hourly snapshot.",
    )
    def hourly_snapshot_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        yield _refresh_request(hourly_snapshot_partitions, context)

    @schedule(
        job=raw_job,
        cron_schedule="5 * * * *",
        execution_timezone="UTC",
        default_status=status,
        name=f"{RAW_HOURLY_JOB}_schedule",
        description="Every hour: rewrite the raw day holding the hour just closed, up to the tick.",
    )
    def raw_hourly_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        yield _refresh_request(raw_days, context)

    schedules = [
        ScheduleDefinition(job=dimensions_job, cron_schedule="30 0 * * *", execution_timezone="UTC", default_status=status),
        raw_hourly_schedule,
        hourly_snapshot_schedule,
        build_schedule_from_partitioned_job(daily_job, hour_of_day=0, minute_of_hour=20, default_status=status),
    ]
    return [dimensions_job, raw_job, hourly_job, daily_job], schedules


def build_monitoring_job_and_schedule(settings: Settings, group: str) -> tuple[object, ScheduleDefinition]:
    """One job over the monitoring group; its schedule judges each day at 00:45 UTC the day after
    (the serving log of a day is complete once the day is over; a run of today's open partition
    from the UI judges the day so far)."""
    job = define_asset_job(
        MONITORING_JOB,
        selection=AssetSelection.groups(group),  # daily partitions: Dagster takes them from the assets
        description="Skew, drift and shadow reports of one day.",
    )

    @schedule(
        job=job,
        cron_schedule="45 0 * * *",
        execution_timezone="UTC",
        default_status=_default_status(settings),
        name="monitoring_schedule",
        description="Every day at 00:45 UTC: skew, drift and shadow reports of the day before.",
    )
    def monitoring_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        day = floor_to(require_utc(context.scheduled_execution_time, "tick"), timedelta(days=1)) - timedelta(days=1)  # type: ignore[arg-type]
        key = day.strftime("%Y-%m-%d")
        yield RunRequest(run_key=key, partition_key=key)

    return job, monitoring_schedule
