"""The only wiring: assets, jobs, schedules and resources, chosen by FEATURE_PIPELINES_ENV."""

from __future__ import annotations

import os
import warnings

from dagster import AssetSelection, BetaWarning, Definitions, define_asset_job

from feature_pipelines.features.candidates import CANDIDATE_VIEWS
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.services import FEATURE_SERVICES
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.models.catalog import MODELS
from feature_pipelines.orchestration.blast_radius_assets import build_blast_radius_asset
from feature_pipelines.orchestration.event_log_storage import EVENT_BATCH_SIZE, EVENT_BATCH_SIZE_VARIABLE
from feature_pipelines.orchestration.feature_assets import build_feature_asset
from feature_pipelines.orchestration.model_assets import build_model_asset
from feature_pipelines.orchestration.monitoring_assets import MONITORING_GROUP, build_monitoring_assets
from feature_pipelines.orchestration.outcome_assets import build_outcome_asset
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.privacy_checks import build_absence_checks
from feature_pipelines.orchestration.publish_assets import build_publish_asset, publish_asset_name
from feature_pipelines.orchestration.raw_assets import build_raw_assets
from feature_pipelines.orchestration.resources_by_env import resources_for
from feature_pipelines.orchestration.scale_out import scale_out_definitions
from feature_pipelines.orchestration.schedules import (
    TRAINING_JOB,
    build_jobs_and_schedules,
    build_monitoring_job_and_schedule,
)
from feature_pipelines.orchestration.statistics_assets import build_statistics_asset
from feature_pipelines.orchestration.streaming_parity import build_stream_parity_asset
from feature_pipelines.orchestration.training_assets import build_label_asset, build_training_set_asset
from feature_pipelines.settings import Settings, load_settings
from feature_pipelines.sources.raw_tables import RAW_TABLES
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, LABELS_TABLE

# Backfill policies and nonexistent-upstream partition mappings are beta in Dagster 1.13; we use them
# on purpose (see README), so their warnings would only be noise in every run's log.
warnings.filterwarnings("ignore", category=BetaWarning)
# A step over a range of partitions hands its materializations to the event log storage as one
# batch (Dagster reads this variable when it stores events; unset, it stores them one by one).
os.environ.setdefault(EVENT_BATCH_SIZE_VARIABLE, str(EVENT_BATCH_SIZE))


def build_definitions(settings: Settings) -> Definitions:
    views = list(FEATURE_VIEWS.values())
    feature_assets = [build_feature_asset(view, settings) for view in views]
    publish_assets = [build_publish_asset(view, settings) for view in views]

    def with_publish(cadence: Partitioning) -> list[str]:
        chosen = [v for v in views if v.cadence is cadence]
        return [v.name for v in chosen] + [publish_asset_name(v) for v in chosen]

    jobs, schedules = build_jobs_and_schedules(
        settings,
        raw_dimensions=[t.name for t in RAW_TABLES if not t.time_column],
        raw_hourly=[t.name for t in RAW_TABLES if t.time_column],
        hourly_snapshot_views=with_publish(Partitioning.HOURLY),
        daily_snapshot_views=with_publish(Partitioning.DAILY),
        hourly_snapshot_partitions=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        publish_assets=[publish_asset_name(v) for v in views],
    )
    training = FLIGHT_DELAY_TRAINING_SET
    training_assets = [build_label_asset(training, settings), build_training_set_asset(training, settings)]
    # Fitted on demand (not in the partitioned training job): each fit is a new statistics version.
    training_assets += [build_statistics_asset(s, training) for s in FEATURE_SERVICES.values() if s.needs_statistics]
    jobs.append(define_asset_job(TRAINING_JOB, selection=AssetSelection.groups("training"), description="Labels and training sets."))
    monitoring_assets = build_monitoring_assets(FEATURE_VIEWS, training, CANDIDATE_VIEWS, settings)
    monitoring_assets.append(build_blast_radius_asset(FEATURE_VIEWS, settings))  # bad partitions -> requests, models
    monitoring_job, monitoring_schedule = build_monitoring_job_and_schedule(settings, MONITORING_GROUP)
    # Group `models`: each model trained on demand (a new registry version), and its daily outcome monitor.
    model_assets = [a for spec in MODELS.values() for a in (build_model_asset(spec), build_outcome_asset(spec, settings))]
    platform = Definitions(
        assets=[*build_raw_assets(settings), *feature_assets, *publish_assets, *training_assets, *monitoring_assets, *model_assets,
                build_stream_parity_asset(settings)],
        # The forget's proof: every raw, feature, label and training table, blocking (orchestration/privacy_checks.py).
        asset_checks=build_absence_checks([*(t.name for t in RAW_TABLES), *FEATURE_VIEWS, LABELS_TABLE, training.name]),
        jobs=[*jobs, monitoring_job],
        schedules=[*schedules, monitoring_schedule],
        resources=resources_for(settings),
    )
    return Definitions.merge(platform, scale_out_definitions(settings))  # empty unless FEATURE_PIPELINES_SCALE_OUT=1


defs = build_definitions(load_settings())
