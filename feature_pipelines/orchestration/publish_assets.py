"""Publish assets (one per feature view, from the same factory): latest values to Redis, followed
by the online/offline parity check.

A publish asset is not partitioned: the online store holds only each entity's latest values, so
a partition of "published" would mean nothing, and Dagster's planned event and materialization
per partition (365 a year per view) were pure bookkeeping. Each run publishes the feature
partitions of its own range (its range tags, or its partition key; run alone, the newest
materialised one) and records one materialization naming them.
"""

import os

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Backoff,
    MaterializeResult,
    MetadataValue,
    PartitionKeyRange,
    RetryPolicy,
    TimeWindowPartitionsDefinition,
    asset,
)

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.json_values import json_value
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import TimeSlice
from feature_pipelines.offline.historical import get_historical_features
from feature_pipelines.online.publish import latest_per_entity, publish
from feature_pipelines.online.retrieval import get_online_features
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.orchestration.io_manager import require_ready
from feature_pipelines.orchestration.partitions import partition_window, view_partitions
from feature_pipelines.orchestration.runs import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.quality.parity import ParityReport, compare
from feature_pipelines.resources import LakeResource, RedisResource
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import utc_now

PARITY_CHECK = "online_matches_offline"
PARITY_SAMPLE_ENV = "FEATURE_PIPELINES_PARITY_SAMPLE"  # entities compared per publish; 0 = all
DEFAULT_PARITY_SAMPLE = 2000
PARTITION_TAG = "dagster/partition"


def publish_asset_name(view: FeatureView) -> str:
    return f"{view.name}_online"


def parity_report(view: FeatureView, published: pl.DataFrame, lake: LakeResource, redis: RedisResource) -> ParityReport:
    """Offline point-in-time values at `now` vs what Redis serves at `now`, for (a sample of) the
    entities just published whose values are still within their TTL."""
    sample = int(os.environ.get(PARITY_SAMPLE_ENV, DEFAULT_PARITY_SAMPLE))
    now = utc_now()
    entities = published.filter(pl.col(EVENT_TIMESTAMP) + view.ttl >= now).select(view.entity_keys)
    if sample and entities.height > sample:
        entities = entities.sample(n=sample, seed=0)
    references = [f"{view.name}:{name}" for name in view.feature_names]
    offline = get_historical_features(
        lake.store(), {view.name: view}, entities.with_columns(pl.lit(now).dt.cast_time_unit("us").alias(EVENT_TIMESTAMP)), references,
        streaming_views="snapshots",  # what this asset publishes; the stream's own parity is streaming_parity
    ).frame
    online = get_online_features(
        redis.client(), prefix=redis.key_prefix, views={view.name: view}, entity_rows=entities, features=references, now=now,
        streaming_views="snapshots",
    )
    return compare(offline, online, keys=view.entity_keys, features=view.feature_names)


def run_feature_partitions(context: AssetExecutionContext, view: FeatureView, partitions: TimeWindowPartitionsDefinition) -> list[str]:
    """The feature partitions a run publishes: its range (a backfill's range tags, a scheduled
    run's partition key), or, when the run has none, the newest materialised partition."""
    tags = context.run.tags
    if tags.get(RANGE_START_TAG):
        return list(partitions.get_partition_keys_in_range(PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG])))
    if tags.get(PARTITION_TAG):
        return [tags[PARTITION_TAG]]
    return sorted(context.instance.get_materialized_partitions(AssetKey(view.name)))[-1:]


def build_publish_asset(view: FeatureView, settings: Settings) -> AssetsDefinition:
    """Latest values of `view` to Redis, only after its feature table passed its blocking checks."""
    name = publish_asset_name(view)
    partitions = view_partitions(view, settings)

    @asset(
        name=name,
        description=f"Publishes each entity's newest `{view.name}` snapshot of the partitions read to the "
        "Redis online store (one hash per entity, written atomically only if not older than what is "
        f"stored, expiring {view.ttl} after its event time), then checks online == offline.",
        group_name="online",
        deps=[AssetKey(view.name)],
        retry_policy=RetryPolicy(max_retries=4, delay=1.0, backoff=Backoff.EXPONENTIAL),
        check_specs=[
            AssetCheckSpec(
                PARITY_CHECK,
                asset=name,
                blocking=True,
                description="For the entities just published (a sample outside tests), the values Redis "
                "serves now equal the offline point-in-time values now: same dtypes, exact integers and "
                "strings, bitwise floats.",
            )
        ],
        owners=[view.owner],
        kinds={"redis"},
        pool="online_store",
    )
    def _publish(context: AssetExecutionContext, redis: RedisResource, lake: LakeResource):
        keys = run_feature_partitions(context, view, partitions)
        if not keys:
            raise ValueError(f"view {view.name!r}: no partition of it is materialised; materialise {view.name!r} first")
        window = TimeSlice(EVENT_TIMESTAMP, partition_window(partitions, keys[0]).start, partition_window(partitions, keys[-1]).end, "right")
        store = lake.store()
        require_ready(context.instance, store, view.name, keys, window, reader=f"publish asset {name!r}")
        latest = latest_per_entity(view, store.read(view.name, time_slice=window))
        result = publish(redis.client(), OnlineTable.for_view(view, redis.key_prefix), latest)
        context.log.info(
            f"{view.name}: {result.written} written, {result.skipped_as_older} kept newer values, "
            f"{result.skipped_as_expired} already past TTL ({redis.describe()})"
        )
        yield MaterializeResult(
            metadata={
                "entities_written": result.written,
                "skipped_as_older": result.skipped_as_older,
                "skipped_as_expired": result.skipped_as_expired,
                "newest_event_timestamp": str(latest[EVENT_TIMESTAMP].max()) if latest.height else "none",
                "feature_partitions": f"{keys[0]}..{keys[-1]}",
                "online_store": redis.describe(),
            }
        )
        report = parity_report(view, latest, lake, redis)
        yield AssetCheckResult(
            check_name=PARITY_CHECK,
            passed=report.passed,
            severity=AssetCheckSeverity.ERROR,
            description=f"view {view.name!r}: {report.message()}",
            metadata={
                "entities_compared": report.entities_compared,
                "mismatches": MetadataValue.json(report.mismatches),
                "examples": MetadataValue.json(json_value(report.examples)),
            },
        )

    return _publish
