"""Label and training-set assets, and the training set's leakage audit as a blocking check."""

import json
from datetime import timezone

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
)

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.references import resolve_references
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.offline.historical import get_historical_features
from feature_pipelines.orchestration.io_manager import CLOSED_KEY, TIME_COLUMN_KEY
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.raw_assets import RAW_TABLES
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings
from feature_pipelines.training.audit import LeakageReport, audit_recomputation, audit_stamps
from feature_pipelines.training.labels import flight_delay_labels
from feature_pipelines.training.spec import PREDICTION_TIMESTAMP, TrainingSetSpec

LABELS_ASSET = "flight_delay_labels"
LEAKAGE_CHECK = "no_feature_leakage"
RAW_KNOWN_AT = {table.name: table.time_column for table in RAW_TABLES if table.time_column}


def build_label_asset(spec: TrainingSetSpec, settings: Settings) -> AssetsDefinition:
    """Labels of the flights scheduled on a day; they need the next day's raw hours (arrivals)."""

    @asset(
        name=LABELS_ASSET,
        description=f"One row per arrived flight: `{spec.label}` (arrival delay > 15 min), stamped "
        f"`{PREDICTION_TIMESTAMP}` = scheduled departure - {spec.lead_time}. Partitioned by the "
        "scheduled departure's UTC day; needs the following day's raw hours, since an outcome can "
        "become known up to a day after the schedule.",
        group_name="training",
        partitions_def=partitions_for(Partitioning.DAILY, settings),
        ins={
            "flights": AssetIn(
                key=AssetKey("raw_flights"),
                partition_mapping=TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=1, allow_nonexistent_upstream_partitions=True
                ),
            )
        },
        backfill_policy=BackfillPolicy.single_run(),
        metadata={TIME_COLUMN_KEY: "scheduled_departure_at", CLOSED_KEY: "left"},
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _labels(context: AssetExecutionContext, flights: pl.DataFrame) -> pl.DataFrame:
        window = context.partition_time_window
        start, end = window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc)
        scheduled = flights.filter(pl.col("scheduled_departure_at") >= start, pl.col("scheduled_departure_at") < end)
        labels = flight_delay_labels(scheduled, lead_time=spec.lead_time)
        context.add_output_metadata(
            {
                "flights_scheduled": scheduled.height,
                "unlabelled_cancelled_or_diverted": scheduled.height - labels.height,
                "late_share": float(labels[spec.label].mean()) if labels.height else 0.0,
            }
        )
        return labels

    return _labels


def _audit(frame: pl.DataFrame, spec: TrainingSetSpec, store: DeltaStore) -> LeakageReport:
    """Stamps first, then a recomputation sample per view from the raw table's own knowledge time."""
    requests = resolve_references(spec.features, FEATURE_VIEWS)
    report = audit_stamps(frame, [r.view.name for r in requests], prediction_column=PREDICTION_TIMESTAMP)
    if not report.passed or frame.height == 0:
        return report
    for request in requests:
        view = request.view
        earliest = frame[PREDICTION_TIMESTAMP].min() - view.max_window - view.ttl
        raw = store.read(
            view.source.asset,
            time_slice=TimeSlice(RAW_KNOWN_AT[view.source.asset], earliest, frame[PREDICTION_TIMESTAMP].max()),
        )
        report = audit_recomputation(frame, view, request.features, raw, trusted_known_at=RAW_KNOWN_AT[view.source.asset])
        if not report.passed:
            return report
    return report


def build_training_set_asset(spec: TrainingSetSpec, settings: Settings) -> AssetsDefinition:
    """Labels joined point-in-time to the declared features; versions read recorded for rebuilds."""
    views = sorted({reference.split(":")[0] for reference in spec.features})

    @asset(
        name=spec.name,
        description=f"{spec.description}\n\nFeatures: {', '.join(spec.features)}. Every row's features are "
        f"as of its `{PREDICTION_TIMESTAMP}` (point-in-time join with each view's TTL); the Delta version "
        "of every feature table read is in the metadata (`feature_table_versions`) so the set can be "
        "rebuilt byte for byte.",
        group_name="training",
        partitions_def=partitions_for(Partitioning.DAILY, settings),
        ins={"labels": AssetIn(key=AssetKey(LABELS_ASSET))},
        deps=[AssetDep(view, partition_mapping=TimeWindowPartitionMapping(start_offset=-1)) for view in views],
        backfill_policy=BackfillPolicy.single_run(),
        metadata={TIME_COLUMN_KEY: "scheduled_departure_at", CLOSED_KEY: "left"},
        check_specs=[
            AssetCheckSpec(
                LEAKAGE_CHECK,
                asset=spec.name,
                blocking=True,
                description="No feature stamped after its row's prediction time, and a sample of "
                "values recomputed from raw events known before their stamp matches.",
            )
        ],
        output_required=False,
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _training_set(context: AssetExecutionContext, labels: pl.DataFrame, lake: LakeResource):
        store = lake.store()
        built = get_historical_features(
            store,
            FEATURE_VIEWS,
            labels,
            spec.features,
            timestamp_column=PREDICTION_TIMESTAMP,
            ledger=QualityLedger(store),
            include_event_timestamps=True,
        )
        frame = built.frame
        report = _audit(frame, spec, store)
        yield AssetCheckResult(
            check_name=LEAKAGE_CHECK,
            passed=report.passed,
            severity=AssetCheckSeverity.ERROR,
            description=f"table {spec.name!r} partitions {context.partition_key_range.start}.."
            f"{context.partition_key_range.end}: {report.message()}",
            metadata={"violations": report.violations, "examples": MetadataValue.json(json.loads(json.dumps(report.examples, default=str)))},
        )
        if not report.passed:
            return  # write-audit-publish: a leaky set is never written
        feature_names = [name.split(":")[1] for name in spec.features]
        null_rates = {name: float(frame[name].null_count() / frame.height) if frame.height else 0.0 for name in feature_names}
        yield Output(
            frame,
            metadata={
                "feature_table_versions": MetadataValue.json(built.versions),
                "features": MetadataValue.json(list(spec.features)),
                "label": spec.label,
                "lead_time": str(spec.lead_time),
                "null_rates": MetadataValue.json(null_rates),
            },
        )

    return _training_set
