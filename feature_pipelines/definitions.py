"""The only wiring: assets, jobs, schedules and resources, chosen by FEATURE_PIPELINES_ENV."""

from __future__ import annotations

from dagster import Definitions

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.orchestration.feature_assets import build_feature_asset
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.raw_assets import RAW_TABLES, build_raw_assets
from feature_pipelines.orchestration.resources_by_env import resources_for
from feature_pipelines.orchestration.schedules import build_jobs_and_schedules
from feature_pipelines.settings import Settings, load_settings


def build_definitions(settings: Settings) -> Definitions:
    feature_assets = [build_feature_asset(view, settings) for view in FEATURE_VIEWS.values()]
    views = list(FEATURE_VIEWS.values())
    jobs, schedules = build_jobs_and_schedules(
        settings,
        raw_hourly=[t.name for t in RAW_TABLES if t.time_column],
        hourly_snapshot_views=[v.name for v in views if v.cadence is Partitioning.HOURLY],
        daily_snapshot_views=[v.name for v in views if v.cadence is Partitioning.DAILY],
        hourly_snapshot_partitions=partitions_for(Partitioning.DAILY, settings, in_progress=True),
    )
    return Definitions(
        assets=[*build_raw_assets(settings), *feature_assets],
        jobs=jobs,
        schedules=schedules,
        resources=resources_for(settings),
    )


defs = build_definitions(load_settings())
