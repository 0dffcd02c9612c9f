"""The only wiring: assets, jobs, schedules and resources, chosen by FEATURE_PIPELINES_ENV."""

from __future__ import annotations

from dagster import Definitions

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.orchestration.feature_assets import build_feature_asset
from feature_pipelines.orchestration.raw_assets import RAW_TABLES, build_raw_assets
from feature_pipelines.orchestration.resources_by_env import resources_for
from feature_pipelines.orchestration.schedules import build_jobs_and_schedules
from feature_pipelines.settings import Settings, load_settings


def build_definitions(settings: Settings) -> Definitions:
    feature_assets = [build_feature_asset(view, settings) for view in FEATURE_VIEWS.values()]
    hourly = [t.name for t in RAW_TABLES if t.time_column] + [
        v.name for v in FEATURE_VIEWS.values() if v.partitioning is Partitioning.HOURLY
    ]
    daily = [v.name for v in FEATURE_VIEWS.values() if v.partitioning is Partitioning.DAILY]
    jobs, schedules = build_jobs_and_schedules(settings, hourly, daily)
    return Definitions(
        assets=[*build_raw_assets(settings), *feature_assets],
        jobs=jobs,
        schedules=schedules,
        resources=resources_for(settings),
    )


defs = build_definitions(load_settings())
