"""The one factory that turns a FeatureView into its Dagster feature-table asset."""


import math
import time
from datetime import datetime, timedelta, timezone

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    FreshnessPolicy,
    Output,
    TableColumnDep,
    TableColumnLineage,
    TimeWindowPartitionMapping,
    asset,
)

from feature_pipelines.compute.snapshots import EVENT_TIMESTAMP, snapshot_features
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.orchestration.io_manager import CLOSED_KEY, TIME_COLUMN_KEY
from feature_pipelines.orchestration.partitions import partition_window, view_partitions
from feature_pipelines.orchestration.quality_gate import gate_check_specs, run_gate
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CUSTOM_EXPECTATIONS
from feature_pipelines.quality.suites import (
    EXTRA_EXPECTATIONS,
    FEATURE_CHECKS,
    VOLUME,
    PartitionWindow,
    check_volume,
    validate_feature_partitions,
)
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import floor_to, utc_now

CREATED_TIMESTAMP = "created_timestamp"


def lookback_partitions(view: FeatureView) -> int:
    """How many earlier partitions a run needs: its widest window plus the source's lateness.

    Partition [s, s+P) snapshots at t in (s, s+P] every c; its first snapshot t = s + c needs
    events known in [s + c - W, ...), whose raw partitions start at s + c - W - L; so the upstream
    window starts ceil((W + L - c) / P) partitions before s.
    """
    reach = view.max_window + view.source.max_lateness - view.cadence.interval
    return max(0, math.ceil(reach / view.partitioning.interval))


def column_lineage(view: FeatureView) -> TableColumnLineage:
    source = AssetKey(view.source.asset)
    deps = {}
    for feature in view.features:
        columns = [feature.source_column or view.source.known_at_column, view.source.known_at_column]
        deps[feature.name] = [TableColumnDep(source, column) for column in dict.fromkeys(columns)]
    for key in view.entity_keys:
        deps[key] = [TableColumnDep(source, key)]
    deps[EVENT_TIMESTAMP] = [TableColumnDep(source, view.source.known_at_column)]
    return TableColumnLineage(deps)


def build_feature_asset(view: FeatureView, settings: Settings) -> AssetsDefinition:
    """A partitioned asset writing `view`'s snapshots; backfills run as one run per range."""
    mapping = TimeWindowPartitionMapping(
        start_offset=-lookback_partitions(view), end_offset=0, allow_nonexistent_upstream_partitions=True
    )
    partitions = view_partitions(view, settings)
    check_names = [*FEATURE_CHECKS, *([CUSTOM_EXPECTATIONS] if EXTRA_EXPECTATIONS.get(view.name) else [])]
    feature_list = "\n".join(
        f"- `{f.name}` ({f.dtype}): {f.aggregation.value} over {f.window}, nulls: {f.null_policy.value}. "
        f"{f.description}"
        for f in view.features
    )

    @asset(
        name=view.name,
        description=f"{view.description}\n\nEntity `{view.entity.name}` keyed by {list(view.entity_keys)}; "
        f"TTL {view.ttl}; {view.partitioning.value} partitions, a snapshot every "
        f"{view.cadence.value}; lifecycle {view.lifecycle.value}.\n\n{feature_list}",
        group_name="features",
        partitions_def=partitions,
        ins={"events": AssetIn(key=AssetKey(view.source.asset), partition_mapping=mapping)},
        backfill_policy=BackfillPolicy.single_run(),
        metadata={
            TIME_COLUMN_KEY: EVENT_TIMESTAMP,
            CLOSED_KEY: "right",
            "entity_keys": list(view.entity_keys),
            "ttl_seconds": int(view.ttl.total_seconds()),
            "features": list(view.feature_names),
        },
        owners=[view.owner],
        tags={"lifecycle": view.lifecycle.value, "snapshot_cadence": view.cadence.value, **view.tags},
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=view.freshness.fail_after, warn_window=view.freshness.warn_after
        ),
        check_specs=gate_check_specs(view.name, check_names),
        output_required=False,
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _feature_table(context: AssetExecutionContext, events: pl.DataFrame, lake: LakeResource):
        window = context.partition_time_window
        key_range = context.partition_key_range
        # An open partition (today) gets the snapshots that have already happened, no more.
        began = time.perf_counter()
        end = min(window.end.astimezone(timezone.utc), floor_to(utc_now(), view.cadence.interval))
        features = snapshot_features(
            events,
            view,
            start=window.start.astimezone(timezone.utc),
            end=max(end, window.start.astimezone(timezone.utc)),
            context=f"table {view.source.asset!r} partitions {key_range.start}..{key_range.end} "
            f"(for feature view {view.name!r})",
        )
        features = features.with_columns(pl.lit(utc_now()).dt.cast_time_unit("us").alias(CREATED_TIMESTAMP))
        computed = time.perf_counter()
        store = lake.store()
        windows = [partition_window(partitions, key) for key in context.partition_keys]
        history = QualityLedger(store).recent_row_counts(view.name, windows[0].key, limit=14)
        outcomes = validate_feature_partitions(view, features, partitions=windows, recent_row_counts=history)
        counts = full_partition_counts(view, features, windows, end)
        for window in windows:
            if counts[window.key] != _rows_in(features, window):  # an open partition: judge its pace
                outcomes[window.key] = [
                    check_volume(view.name, window.key, counts[window.key], history, view.volume_tolerance_factor)
                    if o.check_name == VOLUME else o
                    for o in outcomes[window.key]
                ]
        passed = False
        for item in run_gate(context, table=view.name, frame=features, outcomes_by_partition=outcomes,
                             check_names=check_names, row_counts=counts, store=store):
            if isinstance(item, bool):
                passed = item
            else:
                yield item
        if not passed:
            return
        yield Output(
            features,
            metadata={
                "dagster/column_lineage": column_lineage(view),
                "entities": features.select(view.entity_keys).n_unique() if features.height else 0,
                "snapshots": features[EVENT_TIMESTAMP].n_unique() if features.height else 0,
                "source_rows_read": events.height,
                "compute_seconds": round(computed - began, 4),
                "quality_check_seconds": round(time.perf_counter() - computed, 4),
            },
        )

    return _feature_table


def _rows_in(features: pl.DataFrame, window: PartitionWindow) -> int:
    stamps = features.get_column(EVENT_TIMESTAMP)
    return int(((stamps > window.start) & (stamps <= window.end)).sum())


def full_partition_counts(
    view: FeatureView, features: pl.DataFrame, windows: list[PartitionWindow], computed_until: datetime
) -> dict[str, int]:
    """Rows per partition, with an open partition's count scaled to a whole partition at the pace
    of the snapshots it has so far, so its volume is judged like a closed one's."""
    counts = {}
    for window in windows:
        rows = _rows_in(features, window)
        done = min(window.end, computed_until) - window.start
        counts[window.key] = rows if done >= window.end - window.start or done <= timedelta(0) else round(
            rows * ((window.end - window.start) / done)
        )
    return counts
