"""Label and training-set assets, and the training set's leakage audit as a blocking check."""

import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

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
    PartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.references import resolve_references
from feature_pipelines.features.spec import FeatureView, Partitioning
from feature_pipelines.json_values import json_value
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.offline.historical import get_historical_features
from feature_pipelines.orchestration.clock import run_clock
from feature_pipelines.orchestration.io_manager import CLOSED_KEY, PER_PARTITION_READINESS, TIME_COLUMN_KEY
from feature_pipelines.orchestration.partitions import partition_window, partitions_for, raw_partitions, view_partitions
from feature_pipelines.orchestration.quality_gate import WriteTarget, gate_and_write, gate_check_specs
from feature_pipelines.orchestration.upstream import UpstreamGap, upstream_gaps, upstream_outcome
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.suites import FEATURE_RULES, UPSTREAM
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings
from feature_pipelines.sources.raw_tables import RAW_TABLES
from feature_pipelines.timeutil import PartitionWindow, floor_to
from feature_pipelines.training.audit import LeakageReport, audit_recomputation, audit_stamps
from feature_pipelines.training.labels import flight_delay_labels
from feature_pipelines.training.spec import LABELS_TABLE, PREDICTION_TIMESTAMP, SERVICE_VERSION_COLUMN, TrainingSetSpec

LEAKAGE_CHECK = "no_feature_leakage"
FEATURE_SERVICE_KEY = "feature_service"  # materialization metadata: the service a training set was built from
FEATURE_SERVICE_VERSION_KEY = "feature_service_version"
RAW_KNOWN_AT = {table.name: table.time_column for table in RAW_TABLES if table.time_column}
READINESS_RULES = {UPSTREAM: FEATURE_RULES[UPSTREAM]}


def _daily_training_table(days: PartitionsDefinition) -> dict[str, Any]:
    """What the label and training-set assets share: daily partitions by scheduled departure, one run
    per backfill range, written through the Delta IO manager only for the partitions that pass."""
    return dict(
        group_name="training",
        partitions_def=days,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={TIME_COLUMN_KEY: "scheduled_departure_at", CLOSED_KEY: "left"},
        output_required=False,
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )


def build_label_asset(spec: TrainingSetSpec, settings: Settings) -> AssetsDefinition:
    """Labels of the flights scheduled on a day; they need the next day's raw hours (arrivals)."""
    days = partitions_for(Partitioning.DAILY, settings)
    raw_days = raw_partitions(settings)
    mapping = TimeWindowPartitionMapping(start_offset=-1, end_offset=1, allow_nonexistent_upstream_partitions=True)
    target = WriteTarget(LABELS_TABLE, "scheduled_departure_at", "left")

    @asset(
        name=LABELS_TABLE,
        description=f"One row per arrived flight: `{spec.label}` (arrival delay > 15 min), stamped "
        f"`{PREDICTION_TIMESTAMP}` = scheduled departure - {spec.lead_time}. Partitioned by the "
        "scheduled departure's UTC day; needs the following day's raw hours, since an outcome can "
        "become known up to a day after the schedule. A day whose raw hours are missing or held back "
        "is refused, and only that day.",
        ins={"flights": AssetIn(key=AssetKey("raw_flights"), partition_mapping=mapping, metadata={PER_PARTITION_READINESS: True})},
        check_specs=gate_check_specs(LABELS_TABLE, READINESS_RULES),
        **_daily_training_table(days),
    )
    def _labels(context: AssetExecutionContext, flights: pl.DataFrame, lake: LakeResource):
        now = run_clock(context)
        store = lake.store()
        windows = [partition_window(days, key) for key in context.partition_keys]
        last_hour = floor_to(now, timedelta(hours=1))
        gaps = upstream_gaps(context, upstream="raw_flights", mapping=mapping, partitions_def=days, upstream_partitions_def=raw_days,
                             needed={w.key: (w.start - timedelta(days=1), min(w.end + timedelta(days=1), last_hour)) for w in windows},
                             store=store, by_hour=True)
        start, end = windows[0].start, windows[-1].end
        scheduled = flights.filter(pl.col("scheduled_departure_at") >= start, pl.col("scheduled_departure_at") < end)
        labels = flight_delay_labels(scheduled, lead_time=spec.lead_time)
        yield from _gated(context, target, labels, windows, {k: [gaps.get(k)] for k in context.partition_keys}, store, now, {
            "flights_scheduled": scheduled.height,
            "unlabelled_cancelled_or_diverted": scheduled.height - labels.height,
            "late_share": float(labels[spec.label].mean()) if labels.height else 0.0,
        })

    return _labels


def _gated(
    context: AssetExecutionContext, target: WriteTarget, frame: pl.DataFrame, windows: list[PartitionWindow],
    gaps: Mapping[str, Sequence[UpstreamGap | None]], store: DeltaStore, now: datetime, metadata: Mapping[str, object],
) -> Iterator[object]:
    """Refuse the partitions whose upstream is not ready, write the others."""
    outcomes = {w.key: [upstream_outcome(target.table, w.key, gaps.get(w.key, []))] for w in windows}
    yield from gate_and_write(context, target=target, frame=frame, windows=windows, outcomes_by_partition=outcomes,
                              rules=READINESS_RULES, store=store, now=now, metadata=lambda _written: metadata)


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
        report = audit_recomputation(frame, view, request.features, raw, trusted_known_at=RAW_KNOWN_AT[view.source.asset],
                                     at_instant=view.streaming is not None)
        if not report.passed:
            return report
    return report


def build_training_set_asset(spec: TrainingSetSpec, settings: Settings) -> AssetsDefinition:
    """Labels joined point-in-time to the declared features; versions read recorded for rebuilds."""
    views = [FEATURE_VIEWS[name] for name in spec.view_names]
    days = partitions_for(Partitioning.DAILY, settings)
    view_mappings = {view.name: _view_mapping(spec, view) for view in views}
    # A streaming view's values are computed at each row's own instant from its raw events, as
    # the stream serves them: the set reads the raw table's hours, not the view's snapshots.
    streamed = [view for view in views if view.streaming is not None]
    raw_reads = {view.source.asset: _raw_mapping(spec, view) for view in streamed}
    target = WriteTarget(spec.name, "scheduled_departure_at", "left")

    @asset(
        name=spec.name,
        description=_training_set_description(spec),
        ins={"labels": AssetIn(key=AssetKey(LABELS_TABLE), metadata={PER_PARTITION_READINESS: True})},
        deps=[*(AssetDep(view.name, partition_mapping=view_mappings[view.name]) for view in views if view not in streamed),
              *(AssetDep(raw, partition_mapping=mapping) for raw, mapping in raw_reads.items())],
        check_specs=[_leakage_check_spec(spec), *gate_check_specs(spec.name, READINESS_RULES)],
        **_daily_training_table(days),
    )
    def _training_set(context: AssetExecutionContext, labels: pl.DataFrame, lake: LakeResource):
        now = run_clock(context)
        store = lake.store()
        windows = [partition_window(days, key) for key in context.partition_keys]
        gaps = _training_gaps(context, spec, windows, view_mappings, settings, store)
        for view in streamed:
            raw_gaps = upstream_gaps(
                context, upstream=view.source.asset, mapping=raw_reads[view.source.asset], partitions_def=days,
                upstream_partitions_def=raw_partitions(settings), store=store, by_hour=True,
                needed={w.key: (w.start - spec.lead_time - view.max_window, w.end - spec.lead_time) for w in windows})
            for key, gap in raw_gaps.items():
                gaps[key].append(gap)
        ready = [w for w in windows if not any(gaps[w.key])]
        rows = labels.filter(pl.any_horizontal([
            TimeSlice("scheduled_departure_at", w.start, w.end).polars_filter() for w in ready] or [pl.lit(False)]))
        built = get_historical_features(
            store,
            FEATURE_VIEWS,
            rows,
            feature_service=spec.service,
            untransformed=True,  # the raw vector: what the service's statistics are fitted on
            timestamp_column=PREDICTION_TIMESTAMP,
            ledger=QualityLedger(store),
            include_event_timestamps=True,
        )
        frame = built.frame.with_columns(pl.lit(spec.service.version, pl.String).alias(SERVICE_VERSION_COLUMN))
        report = _audit(frame, spec, store)
        yield _leakage_result(spec, context, report)
        if not report.passed:
            return  # write-audit-publish: a leaky set is never written
        null_rates = {name: float(frame[name].null_count() / frame.height) if frame.height else 0.0
                      for name in spec.column_names}
        added = store.add_missing_columns(spec.name, frame)  # a changed service's new columns; older rows read null
        if added:
            context.log.info(f"table {spec.name!r}: service {spec.service.name!r} version {spec.service.version} adds "
                             f"column(s) {added}; rows built before read null there until rebuilt")
        yield from _gated(context, target, frame, windows, gaps, store, now, {
            FEATURE_SERVICE_KEY: spec.service.name,
            FEATURE_SERVICE_VERSION_KEY: spec.service.version,
            "feature_table_versions": MetadataValue.json(built.versions),
            "features": MetadataValue.json(list(spec.service.features)),
            "label": spec.label,
            "lead_time": str(spec.lead_time),
            "null_rates": MetadataValue.json(null_rates),
        })

    return _training_set


def _raw_mapping(spec: TrainingSetSpec, view: FeatureView) -> TimeWindowPartitionMapping:
    """The raw days a training day reads for a streaming view: a row predicted at p (up to the
    lead time before its day) reads the events known in [p - window, p)."""
    reach = math.ceil((spec.lead_time + view.max_window) / timedelta(days=1))
    return TimeWindowPartitionMapping(start_offset=-reach, allow_nonexistent_upstream_partitions=True)


def _view_mapping(spec: TrainingSetSpec, view: FeatureView) -> TimeWindowPartitionMapping:
    """The view's partitions a training day reads: a row predicted at p reads the view's snapshots
    in [p - ttl, p], and p lies up to the lead time before its day."""
    reach = math.ceil(spec.feature_reach(view) / view.partitioning.interval)
    return TimeWindowPartitionMapping(start_offset=-reach, allow_nonexistent_upstream_partitions=True)


def _training_set_description(spec: TrainingSetSpec) -> str:
    return (
        f"{spec.description}\n\nFeature service `{spec.service.name}` (version {spec.service.version}): "
        f"{', '.join(spec.service.features)}, as raw values (its transformations are fitted on this table "
        "and applied on read). Every row's features are "
        f"as of its `{PREDICTION_TIMESTAMP}` (point-in-time join with each view's TTL; a streaming view's "
        "values computed at that instant from its raw events, as the stream serves them); the Delta version "
        "of every feature table read is in the metadata (`feature_table_versions`) so the set can be "
        "rebuilt byte for byte. A day whose labels or feature partitions are missing or held back is refused, "
        "and only that day."
    )


def _leakage_check_spec(spec: TrainingSetSpec) -> AssetCheckSpec:
    return AssetCheckSpec(
        LEAKAGE_CHECK,
        asset=spec.name,
        blocking=True,
        description="No feature stamped after its row's prediction time, and a sample of "
        "values recomputed from raw events known before their stamp matches.",
    )


def _leakage_result(spec: TrainingSetSpec, context: AssetExecutionContext, report: LeakageReport) -> AssetCheckResult:
    """The leakage audit's verdict over the run's partition range."""
    return AssetCheckResult(
        check_name=LEAKAGE_CHECK,
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=f"table {spec.name!r} partitions {context.partition_key_range.start}.."
        f"{context.partition_key_range.end}: {report.message()}",
        metadata={"violations": report.violations,
                  "examples": MetadataValue.json(json_value(report.examples))},
    )


def _training_gaps(
    context: AssetExecutionContext, spec: TrainingSetSpec, windows: list[PartitionWindow],
    view_mappings: Mapping[str, TimeWindowPartitionMapping], settings: Settings, store: DeltaStore,
) -> dict[str, list[UpstreamGap | None]]:
    """Per training day, what it reads that is missing or held back: each view's partitions within
    the day's feature reach, then the day's labels."""
    days = partitions_for(Partitioning.DAILY, settings)
    gaps: dict[str, list[UpstreamGap | None]] = {w.key: [] for w in windows}
    for name, mapping in view_mappings.items():
        view = FEATURE_VIEWS[name]
        if view.streaming is not None:
            continue  # read at each row's instant from its raw hours (the training asset judges those)
        view_gaps = upstream_gaps(
            context, upstream=name, mapping=mapping, partitions_def=days,
            upstream_partitions_def=view_partitions(view, settings),
            needed={w.key: (w.start - spec.feature_reach(view), w.end) for w in windows}, store=store)
        for key, gap in view_gaps.items():
            gaps[key].append(gap)
    label_gaps = upstream_gaps(context, upstream=LABELS_TABLE, mapping=TimeWindowPartitionMapping(), partitions_def=days,
                               upstream_partitions_def=days, needed={w.key: (w.start, w.end) for w in windows}, store=store)
    for key, gap in label_gaps.items():
        gaps[key].append(gap)
    return gaps
