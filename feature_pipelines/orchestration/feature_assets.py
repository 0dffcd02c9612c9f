"""The one factory that turns a FeatureView into its Dagster feature-table asset."""


import math
import time
from datetime import datetime

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    FreshnessPolicy,
    MetadataValue,
    TableColumnDep,
    TableColumnLineage,
    TimeWindowPartitionMapping,
    asset,
)

from feature_pipelines.catalog.links import feature_url, view_url
from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from feature_pipelines.orchestration.clock import run_clock
from feature_pipelines.orchestration.io_manager import CLOSED_KEY, PER_PARTITION_READINESS, TIME_COLUMN_KEY
from feature_pipelines.orchestration.partitions import partition_window, raw_partitions, view_partitions
from feature_pipelines.orchestration.quality_gate import WriteTarget, gate_and_write, gate_check_specs
from feature_pipelines.orchestration.upstream import upstream_gaps, upstream_outcome
from feature_pipelines.plan.record import definition_metadata
from feature_pipelines.quality.suites import validate_feature_partitions, view_rules
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import PartitionWindow, floor_to


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
    upstream_days = raw_partitions(settings)
    rules = view_rules(view)
    target = WriteTarget(view.name, EVENT_TIMESTAMP, "right")

    @asset(
        name=view.name,
        description=table_description(view),
        group_name="features",
        partitions_def=partitions,
        ins={"events": AssetIn(key=AssetKey(view.source.asset), partition_mapping=mapping,
                               metadata={PER_PARTITION_READINESS: True})},
        backfill_policy=BackfillPolicy.single_run(),
        metadata=_definition_metadata(view),
        owners=[view.owner],
        tags={"lifecycle": view.lifecycle.value, "snapshot_cadence": view.cadence.value, **view.tags},
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=view.freshness.fail_after, warn_window=view.freshness.warn_after
        ),
        check_specs=gate_check_specs(view.name, rules),
        output_required=False,
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _feature_table(context: AssetExecutionContext, events: pl.DataFrame, lake: LakeResource):
        began = time.perf_counter()
        now = run_clock(context)
        store = lake.store()
        windows = [partition_window(partitions, key) for key in context.partition_keys]
        until = _computed_until(view, windows, now)
        gaps = upstream_gaps(context, upstream=view.source.asset, mapping=mapping, partitions_def=partitions,
                             upstream_partitions_def=upstream_days, needed=_upstream_needs(view, windows, until),
                             store=store, by_hour=True)
        features = snapshot_features(
            events,
            view,
            start=windows[0].start,
            end=until[windows[-1].key],
            context=f"table {view.source.asset!r} partitions {windows[0].key}..{windows[-1].key} "
            f"(for feature view {view.name!r})",
        )
        features = features.with_columns(pl.lit(now).dt.cast_time_unit("us").alias(CREATED_TIMESTAMP))
        computed = time.perf_counter()
        source_rows = _source_rows(view, events, windows, until)
        outcomes = validate_feature_partitions(view, features, partitions=windows, source_rows=source_rows)
        for window in windows:
            outcomes[window.key].append(upstream_outcome(view.name, window.key, [gaps.get(window.key)]))
        yield from gate_and_write(
            context, target=target, frame=features, windows=windows, outcomes_by_partition=outcomes, rules=rules,
            store=store, now=now,
            metadata=lambda written: {
                **_written_metadata(view, written),
                "source_rows_read": events.height,
                "computed_until": until[windows[-1].key].isoformat(),
                "compute_seconds": round(computed - began, 4),
                "quality_check_seconds": round(time.perf_counter() - computed, 4),
            },
        )

    return _feature_table


def table_description(view: FeatureView) -> str:
    """What the UI shows for the view's table: the view, its entity, TTL, cadence and every feature."""
    feature_list = "\n".join(
        f"- `{f.name}` ({f.dtype}): {f.aggregation.value} over {f.window}, nulls: {f.null_policy.value}. "
        f"{f.description}"
        for f in view.features
    )
    return (
        f"{view.description}\n\nEntity `{view.entity.name}` keyed by {list(view.entity_keys)}; "
        f"TTL {view.ttl}; {view.partitioning.value} partitions, a snapshot every "
        f"{view.cadence.value}; lifecycle {view.lifecycle.value}.\n\n{feature_list}"
    )


def _definition_metadata(view: FeatureView) -> dict[str, object]:
    """The asset definition's metadata: how the IO manager cuts partitions, and the view's shape."""
    return {
        TIME_COLUMN_KEY: EVENT_TIMESTAMP,
        CLOSED_KEY: "right",
        "entity_keys": list(view.entity_keys),
        "ttl_seconds": int(view.ttl.total_seconds()),
        "features": list(view.feature_names),
        "catalog": MetadataValue.url(view_url(view.name)),
        "catalog_features": MetadataValue.md("\n".join(f"- [{name}]({feature_url(name)})" for name in view.feature_names)),
    }


def _written_metadata(view: FeatureView, written: pl.DataFrame) -> dict[str, object]:
    """What one written partition holds: its column lineage, entities and snapshots, and the
    definition that computed it (the writers also record it in the Delta commit, for `plan`)."""
    return {
        **definition_metadata(view),
        "dagster/column_lineage": column_lineage(view),
        "entities": written.select(view.entity_keys).n_unique() if written.height else 0,
        "snapshots": written[EVENT_TIMESTAMP].n_unique() if written.height else 0,
    }


def _computed_until(view: FeatureView, windows: list[PartitionWindow], now: datetime) -> dict[str, datetime]:
    """Per partition, the last snapshot computed: an open partition (today) gets the snapshots that
    have happened by the run's clock, no more."""
    last_snapshot = floor_to(now, view.cadence.interval)
    return {w.key: max(w.start, min(w.end, last_snapshot)) for w in windows}


def _upstream_needs(
    view: FeatureView, windows: list[PartitionWindow], until: dict[str, datetime]
) -> dict[str, tuple[datetime, datetime]]:
    """Per partition, the span of source events its snapshots read: [first t - W - lateness, until)."""
    lead = view.cadence.interval - view.max_window - view.source.max_lateness
    return {w.key: (w.start + lead, until[w.key]) for w in windows}


def _source_rows(
    view: FeatureView, events: pl.DataFrame, windows: list[PartitionWindow], until: dict[str, datetime]
) -> dict[str, int]:
    """Per partition, the source events inside the windows of its snapshots: [first t - W, last t)."""
    if events.height == 0 or view.source.known_at_column not in events.columns:
        return {w.key: 0 for w in windows}
    known = events.get_column(view.source.known_at_column)
    counts = {}
    for window in windows:
        low = window.start + view.cadence.interval - view.max_window
        counts[window.key] = int(((known >= low) & (known < until[window.key])).sum()) if until[window.key] > window.start else 0
    return counts
