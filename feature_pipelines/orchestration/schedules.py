"""Hourly and daily schedules that materialise the partition that just closed."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from feature_pipelines.settings import Settings

HOURLY_JOB = "hourly_features_job"
DAILY_JOB = "daily_features_job"


def build_jobs_and_schedules(
    settings: Settings, hourly_assets: list[str], daily_assets: list[str]
) -> tuple[list, list[ScheduleDefinition]]:
    """Jobs over the hourly and the daily assets; in replay mode their schedules start running."""
    hourly_job = define_asset_job(
        HOURLY_JOB,
        selection=AssetSelection.assets(*hourly_assets),
        description="Raw hourly tables and hourly feature views for one hour.",
    )
    daily_job = define_asset_job(
        DAILY_JOB,
        selection=AssetSelection.assets(*daily_assets),
        description="Daily feature views for one day.",
    )
    status = DefaultScheduleStatus.RUNNING if settings.replay.offset else DefaultScheduleStatus.STOPPED
    schedules = [
        build_schedule_from_partitioned_job(hourly_job, minute_of_hour=5, default_status=status),
        build_schedule_from_partitioned_job(daily_job, hour_of_day=0, minute_of_hour=20, default_status=status),
    ]
    return [hourly_job, daily_job], schedules
